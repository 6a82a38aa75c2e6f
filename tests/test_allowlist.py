"""The app's model list (decoding/allowlist.py): the picker offers it, runs check against it, and whatever else is
typed into the model field gets one message that names no path and does not say whether the path exists.
Python and the CLI still load local folders (tests/test_models.py, tests/test_cli.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from decoding import allowlist, models

ROOT = Path(__file__).resolve().parent.parent
# Typed into the model field: a folder that exists but holds no model, one that does not exist, a relative
# climb, the app's own folder, a real model folder under a name that is not on the list, a hub id not on it.
UNKNOWN = ["/etc", "/no/such/model", "../", str(ROOT), "examples/models/tiny-dllm", "someone/unlisted-model",
           "tiny-dllm/../../.."]


def test_unknown_specs_get_one_message_with_no_path(monkeypatch) -> None:
    monkeypatch.setenv(allowlist.ZOO_ENV, "/srv/zoo")
    monkeypatch.setenv(allowlist.ENV, " /srv/mine , org/model,")
    allowed = allowlist.allowed_models(["/srv/extra"])
    assert allowed[:3] == ["/srv/zoo/tiny-dllm", "/srv/zoo/tiny-ar", "/srv/zoo/tiny-prm"]
    assert {"tiny-dllm", "GSAI-ML/LLaDA-8B-Instruct", "/srv/mine", "org/model", "/srv/extra"} <= set(allowed)
    assert "" not in allowed
    messages = set()
    for spec in [*UNKNOWN, "", "   ", None, 3]:
        with pytest.raises(allowlist.ModelNotAllowed) as err:
            allowlist.resolve_for_app(spec, allowed)
        messages.add(str(err.value))
    assert messages == {allowlist.NOT_ALLOWED}
    assert "/" not in allowlist.NOT_ALLOWED and "\\" not in allowlist.NOT_ALLOWED
    assert isinstance(err.value, models.ModelLoadError)  # the app's existing handlers catch it
    assert allowlist.resolve_for_app(" tiny-dllm ", allowed) == "tiny-dllm"
    assert allowlist.resolve_for_app("/srv/extra", allowed) == "/srv/extra"


def test_public_message_hides_paths() -> None:
    text = "zoo model 'tiny-dllm' is not built: /home/x/zoo/tiny-dllm has no config.json (see ~/y, C:\\m\\n)"
    out = allowlist.public_message(text)
    assert "/home" not in out and "~/y" not in out and "C:\\" not in out and "tiny-dllm" in out
    keep = "could not download GSAI-ML/LLaDA-8B-Instruct (https://huggingface.co/GSAI-ML)"
    assert allowlist.public_message(keep) == keep


def test_listed_hub_ids_become_loadable_without_remote_code(monkeypatch) -> None:
    monkeypatch.setattr(models, "HUB_ALLOWLIST", set())
    allowlist.enable(["tiny-dllm", "GSAI-ML/LLaDA-8B-Instruct", "org/model", "/srv/mine", "./rel/dir"])
    assert {"org/model"} == models.HUB_ALLOWLIST
    assert "org/model" not in models.TRUST_REMOTE_CODE_ALLOWLIST


# ---------------------------------------------------------------- through the app (gradio_client)


@pytest.fixture(scope="module")
def listed_app(shared_app) -> tuple[str, Path, Path]:
    """The shared app (tests/conftest.py): one zoo-model copy on DECODING_LENS_MODELS, another on --allow-model."""
    return shared_app


def _run(client, model: str) -> str:
    from test_app import D_STATUS, diffusion_args

    return client.predict(**diffusion_args(model), api_name="/run_diffusion")[D_STATUS]


def test_app_refuses_unlisted_models_with_one_message(listed_app, zoo_dir: Path) -> None:
    from gradio_client import Client

    url, by_env, by_flag = listed_app
    client = Client(url, verbose=False)
    statuses = {spec: _run(client, spec) for spec in UNKNOWN}
    assert len(set(statuses.values())) == 1, statuses
    status = statuses["/etc"]
    assert "⚠" in status and "only the models in its model list" in status.lower(), status
    for spec in UNKNOWN:
        assert spec not in status
    assert "/" not in status and str(ROOT) not in status and "exist" not in status and "config" not in status

    # the listed folders run, from the environment and from the command line
    assert "done" in _run(client, str(by_env))
    assert "done" in _run(client, str(by_flag))

    # the picker offers the list (labels name no server folder) and nothing else
    config = json.loads(urllib.request.urlopen(url + "config", timeout=30).read())
    picker = next(c for c in config["components"] if c.get("props", {}).get("elem_id") == "model")
    values = [value for _, value in picker["props"]["choices"]]
    labels = [label for label, _ in picker["props"]["choices"]]
    assert values[0] == str(zoo_dir / "tiny-dllm") and str(by_env) in values and str(by_flag) in values
    assert not set(values) & set(UNKNOWN)
    assert all(str(zoo_dir) not in label and "/tmp" not in label for label in labels), labels
