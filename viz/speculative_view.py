"""The speculative-decoding tab's views (the view-module contract of viz/panels.py): the output with its
pending draft and the savings meter, one row per forward pass with that pass's draft laid over the output,
the verifier's top-k at each first rejection, acceptance by draft position, tokens per pass.

Reads the trace as decoding/speculative.py writes it (docs/CONTRACTS.md): seq 0 is the output (`accept` for
draft tokens that matched, `propose` + `commit` for the bonus token, which carries head 1's top-k), and
every draft is its own sequence (seq = the pass that proposed it; `propose` with each head's confidence,
then `accept` / `reject` from the pass that verified it). Pure: a decoding.fold.State and the Meta; no torch,
no gradio. Token text is escaped (`viz.tokens.label`).

Colours (text #111 on each background; contrast ratios checked in tests/test_speculative.py, all ≥ 4.5:1)
come from the Okabe-Ito palette, which stays distinct under the common colour-vision deficiencies; shape
backs colour up: rejected tokens are struck through, the bonus token is underlined, the pending draft is
dashed.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import plotly.graph_objects as go

from decoding.fold import MAX_POSITIONS, State
from decoding.trace import Meta
from viz.heatmap import empty_figure, figure
from viz.panels import Panel
from viz.tokens import end_line, label, md_escape

ACCEPTED_BG = "#009E73"  # bluish green: a draft token head 1 agreed with
REJECTED_BG = "#E69F00"  # orange: the first rejected draft token and the ones after it
BONUS_BG = "#56B4E9"  # sky blue: head 1's own token, written by every pass
TEXT = "#111111"
CONTEXT_FG = "#555555"  # earlier output in a pass's row
MAX_ROUND_ROWS = 60  # pass rows drawn at most (the latest ones)
MAX_REJECTION_ROWS = 30

STYLE = (
    "<style>"
    ".sp\\-tok{display:inline-block;min-width:0.75em;padding:0 2px;margin:1px 0;border-radius:3px;text-align:center;"
    "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:14px;line-height:1.45;border:1px solid transparent}"
    f".sp\\-acc{{background:{ACCEPTED_BG};color:{TEXT};border-color:#006e50}}"
    f".sp\\-rej{{background:{REJECTED_BG};color:{TEXT};border-color:#a36f00;text-decoration:line-through}}"
    f".sp\\-bonus{{background:{BONUS_BG};color:{TEXT};border-color:#1f7fb8;text-decoration:underline;font-weight:700}}"
    f".sp\\-draft{{background:#ffffff;color:{TEXT};border:1px dashed #555}}"
    f".sp\\-ctx{{color:{CONTEXT_FG};background:transparent}}"
    ".sp\\-rows{overflow-x:auto;max-height:420px;overflow-y:auto}"
    ".sp\\-row{white-space:nowrap}"
    ".sp\\-step{display:inline-block;width:4.6em;font-size:12px;color:#333}"
    ".sp\\-sep{font-size:12px;color:#333;margin:0 4px}"
    ".sp\\-legend span.sp\\-tok{margin-right:2px}.sp\\-legend{font-size:13px;margin-bottom:6px}"
    ".sp\\-meter{font-size:13px;margin-top:6px}"
    ".sp\\-table{border-collapse:collapse;font-size:13px}.sp\\-table td,.sp\\-table th{padding:2px 8px;"
    "border-bottom:1px solid #e5e7eb;text-align:left}"
    "</style>"
)

PANELS = [
    Panel("output", "html", "Output",
          placeholder='<div style="color:#555;padding:12px 0">The answer appears here, several tokens per forward '
                      "pass, when the run starts.</div>"),
    Panel("rounds", "html", "Drafts, pass by pass", placeholder=""),
    Panel("by_position", "plot", "Acceptance by draft position", placeholder="acceptance by draft position",
          height=240, row="stats"),
    Panel("per_pass", "plot", "Tokens per forward pass", placeholder="tokens per forward pass", height=240,
          row="stats"),
    Panel("rejections", "html", "Verifier's top-k at each first rejection", placeholder=""),
]
OPTIONS: list = []


@dataclass
class PassView:
    """What one forward pass did, read back from the folded state."""

    step: int
    written: list[int] = field(default_factory=list)  # output positions it wrote
    accepted: list[int] = field(default_factory=list)  # positions of the verified draft that matched
    rejected: list[int] = field(default_factory=list)  # first rejected and beyond
    draft: list[int] = field(default_factory=list)  # positions of the draft verified
    bonus: int | None = None  # position of head 1's own token


def passes(state: State) -> list[PassView]:
    """One PassView per forward pass folded so far (step 1 .. state.step)."""
    out = state.seqs.get(0)
    if out is None:
        return []
    by_step: dict[int, list[int]] = {}
    for p, s in out.commit_step.items():
        by_step.setdefault(s, []).append(p)
    views = []
    for s in range(1, min(state.step, MAX_POSITIONS) + 1):
        pv = PassView(s, written=sorted(by_step.get(s, [])))
        draft = state.seqs.get(s - 1) if s >= 2 else None
        if draft is not None:
            pv.draft = [p for p, g in enumerate(draft.guess) if g is not None]
            pv.accepted = [p for p in pv.draft if draft.ids[p] is not None]
            pv.rejected = [p for p in pv.draft if draft.ids[p] is None]
        extra = [p for p in pv.written if p not in set(pv.accepted)]
        pv.bonus = extra[0] if extra else None
        views.append(pv)
    return views


def pending_draft(state: State) -> list[int]:
    """Positions of the draft the latest pass proposed and no pass has verified yet."""
    seq = state.seqs.get(state.step) if state.step >= 1 else None
    return [p for p, g in enumerate(seq.guess) if g is not None] if seq is not None else []


def _chip(text: str, cls: str, title: str = "") -> str:
    t = f' title="{html.escape(title)}"' if title else ""
    return f'<span class="sp-tok {cls}"{t}>{label(text)}</span>'


def _heading(text: str) -> str:
    return f'<div style="font-size:13px;font-weight:600;margin-bottom:4px">{html.escape(text)}</div>'


def _conf(v: float | None) -> str:
    return "?" if v is None else f"{v:.3f}"


def legend() -> str:
    return ('<div class="sp-legend">' + _chip("accepted", "sp-acc") + " draft token head 1 agreed with · "
            + _chip("rejected", "sp-rej") + " first rejected and beyond · " + _chip("bonus", "sp-bonus")
            + " head 1's own token · " + _chip("draft", "sp-draft") + " next draft, not yet verified</div>")


def _output_chips(state: State, views: list[PassView]) -> str:
    out = state.seqs[0]
    accepted = {p for v in views for p in v.accepted}
    chips = []
    for p, t in enumerate(out.ids):
        if t is None:
            continue
        cls = "sp-acc" if p in accepted else "sp-bonus"
        how = f"accepted draft token (pass {out.commit_step.get(p)})" if p in accepted else \
            f"bonus token of pass {out.commit_step.get(p)}, head 1 p={_conf(out.conf[p])}"
        chips.append(_chip(state.text(t), cls, f"position {p}: {how}"))
    draft = state.seqs.get(state.step)
    for k, p in enumerate(pending_draft(state)):
        chips.append(_chip(state.text(draft.guess[p]), "sp-draft",
                           f"position {p}: drafted by head {k + 2}, p={_conf(draft.conf[p])}"))
    return "".join(chips)


def meter(views: list[PassView]) -> str:
    """Passes so far, tokens written, tokens per pass, and the passes saved against plain decoding (one pass per
    token)."""
    n_pass = len(views)
    tokens = sum(len(v.written) for v in views)
    drafted = sum(len(v.draft) for v in views if v.draft)
    acc = sum(len(v.accepted) for v in views)
    rate = f" · {acc} of {drafted} drafted tokens accepted ({acc / drafted:.0%})" if drafted else ""
    per = f"{tokens / n_pass:.2f}" if n_pass else "–"
    return (f'<div class="sp-meter"><b>{n_pass}</b> forward passes wrote <b>{tokens}</b> tokens ({per} per pass); '
            f"plain decoding needs {tokens}: <b>{tokens - n_pass}</b> passes saved{rate}</div>")


def output_html(state: State, views: list[PassView]) -> str:
    if 0 not in state.seqs:
        return ""
    return STYLE + legend() + f'<div class="sp-line">{_output_chips(state, views)}</div>' + meter(views)


def _row(state: State, v: PassView, last: bool) -> str:
    out = state.seqs[0]
    draft = state.seqs.get(v.step - 1) if v.step >= 2 else None
    start = min(v.written or v.draft or [0])
    cells = [f'<span class="sp-step">pass {v.step}</span>']
    cells += [_chip(state.text(out.ids[p]), "sp-ctx") for p in range(min(start, len(out.ids))) if out.ids[p] is not None]
    for p in v.written:
        if p in v.accepted:
            cells.append(_chip(state.text(out.ids[p]), "sp-acc", f"position {p}: accepted (drafted p="
                                                                  f"{_conf(draft.conf[p] if draft else None)})"))
        else:
            cells.append(_chip(state.text(out.ids[p]), "sp-bonus", f"position {p}: bonus token, head 1 p="
                                                                    f"{_conf(out.conf[p])}"))
    if v.rejected and draft is not None:
        cells.append('<span class="sp-sep">✗</span>')
        for p in v.rejected:
            k = v.draft.index(p)
            cells.append(_chip(state.text(draft.guess[p]), "sp-rej",
                               f"position {p}: rejected, drafted by head {k + 2} (p={_conf(draft.conf[p])})"))
    if last:
        nxt = state.seqs.get(v.step)
        pend = pending_draft(state)
        if pend and nxt is not None:
            cells.append('<span class="sp-sep">→</span>')
            cells += [_chip(state.text(nxt.guess[p]), "sp-draft", f"position {p}: drafted by head {k + 2}, "
                            f"p={_conf(nxt.conf[p])}") for k, p in enumerate(pend)]
    return '<div class="sp-row">' + "".join(cells) + "</div>"


def rounds_html(state: State, views: list[PassView]) -> str:
    if not views:
        return ""
    shown = views[-MAX_ROUND_ROWS:]
    note = f'<div style="font-size:12px;color:#555">the latest {len(shown)} of {len(views)} passes</div>' \
        if len(shown) < len(views) else ""
    rows = "".join(_row(state, v, v is views[-1]) for v in shown)
    return STYLE + _heading("Each forward pass: the draft it verified, laid over the output so far") + note + \
        f'<div class="sp-rows">{rows}</div>'


def rejections_html(state: State, views: list[PassView]) -> str:
    """Per pass with a rejection: the draft token that failed, its head and confidence, and head 1's top-k at
    that position (what the verifier wanted)."""
    out = state.seqs.get(0)
    rows = []
    for v in views:
        draft = state.seqs.get(v.step - 1) if v.step >= 2 else None
        if not v.rejected or draft is None or out is None:
            continue
        p = v.rejected[0]
        k = v.draft.index(p)
        top = out.top[p] if p < len(out.top) else None
        alts = " · ".join(f"{_chip(state.text(i), 'sp-ctx')} {q:.3f}" for i, q in zip(*top)) if top else "–"
        wanted = dict(zip(*top)).get(draft.guess[p]) if top else None
        p_draft = _conf(wanted) if wanted is not None else "below top-k" if top else "after the end of the output"
        rows.append(f"<tr><td>{v.step}</td><td>{p}</td><td>{_chip(state.text(draft.guess[p]), 'sp-rej')} "
                    f"(head {k + 2}, p={_conf(draft.conf[p])})</td><td>{p_draft}</td><td>{alts}</td></tr>")
    if not rows:
        return '<div style="color:#555;font-size:13px">No draft token rejected so far.</div>' if views else ""
    rows = rows[-MAX_REJECTION_ROWS:]
    head = ("<tr><th>pass</th><th>position</th><th>rejected draft token</th><th>head 1 p(draft)</th>"
            "<th>head 1 top-k</th></tr>")
    return STYLE + _heading("What the verifier wanted at each first rejection (head 1's top-k)") + \
        f'<div style="overflow-x:auto"><table class="sp-table">{head}{"".join(rows)}</table></div>'


def by_position(views: list[PassView]) -> tuple[list[int], list[int]]:
    """(accepted, verified) per draft position k (0 = the first drafted token)."""
    acc: list[int] = []
    tot: list[int] = []
    for v in views:
        for k, p in enumerate(v.draft):
            while len(tot) <= k:
                acc.append(0)
                tot.append(0)
            tot[k] += 1
            acc[k] += int(p in v.accepted)
    return acc, tot


def by_position_figure(views: list[PassView]) -> go.Figure:
    acc, tot = by_position(views)
    if not tot:
        return empty_figure("acceptance appears once a draft has been verified", 240)
    xs = [f"k={k + 1} (head {k + 2})" for k in range(len(tot))]
    ys = [100 * a / t for a, t in zip(acc, tot)]
    bar = go.Bar(x=xs, y=ys, marker={"color": ACCEPTED_BG}, text=[f"{a}/{t}" for a, t in zip(acc, tot)],
                 textposition="auto", hovertemplate="%{x}: %{y:.0f}% accepted<extra></extra>")
    return figure([bar], "Acceptance rate by draft position k", 240, yaxis={"title": {"text": "% accepted"},
                                                                          "range": [0, 105]})


def per_pass_figure(views: list[PassView]) -> go.Figure:
    if not views:
        return empty_figure("tokens per pass appear when the run starts", 240)
    steps = [v.step for v in views]
    written = [len(v.written) for v in views]
    saved, total = [], 0
    for n in written:
        total += n - 1
        saved.append(total)
    bars = go.Bar(x=steps, y=written, name="tokens written", marker={"color": BONUS_BG},
                  hovertemplate="pass %{x}: %{y} tokens<extra></extra>")
    line = go.Scatter(x=steps, y=saved, name="passes saved", mode="lines+markers", yaxis="y2",
                      line={"color": "#333333"}, hovertemplate="after pass %{x}: %{y} passes saved<extra></extra>")
    return figure([bars, line], "Tokens per pass (bars) · passes saved (line)", 240,
                  xaxis={"title": {"text": "forward pass"}},
                  yaxis={"title": {"text": "tokens written"}, "rangemode": "tozero"},
                  yaxis2={"title": {"text": "passes saved vs plain"}, "overlaying": "y", "side": "right",
                          "rangemode": "tozero"}, showlegend=False, margin={"l": 50, "r": 50, "t": 40, "b": 40})


def render(state: State, meta: Meta | None, *, plots: bool = True) -> dict[str, object]:  # noqa: ARG001 (contract)
    views = passes(state)
    return {
        "output": output_html(state, views),
        "rounds": rounds_html(state, views),
        "by_position": by_position_figure(views) if plots else None,
        "per_pass": per_pass_figure(views) if plots else None,
        "rejections": rejections_html(state, views),
    }


def progress(state: State, meta: Meta | None) -> str:
    """"▶ **running** · pass 5 · 17 tokens · 3.40 per pass · 12 passes saved", or the run's summary."""
    views = passes(state)
    tokens = sum(len(v.written) for v in views)
    saved = f"{tokens} tokens in {len(views)} passes · {tokens - len(views)} passes saved vs plain decoding"
    if state.end is not None:
        exact = (state.end.summary or {}).get("exact")
        how = "" if exact is not False else " · sampling with typical acceptance (approximate)"
        return end_line(state, meta) + " · " + md_escape(saved) + how
    return f"▶ **running** · pass {state.step} · {md_escape(saved)}"
