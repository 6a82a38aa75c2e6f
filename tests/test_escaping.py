"""Every string of a trace is untrusted: property-based (hypothesis) check that hostile markup in *every* string
field of a valid trace (meta, prompt, token texts, node texts and answers, selection answers / tally / reason,
the end's answer and summary) renders as text in every view, at several frames, and in the app's Markdown.

HTML outputs are parsed (html.parser): every start tag must be one our views emit, with only our attributes
(class, style, title), no event handler, no src / href; the text content shows the hostile strings literally.
Plotly figures: every string in the figure's JSON holds only plotly's own label tags (<br>, <sup>, <extra>).
Markdown lines: no unescaped link / image syntax, no raw tag, no bare URL (autolink).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import plotly.graph_objects as go
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decoding.fold import Fold
from decoding.trace import Meta, Node, RunEnd, RunStart, Selection, Tokens, Trace, Vocab
from viz import diffusion_view, voting_view
from viz.tokens import md_escape

PAYLOADS = [
    "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", '<a href="javascript:alert(1)">x</a>',
    "javascript:alert(1)", "![x](http://evil.example/x.png)", "[y](javascript:alert(1))", "&quot;", "&lt;b&gt;",
    '"', "'", "<b onmouseover='x'>", "</div>", "<style>*{display:none}</style>", "<svg/onload=alert(1)>",
    "http://evil.example", "www.evil.example", "a@evil.example", "\n# head", "<br>", "%{x}", "{", "\\", "`x`",
    "<iframe src=//evil.example>", "<!--", "-->", "<![CDATA[", "**b**", "|t|", "\r\n---\n",
]
HOSTILE = st.lists(st.sampled_from(PAYLOADS) | st.text(max_size=4), min_size=1, max_size=4).map("".join)

OUR_TAGS = {"div", "span", "b", "style", "code", "table", "thead", "tbody", "tr", "th", "td"}  # what the HTML views emit
OUR_ATTRS = {"class", "style", "title", "data-p", "data-s", "align"}  # data-p / data-s: a chip's position, a row's sample
PLOT_TAGS = {"br", "sup", "extra", "b"}  # plotly label markup our figures use


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def parse(markup: str) -> Tags:
    p = Tags()
    p.feed(markup)
    p.close()
    return p


def check_html(markup: str) -> str:
    """Only our tags and attributes; returns the text content."""
    p = parse(markup)
    for tag, attrs in p.tags:
        assert tag in OUR_TAGS, f"injected <{tag}> in {markup[:300]!r}"
        for name, value in attrs:
            assert name in OUR_ATTRS, f"injected attribute {name}={value!r} on <{tag}>"
            if name.startswith("data-"):
                assert (value or "").isdigit(), f"{name}={value!r}: positions and samples are numbers only"
            if name in ("class", "style"):
                assert "javascript" not in (value or "") and "url(" not in (value or ""), value
                if name == "class":
                    assert all(c.startswith(("dl-", "sp-", "answer-")) for c in (value or "").split()), value  # ours
    return "".join(p.text)


def check_figure(fig: go.Figure) -> None:
    def walk(value):
        if isinstance(value, str):
            for tag, attrs in parse(value).tags:
                assert tag in PLOT_TAGS and not attrs, f"injected <{tag} {attrs}> in a figure: {value[:200]!r}"
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk(json.loads(fig.to_json()))


def check_markdown(line: str) -> None:
    assert not parse(line).tags, f"raw tag in a Markdown line: {line!r}"
    assert not re.search(r"(?<!\\)\]\(|(?<!\\)!\[", line), f"link / image syntax in {line!r}"
    assert "://" not in line and "www." not in line.lower() and "@" not in line, f"autolink in {line!r}"
    assert "\n" not in line and "\r" not in line


def hostile_trace(d) -> tuple[Trace, list[str]]:
    """A valid diffusion / voting-shaped trace whose every string field is drawn from HOSTILE."""
    def h() -> str:
        return d.draw(HOSTILE)

    texts = [h() for _ in range(6)]
    meta = Meta(model=h(), method=d.draw(st.sampled_from(["diffusion", "voting"])),
                params={"strategy": h(), "k": 3, "steps": 3, h(): h(), "list": [h()]}, seed=1, task=h(),
                expected=h(), versions={h(): h()}, device=h(), dtype=h())
    trace = Trace(meta)
    prompt = h()
    trace.add(RunStart(method=h(), prompt=prompt, prompt_ids=[1], rows=2, length=6, mask_id=None))
    trace.add(Vocab(ids=list(range(6)), texts=texts))
    answers = [h(), h()]
    for step in (1, 2, 3):
        for seq in (0, 1):
            masked = [p for p in range(6) if p >= 2 * (step - 1)]
            trace.add(Tokens(seq=seq, step=step, action="propose", pos=masked, ids=[(p + seq) % 6 for p in masked],
                             conf=[0.2 + 0.2 * step] * len(masked), entropy=[1.0] * len(masked),
                             top_ids=[[(p + seq) % 6, (p + 1) % 6, (p + 2) % 6] for p in masked],
                             top_p=[[0.6, 0.3, 0.1]] * len(masked), block=0))
            done = [2 * (step - 1), 2 * (step - 1) + 1]
            trace.add(Tokens(seq=seq, step=step, action="commit", pos=done, ids=[(p + seq) % 6 for p in done]))
        if step == 2:
            trace.add(Tokens(seq=1, step=2, action="remask", pos=[0], ids=[1]))
    for seq in (0, 1):
        trace.add(Node(id=seq, seq=seq, step=3, status="finished", text=h(), answer=answers[seq], nfe=3))
    trace.add(Selection(round=1, nodes=[0, 1], answers=answers, tally=[(answers[0], 1), (answers[1], 1)],
                        answer=answers[0], reason=h(), nfe=6, agreement=["kaadda", "aaaadr"]))
    end = h()
    trace.add(RunEnd(nfe=6, seconds=0.5, answer=end, summary={h(): h(), "n": [h(), 1]}))
    return trace, [prompt, end, *answers, meta.expected]


def render_all(trace: Trace) -> None:
    fold = Fold(trace)
    frames = fold.frames
    for frame in sorted({0, frames // 2, frames}):
        state = fold.at(frame)
        for view in (diffusion_view, voting_view):
            for value in view.render(state, trace.meta).values():
                if isinstance(value, go.Figure):
                    check_figure(value)
                elif value is not None:
                    check_html(value)
            check_markdown(view.progress(state, trace.meta))
        check_figure(diffusion_view.render(state, trace.meta, position=1)["topk"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hostile_strings_render_as_text_in_every_view(data) -> None:
    trace, _ = hostile_trace(data)
    render_all(trace)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hostile_strings_show_literally(data) -> None:
    trace, (prompt, end, a0, a1, expected) = hostile_trace(data)
    state = Fold(trace).latest()
    canvas = check_html(diffusion_view.render(state, trace.meta)["canvas"])
    assert prompt.strip().replace("\n", "⏎") in canvas
    assert f"answer #{end}" in canvas  # the end's answer, as text
    tally = check_html(voting_view.render(state, trace.meta)["tally"])
    assert f"#{a0}" in tally and f"#{a1}" in tally
    status = diffusion_view.progress(state, trace.meta)
    assert md_escape(end) in status  # the Markdown-escaped form, which renders as the text itself
    assert md_escape(expected) in status or str(end).strip() == str(expected).strip()


def test_markdown_escape_renders_text_only() -> None:
    for payload in PAYLOADS:
        out = md_escape(payload)
        check_markdown(out)
        assert "<" not in out and ">" not in out.replace("&gt;", "")


@pytest.fixture(scope="module")
def app_module():
    import app

    return app


@pytest.mark.filterwarnings("ignore:cannot replay")
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                               HealthCheck.function_scoped_fixture])
@given(st.data())
def test_app_status_lines_escape_meta(app_module, tmp_path, data) -> None:
    """The Replay tab's info line (meta.model, meta.expected) and its error messages (a method name, a field
    name quoted by validation) are Markdown-escaped; the pop-up text is HTML-escaped."""
    app = app_module
    tabs = {name: app._tab(m) for name, m in app.methods.all_methods().items()}
    trace, _ = hostile_trace(data)
    trace.meta.method = data.draw(st.sampled_from(list(tabs)))
    path = tmp_path / "t.json"
    path.write_text(trace.dumps())
    out = app.upload_trace(tabs, str(path), {}, "test-session")
    info = out[2]
    assert info.startswith("▶ replaying"), info
    check_markdown(info)
    assert md_escape(trace.meta.model) in info
    for value in out[3 + len(tabs):]:
        if isinstance(value, str):
            check_html(value)
    other, extra = json.loads(trace.dumps()), json.loads(trace.dumps())
    other["meta"]["method"] = data.draw(HOSTILE)  # a method with no views: the message quotes its name
    extra["events"][0][data.draw(HOSTILE)] = 1  # an unknown field: validation quotes its name
    for doc in (other, extra):
        path.write_text(json.dumps(doc))
        status = app.upload_trace(tabs, str(path), {}, "test-session")[2]
        assert "cannot replay" in status
        check_markdown(status)
    app.VIEWS.drop_session("test-session")
