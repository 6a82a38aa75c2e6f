"""The HARP tab in headless Chromium on the shared app: pick tiny-ar, run an example chosen because it hesitates
(and, with the shipped zoo, flips a token and gets the answer plain decoding misses), select a hesitation point
and see the vanilla, reframed and mixed top-k side by side; screenshots at 1400 and 390 px go to test-output/."""

from __future__ import annotations

import re

from test_browser import OUT, RUN_TIMEOUT, open_page, sync_api

from decoding.models import ZOO_DIR

EXAMPLE = "63-49-6+49-25-11*5=?"  # measured (tests/test_harp.py): hesitates at position 6, the mix flips the token


def test_harp_hesitation_point(app_url: str, zoo_dir) -> None:
    with open_page(app_url) as page:
        page.locator("#model input").click()
        page.get_by_role("option", name=re.compile(r"^tiny-ar")).first.click()
        sync_api.expect(page.locator("#model-info")).to_contain_text("HARP", timeout=120_000)
        page.get_by_role("tab", name="HARP").click()
        page.wait_for_selector("#harp-prompt textarea", state="visible")
        page.locator("#harp-prompt textarea").fill(EXAMPLE)
        page.locator("#harp-run").click()
        status = page.locator("#harp-status")
        sync_api.expect(status).to_contain_text(re.compile("done|⚠"), timeout=RUN_TIMEOUT * 1000)
        text = status.inner_text()
        assert "done" in text and "hesitation" in text and "forward passes" in text, text
        output = page.locator("#harp-output")
        assert output.locator(".dl-row").count() == 2  # the HARP row and the plain row
        points = output.locator(".dl-harp-point")
        assert points.count() >= 1, output.inner_text()
        point = int(re.match(r"\d+", points.first.inner_text())[0])  # the first hesitation point
        box = page.locator("#harp-option-position input")
        box.fill(str(point))
        box.press("Enter")
        view = page.locator("#harp-point")
        sync_api.expect(view).to_contain_text(f"position {point} ·")
        for name in ("vanilla", "reframed", "mixed"):  # the three top-k lists side by side
            assert view.locator(f".dl-harp-{name} tr").count() >= 2, name
        assert view.locator(".dl-harp-verdict").count() == 1
        assert page.locator("#harp-strip [data-testid=plotly]").count() == 1
        assert "passes" in page.locator("#harp-cost").inner_text()
        if zoo_dir == ZOO_DIR:  # the shipped model: the mix flips the token at 6 and HARP answers right
            assert point == 6 and "flipped" in view.inner_text()
            assert "first split at position 6" in output.inner_text() and "#105 ✓" in output.inner_text()
        assert not page.js_errors, page.js_errors
        page.screenshot(path=str(OUT / "harp-1400.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 900})
        page.wait_for_timeout(500)  # the layout reflows (no condition to wait on: the same content)
        page.screenshot(path=str(OUT / "harp-390.png"), full_page=True)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 400, f"the page scrolls sideways at 390 px ({width} px wide)"
