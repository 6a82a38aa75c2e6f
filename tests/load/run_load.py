"""The app under load: start `python app.py` on 127.0.0.1, run the locust users of tests/load/locustfile.py
(default 20 at once for 2 minutes, each submitting zoo-model diffusion runs one after another), and report runs
completed, p50 / p95 latency to the first streamed update, queue rejections and what the rejected users were told,
errors, and the server's RSS before and after. Prints a markdown table and writes it, with the command and the
machine, to docs/LOAD.md (--out).

    python tests/load/run_load.py                      # 20 users, 120 s, waits for a quiet box first
    python tests/load/run_load.py --users 3 --duration 10 --out /tmp/LOAD.md --no-wait   # a smoke run

Not part of the pytest suite (it takes minutes and wants the machine to itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "examples" / "models"
PAGE_BUSY = "This application is currently busy"  # what Gradio's page shows when the queue refuses a run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def wait_quiet(limit: float, every: float, max_wait: float) -> tuple[bool, float]:
    """Wait until the 1-minute load average is below `limit` (checked every `every` s, for `max_wait` s)."""
    deadline = time.monotonic() + max_wait
    while True:
        load = os.getloadavg()[0]
        if load < limit:
            return True, load
        if time.monotonic() >= deadline:
            return False, load
        print(f"load {load:.2f} >= {limit}: waiting {every:.0f} s", flush=True)
        time.sleep(every)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def page_message() -> str:
    """Gradio's own text for a refused run in the browser, read from the installed front end."""
    import gradio

    for js in (Path(gradio.__file__).parent / "templates" / "frontend" / "assets").glob("index-*.js"):
        text = js.read_text(errors="ignore")
        if PAGE_BUSY in text:
            start = text.index(PAGE_BUSY)
            return text[start:text.index("`", start)].strip()
    return "(not found in this Gradio's front end)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--duration", type=int, default=120, help="seconds")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "LOAD.md")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    ap.add_argument("--quiet-load", type=float, default=1.5)
    args = ap.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(__file__).relative_to(ROOT)),
                                                              *(argv if argv is not None else sys.argv[1:])])

    quiet, load_before = (True, os.getloadavg()[0]) if args.no_wait else wait_quiet(args.quiet_load, 30, 15 * 60)
    work = Path(tempfile.mkdtemp(prefix="decoding-lens-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log_path = work / "app.log"
    with open(log_path, "w") as log:
        app = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            if app.poll() is not None:
                raise SystemExit(f"the app exited with {app.returncode}: {log_path.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the app did not start in 180 s") from None
                time.sleep(0.5)
        rss_before = rss_mib(app.pid)
        runs = work / "runs.jsonl"
        model = "tiny-dllm" if (ZOO / "tiny-dllm" / "config.json").is_file() else os.environ.get(
            "DECODING_LENS_LOAD_MODEL", "tiny-dllm")
        locust_cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "tests" / "load" / "locustfile.py"),
                      "--headless", "-u", str(args.users), "-r", str(args.users), "-t", f"{args.duration}s",
                      "--stop-timeout", "120", "--host", url, "--only-summary", "--loglevel", "WARNING"]
        t0 = time.monotonic()
        result = subprocess.run(locust_cmd, check=False, cwd=ROOT, env={**env, "DECODING_LENS_LOAD_MODEL": model,
                                                           "DECODING_LENS_LOAD_OUT": str(runs)},
                                capture_output=True, text=True, timeout=args.duration + 300)
        wall = time.monotonic() - t0
        alive = app.poll() is None
        rss_after = rss_mib(app.pid) if alive else float("nan")
        # still answering after the load: one more run goes through once the runs queued by then are done
        # (they go on after their users left); how long that took is reported
        after_ok, drained = False, float("nan")
        t1 = time.monotonic()
        while alive and time.monotonic() - t1 < 300 and not after_ok:
            try:
                from gradio_client import Client

                final = Client(url, verbose=False, httpx_kwargs={"timeout": 60}).predict(
                    model=model, prompt="13-2=?", strategy="low_confidence", gen_length=32, steps=16,
                    block_length=16, temperature=0.0, seed=0, batch=1, api_name="/run_diffusion")
                after_ok, drained = "done" in str(final[4]), time.monotonic() - t1
            except Exception as e:
                print(f"after the load: {type(e).__name__}: {e}; retrying", file=sys.stderr, flush=True)
                time.sleep(5)
        alive = app.poll() is None
    finally:
        app.terminate()
        try:
            app.wait(15)
        except subprocess.TimeoutExpired:
            app.kill()
    records = [json.loads(line) for line in runs.read_text().splitlines()] if runs.exists() else []
    done = [r for r in records if r["outcome"] == "done"]
    messages = [r for r in records if r["outcome"] == "message"]
    rejected = [r for r in records if r["outcome"] == "rejected"]
    errors = [r for r in records if r["outcome"] == "error"]
    first = [r["first_s"] for r in done]
    total = [r["total_s"] for r in done]
    app_log = log_path.read_text(errors="ignore")
    tracebacks = app_log.count("Traceback")
    rejected_said = sorted({r["message"] for r in rejected})
    def p50_p95(values: list[float]) -> str:
        return f"{percentile(values, 0.5):.2f} s / {percentile(values, 0.95):.2f} s"

    rows = [
        ("users at once / duration", f"{args.users} / {args.duration} s (locust {wall:.0f} s: runs under way finish)"),
        ("runs submitted", len(records)),
        ("runs completed", len(done)),
        ("runs ended with a message (no result)", len(messages)),
        ("first streamed update, p50 / p95", p50_p95(first)),
        ("whole run, p50 / p95", p50_p95(total)),
        ("throughput", f"{len(done) / wall * 60:.1f} runs / min"),
        ("queue rejections", len(rejected)),
        ("what a rejected gradio_client user gets", "; ".join(f"`{m}`" for m in rejected_said) or "–"),
        ("what a rejected browser user sees (Gradio's page)", f"`{page_message()}`"),
        ("other errors", len(errors)),
        ("server RSS before → after", f"{rss_before:.0f} MiB → {rss_after:.0f} MiB"),
        ("server alive and answering after", f"yes (a new run done {drained:.0f} s after the users stopped)"
                                             if alive and after_ok else "NO"),
        ("tracebacks in the server log", tracebacks),
    ]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    cpu = platform.processor() or platform.machine()
    try:
        model_name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name"))
    except (OSError, StopIteration):
        model_name = cpu
    from importlib.metadata import version  # (importing locust here would monkey-patch this process)

    machine = (f"{model_name}, {os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
               f"{platform.system()} {platform.release()}; Python {platform.python_version()}, torch "
               f"{version('torch')}, gradio {version('gradio')}, locust {version('locust')}; 1-minute load "
               f"average before the run {load_before:.2f}"
               + ("" if quiet else f" (never below {args.quiet_load} in 15 minutes: the shared box was loaded)"))
    setup = (f"`python app.py` as shipped (queue `max_size=16`, `default_concurrency_limit=2`), model `{model}` on "
             f"CPU; each user is one gradio_client session submitting `/run_diffusion` (prompt `12+7-5*3=?`, "
             f"gen 64, steps 32, block 32, low confidence, batch 1) again 0.5–1.5 s after each run ends")
    doc = (f"# Load test\n\n`{command}`\n\n{setup}.\n\nMachine: {machine}.\n\n{table}\n")
    if errors:
        doc += "\nErrors:\n" + "\n".join(f"- {r['message']}" for r in errors[:10]) + "\n"
    if result.returncode not in (0, 1):  # locust exits 1 when any request failed
        doc += f"\nlocust exited with {result.returncode}: {result.stderr[-1500:]}\n"
    print(doc)
    args.out.write_text(doc)
    print(f"written to {args.out}; app log {log_path}", file=sys.stderr)
    return 0 if alive and after_ok and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
