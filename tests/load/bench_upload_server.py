"""`python tests/load/bench_upload_server.py`: a 50 MB trace uploaded through the running app, end to end.

Starts `python app.py` on 127.0.0.1, opens the page in headless Chromium (Debian's chromium + Playwright),
uploads a valid ~50 MB synthetic trace on the Replay tab, and measures: the time from choosing the file to the
replayed canvas, one scrub move, the server's RSS (before, with the trace replayed, and after the page closed
and Gradio's unload hook ran), and meanwhile another user's latency: a second gradio_client session calling a
cheap endpoint every 0.25 s, before and during the upload. Prints a markdown table.
"""

from __future__ import annotations

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


def main() -> None:
    from gradio_client import Client
    from playwright.sync_api import sync_playwright

    from viz.bench_scrub import synthetic_trace

    path = Path(tempfile.mkdtemp()) / "large.json"
    path.write_text(synthetic_trace(690, 5, 690).dumps())
    size = path.stat().st_size / 2**20
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
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
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--headless", "--no-sandbox", "--disable-gpu",
                                              "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=120_000)
            page.get_by_role("tab", name="Replay a trace").click()
            time.sleep(2)
            base = rss_mb(proc.pid)
            pinger.start()
            time.sleep(3)  # latency before the upload
            t0 = time.perf_counter()
            page.locator("#replay-file input[type=file]").set_input_files(str(path))
            page.wait_for_function("() => document.querySelector('#replay-status').innerText.includes('replaying')",
                                   timeout=300_000)
            page.wait_for_selector("#replay-diffusion-canvas .dl-chip", timeout=300_000)
            first_view = time.perf_counter() - t0
            t1 = time.perf_counter()
            box = page.locator("#replay-scrub input[type=number]")
            box.fill("300")
            box.press("Enter")
            page.wait_for_function("() => document.querySelector('#replay-diffusion-canvas').innerText"
                                   ".includes('step 300 ·')", timeout=120_000)
            scrub = time.perf_counter() - t1
            loaded = rss_mb(proc.pid)
            stop.set()
            pinger.join(10)
            page.close()  # Gradio's unload hook frees the session's replay once the page's heartbeat stops
            browser.close()
        after, closed = [], time.perf_counter()
        for mark in (10, 30, 60):
            time.sleep(max(0.0, closed + mark - time.perf_counter()))
            after.append(rss_mb(proc.pid))
        before_up = [s for t, s in latencies if t < t0]
        during = [s for t, s in latencies if t0 <= t <= t0 + first_view]
        print(f"trace {size:.1f} MB (690 steps x 5 samples x 690 positions); machine: {os.cpu_count()} cores")
        print("| first view after choosing the file | scrub to step 300 | server RSS before / replayed / 10 s, 30 s, "
              "60 s after the page closed | other user's latency before: median / max | during the upload: "
              "median / max (n) |")
        print("|---|---|---|---|---|")

        def fmt(xs: list[float]) -> str:
            return f"{statistics.median(xs):.2f} / {max(xs):.2f} s" if xs else "–"

        print(f"| {first_view:.2f} s | {scrub:.2f} s | {base:.0f} / {loaded:.0f} / "
              f"{' / '.join(f'{a:.0f}' for a in after)} MB | {fmt(before_up)} | {fmt(during)} ({len(during)}) |")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
