"""`python tests/load/bench_upload_server.py`: a 50 MB trace uploaded through the running app, end to end.

Starts `python app.py` on 127.0.0.1, opens the page in headless Chromium (Debian's chromium + Playwright),
uploads a valid ~50 MB synthetic trace on the Replay tab, and measures: the time from choosing the file to the
replayed canvas, one scrub move, the server's RSS (before, with the trace replayed, and after the page closed
and Gradio's unload hook ran), and meanwhile another user's latency: a second gradio_client session calling a
cheap endpoint every 0.25 s, before and during the upload. `--rounds N` does it N times in turn (a new page
each time), to see whether the server's memory settles or grows. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def replay_once(browser, url: str, path: Path) -> dict[str, float]:
    """Open the page, upload the trace on the Replay tab, scrub to step 300, close the page. perf_counter times:
    t0 (the file chosen), upload (the browser's upload request done), status (the replay's answer shown),
    first_view (the canvas drawn), scrub (seconds to step 300)."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, timeout=120_000)
    page.get_by_role("tab", name="Replay a trace").click()
    time.sleep(2)
    uploaded: list[float] = []
    page.on("requestfinished", lambda r: uploaded.append(time.perf_counter()) if "/upload" in r.url else None)
    t0 = time.perf_counter()
    page.locator("#replay-file input[type=file]").set_input_files(str(path))
    page.wait_for_function("() => document.querySelector('#replay-status').innerText.includes('replaying')",
                           timeout=300_000)
    status = time.perf_counter()
    page.wait_for_selector("#replay-diffusion-canvas .dl-chip", timeout=300_000)
    first_view = time.perf_counter()
    box = page.locator("#replay-scrub input[type=number]")
    box.fill("300")
    box.press("Enter")
    page.wait_for_function("() => document.querySelector('#replay-diffusion-canvas').innerText"
                           ".includes('step 300 ·')", timeout=120_000)
    scrub = time.perf_counter() - first_view
    page.close()  # Gradio's unload hook frees the session's replay once the page's heartbeat stops
    return {"t0": t0, "upload": (uploaded[0] if uploaded else float("nan")) - t0, "status": status - t0,
            "first_view": first_view - t0, "scrub": scrub}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1,
                        help="upload, scrub and close this many times in turn (does memory settle or grow?)")
    args = parser.parse_args()
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from viz.bench_scrub import synthetic_trace

    path = Path(tempfile.mkdtemp()) / "large.json"
    path.write_text(synthetic_trace(690, 5, 690).dumps())
    size = path.stat().st_size / 2**20
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    # app.py runs under PYTHONMALLOC=malloc unless told otherwise: PYTHONMALLOC=pymalloc here compares
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        other = Client(url, verbose=False)
        latencies: list[tuple[float, float]] = []  # (when, seconds)
        stop = threading.Event()

        def ping() -> None:
            while not stop.is_set():
                t = time.perf_counter()
                other.predict(0, api_name="/scrub_replay")  # a cheap call: this session has nothing to scrub
                latencies.append((t, time.perf_counter() - t))
                time.sleep(0.25)

        pinger = threading.Thread(target=ping, daemon=True)
        rows = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--headless", "--no-sandbox", "--disable-gpu",
                                              "--disable-background-networking"])
            warm = browser.new_page()  # the first page load's own cost is not the baseline's
            warm.goto(url, timeout=120_000)
            warm.close()
            time.sleep(5)
            base = rss_mb(proc.pid)
            pinger.start()
            time.sleep(3)  # latency before the upload
            for round_ in range(args.rounds):
                row = replay_once(browser, url, path)
                row["loaded"] = rss_mb(proc.pid)
                closed, row["after"] = time.perf_counter(), []
                marks = (10, 30, 60) if round_ == args.rounds - 1 else (30,)
                for mark in marks:
                    time.sleep(max(0.0, closed + mark - time.perf_counter()))
                    row["after"].append(rss_mb(proc.pid))
                rows.append(row)
            stop.set()
            pinger.join(10)
            browser.close()
        before_up = [s for t, s in latencies if t < rows[0]["t0"]]
        print(f"trace {size:.1f} MB (690 steps x 5 samples x 690 positions); machine: {os.cpu_count()} cores; "
              f"server RSS before: {base:.0f} MB; other user's latency before the upload: {fmt(before_up)}")
        print("| round | first view after choosing the file (upload / answer shown / canvas) | scrub to step 300 | "
              "server RSS replayed / after the page closed (s: MB) | other user's latency during the upload: "
              "median / max (n) |")
        print("|---|---|---|---|---|")
        for i, row in enumerate(rows, 1):
            during = [s for t, s in latencies if row["t0"] <= t <= row["t0"] + row["first_view"]]
            marks = (10, 30, 60) if i == len(rows) else (30,)
            print(f"| {i} | {row['first_view']:.2f} s ({row['upload']:.2f} / {row['status']:.2f} / "
                  f"{row['first_view']:.2f}) | {row['scrub']:.2f} s | {row['loaded']:.0f} / "
                  f"{', '.join(f'{m} s: {a:.0f}' for m, a in zip(marks, row['after'], strict=True))} | "
                  f"{fmt(during)} ({len(during)}) |")
    finally:
        proc.terminate()
        proc.wait(10)


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} / {max(xs):.2f} s" if xs else "–"


if __name__ == "__main__":
    main()
