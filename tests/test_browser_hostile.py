"""A hostile trace in real headless Chromium: every string field of a valid trace holds markup; uploaded through
the Replay tab and scrubbed, nothing of it becomes markup in the page: the title is unchanged, no element is
injected (no img[src=x], no on* attribute, no new script / iframe / link), the text shows literally, and the
page makes no request to any host but the app's. Then a trace that fails validation and quotes hostile names in
its error message: the same checks on the message. Skipped when chromium (or playwright) is missing."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_browser import CHROMIUM, OUT, set_slider, sync_api

from decoding.trace import Meta, Node, RunEnd, RunStart, Selection, Tokens, Trace, Vocab

IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"
LINK = "![x](http://evil.example/x.png)"
A = '<a href="javascript:window.__pwned=3">click</a>'
TITLE = "<title>pwned</title>"


def evil(name: str) -> str:
    """A field's hostile text, naming the field so the test can find it in the page."""
    return f"{name}:{IMG}{SCRIPT}{LINK}{A}{TITLE}&quot;<iframe src=//evil.example/{name}>"


def hostile_trace() -> Trace:
    meta = Meta(model=evil("model"), method="diffusion", task=evil("task"), expected=evil("expected"), seed=3,
                params={"strategy": evil("strategy"), "steps": 3, evil("key"): evil("param")},
                versions={evil("v"): evil("version")})
    trace = Trace(meta)
    texts = [evil(f"tok{i}") for i in range(4)]
    trace.add(RunStart(method=evil("start"), prompt=evil("prompt"), prompt_ids=[1], rows=1, length=4))
    trace.add(Vocab(ids=[0, 1, 2, 3], texts=texts))
    for step in (1, 2, 3):
        masked = [p for p in range(4) if p >= step - 1]
        trace.add(Tokens(seq=0, step=step, action="propose", pos=masked, ids=masked, conf=[0.5] * len(masked),
                         entropy=[1.0] * len(masked), top_ids=[[p, (p + 1) % 4] for p in masked],
                         top_p=[[0.7, 0.3]] * len(masked)))
        trace.add(Tokens(seq=0, step=step, action="commit", pos=[step - 1], ids=[step - 1]))
    trace.add(Node(id=0, seq=0, step=3, text=evil("text"), answer=evil("answer"), nfe=3))
    trace.add(Selection(round=1, nodes=[0], answers=[evil("answers")], tally=[(evil("tally"), 1)],
                        answer=evil("choice"), reason=evil("reason"), nfe=3))
    trace.add(RunEnd(nfe=3, seconds=0.1, answer=evil("end"), summary={evil("sk"): evil("summary")}))
    return trace


INJECTED = """() => ({
    title: document.title,
    img: document.querySelectorAll('img[src=x], img[src$="x.png"]').length,
    handlers: [...document.querySelectorAll('*')].filter(el => [...el.attributes].some(a => a.name.startsWith('on')))
        .map(el => el.outerHTML.slice(0, 120)),
    scripts: document.querySelectorAll('script').length,
    frames: document.querySelectorAll('iframe').length,
    links: [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))
        .filter(h => /javascript:|evil/.test(h)),
    pwned: window.__pwned === undefined ? null : window.__pwned,
})"""


@pytest.fixture(scope="module")
def hostile_page(app_url: str):
    OUT.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        sync_api.expect.set_options(timeout=60_000)
        page.goto(app_url, timeout=120_000)
        page.wait_for_selector("#diffusion-canvas", timeout=120_000)
        yield page
        browser.close()


def test_hostile_trace_replays_as_text(hostile_page, app_url: str, tmp_path: Path) -> None:
    page = hostile_page
    app = urlsplit(app_url).netloc
    before = page.evaluate(INJECTED)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))  # from here on: the upload and the replay
    page.get_by_role("tab", name="Replay a trace").click()
    path = tmp_path / "hostile.json"
    path.write_text(hostile_trace().dumps())
    page.locator("#replay-file input[type=file]").set_input_files(str(path))
    sync_api.expect(page.locator("#replay-status")).to_contain_text("replaying")
    sync_api.expect(page.locator("#replay-diffusion-canvas")).to_contain_text("prompt:")
    scrub = page.locator("#replay-scrub input[type=number]")
    sync_api.expect(scrub).to_be_enabled()
    sync_api.expect(scrub).to_have_value("3")
    set_slider(page, "replay-scrub", 1)  # scrub back: a state with masks and guesses
    sync_api.expect(page.locator("#replay-diffusion-canvas")).to_contain_text("step 1 ·")
    assert page.locator("#replay-diffusion-canvas .dl-mask").count() >= 1
    set_slider(page, "replay-scrub", 3)
    sync_api.expect(page.locator("#replay-diffusion-canvas")).to_contain_text("step 3 ·")
    page.screenshot(path=str(OUT / "replay-hostile.png"), full_page=True)

    after = page.evaluate(INJECTED)
    assert after["title"] == before["title"] == "Decoding Lens"
    assert after["img"] == 0 and after["handlers"] == [] and after["frames"] == 0 and after["links"] == []
    assert after["scripts"] == before["scripts"] and after["pwned"] is None
    status = page.locator("#replay-status").inner_text()
    assert f"model:{IMG}" in status, status  # the text itself, shown literally
    canvas = page.locator("#replay-diffusion-canvas").inner_text()
    for name in ("prompt", "end"):
        assert f"{name}:{IMG}{SCRIPT}{LINK}" in canvas, canvas[:500]
    assert not [u for u in requests if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != app], \
        [u for u in requests if app not in u]

    # a file that fails validation, its error quoting hostile names: the message is text too
    bad = json.loads(hostile_trace().dumps())
    bad["events"][0][evil("field")] = 1
    path.write_text(json.dumps(bad))
    page.locator("#replay-file").get_by_label("Clear").click()  # the file box takes a new file once cleared
    page.locator("#replay-file input[type=file]").set_input_files(str(path))
    sync_api.expect(page.locator("#replay-status")).to_contain_text("cannot replay")
    status = page.locator("#replay-status").inner_text()
    assert f"field:{IMG}" in status, status
    after = page.evaluate(INJECTED)
    assert after["img"] == 0 and after["handlers"] == [] and after["frames"] == 0 and after["pwned"] is None
    assert after["title"] == "Decoding Lens" and after["scripts"] == before["scripts"]
    assert not [u for u in requests if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != app]
    page.screenshot(path=str(OUT / "replay-hostile-error.png"), full_page=True)
