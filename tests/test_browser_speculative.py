"""The speculative (MTP) tab in headless Chromium on the shared app: pick tiny-ar, run the first example (a draft
gets rejected there), and see accepted, rejected and bonus tokens drawn differently; screenshots at 1400 and
390 px go to test-output/."""

from __future__ import annotations

import re

from test_browser import OUT, RUN_TIMEOUT, page, set_slider, sync_api  # noqa: F401 (page: the shared page fixture)

from decoding.models import ZOO_DIR

EXAMPLE = "26-19+16-15=?"  # measured: one pass rejects a drafted digit (decoding/speculative.py EXAMPLES)

STYLES = """() => {
    const style = (sel) => { const el = document.querySelector(sel); if (!el) return null;
        const s = getComputedStyle(el); return [s.backgroundColor, s.textDecorationLine]; };
    return {acc: style('#speculative-rounds .sp-acc'), rej: style('#speculative-rounds .sp-rej'),
            bonus: style('#speculative-rounds .sp-bonus')};
}"""


def test_speculative_drafts_drawn(page, zoo_dir) -> None:  # noqa: F811 (the imported fixture)
    page.locator("#model input").click()
    page.get_by_role("option", name=re.compile(r"^tiny-ar")).first.click()
    sync_api.expect(page.locator("#model-info")).to_contain_text("Speculative", timeout=120_000)
    page.get_by_role("tab", name="Speculative (MTP)").click()
    page.wait_for_selector("#speculative-prompt textarea", state="visible")
    page.locator("#speculative-prompt textarea").fill(EXAMPLE)
    set_slider(page, "speculative-draft-length", 3)
    page.locator("#speculative-run").click()
    status = page.locator("#speculative-status")
    sync_api.expect(status).to_contain_text(re.compile("done|⚠"), timeout=RUN_TIMEOUT * 1000)
    text = status.inner_text()
    assert "done" in text and "passes saved" in text, text
    rounds = page.locator("#speculative-rounds")
    assert rounds.locator(".sp-row").count() >= 2  # one row per forward pass
    assert rounds.locator(".sp-acc").count() >= 1 and rounds.locator(".sp-bonus").count() >= 2
    trained = zoo_dir == ZOO_DIR
    if trained:  # the shipped heads reject exactly one drafted digit on this example
        assert rounds.locator(".sp-rej").count() >= 1
        assert page.locator("#speculative-rejections .sp-table tr").count() >= 2
    styles = page.evaluate(STYLES)
    assert styles["acc"][0] != styles["bonus"][0]  # drawn differently: colours, and shape as well
    if trained:
        assert len({styles["acc"][0], styles["rej"][0], styles["bonus"][0]}) == 3
        assert styles["rej"][1] == "line-through" and styles["acc"][1] == "none"
    assert page.locator("#speculative-by-position [data-testid=plotly]").count() == 1
    assert not page.js_errors, page.js_errors
    page.screenshot(path=str(OUT / "speculative-1400.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 900})
    page.wait_for_timeout(500)  # the layout reflows (no condition to wait on: the same content)
    page.screenshot(path=str(OUT / "speculative-390.png"), full_page=True)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 400, f"the page scrolls sideways at 390 px ({width} px wide)"
