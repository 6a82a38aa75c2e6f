"""How smoothly a live run reaches the browser: `python -m viz.bench_browser [--url URL] [--batch 1 8]`.

Starts `python app.py` (or uses --url), drives headless Chromium with Playwright, and for each batch size runs
the diffusion tab on the zoo dLLM (prompt, answer length and steps below; everything else the tab's
defaults). A MutationObserver on the canvas notes when each update lands (an update = the canvas's text
changed); the Chrome DevTools protocol counts the bytes the page received meanwhile. Prints one markdown
table: canvas updates per second (first update to last live one), the longest gap between two updates, the
first update after the click, steps shown of the run's steps, bytes received per update, and how many plots
still showed their empty placeholder at an update past step 1 (a warm-up run loads the model first).

Run it on an idle box: it measures the whole stack (decoder, fold, views, Gradio, the browser), so other
work on the machine shows up in the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "19*2-1+17=?"

# The page notes each canvas update (its time and the step its header shows) and each plot redraw; the click
# on Run is noted in the capture phase, before Gradio sees it.
OBSERVE = """(tab) => {
    const canvas = document.querySelector(`#${tab}-canvas`);
    const now = () => { const el = canvas.querySelector('.dl-canvas'); return el ? el.textContent : ''; };
    const w = window.__bench = {click: null, updates: [], plots: 0, last: now()};
    document.querySelector(`#${tab}-run`).addEventListener('click', () => { w.click = performance.now(); }, true);
    new MutationObserver(() => {
        const text = now();
        if (w.click === null || text === w.last) return;
        w.last = text;
        const m = text.match(/step (\\d+)/);
        // plots still showing their "no ... yet" placeholder while the canvas is past its first step
        const empty = [...document.querySelectorAll(`[id^="${tab}-"] .js-plotly-plot`)]
            .filter(p => /no .* yet/.test(p.textContent)).length;
        w.updates.push([performance.now(), m ? Number(m[1]) : -1, empty]);
    }).observe(canvas, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(log: Path) -> tuple[subprocess.Popen, str]:
    import urllib.request

    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited; see {log}") from None
            time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"app.py did not answer within 120 s; see {log}")


def set_number(page, elem_id: str, value: int, tries: int = 4) -> None:
    """Type into a control's number box (opening the accordion that hides it) until it holds the value for a
    second: the tab's limits handler answers each change, and a late answer may reset an earlier box."""
    box = page.locator(f"#{elem_id} input[type=number]")
    if not box.is_visible():
        page.get_by_text("More parameters").first.click()
    for _ in range(tries):
        box.fill(str(value))
        box.press("Enter")
        page.wait_for_timeout(1000)
        if box.input_value() == str(value):
            return
    raise RuntimeError(f"{elem_id} did not take {value}: it shows {box.input_value()!r}")


def measure(page, cdp, tab: str, batch: int | None, gen: int | None, steps: int | None, timeout: float = 300) -> dict:
    """One run with these settings (None: leave the control as it is)."""
    page.locator(f"#{tab}-prompt textarea").fill(PROMPT)
    for name, value in (("batch", batch), ("gen-length", gen), ("steps", steps)):
        if value is not None:
            set_number(page, f"{tab}-{name}", value)
    page.evaluate(OBSERVE, tab)
    received = [0]

    def on_data(event: dict) -> None:
        received[0] += int(event.get("encodedDataLength") or event.get("dataLength") or 0)

    cdp.on("Network.dataReceived", on_data)
    page.locator(f"#{tab}-run").click()
    deadline = time.monotonic() + timeout
    status = page.locator(f"#{tab}-status")
    started = False  # the status still shows the previous run's summary until the first update
    while time.monotonic() < deadline:
        text = status.inner_text()
        started = started or "running" in text
        if (started and ("done" in text or "stopped" in text)) or "⚠" in text:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"batch {batch}: the run did not finish in {timeout}s")
    time.sleep(0.5)  # the last update lands
    cdp.remove_listener("Network.dataReceived", on_data)
    w = page.evaluate("() => window.__bench")
    times = [t for t, _, _ in w["updates"]]
    shown = {s for _, s, _ in w["updates"] if s >= 0}
    gaps = [b - a for a, b in itertools.pairwise(times)]
    empty = max((e for _, s, e in w["updates"] if s >= 2), default=0)
    live = max(len(times) - 1, 1)
    span = (times[-2] - times[0]) / 1000 if len(times) > 2 else float("nan")  # the last one is the final frame
    return {
        "raw": [[round(t - w["click"]), s] for t, s, _ in w["updates"]],
        "batch": batch,
        "updates": len(times),
        "per_s": (len(times) - 2) / span if span and span > 0 else float("nan"),
        "gap": max(gaps) / 1000 if gaps else float("nan"),
        "first": (times[0] - w["click"]) / 1000 if times else float("nan"),
        "steps": f"{len(shown)} of {steps}",
        "bytes": received[0] / live,
        "empty_plots": empty,
        "status": status.inner_text().strip()[:80],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running app (default: start python app.py)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--gen", type=int, default=80, help="answer length")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeat", type=int, default=1, help="runs per batch size (each one a row)")
    parser.add_argument("--dump", type=Path, help="write each run's updates ([ms after the click, step]) as JSON")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    proc = None
    url = args.url
    if url is None:
        proc, url = start_app(ROOT / "test-output" / "bench_browser_app.log")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            cdp = page.context.new_cdp_session(page)
            cdp.send("Network.enable")
            page.goto(url, timeout=120_000)
            page.wait_for_selector("#diffusion-canvas", timeout=120_000)
            measure(page, cdp, "diffusion", None, None, None)  # warm-up: loads the model (not measured)
            for batch in args.batch:
                for _ in range(args.repeat):
                    rows.append(measure(page, cdp, "diffusion", batch, args.gen, args.steps))
                    print({k: v for k, v in rows[-1].items() if k != "raw"}, file=sys.stderr)
            browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    if args.dump:
        args.dump.write_text(json.dumps([{k: r[k] for k in ("batch", "raw")} for r in rows]))
    print(f"zoo tiny-dllm, prompt `{PROMPT}`, answer length {args.gen}, {args.steps} steps, low_confidence\n")
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPU cores, load average {load:.2f} at the end\n")
    print("| batch | canvas updates/s | longest gap (s) | first update (s) | steps shown | bytes / update | "
          "empty plots past step 1 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['batch']} | {r['per_s']:.1f} | {r['gap']:.2f} | {r['first']:.2f} | {r['steps']} | "
              f"{r['bytes'] / 1000:.1f} kB | {r['empty_plots']} |")


if __name__ == "__main__":
    main()
