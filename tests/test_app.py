"""The app over its API (gradio_client): streaming, Stop, bad inputs, trace replay, tabs that do not touch
each other's runs.

The app runs as `python app.py` in a subprocess on a free 127.0.0.1 port, with the zoo from the `zoo_dir`
fixture (DECODING_LENS_ZOO tells the app where it is). Every tab is built from the method registry, so its
API takes the method's parameters by name: /run_<method>(model, prompt, <parameters>, seed, <view options>)
returns (*the view's panels, status, scrubber, trace file).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402 -- after the skip check

ROOT = Path(__file__).resolve().parent.parent
EVIL = "<img src=x onerror=alert(1)>"

# Output positions of /run_<method> and /stop_<method>: the view's PANELS, then status, scrubber, trace file.
DIFFUSION_PANELS = ("canvas", "entropy", "topk", "order")
VOTING_PANELS = ("tally", "meter", "grid", "canvas", "topk")
D_CANVAS, D_STATUS, D_SCRUB, D_FILE = 0, len(DIFFUSION_PANELS), len(DIFFUSION_PANELS) + 1, len(DIFFUSION_PANELS) + 2
V_CANVAS, V_STATUS, V_FILE = VOTING_PANELS.index("canvas"), len(VOTING_PANELS), len(VOTING_PANELS) + 2
# /upload_trace: scrubber, status, then every method's panels (diffusion's first); /scrub_replay: the panels.
R_SCRUB, R_STATUS, R_CANVAS = 0, 1, 2


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


def launch_app(zoo_dir: Path, log: Path, *args: str, **env: str) -> tuple[subprocess.Popen, str]:
    """`python app.py` in a subprocess: exactly what a user runs, with the env vars a Space would set."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "DECODING_LENS_ZOO": str(zoo_dir), "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", **env}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py", *args], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, proc)
    except BaseException:
        proc.terminate()
        proc.wait(10)
        raise
    return proc, url


def diffusion_args(model: str, prompt: str = "13-2=?", gen: int = 32, steps: int = 16, block: int = 16,
                   **more) -> dict:
    return {"model": model, "prompt": prompt, "strategy": "low_confidence", "gen_length": gen, "steps": steps,
            "block_length": block, "temperature": 0.0, "seed": 0, "batch": 1, **more}


def long_voting_args(model: str) -> dict:
    # dVoting one sample at a time, K=9, each sample on the fixed schedule of 112 passes (steps=112): at least
    # 4 samples (the earliest stop) × 112 passes, whatever the model, if not stopped
    return {"model": model, "prompt": "13-2=?", "method": "dvoting", "k": 9, "tau": 0.01, "agreement": 1.0,
            "temperature": 0.6, "gen_length": 112, "block_length": 112, "steps": 112, "batched": False, "seed": 42}


def wait_done(job, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not job.done():
        assert time.monotonic() < deadline, "the run did not finish in time"
        time.sleep(0.05)


def wait_started(job, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not job.outputs():  # wait for the run to be under way
        assert time.monotonic() < deadline, "the run did not start in time"
        assert not job.done(), f"the run ended before streaming anything: {job.result()}"
        time.sleep(0.05)


def test_run_streams_intermediate_updates(app_url: str, dllm: str) -> None:
    client = Client(app_url, verbose=False)
    # a batch of 2 over 112 steps: long enough to stream on a fast machine too
    job = client.submit(**diffusion_args(dllm, gen=112, steps=112, block=112, batch=2), api_name="/run_diffusion")
    wait_done(job, 240)
    outputs = job.outputs()
    assert len(outputs) >= 4, f"only {len(outputs)} updates: the run is not streamed"
    final = outputs[-1]
    assert sum("dl-mask" in o[D_CANVAS] for o in outputs[:-1]) >= 2  # intermediate canvases, masks still there
    canvas, status, trace_path = final[D_CANVAS], final[D_STATUS], final[D_FILE]
    assert "dl-mask" not in canvas and "done" in status
    trace = json.loads(Path(trace_path).read_text())
    assert trace["events"][-1]["kind"] == "end" and trace["meta"]["expected"] == "11"
    assert trace["meta"]["method"] == "diffusion" and trace["meta"]["task"] == "zoo"
    assert len({e["step"] for e in trace["events"] if e["kind"] == "tokens" and e["action"] == "commit"}) == 112
    assert final[D_SCRUB]["maximum"] == 112


def test_stop_ends_a_long_run_early(app_url: str, dllm: str) -> None:
    client = Client(app_url, verbose=False)
    # majority@9 in one batch on the fixed schedule: 112 batched passes, 9 × 112 counted, if not stopped
    args = {**long_voting_args(dllm), "method": "majority"}
    job = client.submit(**args, api_name="/run_voting")
    wait_started(job)
    t0 = time.monotonic()
    stopped = client.predict(api_name="/stop_voting")
    wait_done(job, 30)
    # Promptness is measured in work, not seconds (a loaded box is slow): fewer than half the passes ran (below);
    # the wall-clock bound is only there to catch a hang.
    assert time.monotonic() - t0 < 120, "Stop did not end the run"
    canvas, status, trace_path = stopped[V_CANVAS], stopped[V_STATUS], stopped[V_FILE]
    assert "stopped" in status and "stopped by the user" in canvas
    events = json.loads(Path(trace_path).read_text())["events"]
    assert events[-1]["kind"] == "end" and events[-1]["stopped"] is True
    assert events[-1]["nfe"] < 9 * 112 // 2
    # the worker is free again: a short run goes through
    assert "done" in client.predict(**diffusion_args(dllm), api_name="/run_diffusion")[D_STATUS]


def test_stop_and_run_in_one_tab_leave_the_other_tab_alone(app_url: str, dllm: str) -> None:
    """One Client = one session: a voting run, then a diffusion run and its Stop in the same session; the voting
    run goes on to the end and writes its own trace."""
    client = Client(app_url, verbose=False)
    voting = client.submit(**long_voting_args(dllm), api_name="/run_voting")
    wait_started(voting)
    diffusion = client.submit(**diffusion_args(dllm, gen=112, steps=112, block=112, batch=8),
                              api_name="/run_diffusion")  # Run in another tab: the voting run must go on
    wait_started(diffusion)
    stopped = client.predict(api_name="/stop_diffusion")
    assert "stopped" in stopped[D_STATUS]
    voting_was_running = not voting.done()
    assert client.predict(api_name="/stop_diffusion")[D_STATUS] == "Nothing is running."
    wait_done(voting, 240)
    final = voting.outputs()[-1]
    assert voting_was_running, "the voting run ended before the diffusion run was stopped: nothing was tested"
    assert "done" in final[V_STATUS] and "stopped" not in final[V_STATUS], final[V_STATUS]
    trace = json.loads(Path(final[V_FILE]).read_text())
    assert trace["meta"]["method"] == "voting" and trace["meta"]["params"]["k"] == 9
    assert trace["events"][-1]["kind"] == "end" and not trace["events"][-1].get("stopped")  # (defaults are left out)
    d_trace = json.loads(Path(stopped[D_FILE]).read_text())
    assert d_trace["meta"]["method"] == "diffusion" and d_trace["events"][-1]["stopped"] is True
    assert final[V_FILE] != stopped[D_FILE]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"prompt": "   "}, "prompt is empty"),
        ({"steps": 7}, "divide evenly"),
        ({"gen": 32, "block": 24}, "multiple of block_length"),
        ({"prompt": "1" + "+1" * 80 + "=?"}, "context"),
        ({"model": "/no/such/model"}, "only the models in its model list"),  # tests/test_allowlist.py: no path
    ],
)
def test_bad_inputs_give_a_message(app_url: str, dllm: str, args: dict, message: str) -> None:
    client = Client(app_url, verbose=False)
    model = args.pop("model", dllm)
    out = client.predict(**diffusion_args(model, **args), api_name="/run_diffusion")
    status = out[D_STATUS].replace("\\", "")  # (Markdown-escaped: gen\_length)
    assert message in status.lower() or message in status, out[D_STATUS]
    assert "⚠" in out[D_STATUS]
    assert client.predict(0, api_name="/scrub_diffusion")  # still answering


def test_uploaded_trace_replays(app_url: str, dllm: str, tmp_path: Path) -> None:
    client = Client(app_url, verbose=False)
    final = client.predict(**diffusion_args(dllm), api_name="/run_diffusion")
    trace = json.loads(Path(final[D_FILE]).read_text())
    # a hostile token text must come back escaped: the first token committed at step 1 gets it
    first = next(e for e in trace["events"] if e["kind"] == "tokens" and e["action"] == "commit")
    vocab = next(e for e in trace["events"] if e["kind"] == "vocab" and first["ids"][0] in e["ids"])
    vocab["texts"][vocab["ids"].index(first["ids"][0])] = EVIL
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    out = client.predict(handle_file(str(path)), api_name="/upload_trace")
    scrub, canvas, status = out[R_SCRUB], out[R_CANVAS], out[R_STATUS]  # (the State output is not part of the API)
    assert "replaying" in status and "dl-chip" in canvas and "dl-mask" not in canvas
    assert scrub["maximum"] == 16
    # scrub back to step 1: masks reappear
    early = client.predict(1, api_name="/scrub_replay")[0]
    assert "dl-mask" in early and "<img" not in early and "&lt;img" in early

    bad = tmp_path / "bad.json"
    for content in ("{not json", json.dumps({"format": "decoding-lens-trace", "version": 1, "meta": {},
                                             "events": [{"kind": "step", "step": "x"}]}),
                    json.dumps({**trace, "events": [{"kind": "tokens", "seq": 0}]})):
        bad.write_text(content)
        out = client.predict(handle_file(str(bad)), api_name="/upload_trace")
        assert "cannot replay" in out[R_STATUS], out[R_STATUS]
    # a valid trace of a method this app has no views for
    bad.write_text(json.dumps({**trace, "meta": {**trace["meta"], "method": "no-such-method"}}))
    out = client.predict(handle_file(str(bad)), api_name="/upload_trace")
    assert "cannot replay" in out[R_STATUS] and "no-such-method" in out[R_STATUS], out[R_STATUS]
