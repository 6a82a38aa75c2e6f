"""The page in real headless Chromium (playwright): a diffusion run, the scrubber, a voting run; screenshots
go to test-output/ (mid-run and final). Skipped only when chromium (or playwright) is missing.

Written for a slow 2-core CI box: every wait is on a condition in the page with a generous time limit
(RUN_TIMEOUT for a run to finish), never a fixed sleep that assumes a speed; the only sleeps are the
polling interval of loops that watch the live stream."""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from pathlib import Path

import pytest
from test_app import ROOT

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("chromium is not installed (the Makefile installs Debian's chromium)", allow_module_level=True)

OUT = ROOT / "test-output"
SHIPPED_ZOO = ROOT / "examples" / "models" / "tiny-dllm" / "config.json"
RUN_TIMEOUT = 300  # seconds for one run to finish (a 2-core box under load is slow; a fast one takes ~10 s)
POLL = 0.1  # seconds between looks at the live page

# What the live page shows, in one round trip: the status line, and how many of the given plots are drawn
# (a plotly div with a non-zero height); a plot that drops out of the page during the run shows up here.
LIVE_STATE = """(ids) => ({
    status: document.querySelector(ids.status).innerText,
    plots: ids.plots.map(id => {
        const g = document.querySelector(`#${id} [data-testid=plotly]`);
        return g !== null && g.getBoundingClientRect().height > 0;
    }),
    masked: document.querySelector(ids.canvas + ' .dl-mask') !== null,
})"""


ROUND_OBSERVER = """() => {
    window.__dlRounds = [];
    const tally = document.querySelector('#voting-tally');
    const note = () => {
        const m = tally.innerText.match(/round (\\d+)/);
        if (m && window.__dlRounds[window.__dlRounds.length - 1] !== Number(m[1])) window.__dlRounds.push(Number(m[1]));
    };
    new MutationObserver(note).observe(tally, {subtree: true, childList: true, characterData: true});
}"""


STATUS_OBSERVER = """(selector) => {
    window.__dlStatus = [];
    const node = document.querySelector(selector);
    const note = () => window.__dlStatus.push(node.innerText);
    new MutationObserver(note).observe(node, {subtree: true, childList: true, characterData: true});
}"""


def watch_run(page, status: str, canvas: str, plots: list[str], midrun_png: Path) -> list[dict]:
    """Poll the page until the status says the run is over; return what each look saw. Takes one mid-run
    screenshot (the first look with masks on the canvas and a step counter in the status)."""
    seen: list[dict] = []
    shot = False
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        state = page.evaluate(LIVE_STATE, {"status": status, "canvas": canvas, "plots": plots})
        seen.append(state)
        if not shot and state["masked"] and "running" in state["status"] and "step" in state["status"]:
            page.screenshot(path=str(midrun_png), full_page=True)
            shot = True
        if "done" in state["status"] or "⚠" in state["status"]:
            return seen
        time.sleep(POLL)
    page.screenshot(path=str(OUT / f"timeout-{midrun_png.name}"), full_page=True)  # what the page showed
    raise AssertionError(f"the run did not finish within {RUN_TIMEOUT}s; last status: {seen[-1]['status']!r}")


@contextlib.contextmanager
def open_page(app_url: str, ready: str = "#model input"):
    """A fresh headless Chromium page on the shared app, loaded until `ready` shows; `page.js_errors` collects the
    page's errors (e.g. plotly throwing while a plot updates)."""
    OUT.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)  # every locator action and expect() on a slow box
            sync_api.expect.set_options(timeout=60_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.js_errors = errors
            page.goto(app_url, timeout=120_000)
            page.wait_for_selector(ready, timeout=120_000)
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(app_url: str):
    with open_page(app_url, "#diffusion-canvas") as opened:
        yield opened


def set_slider(page, elem_id: str, value: int, tries: int = 3) -> None:
    """Type a value into a slider's number box and wait until the box holds it (a loaded page may drop or
    reformat the first attempt: then type again)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    for attempt in range(tries):
        box.fill(str(value))
        box.press("Enter")
        try:
            sync_api.expect(box).to_have_value(str(value), timeout=10_000)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def canvas_html(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_html()


def test_diffusion_run_and_scrub(page) -> None:
    assert "tiny-dllm" in page.locator("#model input").input_value()  # the zoo dLLM is picked first
    page.get_by_text("L1: 13-2=?").first.click()  # an example problem
    sync_api.expect(page.locator("#diffusion-prompt textarea")).to_have_value("13-2=?", timeout=60_000)
    set_slider(page, "diffusion-steps", 80)  # one token per pass over the default 80 (5 blocks): seconds to watch
    sync_api.expect(page.locator("#diffusion-steps input[type=number]")).to_have_value("80")
    # The page itself notes every status it shows (a MutationObserver): however slowly this test polls (a
    # screenshot on a loaded box takes seconds), no streamed update is missed.
    page.evaluate(STATUS_OBSERVER, "#diffusion-status")
    page.locator("#diffusion-run").click()
    page.wait_for_selector("#diffusion-canvas .dl-mask", timeout=120_000)  # streaming: masked chips first
    plots = ["diffusion-entropy", "diffusion-topk", "diffusion-order"]
    seen = watch_run(page, "#diffusion-status", "#diffusion-canvas", plots, OUT / "diffusion-midrun.png")
    live = [text for text in page.evaluate("() => window.__dlStatus") if "running" in text]
    assert len(set(live)) >= 2, f"the page showed the run in progress only as {live}"
    # every streamed update carries the step counter; the plots never drop out of the page mid-run
    assert all(re.search(r"step \d+ / 80\b", text) for text in live), live[:5]
    assert all(all(s["plots"]) for s in seen), "a plot vanished during the run"
    assert not page.js_errors, page.js_errors
    final = canvas_html(page, "diffusion-canvas")
    assert "dl-chip" in final and "dl-mask" not in final
    if SHIPPED_ZOO.is_file():  # the trained zoo writes the answer line; a random test zoo may not
        assert re.search(r"answer #\d+", page.locator("#diffusion-canvas").inner_text())
    assert page.locator("#diffusion-entropy [data-testid=plotly] .heatmaplayer").count() == 1  # the real heatmap, drawn
    page.screenshot(path=str(OUT / "diffusion-final.png"), full_page=True)

    set_slider(page, "diffusion-scrub", 3)  # scrub back: masks come back
    page.wait_for_function("() => document.querySelector('#diffusion-canvas .dl-mask') !== null", timeout=60_000)
    sync_api.expect(page.locator("#diffusion-canvas")).to_contain_text("step 3")
    assert "step 3" in page.locator("#diffusion-canvas").inner_text()
    page.screenshot(path=str(OUT / "diffusion-scrubbed.png"), full_page=True)


def test_voting_rounds_appear_in_turn(page) -> None:
    page.get_by_role("tab", name="Voting").click()
    page.wait_for_selector("#voting-canvas", state="visible", timeout=60_000)
    set_slider(page, "voting-k", 3)
    set_slider(page, "voting-gen-length", 48)
    sync_api.expect(page.locator("#voting-k input[type=number]")).to_have_value("3")
    sync_api.expect(page.locator("#voting-gen-length input[type=number]")).to_have_value("48")
    # The page itself notes each round the tally shows (a MutationObserver): no round is missed however
    # slowly this test polls (a fast run can show round 1 for a fraction of a second).
    page.evaluate(ROUND_OBSERVER)
    page.locator("#voting-run").click()
    states = watch_run(page, "#voting-status", "#voting-canvas", ["voting-grid"], OUT / "voting-midrun.png")
    seen = page.evaluate("() => window.__dlRounds")
    sync_api.expect(page.locator("#voting-tally")).to_contain_text("final answer")
    live = [s for s in states if "running" in s["status"]]
    assert all(re.search(r"sample \d+ / 3 · step \d+", s["status"]) for s in live), [s["status"] for s in live][:5]
    assert all(all(s["plots"]) for s in states), "the agreement grid vanished during the run"
    assert not page.js_errors, page.js_errors
    assert "final answer" in page.locator("#voting-tally").inner_text()
    assert seen == sorted(seen) and len(seen) >= 2, f"rounds seen: {seen}"  # one after another, in order
    assert page.locator("#voting-canvas .dl-row").count() >= 2  # one canvas line per sample
    page.screenshot(path=str(OUT / "voting-final.png"), full_page=True)
