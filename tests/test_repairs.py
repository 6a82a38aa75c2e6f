"""decoding/repairs.py against the repo's own remote-code fixtures (tests/fixtures/remote_*_like), which fail
under transformers 5 the ways LLaDA's and Dream's hub code do. Offline, CPU."""

from __future__ import annotations

import json
import shutil
import types
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from decoding import models, repairs
from decoding.models import load
from decoding.zoo.tokenizer import build_tokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHAPES = {
    "llada": {"wte.weight": (32, 16), "mix.weight": (16, 16), "mix.bias": (16,), "ff_out.weight": (32, 16)},
    "dream": {"embed.weight": (32, 16), "qkv.weight": (48, 16), "qkv.bias": (48,), "out.weight": (16, 16),
              "out.bias": (16,), "head.weight": (32, 16), "head.bias": (32,)},
}


@pytest.fixture(autouse=True)
def one_thread_fresh_cache(monkeypatch):
    monkeypatch.setattr(models, "TRUST_REMOTE_CODE_ALLOWLIST", set(models.TRUST_REMOTE_CODE_ALLOWLIST))
    models.clear_cache()
    yield
    models.clear_cache()


def fixture_copy(tmp_path: Path, name: str) -> Path:
    """The fixture in a uniquely named folder (its own dynamic module: repairs patch classes in place) with random
    weights, the zoo tokenizer and settings."""
    folder = tmp_path / f"{name}_{uuid.uuid4().hex[:8]}"
    shutil.copytree(FIXTURES / f"remote_{name}_like", folder)
    gen = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(s, generator=gen) for k, s in SHAPES[name].items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    build_tokenizer().save_pretrained(folder)
    settings = {"kind": "masked_diffusion", "prompt_format": "bos", "attention_mask_4d": name == "dream"}
    (folder / "decoding_lens.json").write_text(json.dumps(settings))
    return folder


def test_llada_like_fails_unrepaired_and_loads_repaired(tmp_path):
    from transformers import AutoModel

    folder = fixture_copy(tmp_path, "llada")
    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    models.allow_remote_code(folder)
    adapter = load(str(folder))
    assert adapter.settings["repairs"] == ["post_init_bookkeeping", "tie_weights_signature",
                                           "dropped_config_attributes"]
    assert adapter.model.config.use_cache is False
    ids = torch.tensor([[1, 5, 6, 7, adapter.mask_id]])
    w = load_file(str(folder / "model.safetensors"))
    h = w["wte.weight"][ids]
    expected = torch.tanh(h + h.mean(1, keepdim=True) @ w["mix.weight"].T + w["mix.bias"]) @ w["ff_out.weight"].T
    torch.testing.assert_close(adapter.logits(ids), expected)


def test_dream_like_fails_unrepaired_and_loads_repaired_with_true_rope(tmp_path):
    from transformers import AutoModel

    folder = fixture_copy(tmp_path, "dream")
    with pytest.raises(KeyError, match="default"):
        AutoModel.from_pretrained(str(folder), trust_remote_code=True)
    models.allow_remote_code(folder)
    adapter = load(str(folder))
    assert {"rope_default_init", "rope_inv_freq", "generation_config_validate",
            "tied_weights_keys_format"} <= set(adapter.settings["repairs"])
    rotary = adapter.model.rotary_emb
    expected = 1.0 / 10000.0 ** (torch.arange(0, 8, 2).float() / 8)
    torch.testing.assert_close(rotary.inv_freq, expected)
    assert type(adapter.model.generation_config).__name__ == "DreamLikeGenerationConfig"

    # A correctly built model (plain __init__ on the CPU, weights loaded by hand) gives the same logits.
    cls = type(adapter.model)
    reference = cls(adapter.model.config).eval()
    reference.load_state_dict(load_file(str(folder / "model.safetensors")))
    ids = torch.tensor([[1, 5, 6, 7, 8, adapter.mask_id, adapter.mask_id]])
    with torch.no_grad():
        torch.testing.assert_close(adapter.model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_dream_like_tied_weights_list_fails_in_save_unrepaired_and_saves_repaired(tmp_path):
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    folder = fixture_copy(tmp_path, "dream")
    cls = get_class_from_dynamic_module("modeling_dream_like.DreamLikeModel", str(folder), local_files_only=True)
    config_cls = get_class_from_dynamic_module("configuration_dream_like.DreamLikeConfig", str(folder),
                                               local_files_only=True)
    repairs.repair_rope_default_init(repairs.sys.modules[cls.__module__])  # only the rope failure out of the way
    model = cls(config_cls.from_pretrained(str(folder)))
    with pytest.raises(AttributeError, match="'list' object has no attribute 'keys'"):
        model.save_pretrained(tmp_path / "unrepaired")

    assert repairs.repair_tied_weights_keys_format(cls)
    assert not repairs.repair_tied_weights_keys_format(cls)  # once
    model = cls(config_cls.from_pretrained(str(folder)))
    assert model._tied_weights_keys == {"head.weight": "embed.weight"}  # v4's meaning: tied to the input embeddings
    model.save_pretrained(tmp_path / "repaired")
    saved = load_file(str(tmp_path / "repaired" / "model.safetensors"))
    torch.testing.assert_close(saved["head.weight"], model.head.weight.detach())  # not tied here: both kept


def test_repairs_apply_only_when_their_failure_holds():
    from transformers import GenerationConfig, PreTrainedModel

    class Fine(PreTrainedModel):
        def __init__(self, config):
            super().__init__(config)
            self.post_init()

        def tie_weights(self, missing_keys=None, recompute_mapping=True):
            pass

    assert not repairs.repair_post_init_bookkeeping(Fine)
    assert not repairs.repair_tie_weights_signature(Fine)
    assert not repairs.repair_tied_weights_keys_format(Fine)
    Fine._tied_weights_keys = {"lm_head.weight": "embed.weight"}  # v5's dict form: left alone
    assert not repairs.repair_tied_weights_keys_format(Fine)
    assert not repairs.repair_generation_config_validate(GenerationConfig)
    module = types.SimpleNamespace(ROPE_INIT_FUNCTIONS={"default": repairs.default_rope_init})
    assert not repairs.repair_rope_default_init(module)
    model = torch.nn.Linear(2, 2)
    model.config = types.SimpleNamespace(use_cache=True)
    assert not repairs.repair_dropped_config_attributes(model) and model.config.use_cache is True
    assert not repairs.repair_rope_inv_freq(model)


def test_rope_check_raises_when_still_wrong():
    class Rotary(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = types.SimpleNamespace(hidden_size=8, num_attention_heads=1, rope_theta=10000.0)
            self.rope_init_fn = lambda config, device=None, **kw: (torch.full((4,), float("nan")), 1.0)
            self.register_buffer("inv_freq", torch.zeros(4), persistent=False)

    with pytest.raises(repairs.RepairError, match="rotary"):
        repairs.repair_rope_inv_freq(Rotary())
