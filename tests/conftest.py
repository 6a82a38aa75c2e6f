"""Shared fixtures: the zoo (shipped or built tiny in a tmp dir) and a tiny random DiffusionGemma."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # plain `pytest` (no package install, no pytest config) must find `decoding`
    sys.path.insert(0, str(ROOT))

# One torch thread in every test: tiny models on the 2-core box are faster with one, and two threads were ~10x
# slower under load (../shared/NOTES.md). A test that needs more sets them itself.
torch.set_num_threads(1)

ZOO_DIR = ROOT / "examples" / "models"
ZOO_NAMES = ("tiny-dllm", "tiny-ar", "tiny-prm")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory) -> Path:
    """examples/models when all three zoo models are there, else the three trained for 2 steps in a tmp dir
    (random-ish weights in exactly the shipped format)."""
    if all((ZOO_DIR / name / "config.json").is_file() for name in ZOO_NAMES):
        return ZOO_DIR
    from decoding.zoo.train import train

    out = tmp_path_factory.mktemp("zoo")
    for name in ZOO_NAMES:
        train(name, steps=2, batch=4, lr=1e-3, warmup=1, seed=0, device="cpu", out=out / name, log_every=1000)
    return out


@pytest.fixture(scope="session")
def shared_app(zoo_dir: Path, tmp_path_factory):
    """One `python app.py` for every test that talks to the app (a start costs ~10 s on the 2-core box): the
    zoo from `zoo_dir`, the toy method of tests/toy_method.py (DECODING_LENS_METHODS), and two copies of the zoo
    dLLM on the operator's model list, one by DECODING_LENS_MODELS and one by `--allow-model`.
    Yields (url, folder listed by the env var, folder listed by the flag)."""
    import os
    import shutil

    from test_app import launch_app

    tmp = tmp_path_factory.mktemp("app")
    by_env, by_flag = tmp / "env" / "tiny-dllm", tmp / "flag" / "tiny-dllm"
    for folder in (by_env, by_flag):
        shutil.copytree(zoo_dir / "tiny-dllm", folder)
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    proc, url = launch_app(zoo_dir, tmp / "app.log", "--allow-model", str(by_flag), DECODING_LENS_METHODS="toy_method",
                           PYTHONPATH=path, DECODING_LENS_MODELS=str(by_env))
    try:
        yield url, by_env, by_flag
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def app_url(shared_app) -> str:
    return shared_app[0]


@pytest.fixture(scope="session")
def dllm(zoo_dir: Path) -> str:
    return str(zoo_dir / "tiny-dllm")


@pytest.fixture(scope="session")
def tiny_diffusion_gemma_dir(tmp_path_factory) -> Path:
    """A randomly initialised ~56k-parameter DiffusionGemmaForBlockDiffusion + the zoo's char tokenizer,
    saved with save_pretrained (canvas_length 8). Only text is used; the vision tower is required by the
    architecture, so it is made tiny too."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    from decoding.zoo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    text = {
        "vocab_size": 32, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "global_head_dim": 16,
        "max_position_embeddings": 256, "sliding_window": 64, "layer_types": ["sliding_attention", "full_attention"],
        "num_experts": 2, "top_k_experts": 1, "moe_intermediate_size": 32,  # every DiffusionGemma layer is MoE
        "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
    }
    vision = {"model_type": "gemma4_vision", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
              "num_attention_heads": 2, "num_key_value_heads": 2, "head_dim": 8, "position_embedding_size": 64}
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=8,
                                  boi_token_id=None, eoi_token_id=None, image_token_id=None)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = DiffusionGemmaForBlockDiffusion(config)
    out = tmp_path_factory.mktemp("diffusion-gemma")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
