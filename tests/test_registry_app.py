"""A method registered outside the app (tests/toy_method.py, named in DECODING_LENS_METHODS) gets a working tab:
its generated controls, its own views, Run / Stop / scrub / replay through the generic handlers, and the model
kind check. The app runs as `python app.py` with tests/ on PYTHONPATH."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from test_app import wait_done, wait_started

TOY = {"prompt": "13-2=?", "steps": 4, "direction": "backwards", "shout": False, "delay": 0.0, "limit": 400,
       "seed": 3, "mark": -1}
TEXT, PLOT, STATUS, SCRUB, FILE = range(5)  # /run_toy: the toy view's two panels, status, scrubber, trace file


def text(page: str) -> str:
    """What an HTML panel reads as (tags left out)."""
    return re.sub(r"<[^>]+>", "", page)


@pytest.fixture(scope="module")
def toy_url(app_url: str) -> str:
    """The shared app (tests/conftest.py) registers the toy method through DECODING_LENS_METHODS."""
    return app_url


def test_toy_tab_runs_through_the_generic_handlers(toy_url: str, zoo_dir: Path) -> None:
    client = Client(toy_url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/run_toy", "/stop_toy", "/scrub_toy"} <= set(api)
    names = [p["parameter_name"] for p in api["/run_toy"]["parameters"]]
    assert names == ["model", "prompt", "steps", "direction", "shout", "delay", "limit", "seed", "slow_motion", "mark"]
    components = {p["parameter_name"]: p["component"] for p in api["/run_toy"]["parameters"]}
    assert components | {"model": "Dropdown"} == {"model": "Dropdown", "prompt": "Textbox", "steps": "Slider",
                                                  "direction": "Dropdown", "shout": "Checkbox", "delay": "Slider",
                                                  "limit": "Number", "seed": "Number", "slow_motion": "Slider",
                                                  "mark": "Number"}

    out = client.predict(model=str(zoo_dir / "tiny-dllm"), **TOY, api_name="/run_toy")
    assert "done" in out[STATUS], out[STATUS]
    assert "?=2-31" in text(out[TEXT])  # the prompt (zoo-formatted, stripped) backwards
    assert out[SCRUB]["maximum"] == 4
    trace = json.loads(Path(out[FILE]).read_text())
    assert trace["meta"]["method"] == "toy" and trace["meta"]["params"]["steps"] == 4 and trace["meta"]["seed"] == 3
    assert trace["meta"]["task"] == "zoo" and trace["meta"]["expected"] == "11"

    # scrubbing goes through Fold.at: after step 1 only the first quarter is committed
    early = client.predict(1, api_name="/scrub_toy")[TEXT]
    assert "toy-mask" in early and "step 1" in early
    # the same trace replays in the Replay tab, in the toy's views
    replay = client.predict(handle_file(out[FILE]), api_name="/upload_trace")
    assert "replaying" in replay[1] and "Toy" in replay[1]
    assert any(isinstance(o, str) and "?=2-31" in text(o) for o in replay[2:])


def test_toy_tab_checks_inputs_and_model_kind(toy_url: str, zoo_dir: Path) -> None:
    client = Client(toy_url, verbose=False)
    bad = client.predict(model=str(zoo_dir / "tiny-dllm"), **{**TOY, "limit": 0}, api_name="/run_toy")
    assert "⚠" in bad[STATUS] and "limit" in bad[STATUS], bad[STATUS]  # pydantic's message, via describe_error
    causal = client.predict(model=str(zoo_dir / "tiny-ar"), **TOY, api_name="/run_toy")
    assert "⚠" in causal[STATUS] and "causal" in causal[STATUS] and "masked diffusion" in causal[STATUS], causal[STATUS]


def test_toy_stop(toy_url: str, zoo_dir: Path) -> None:
    client = Client(toy_url, verbose=False)
    job = client.submit(model=str(zoo_dir / "tiny-dllm"), **{**TOY, "steps": 60, "delay": 0.5}, api_name="/run_toy")
    wait_started(job)
    t0 = time.monotonic()
    stopped = client.predict(mark=-1, api_name="/stop_toy")
    wait_done(job, 30)
    assert time.monotonic() - t0 < 60 and "stopped" in stopped[STATUS], stopped[STATUS]  # generous: catches a hang
    assert json.loads(Path(stopped[FILE]).read_text())["events"][-1]["stopped"] is True
