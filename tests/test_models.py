"""decoding/models.py: zoo / local / remote-code / DiffusionGemma loading, logits, and clear failures. Offline, CPU."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants as hub_constants
from safetensors.torch import save_file

from decoding import models
from decoding.models import ModelLoadError, load
from decoding.mtp import MTPHeads
from decoding.zoo.tokenizer import build_tokenizer

TASK_TEXT = "12+7=?\n"


@pytest.fixture(autouse=True)
def fresh_cache():
    models.clear_cache()
    yield
    models.clear_cache()


@pytest.fixture
def zoo(zoo_dir, monkeypatch) -> Path:
    monkeypatch.setattr(models, "ZOO_DIR", zoo_dir)  # zoo names resolve against the (maybe tmp) zoo
    return zoo_dir


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@pytest.mark.parametrize("name, kind", [("tiny-dllm", "masked_diffusion"), ("tiny-ar", "causal"),
                                        ("tiny-prm", "prm")])
def test_zoo_models_load_with_their_kind(zoo, name, kind):
    adapter = load(name)
    assert adapter.kind == kind and adapter.spec == name
    assert load(name) is adapter  # cached by (spec, device)
    assert adapter.device == torch.device("cpu") and adapter.max_length == 128
    assert adapter.eos_ids == [adapter.tokenizer.eos_token_id]
    ids = torch.tensor([adapter.encode_prompt(TASK_TEXT)] * 2)
    logits = adapter.logits(ids)
    assert logits.dtype == torch.float32
    assert logits.shape == (2, ids.shape[1], adapter.model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_zoo_settings_and_mtp_heads(zoo):
    dllm = load("tiny-dllm")
    assert dllm.mask_id == dllm.tokenizer.mask_token_id and not dllm.shift_logits
    assert dllm.settings["gen_length"] == 80
    ar = load("tiny-ar")
    assert ar.mask_id is None
    assert isinstance(ar.mtp_heads, MTPHeads) and ar.mtp_heads.n_future == 4
    assert load("tiny-prm").settings["good_token"] == "[GOOD]"
    assert load("tiny-prm").mtp_heads is None


@pytest.mark.parametrize("name", ["tiny-dllm", "tiny-ar"])
def test_left_padding_matches_unpadded_rows(zoo_dir, name):
    adapter = load(str(zoo_dir / name))  # the path form other tests use
    prompt = adapter.encode_prompt(TASK_TEXT)
    long_row = prompt + [adapter.mask_id or adapter.tokenizer.convert_tokens_to_ids("1")] * 6
    short_row = adapter.encode_prompt("3*4=?\n")
    ids, mask = left_pad([long_row, short_row], adapter.tokenizer.pad_token_id)
    padded = adapter.logits(ids, attention_mask=mask)
    pad = ids.shape[1] - len(short_row)
    assert pad > 0
    for row, start in ((long_row, 0), (short_row, pad)):
        alone = adapter.logits(torch.tensor([row]))[0]
        got = padded[0 if start == 0 else 1, start:]
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, alone, atol=1e-4, rtol=1e-4)


def test_prompt_round_trip(zoo):
    adapter = load("tiny-dllm")
    ids = adapter.encode_prompt(TASK_TEXT)
    assert ids[0] == adapter.tokenizer.bos_token_id and len(ids) == 1 + len(TASK_TEXT)
    assert adapter.token_text(ids) == ["[BOS]", *TASK_TEXT]
    assert adapter.token_text(torch.tensor([adapter.mask_id, adapter.eos_ids[0]])) == ["[MASK]", "[EOS]"]
    assert adapter.decode([*ids, adapter.mask_id, *adapter.eos_ids]) == TASK_TEXT


def test_list_models_zoo_first(zoo):
    rows = models.list_models()
    assert [r["name"] for r in rows[:3]] == ["tiny-dllm", "tiny-ar", "tiny-prm"]
    assert all(r["available_locally"] for r in rows[:3])
    assert [r["name"] for r in rows[3:]] == list(models.REGISTRY)
    assert {"name", "kind", "available_locally", "note"} <= set(rows[-1])


def test_registry_entries():
    llada = models.REGISTRY["GSAI-ML/LLaDA-8B-Instruct"]
    assert (llada.mask_id, llada.eos_ids, llada.trust_remote_code) == (126336, (126081, 126348), True)
    dream = models.REGISTRY["Dream-org/Dream-v0-Instruct-7B"]
    assert dream.shift_logits and dream.trust_remote_code and dream.kind == "masked_diffusion"
    assert {k for k, v in models.REGISTRY.items() if v.kind == "native_diffusion"}
    assert models.REGISTRY["Qwen/Qwen2.5-Math-PRM-7B"].step_tag == "<extra_0>"
    assert {k for k, v in models.REGISTRY.items() if v.trust_remote_code} <= models.TRUST_REMOTE_CODE_ALLOWLIST


# --- trust_remote_code: a Dream-style masked LM with its own code, offline ---------------------------------

CONFIG_CODE = '''
from transformers import PretrainedConfig


class TinyMLMConfig(PretrainedConfig):
    model_type = "tiny_mlm"

    def __init__(self, vocab_size=32, hidden_size=16, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        super().__init__(**kwargs)
'''

MODELING_CODE = '''
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput

from .configuration_tiny_mlm import TinyMLMConfig


class TinyMLM(PreTrainedModel):
    config_class = TinyMLMConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.mix = nn.Linear(config.hidden_size, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        h = self.embed(input_ids)
        if attention_mask is None:  # bidirectional: every position sees the whole sequence
            context = h.mean(dim=1, keepdim=True)
        else:  # like Dream, padding comes as a [B, 1, T, T] bool mask (query x key)
            assert attention_mask.dim() == 4, "a 2D mask reached a Dream-style model"
            weights = attention_mask[:, 0].float()
            context = weights @ h / weights.sum(-1, keepdim=True).clamp(min=1)
        return MaskedLMOutput(logits=self.head(torch.tanh(h + self.mix(context))))
'''


@pytest.fixture
def remote_code_dir(tmp_path) -> Path:
    folder = tmp_path / "dream-style"
    folder.mkdir()
    (folder / "configuration_tiny_mlm.py").write_text(CONFIG_CODE)
    (folder / "modeling_tiny_mlm.py").write_text(MODELING_CODE)
    config = {
        "model_type": "tiny_mlm", "architectures": ["TinyMLM"], "vocab_size": 32, "hidden_size": 16,
        "auto_map": {"AutoConfig": "configuration_tiny_mlm.TinyMLMConfig", "AutoModel": "modeling_tiny_mlm.TinyMLM"},
    }
    (folder / "config.json").write_text(json.dumps(config))
    gen = torch.Generator().manual_seed(0)
    weights = {"embed.weight": (32, 16), "mix.weight": (16, 16), "mix.bias": (16,), "head.weight": (32, 16),
               "head.bias": (32,)}
    save_file({k: torch.randn(shape, generator=gen) for k, shape in weights.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    build_tokenizer().save_pretrained(folder)
    settings = {"kind": "masked_diffusion", "shift_logits": True, "attention_mask_4d": True, "prompt_format": "bos",
                "gen_length": 16}
    (folder / "decoding_lens.json").write_text(json.dumps(settings))
    return folder


def test_remote_code_needs_the_allow_list(remote_code_dir, monkeypatch):
    monkeypatch.setattr(models, "TRUST_REMOTE_CODE_ALLOWLIST", set(models.TRUST_REMOTE_CODE_ALLOWLIST))
    with pytest.raises(ModelLoadError, match=r"trust_remote_code.*allow-list"):
        load(str(remote_code_dir))

    models.allow_remote_code(remote_code_dir)
    adapter = load(str(remote_code_dir))
    assert adapter.kind == "masked_diffusion" and adapter.shift_logits
    assert adapter.mask_id == adapter.tokenizer.mask_token_id
    ids = torch.tensor([adapter.encode_prompt(TASK_TEXT) + [adapter.mask_id] * 4])
    shifted = adapter.logits(ids)
    raw = adapter.model(input_ids=ids).logits.float()  # the model's own, unshifted output
    assert shifted.shape == raw.shape
    torch.testing.assert_close(shifted[:, 1:], raw[:, :-1])  # position i is read from output i-1
    torch.testing.assert_close(shifted[:, 0], raw[:, 0])
    assert not torch.allclose(shifted, raw)

    # Left padding goes in as a 4D mask; real positions match the row alone (except the first real one,
    # whose shifted logits come from the pad before it, exactly as in Dream's own generate).
    short = adapter.encode_prompt("3=?\n") + [adapter.mask_id] * 4
    batch, mask = left_pad([ids[0].tolist(), short], adapter.tokenizer.pad_token_id)
    pad = batch.shape[1] - len(short)
    padded = adapter.logits(batch, attention_mask=mask)
    torch.testing.assert_close(padded[1, pad + 1:], adapter.logits(torch.tensor([short]))[0, 1:])


# --- DiffusionGemma (transformers-native block diffusion) --------------------------------------------------

def test_diffusion_gemma_loads_as_native_diffusion(tiny_diffusion_gemma_dir):
    adapter = load(str(tiny_diffusion_gemma_dir))  # no decoding_lens.json: kind from config.json's model_type
    assert adapter.kind == "native_diffusion" and adapter.mask_id is None and adapter.canvas_length == 8
    prompt = adapter.encode_prompt(TASK_TEXT)
    canvas = torch.randint(5, 25, (8,), generator=torch.Generator().manual_seed(0)).tolist()
    ids = torch.tensor([prompt + canvas])
    logits = adapter.logits(ids)
    assert logits.shape == (1, len(prompt) + 8, 32) and torch.isfinite(logits).all()
    assert (logits[:, : len(prompt)] == 0).all()  # the decoder only predicts the canvas
    with torch.no_grad():
        direct = adapter.model(input_ids=ids[:, : len(prompt)], decoder_input_ids=ids[:, len(prompt):]).logits
    torch.testing.assert_close(logits[:, len(prompt):], direct.float())

    # Left padding: the short row's canvas logits match the row alone.
    short = adapter.encode_prompt("3=?\n") + canvas
    batch, mask = left_pad([prompt + canvas, short], adapter.tokenizer.pad_token_id)
    padded = adapter.logits(batch, attention_mask=mask)
    torch.testing.assert_close(padded[1, -8:], adapter.logits(torch.tensor([short]))[0, -8:], atol=1e-5, rtol=1e-4)


# --- failures ----------------------------------------------------------------------------------------------

def test_unknown_id_names_what_was_tried():
    with pytest.raises(ModelLoadError) as err:
        load("no-such-model")
    message = str(err.value)
    assert "no-such-model" in message and "tiny-dllm" in message and "GSAI-ML/LLaDA-8B-Instruct" in message
    with pytest.raises(ModelLoadError, match="allow-list"):
        load("someone/unregistered-model")


def test_missing_path(tmp_path):
    missing = tmp_path / "nope" / "model"
    with pytest.raises(ModelLoadError, match="no model folder") as err:
        load(str(missing))
    assert str(missing) in str(err.value)


def test_corrupt_folder(tmp_path):
    (tmp_path / "config.json").write_text("{this is not json")
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        load(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load(str(empty))


def test_registry_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)  # read at import time by huggingface_hub
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"could not download Qwen/Qwen2\.5-1\.5B-Instruct") as err:
        load("Qwen/Qwen2.5-1.5B-Instruct")
    assert time.perf_counter() - start < 60  # generous: a Hub retry loop takes minutes, an offline check seconds
    assert "zoo model" in str(err.value)


# --- ids beyond the tokenizer (a padded vocabulary), registry by model type --------------------------------

def test_out_of_vocabulary_ids_render_as_placeholders(zoo):
    adapter = load("tiny-dllm")
    n = adapter.text_vocab
    assert n == len(adapter.tokenizer) and adapter.model.config.vocab_size > n  # the zoo's vocabulary is padded
    assert adapter.token_text([n, 151700, -1]) == [f"[id {n}]", "[id 151700]", "[id -1]"]
    assert adapter.token_text(torch.tensor([adapter.mask_id])) == ["[MASK]"]
    ids = adapter.tokenizer.encode("12", add_special_tokens=False)
    assert adapter.decode([*ids, 151700, *ids]) == "12[id 151700]12"


def test_padded_vocabulary_is_never_sampled(zoo):
    from decoding.diffusion import DiffusionParams, denoise

    adapter = load("tiny-dllm")
    n = adapter.text_vocab
    real = adapter.logits

    def favour_padding(input_ids, attention_mask=None, **kw):
        out = real(input_ids, attention_mask, **kw)
        out[..., n:] += 100.0  # the padded ids would win every argmax
        return out

    adapter.logits = favour_padding
    params = DiffusionParams(gen_length=16, block_length=16, steps=4, temperature=0.7)
    gen = denoise(adapter, TASK_TEXT, params, seed=0)
    try:
        while True:
            next(gen)
    except StopIteration as stop:
        canvas = stop.value.canvas[0]
    assert all(t < n for t in canvas)


@pytest.mark.parametrize("config, hub_id", [
    ({"model_type": "llada", "architectures": ["LLaDAModelLM"]}, "GSAI-ML/LLaDA-8B-Instruct"),
    ({"model_type": "Dream", "architectures": ["DreamModel"]}, "Dream-org/Dream-v0-Instruct-7B"),
    ({"architectures": ["DreamModel"]}, "Dream-org/Dream-v0-Instruct-7B"),
])
def test_registry_recognises_local_snapshots(config, hub_id):
    assert models.registry_match(config).hub_id == hub_id
    assert models.registry_match({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}) is None


def test_dream_registry_settings():
    dream = models.REGISTRY["Dream-org/Dream-v0-Instruct-7B"]
    assert dream.max_length == 2048 and dream.schedule == "dream"  # Dream's README: context 2048
    assert models.REGISTRY["GSAI-ML/LLaDA-8B-Instruct"].schedule is None
    source = Path(models.__file__).read_text()
    registry = source[source.index("REGISTRY: dict"):source.index("TRUST_REMOTE_CODE_ALLOWLIST:")]
    assert registry.count("ModelInfo(") == registry.count("# Sources:")  # every entry names its sources


def test_local_snapshot_of_a_registry_model_gets_its_settings(tmp_path, remote_code_dir, monkeypatch):
    monkeypatch.setattr(models, "TRUST_REMOTE_CODE_ALLOWLIST", set(models.TRUST_REMOTE_CODE_ALLOWLIST))
    config = json.loads((remote_code_dir / "config.json").read_text())
    config["model_type"] = "Dream"  # a local "Dream" snapshot without decoding_lens.json
    (remote_code_dir / "config.json").write_text(json.dumps(config))
    (remote_code_dir / "decoding_lens.json").unlink()
    with pytest.raises(ModelLoadError, match="allow-list"):  # the registry's trust_remote_code still needs consent
        load(str(remote_code_dir))
    models.allow_remote_code(remote_code_dir)
    adapter = load(str(remote_code_dir))
    assert adapter.settings["registry"] == "Dream-org/Dream-v0-Instruct-7B" and adapter.kind == "masked_diffusion"
    assert adapter.shift_logits and adapter.settings["attention_mask_4d"] and adapter.settings["schedule"] == "dream"
    assert (adapter.mask_id, adapter.eos_ids, adapter.max_length) == (151666, [151643, 151645], 2048)


def test_two_models_load_at_once_from_two_threads():
    """The app loads from several events at once (a page's load, a picker change): transformers' from_pretrained
    is not thread-safe across models ("Cannot copy out of meta tensor"), so loads are serialised."""
    import threading

    models.clear_cache()
    results: dict[str, object] = {}

    def load_one(name: str) -> None:
        try:
            results[name] = models.load(name)
        except Exception as e:  # recorded and asserted below
            results[name] = e

    threads = [threading.Thread(target=load_one, args=(n,)) for n in ("tiny-dllm", "tiny-ar", "tiny-prm")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(isinstance(r, models.Adapter) for r in results.values()), results
    models.clear_cache()


def test_the_default_precision_asked_for_by_name_is_the_same_adapter(zoo_dir):
    assert load(str(zoo_dir / "tiny-dllm"), "cpu") is load(str(zoo_dir / "tiny-dllm"), "cpu", dtype=torch.float32)
