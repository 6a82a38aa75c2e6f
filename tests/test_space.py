"""The Space: README.md's front matter agrees with requirements.txt; `@gpu` is a no-op without `spaces`."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def front_matter() -> tuple[dict[str, str], str]:
    text = (ROOT / "README.md").read_text()
    assert text.startswith("---\n"), "README.md must open with the Space's front matter"
    head, body = text[4:].split("\n---\n", 1)
    meta = {}
    for line in head.splitlines():
        key, _, value = line.partition(":")
        meta[key.strip()] = value.strip().strip('"')
    return meta, body


def test_front_matter_matches_requirements():
    meta, body = front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    pin = next(re.match(r"gradio==(\S+)", line).group(1) for line in (ROOT / "requirements.txt").read_text()
               .splitlines() if line.startswith("gradio=="))
    assert fnmatch.fnmatch(meta["sdk_version"], pin) and re.fullmatch(r"\d+\.\d+\.\d+", meta["sdk_version"])
    assert re.fullmatch(r"3\.\d+", meta["python_version"])
    # The body still opens with the title and the two commands.
    lines = [line for line in body.strip().splitlines() if line.strip()]
    assert lines[0] == "# Decoding Lens"
    commands = body[body.index("```bash"):]
    assert commands.splitlines()[1].startswith("make run") and commands.splitlines()[2].startswith("make test")


def test_gpu_decorator_is_a_no_op_without_spaces():
    from decoding import gpu

    def f(x):
        return x + 1

    if gpu.spaces is None:
        assert gpu.gpu(f) is f


def test_picker_lists_the_real_models_with_what_each_needs(monkeypatch):
    import app
    from decoding import models

    monkeypatch.setattr(app, "ALLOWED", ["tiny-dllm", *models.REGISTRY])
    monkeypatch.delenv("DECODING_LENS_ZOO", raising=False)
    labels = dict((spec, label) for label, spec in app._model_choices({"masked_diffusion", "native_diffusion",
                                                                       "causal"}))
    assert "zoo" in labels["tiny-dllm"]
    assert "GPU with ~16 GB for bf16 weights, runs its own modeling code" in labels["GSAI-ML/LLaDA-8B-Instruct"]
    assert "GPU with ~16 GB" in labels["Dream-org/Dream-v0-Instruct-7B"]
    assert "GPU with ~52 GB" in labels["google/diffusiongemma-26B-A4B-it"]
    status = app.model_status("GSAI-ML/LLaDA-8B-Instruct")  # offline here: the failure keeps the model's note
    assert "⚠" in status and "LLaDA 8B instruct" in status and "16 GB for bf16 weights" in status
