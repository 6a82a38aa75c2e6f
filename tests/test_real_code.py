"""Opt-in: the real LLaDA / Dream hub modeling files, repaired at load (decoding/repairs.py), on tiny random
configs. Skipped unless DECODING_LENS_REAL_CODE names a folder with `llada/` (configuration_llada.py,
modeling_llada.py) and `dream/` (configuration_dream.py, modeling_dream.py, generation_utils.py) inside, as
the hub repos ship them (see README, "Real modeling code"); with LLaDA's official `generate.py` in `llada/` too.
Checks: the model loads through decoding.models.load, its logits equal a correctly built model's (repaired class,
built on the CPU outside from_pretrained), and the engine decodes as the reference loops do: LLaDA's generate()
(low_confidence) and Dream's own diffusion_generate (maskgit_plus, topk_margin, entropy; top_p / top_k), at
temperature 0 on the same loaded model."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import torch

from decoding import models, repairs
from decoding.zoo.tokenizer import build_tokenizer

REAL = os.environ.get("DECODING_LENS_REAL_CODE")
pytestmark = pytest.mark.skipif(not REAL, reason="set DECODING_LENS_REAL_CODE to folders with the real code")

TINY = {
    "llada": ("LLaDAModelLM", "modeling_llada", "configuration_llada.LLaDAConfig", {
        "d_model": 32, "n_heads": 2, "n_kv_heads": 2, "n_layers": 2, "mlp_hidden_size": 64, "mlp_ratio": 2,
        "vocab_size": 32, "embedding_size": 32, "mask_token_id": 4, "max_sequence_length": 128,
        "block_type": "llama", "activation_type": "silu", "rope": True, "alibi": False, "weight_tying": False,
        "include_bias": False, "layer_norm_type": "rms", "attention_layer_norm": False, "flash_attention": False,
        "init_device": "cpu", "pad_token_id": 0, "eos_token_id": 2, "model_type": "llada"}),
    "dream": ("DreamModel", "modeling_dream", "configuration_dream.DreamConfig", {
        "vocab_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 128, "mask_token_id": 4,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "model_type": "Dream"}),
}


@pytest.fixture(autouse=True)
def _setup(monkeypatch):
    monkeypatch.setattr(models, "TRUST_REMOTE_CODE_ALLOWLIST", set(models.TRUST_REMOTE_CODE_ALLOWLIST))
    models.clear_cache()
    yield
    models.clear_cache()


def build(tmp_path: Path, name: str) -> tuple[Path, torch.nn.Module]:
    """A tiny random model of the real class saved to a fresh folder (+ the zoo tokenizer), and that model as
    built correctly in memory (the reference)."""
    import json

    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    arch, module, config_ref, config = TINY[name]
    folder = tmp_path / f"{name}_{uuid.uuid4().hex[:8]}"
    shutil.copytree(Path(REAL) / name, folder)
    config = {**config, "architectures": [arch],
              "auto_map": {"AutoConfig": config_ref, "AutoModel": f"{module}.{arch}"}}
    (folder / "config.json").write_text(json.dumps(config))
    cls = get_class_from_dynamic_module(f"{module}.{arch}", str(folder), local_files_only=True)
    repairs.repair_class(cls)
    cfg_cls = get_class_from_dynamic_module(config_ref, str(folder), local_files_only=True)
    torch.manual_seed(0)
    reference = cls(cfg_cls(**config)).eval()
    repairs.repair_model(reference)
    if name == "dream":
        for module_ in reference.modules():  # built outside from_pretrained: the buffer is computed, not empty
            if hasattr(module_, "inv_freq"):
                assert torch.isfinite(module_.inv_freq).all()
    reference.save_pretrained(folder, safe_serialization=True)
    for f in Path(REAL, name).iterdir():  # save_pretrained may not copy the code files
        if not (folder / f.name).exists():
            shutil.copy(f, folder / f.name)
    (folder / "config.json").write_text(json.dumps(config))
    build_tokenizer().save_pretrained(folder)
    # The tiny config's own special ids over the registry's full-size ones (a settings file wins, as documented).
    (folder / "decoding_lens.json").write_text(json.dumps({"mask_id": config["mask_token_id"], "eos_ids": [3]}))
    return folder, reference


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_real_code_loads_and_matches_a_correctly_built_model(tmp_path, name):
    folder, reference = build(tmp_path, name)
    models.allow_remote_code(folder)
    adapter = models.load(str(folder))
    assert adapter.settings.get("registry") in ("GSAI-ML/LLaDA-8B-Instruct", "Dream-org/Dream-v0-Instruct-7B")
    print(name, "repairs:", adapter.settings.get("repairs"))
    ids = torch.tensor([[1, 5, 6, 7, 8, 4, 4, 4]])
    with torch.no_grad():
        got = adapter.model(input_ids=ids).logits.float()
        want = reference(input_ids=ids).logits.float()
    torch.testing.assert_close(got, want)


def _ban(adapter, ids: list[int]) -> None:
    """[MASK] and the ids the tokenizer lacks never win, in the reference loops as in the engine (which leaves
    them out of the choice): a forward hook on the shared model, so both sides see the same logits."""
    def hook(_module, _inputs, output):
        output.logits[..., ids] = -1e9
    adapter.model.register_forward_hook(hook)


def _engine(adapter, prompt: str, params) -> list[int]:
    from decoding.diffusion import denoise

    gen = denoise(adapter, prompt, params)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value.canvas[0]


PROMPTS = ["12+7=?\n", "5*3-2=?\n", "9-4+1=?\n"]


def test_llada_decodes_as_its_generate_py(tmp_path):
    import importlib.util

    from decoding.diffusion import DiffusionParams

    spec = importlib.util.spec_from_file_location("llada_generate", Path(REAL) / "llada" / "generate.py")
    if spec is None or not (Path(REAL) / "llada" / "generate.py").is_file():
        pytest.skip("no llada/generate.py beside the modeling files")
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    folder, _ = build(tmp_path, "llada")
    models.allow_remote_code(folder)
    adapter = models.load(str(folder))
    _ban(adapter, [adapter.mask_id, *range(adapter.text_vocab, adapter.model.config.vocab_size)])
    for prompt in PROMPTS:
        for steps, gen_length, block in [(8, 16, 8), (16, 16, 16), (4, 16, 4)]:
            ids = torch.tensor([adapter.encode_prompt(prompt)])
            with torch.no_grad():
                want = reference.generate(adapter.model, ids, steps=steps, gen_length=gen_length, block_length=block,
                                          temperature=0.0, remasking="low_confidence", mask_id=adapter.mask_id)
            params = DiffusionParams(strategy="low_confidence", steps=steps, gen_length=gen_length,
                                     block_length=block)
            assert _engine(adapter, prompt, params) == want[0, ids.shape[1]:].tolist(), (prompt, steps, block)


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_dream_decodes_as_its_diffusion_generate(tmp_path, alg):
    from decoding.diffusion import DiffusionParams

    folder, _ = build(tmp_path, "dream")
    models.allow_remote_code(folder)
    adapter = models.load(str(folder))
    assert adapter.settings.get("schedule") == "dream"
    import sys

    gen_config_cls = sys.modules[type(adapter.model).__module__].DreamGenerationConfig
    _ban(adapter, [adapter.mask_id, *range(adapter.text_vocab, adapter.model.config.vocab_size)])
    for prompt in PROMPTS:
        for steps, gen_length, top_p, top_k in [(8, 32, None, None), (5, 24, None, None), (8, 32, 0.7, 3)]:
            ids = torch.tensor([adapter.encode_prompt(prompt)])
            # An explicit DreamGenerationConfig: under transformers 5 the default path (from_model_config) fails
            # with "'GenerationConfig' object has no attribute 'eps'" (the engine never calls it).
            config = gen_config_cls(max_new_tokens=gen_length, steps=steps, alg=alg, temperature=0.0, top_p=top_p,
                                    top_k=top_k, mask_token_id=adapter.mask_id)
            with torch.no_grad():
                want = adapter.model.diffusion_generate(ids, generation_config=config)
            params = DiffusionParams(strategy=alg, steps=steps, gen_length=gen_length, block_length=gen_length,
                                     sample_top_p=top_p or 1.0, sample_top_k=top_k or 0)
            assert _engine(adapter, prompt, params) == want[0, ids.shape[1]:].tolist(), (prompt, steps, top_p)
