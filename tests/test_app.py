"""The app over its API (gradio_client): streaming, Stop, bad inputs, trace replay.

The app runs as `python app.py` in a subprocess on a free 127.0.0.1 port, with the zoo from the `zoo_dir`
fixture (DECODING_LENS_ZOO tells the app where it is).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file

ROOT = Path(__file__).resolve().parent.parent
EVIL = "<img src=x onerror=alert(1)>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited early with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"app did not answer at {url} within {timeout}s")


@pytest.fixture(scope="session")
def app_url(zoo_dir: Path, tmp_path_factory) -> Iterator[str]:
    """`python app.py` in a subprocess: exactly what a user runs, with the env vars a Space would set."""
    port = free_port()
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "DECODING_LENS_ZOO": str(zoo_dir), "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def dllm(zoo_dir: Path) -> str:
    return str(zoo_dir / "tiny-dllm")


def diffusion_args(model: str, prompt: str = "13-2=?", gen: int = 32, steps: int = 16, block: int = 16) -> list:
    # model, prompt, strategy, gen_length, steps, block_length, temperature, threshold, entropy_threshold, seed, batch
    return [model, prompt, "low_confidence", gen, steps, block, 0.0, 0.9, 0.3, 0, 1]


def wait_done(job, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not job.done():
        assert time.monotonic() < deadline, "the run did not finish in time"
        time.sleep(0.05)


def test_run_streams_intermediate_updates(app_url: str, dllm: str) -> None:
    client = Client(app_url, verbose=False)
    args = diffusion_args(dllm, gen=112, steps=112, block=112)
    args[-1] = 8  # a batch of 8: long enough to stream on a fast machine too
    job = client.submit(*args, api_name="/run_diffusion")
    wait_done(job, 240)
    outputs = job.outputs()
    assert len(outputs) >= 4, f"only {len(outputs)} updates: the run is not streamed"
    final = outputs[-1]
    assert sum("dl-mask" in o[0] for o in outputs[:-1]) >= 2  # intermediate canvases, masks still there
    canvas, status, trace_path = final[0], final[4], final[6]
    assert "dl-mask" not in canvas and "done" in status
    trace = json.loads(Path(trace_path).read_text())
    assert trace["events"][-1]["kind"] == "end" and trace["meta"]["expected"] == 11
    assert sum(e["kind"] == "step" for e in trace["events"]) == 112


def test_stop_ends_a_long_run_early(app_url: str, dllm: str) -> None:
    client = Client(app_url, verbose=False)
    # dVoting, one sample at a time, K=9, tiny τ (one token per pass): ~9 × 112 forward passes if not stopped
    args = [dllm, "13-2=?", "dvoting", 9, 0.01, 1.0, 0.6, 112, 112, False, 42]
    job = client.submit(*args, api_name="/run_voting")
    deadline = time.monotonic() + 120
    while not job.outputs():  # wait for the run to be under way
        assert time.monotonic() < deadline
        time.sleep(0.05)
    t0 = time.monotonic()
    stopped = client.predict(api_name="/stop_voting")
    wait_done(job, 30)
    assert time.monotonic() - t0 < 15, "Stop did not end the run promptly"
    canvas, status, trace_path = stopped[0], stopped[4], stopped[6]
    assert "stopped" in status and "stopped by the user" in canvas
    events = json.loads(Path(trace_path).read_text())["events"]
    assert events[-1]["kind"] == "end" and events[-1]["stopped"] is True
    assert events[-1]["nfe"] < 9 * 112 // 2
    # the worker is free again: a short run goes through
    assert "done" in client.predict(*diffusion_args(dllm), api_name="/run_diffusion")[4]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"steps": 7}, "divide evenly"),
        ({"gen": 32, "block": 24}, "multiple of block_length"),
        ({"prompt": "1" + "+1" * 80 + "=?"}, "context"),
        ({"model": "/no/such/model"}, "cannot"),
    ],
)
def test_bad_inputs_give_a_message(app_url: str, dllm: str, args: dict, message: str) -> None:
    client = Client(app_url, verbose=False)
    model = args.pop("model", dllm)
    out = client.predict(*diffusion_args(model, **args), api_name="/run_diffusion")
    assert message in out[4].lower() or message in out[4], out[4]
    assert "⚠" in out[4]
    assert client.predict(0, 0, api_name="/scrub_diffusion")  # still answering


def test_uploaded_trace_replays(app_url: str, dllm: str, tmp_path: Path) -> None:
    client = Client(app_url, verbose=False)
    final = client.predict(*diffusion_args(dllm), api_name="/run_diffusion")
    trace = json.loads(Path(final[6]).read_text())
    # a hostile token text must come back escaped
    step = next(e for e in trace["events"] if e["kind"] == "step")
    step["tokens"][0][0] = EVIL
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    out = client.predict(handle_file(str(path)), api_name="/upload_trace")
    scrub, canvas, status = out[0], out[1], out[7]  # (the State output is not part of the API)
    assert "replaying" in status and "dl-chip" in canvas and "dl-mask" not in canvas
    assert scrub["maximum"] == 16
    # scrub back to step 1: masks reappear
    early = client.predict(1, api_name="/scrub_replay")[0]
    assert "dl-mask" in early and "<img" not in early and "&lt;img" in early

    bad = tmp_path / "bad.json"
    for content in ("{not json", json.dumps({"format": "decoding-lens-trace", "version": 1, "meta": {},
                                             "events": [{"kind": "step", "step": "x"}]})):
        bad.write_text(content)
        out = client.predict(handle_file(str(bad)), api_name="/upload_trace")
        assert "cannot replay" in out[7]
