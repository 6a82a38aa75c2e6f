"""Views of majority voting / dVoting: agreement grid, tally, forward-pass meter, accuracy-vs-NFE.

Pure: VotingRound events (plus the samples' latest canvases for hover text) -> plotly figure / HTML.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import plotly.graph_objects as go

from decoding.trace import Event
from viz.heatmap import _label, _layout, empty_figure
from viz.state import _at, fold_rows, last_round
from viz.tokens import MAX_POSITIONS, NEW_HIGH, NEW_LOW, OLD_BG

# Categories of the agreement grid, in colour-scale order; colours echo the canvas.
CATEGORIES = [
    ("kept", OLD_BG, "kept (all earlier samples agreed: not re-decoded)"),
    ("agree", NEW_HIGH, "decoded, agrees with every sample"),
    ("disagree", NEW_LOW, "decoded, samples disagree"),
    ("remasked", "#444444", "remasked for the next sample"),
]
STOP_REASONS = {
    "majority": "stopped early: one answer already holds a strict majority of K",
    "all_agree": "stopped early: every sample so far gives the same answer",
    "max_samples": "used all K samples",
}


def agreement_grid(events: list[Event]) -> go.Figure:
    """samples × positions, coloured by kept / agree / disagree / remasked, from the latest VotingRound."""
    rnd = last_round(events)
    if rnd is None or not rnd.grid:
        return empty_figure("the agreement grid appears after the first round", 200)
    tokens = {r.sample: r.tokens for r in fold_rows(events)}
    index = {name: i for i, (name, _, _) in enumerate(CATEGORIES)}
    z, hover = [], []
    for i, cells in enumerate(rnd.grid[:64]):
        sample = _at(rnd.samples, i, i)
        toks = tokens.get(sample, [])
        cells = cells[:MAX_POSITIONS] if isinstance(cells, list) else []
        z.append([index.get(str(c)) for c in cells])
        hover.append([[_label(_at(toks, p, "")), html.escape(str(c)), p] for p, c in enumerate(cells)])
    n = len(CATEGORIES)
    scale = []
    for i, (_, colour, _) in enumerate(CATEGORIES):  # a step colour scale: category i fills [i/n, (i+1)/n]
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            y=[_row_label(rnd.samples, i) for i in range(len(z))],
            customdata=hover,
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=scale,
            showscale=False,
            xgap=1,
            ygap=2,
            hovertemplate="%{y} · pos %{customdata[2]}<br>token %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
        )
    )
    for name, colour, text in CATEGORIES:  # legend entries (a heatmap has no categorical legend of its own)
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="markers", name=text, marker={"size": 12, "color": colour, "symbol": "square"})
        )
    fig.update_xaxes(title="position in the answer")
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(legend={"orientation": "h", "y": -0.35 if len(z) < 4 else -0.2})
    return _layout(fig, f"Round {rnd.round}: where the samples agree", 190 + 36 * len(z))


def _row_label(samples: list, i: int) -> str:
    """Rows past the finished samples show where the next sample starts (kept / remasked)."""
    sample = _at(samples, i, None)
    return f"sample {sample + 1}" if isinstance(sample, int) else f"next start (sample {i + 1})"


def tally_html(events: list[Event], k: int | None = None) -> str:
    """The running vote: each answer with a bar, the final answer highlighted, and why voting stopped."""
    rnd = last_round(events)
    if rnd is None:
        return '<div style="color:#888">The tally appears when the first sample is done.</div>'
    total = max(k or 0, len(rnd.answers), 1)
    lines = []
    for entry in rnd.tally[:20]:
        answer, votes = (_at(entry, 0, None), _at(entry, 1, 0)) if isinstance(entry, list) else (None, 0)
        votes = votes if isinstance(votes, int) and not isinstance(votes, bool) else 0
        final = rnd.final_answer is not None and answer == rnd.final_answer
        label = "no answer" if answer is None else f"#{html.escape(str(answer))}"
        colour = "#1e8449" if final else "#7f9cc7"
        width = 100 * min(votes, total) / total
        lines.append(
            f'<div style="display:flex;align-items:center;margin:3px 0;{"font-weight:700" if final else ""}">'
            f'<span class="dl-vote" style="width:70px;font-family:ui-monospace,monospace">{label}</span>'
            f'<span style="flex:1;background:#eee;border-radius:4px;height:16px;margin:0 8px">'
            f'<span style="display:block;height:16px;width:{width:.0f}%;background:{colour};border-radius:4px"></span></span>'
            f'<span style="width:70px">{votes} vote{"s" if votes != 1 else ""}{" ✔" if final else ""}</span></div>'
        )
    answers = ", ".join("—" if a is None else f"#{html.escape(str(a))}" for a in rnd.answers[:64])
    parts = [f'<div style="font-size:13px;color:#555">round {rnd.round} · answers so far: {answers}</div>', *lines]
    if rnd.stop_reason is not None:
        reason = STOP_REASONS.get(str(rnd.stop_reason), html.escape(str(rnd.stop_reason)))
        final = "none" if rnd.final_answer is None else f"#{html.escape(str(rnd.final_answer))}"
        won = next((_at(e, 1, None) for e in rnd.tally if isinstance(e, list) and _at(e, 0, None) == rnd.final_answer), None)
        if isinstance(won, int) and not isinstance(won, bool) and k:  # say the numbers: "2 of K=3 votes"
            reason += f" ({won} of K={k} votes after {len(rnd.answers)} sample{'s' if len(rnd.answers) != 1 else ''})"
        parts.append(
            f'<div class="dl-final" style="margin-top:8px;padding:6px 10px;background:#e9f7ee;border-left:4px solid #1e8449">'
            f"<b>final answer {final}</b> — {html.escape(reason)}</div>"
        )
    return "".join(parts)


def nfe_meter_html(events: list[Event], k: int, full_cost: int | None = None) -> str:
    """Forward passes per sample and in total, against what majority@K would cost (K full decodes).
    full_cost: one full decode's passes; default = the first sample's (it always starts fully masked)."""
    rnd = last_round(events)
    if rnd is None:
        return ""
    per = [n if isinstance(n, int) and not isinstance(n, bool) else 0 for n in rnd.nfe_per_sample[:64]]
    full = full_cost or (per[0] if per else 0)
    budget = max(k * full, rnd.nfe_total, 1)
    bars = "".join(
        f'<span title="sample {i + 1}: {n} passes" style="display:inline-block;height:18px;width:{100 * n / budget:.2f}%;'
        f'background:{"#3b6fb6" if i % 2 == 0 else "#6d95cf"};border-right:1px solid white"></span>'
        for i, n in enumerate(per)
    )
    saving = f" — {k * full / rnd.nfe_total:.1f}× fewer" if rnd.nfe_total and full else ""
    detail = " + ".join(str(n) for n in per)
    return (
        '<div style="font-size:13px">'
        f'<div style="background:#eee;border-radius:4px;overflow:hidden;white-space:nowrap;height:18px">{bars}</div>'
        f'<div style="margin-top:4px"><b>{rnd.nfe_total}</b> forward passes ({detail}) vs '
        f"≈ <b>{k * full}</b> for majority@{k} ({k} × {full}){saving}</div></div>"
    )


def load_bench(path: str | Path) -> list[dict]:
    """Benchmark rows [{method, accuracy, nfe, seconds}, ...]; [] when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    if isinstance(data, dict):  # tolerate {"results": [...]}
        data = data.get("results", [])
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def bench_figure(rows: list[dict]) -> go.Figure:
    """Accuracy against forward passes per problem, one marker per method."""
    pts = [
        (str(r.get("method", "?")), _num(r.get("accuracy")), _num(r.get("nfe")), _num(r.get("seconds")))
        for r in rows
    ]
    pts = [p for p in pts if p[1] is not None and p[2] is not None]
    if not pts:
        return empty_figure("no benchmark yet: run `python -m decoding.bench voting` (writes examples/bench/voting.json)")
    scale = 100 if all(a <= 1 for _, a, _, _ in pts) else 1  # accept fractions or percentages
    fig = go.Figure()
    for method, acc, nfe, sec in pts:
        fig.add_trace(
            go.Scatter(
                x=[nfe],
                y=[acc * scale],
                mode="markers",  # labels go in the legend: text labels collide when methods cost alike
                name=html.escape(method),
                marker={"size": 12},
                hovertemplate=f"{html.escape(method)}<br>accuracy %{{y:.1f}}%<br>%{{x:.0f}} forward passes"
                + (f"<br>{sec:.2f}s" if sec is not None else "")
                + "<extra></extra>",
            )
        )
    fig.update_xaxes(title="forward passes per problem (NFE)", type="log")
    fig.update_yaxes(title="accuracy (%)")
    fig = _layout(fig, "Accuracy vs cost (held-out problems)", 320)
    fig.update_layout(showlegend=True, legend={"orientation": "v", "x": 1.02, "y": 1})
    return fig


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
