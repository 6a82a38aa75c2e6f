"""The page a teacher drives (issue 10), in real headless Chromium, one page load: every tab of the registry
before, during and after a run at 1400 px and 390 px (screenshots in test-output/teaching-*.png); a live
diffusion run whose chips select a position (during and after the run) and whose EOS tail is folded; a replayed
trace with a wrong answer, a hostile token and a quote: the wrong-answer style, the folded tail that opens on
click, hover / tick labels that show text as text, and text contrast of at least 4.5:1. Skipped when chromium
(or playwright) is missing."""

from __future__ import annotations

import re
import time
from pathlib import Path

from test_browser import CHROMIUM, OUT, set_slider, sync_api

from decoding import methods
from decoding.trace import Meta, Node, RunEnd, RunStart, Tokens, Trace, Vocab

EVIL = '<img src=x onerror="window.__pwned=1">'
RUN_TIMEOUT = 120  # seconds for one tab's default run (a loaded 2-core box); past it the run is stopped
WIDE, NARROW = {"width": 1400, "height": 1000}, {"width": 390, "height": 844}
ZOO = {"masked_diffusion": "tiny-dllm", "causal": "tiny-ar", "prm": "tiny-prm"}  # a zoo model per kind


def wrong_trace() -> Trace:
    """13-2=? answered #9 (expected 11): 9 tokens, then 20 [EOS]; decoded right to left, 6 positions a pass;
    every proposal's top-3 is (the final token, '"', EVIL)."""
    final = [*"13-2=9\n#9", *["[EOS]"] * 20]
    texts = [*sorted(set(final)), '"', EVIL]
    ids = {t: i for i, t in enumerate(texts)}
    trace = Trace(Meta(model="tiny-dllm", method="diffusion", task="zoo", expected="11", seed=0,
                       params={"steps": 5, "strategy": "low_confidence", "gen_length": len(final)}))
    trace.add(RunStart(method="diffusion", prompt="13-2=?\n", prompt_ids=[], rows=1, length=len(final)))
    trace.add(Vocab(ids=list(ids.values()), texts=texts))
    order, done = list(range(len(final)))[::-1], set()
    for step in range(1, 6):
        pos = [p for p in range(len(final)) if p not in done]
        new = order[(step - 1) * 6: step * 6]
        trace.add(Tokens(seq=0, step=step, action="propose", pos=pos, ids=[ids[final[p]] for p in pos],
                         conf=[0.9 if p in new else 0.4 for p in pos], entropy=[0.2 if p in new else 1.1 for p in pos],
                         top_ids=[[ids[final[p]], ids['"'], ids[EVIL]] for p in pos],
                         top_p=[[0.6, 0.3, 0.1]] * len(pos)))
        trace.add(Tokens(seq=0, step=step, action="commit", pos=new, ids=[ids[final[p]] for p in new]))
        done |= set(new)
    trace.add(Node(id=0, seq=0, step=5, status="finished", text="13-2=9\n#9", answer="9", nfe=5))
    trace.add(RunEnd(nfe=5, seconds=0.1, answer="9"))
    return trace


# The lowest text contrast among the visible text of a panel: each element's colour against the first opaque
# background behind it (opacity multiplied in), WCAG relative luminance.
CONTRAST = """(selector) => {
    const rgb = (s) => (s.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
        for (let e = el; e; e = e.parentElement) {
            const c = rgb(getComputedStyle(e).backgroundColor);
            if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
        }
        return [255, 255, 255];
    };
    let worst = [99, ''];
    for (const el of document.querySelectorAll(selector + ' *')) {
        const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
        if (!own || !el.offsetParent) continue;
        const style = getComputedStyle(el);
        let opacity = 1;
        for (let e = el; e; e = e.parentElement) opacity *= Number(getComputedStyle(e).opacity);
        const bg = background(el), fg = rgb(style.color).slice(0, 3).map((c, i) => c * opacity + bg[i] * (1 - opacity));
        const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
        const ratio = (a + 0.05) / (b + 0.05);
        if (ratio < worst[0]) worst = [ratio, el.className + ': ' + el.textContent.slice(0, 30)];
    }
    return worst;
}"""


LABELS = """(selector) => {
    const node = document.querySelector(selector);
    window.__dlLabels = [node.innerText];
    new MutationObserver(() => window.__dlLabels.push(node.innerText))
        .observe(node, {subtree: true, childList: true, characterData: true});
}"""


# Any change of the panel's content: Gradio 6 patches a live HTML panel in place (chip text and classes change,
# the nodes stay) and replaces nodes only where the structure changes (a tail folds at the end).
REDRAWN = """(selector) => {
    window.__dlRedrawn = false;
    new MutationObserver((_, observer) => { window.__dlRedrawn = true; observer.disconnect(); })
        .observe(document.querySelector(selector), {subtree: true, childList: true, characterData: true,
                                                    attributes: true});
}"""


POINTER = """([type, selector]) => {  // a mouse event at the press's point (the chip's centre when pressed)
    const target = document.querySelector(selector);
    if (type === 'pointerdown') {
        const box = target.getBoundingClientRect();
        window.__dlPoint = {clientX: box.x + box.width / 2, clientY: box.y + box.height / 2};
    }
    target.dispatchEvent(new PointerEvent(type, {bubbles: true, pointerId: 1, pointerType: 'mouse', isPrimary: true,
                                                 button: 0, ...window.__dlPoint}));
}"""


# the slow-motion slider per tab (steps per second): the default runs take 8 (speculative, search) to 40 steps
SLOW_MOTION = {"diffusion": 16, "voting": 12, "speculative": 3, "search": 3, "harp": 20, "divergence": 12, "toy": 3}


def shoot(page, name: str, anchor: str, full: bool = False) -> None:
    """Screenshots at 1400 px (the whole page when `full`) and at 390 px (the page is resized and back), the
    viewport ones with `anchor` (the tab's status line, above its views) scrolled to the top."""
    for label, size in (("1400", WIDE), ("390", NARROW)):
        if size is NARROW:
            page.set_viewport_size(NARROW)
            page.wait_for_timeout(200)
        page.locator(anchor).evaluate("e => e.scrollIntoView({block: 'start'})")
        page.screenshot(path=str(OUT / f"teaching-{name}-{label}.png"), full_page=full and size is WIDE)
    page.set_viewport_size(WIDE)


def status_text(page, name: str) -> str:
    return page.locator(f"#{name}-status").inner_text()


def panel_boxes(page, *selectors: str) -> list[dict]:
    return [page.locator(s).bounding_box() for s in selectors]


def run_tab(page, name: str, during=None) -> tuple[str, bool]:
    """Run a tab with its defaults, screenshots before / during / after; `during(page)` runs while it is live.
    Returns the final status and whether the "during" screenshots caught the run still going (a default run
    can be over in a second)."""
    status = f"#{name}-status"
    shoot(page, f"{name}-before", status)
    page.locator(f"#{name}-run").click()
    deadline, caught, live_seen = time.monotonic() + RUN_TIMEOUT, False, False
    while time.monotonic() < deadline:
        text = status_text(page, name)
        if "running" in text and not live_seen:
            live_seen = True
            if during is not None:  # first, while the run is most likely still going
                during(page)
            shoot(page, f"{name}-during", status)
            caught = "running" in status_text(page, name)
        if re.search(r"done|stopped|⚠", text) and (live_seen or "✓" in text or "⚠" in text):
            break
        time.sleep(0.1)
    else:
        page.locator(f"#{name}-stop").click()
        sync_api.expect(page.locator(status)).to_contain_text("stopped")
    shoot(page, f"{name}-after", status, full=True)
    return status_text(page, name), caught


def test_teaching_page(app_url: str, tmp_path: Path) -> None:
    OUT.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport=WIDE)
        page.set_default_timeout(60_000)
        sync_api.expect.set_options(timeout=60_000)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
        page.goto(app_url, timeout=120_000)
        page.wait_for_selector("#diffusion-canvas", timeout=120_000)

        # every tab of the registry is on the page (those of DECODING_LENS_METHODS too: the toy method)
        titles = [t.strip() for t in page.get_by_role("tab").all_inner_texts()]
        assert {m.title for m in methods.all_methods().values()} <= set(titles), titles

        # 390 px: the title and the model's name are not cut off
        page.set_viewport_size(NARROW)
        page.wait_for_timeout(1000)  # the tab bar moves the tabs that do not fit into its "…" menu
        clipped = page.evaluate("""() => [...document.querySelectorAll('h1, #model input, [role=tab]')]
            .filter(e => e.checkVisibility({visibilityProperty: true}) && (e.scrollWidth > e.clientWidth + 1
                                             || e.getBoundingClientRect().right > window.innerWidth + 1))
            .map(e => e.tagName + ' ' + (e.value || e.textContent).slice(0, 40))""")
        assert clipped == [], clipped
        page.set_viewport_size(WIDE)
        page.wait_for_timeout(1000)

        def diffusion_live(page) -> None:  # during the run, a chip selects a sample's position
            # Pressed, then released only after a live redraw replaced the chip (a click was lost that way). The
            # pointer events go to the chip itself: a mouse held at a fixed point lands on another chip, or none,
            # when the layout moves under it (guesses change chip widths; the run's end folds the EOS tails), and
            # CI failed that way: at the end the chip moved 42 px up and the point was on no chip.
            chip = '#diffusion-canvas .dl-row[data-s="2"] [data-p="1"]'
            page.locator(chip).scroll_into_view_if_needed()
            page.evaluate(REDRAWN, "#diffusion-canvas")
            page.evaluate(POINTER, ["pointerdown", chip])
            # a redraw, or the run's end (then it is a plain click)
            page.wait_for_function("() => window.__dlRedrawn || /done|stopped/.test("
                                   "document.querySelector('#diffusion-status').innerText)", timeout=10_000)
            page.evaluate(POINTER, ["pointerup", chip])  # on the chip that replaced it
            sync_api.expect(page.locator("#diffusion-topk .gtitle")).to_contain_text("position 1 of sample 3 (selected)")
            sync_api.expect(page.locator("#diffusion-option-sample input")).to_have_value("3")

        registry = {m.title: m for m in methods.all_methods().values()}
        picked, caught_live = "tiny-dllm", []
        for title in [t for t in titles if t != "Replay a trace"]:
            page.get_by_role("tab", name=title).click()
            model = next(ZOO[k] for k in registry[title].kinds if k in ZOO) if title in registry else "tiny-dllm"
            if model != picked:  # the zoo model of a kind the tab runs on
                page.locator("#model input").click()
                page.get_by_role("option", name=re.compile(re.escape(model))).first.click()
                sync_api.expect(page.locator("#model-info")).to_contain_text("loaded")
                picked = model
            name = page.locator(".dl-run:visible").get_attribute("id").removesuffix("-run")
            if name == "diffusion":  # 4 samples side by side: a run to explore while it goes
                page.get_by_text("More parameters").locator("visible=true").first.click()
                set_slider(page, "diffusion-batch", 4)
                page.evaluate(LABELS, "#diffusion-scrub")  # every label the scrubber shows
            # slow motion, as a teacher would set it: each run lasts ~2.5 s, so the "during" screenshots are live
            set_slider(page, "slow-motion", SLOW_MOTION.get(name, 10))
            t0 = time.monotonic()
            status, caught = run_tab(page, name, diffusion_live if name == "diffusion" else None)
            print(f"{name}: {time.monotonic() - t0:.1f} s")
            assert "⚠" not in status, f"{title}: {status}"
            caught_live += [name] if caught else []
            if name == "voting":  # the tally and the passes meter: side by side at 1400 px, stacked at 390 px
                tally, meter = panel_boxes(page, "#voting-tally", "#voting-meter")
                assert abs(tally["y"] - meter["y"]) < 2 and meter["x"] > tally["x"] + tally["width"] - 2, (tally, meter)
                page.set_viewport_size(NARROW)
                page.wait_for_timeout(300)
                tally, meter = panel_boxes(page, "#voting-tally", "#voting-meter")
                assert meter["y"] >= tally["y"] + tally["height"] - 2 and tally["width"] > 300, (tally, meter)
                page.set_viewport_size(WIDE)
            if name == "diffusion":  # after the run: the tail is folded, and a chip click selects its position
                labels = page.evaluate("() => window.__dlLabels")
                assert any(re.search(r"Step \d+ \(live", t) for t in labels), labels  # it followed the live run
                canvas = page.locator("#diffusion-canvas")
                folds = canvas.locator(".dl-fold")
                assert folds.count() >= 1, (status, canvas.inner_text()[:300])
                assert re.search(r"EOS × \d+", folds.first.inner_text())
                canvas.locator('.dl-row[data-s="0"] .dl-chip[data-p]').nth(2).click()
                sync_api.expect(page.locator("#diffusion-topk .gtitle")).to_contain_text(
                    "position 2 of sample 1 (selected)")
                sync_api.expect(page.locator("#diffusion-option-position input")).to_have_value("2")

        # a replayed trace with a wrong answer
        page.get_by_role("tab", name="Replay a trace").click()
        path = tmp_path / "wrong.json"
        path.write_text(wrong_trace().dumps())
        page.locator("#replay-file input[type=file]").set_input_files(str(path))
        canvas = page.locator("#replay-diffusion-canvas")
        sync_api.expect(canvas).to_contain_text("answer #9")
        assert canvas.locator(".answer-wrong").count() == 2 and canvas.locator(".answer-correct").count() == 0
        assert "expected #11" in canvas.inner_text()
        fold = canvas.locator(".dl-fold")
        assert fold.count() == 1 and fold.inner_text().startswith("EOS × 20")
        tail = canvas.locator(".dl-tail > span")
        assert tail.count() == 20 and not tail.first.is_visible()
        fold.click()
        sync_api.expect(tail.first).to_be_visible()
        shoot(page, "replay-wrong", "#replay-status")
        fold.click()
        sync_api.expect(tail.first).to_be_hidden()
        worst = page.evaluate(CONTRAST, "#replay-diffusion-canvas")
        assert worst[0] >= 4.5, worst

        # a chip selects its position; the labels show the quote and the hostile token as text
        canvas.locator('.dl-chip[data-p="6"]').click()
        topk = page.locator("#replay-diffusion-topk")
        sync_api.expect(topk.locator(".gtitle")).to_contain_text("position 6 of sample 1 (selected)")
        ticks = topk.locator(".ytick text").all_text_contents()
        assert '"' in ticks and EVIL in ticks, ticks
        assert "&quot;" not in topk.inner_text()
        assert page.evaluate("() => document.querySelectorAll('img[src=x]').length === 0 && !window.__pwned")
        shoot(page, "replay-selected", "#replay-status")
        assert not errors, errors
        print(f"runs caught live in the screenshots: {caught_live}")
        assert caught_live, "slow motion: no run was still going after its during screenshots"
        browser.close()
