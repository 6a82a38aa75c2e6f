"""The teaching page in real headless Chromium, one page load: a typed out-of-range parameter gets a note that
names the typed value (not a silent clamp), the tabs open with their intro and measured examples, and a default
dVoting run on the voting tab's first example shows a later sample that kept positions (its agreement grid). Screenshots in
test-output/ (controls-*.png)."""

from __future__ import annotations

import time

import pytest
from test_browser import CHROMIUM, OUT, POLL, RUN_TIMEOUT

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def type_into(page, elem_id: str, value: str) -> None:
    """Type into a slider's number box and leave it (Tab): the browser clamps it, the page's check sees the raw value."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(value)
    box.press("Tab")


def test_controls_examples_and_default_dvoting(app_url: str) -> None:
    OUT.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        sync_api.expect.set_options(timeout=60_000)
        page.goto(app_url, timeout=120_000)
        page.wait_for_selector("#diffusion-steps input[type=number]", timeout=120_000)

        # the page's load sets the steps slider to the values that run: answer 80 / block 16 = 5 blocks
        steps = page.locator("#diffusion-steps input[type=range]")
        sync_api.expect(steps).to_have_attribute("step", "5")
        sync_api.expect(page.locator("#diffusion-intro")).to_contain_text("What to look for")

        # an out-of-range typed value: a note naming it, and the value that runs instead
        type_into(page, "diffusion-steps", "1000000")
        notes = page.locator("#diffusion-notes")
        sync_api.expect(notes).to_contain_text("1000000 is above 80")
        sync_api.expect(page.locator("#diffusion-steps input[type=number]")).to_have_value("80")
        type_into(page, "diffusion-steps", "42")
        sync_api.expect(notes).to_contain_text("42 is not a multiple of 5")
        sync_api.expect(page.locator("#diffusion-steps input[type=number]")).to_have_value("40")
        page.screenshot(path=str(OUT / "controls-note.png"), full_page=True)

        # the voting tab: its first example is the one whose first samples disagree; default settings
        page.get_by_role("tab", name="Voting").click()
        page.wait_for_selector("#voting-run", state="visible")
        sync_api.expect(page.locator("#voting-intro")).to_contain_text("kept")
        sync_api.expect(page.get_by_text("samples disagree").first).to_be_visible()
        page.locator("#voting-run").click()
        deadline = time.monotonic() + RUN_TIMEOUT
        while "done" not in (status := page.locator("#voting-status").inner_text()) and "⚠" not in status:
            assert time.monotonic() < deadline, f"the voting run did not finish: {status!r}"
            time.sleep(POLL * 5)
        assert "done" in status, status
        # the agreement grid: a later sample's row has kept cells (not re-decoded); its cells' text names the category
        rows = page.locator("#voting-grid .js-plotly-plot").evaluate(
            "g => g.data[0].y.map((y, i) => [y, Array.from(g.data[0].text[i]).filter(t => t.endsWith('kept')).length])")
        kept = {y: n for y, n in rows if y.startswith("sample") and n > 0}
        assert kept and "sample 1" not in kept, rows
        page.screenshot(path=str(OUT / "controls-voting-default.png"), full_page=True)
        browser.close()
