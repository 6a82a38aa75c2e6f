"""Plotly views of a diffusion decode: step × position entropy, decode order, top-k alternatives.

Token text goes into hover labels html-escaped (plotly renders a subset of HTML in labels).
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go

from decoding.trace import DiffusionStep, Event
from viz.state import _at, fold_rows
from viz.tokens import MAX_POSITIONS, display_text

FONT = {"family": "Inter, system-ui, sans-serif", "size": 12}


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        font=FONT,
        plot_bgcolor="white",
        paper_bgcolor="white",
    )
    return fig


def empty_figure(message: str, height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=html.escape(message), showarrow=False, font={"size": 13, "color": "#888"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height)


def _label(token: object) -> str:
    return html.escape(display_text(str(token)))


def _finite(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def entropy_heatmap(events: list[Event], sample: int = 0) -> go.Figure:
    """Entropy (nats) of the model's prediction at each still-masked position, per step, for one sample.
    Positions committed at earlier steps are blank, so the blank area is what is already decided."""
    z, hover, ys = [], [], []
    for e in events:
        if not isinstance(e, DiffusionStep) or sample not in e.rows:
            continue
        r = e.rows.index(sample)
        masked, committed = _at(e.masked, r, []), set(_at(e.committed, r, []))
        tokens, ent, conf = _at(e.tokens, r, []), _at(e.entropy, r, []), _at(e.confidence, r, [])
        n = min(len(tokens), MAX_POSITIONS)
        row, hrow = [], []
        for p in range(n):
            live = (p < len(masked) and masked[p]) or p in committed
            h = _finite(_at(ent, p, None)) if live else None
            c = _finite(_at(conf, p, None))
            row.append(h)
            state = "committed now" if p in committed else "masked" if live else "decided earlier"
            hrow.append([_label(_at(tokens, p, "")), "—" if c is None else f"{c:.3f}", state, p])
        z.append(row)
        hover.append(hrow)
        ys.append(e.step)
    if not z:
        return empty_figure("no diffusion steps yet")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            y=ys,
            customdata=hover,
            colorscale="Viridis",
            reversescale=True,
            zmin=0,
            colorbar={"title": {"text": "entropy<br>(nats)"}, "thickness": 12},
            hovertemplate="step %{y} · pos %{customdata[3]}<br>token %{customdata[0]} (%{customdata[2]})"
            "<br>entropy %{z:.3f} nats<br>confidence %{customdata[1]}<extra></extra>",
            hoverongaps=False,
        )
    )
    fig.update_xaxes(title="position in the answer")
    fig.update_yaxes(title="step", autorange="reversed")
    return _layout(fig, f"Uncertainty per step (sample {sample + 1}): dark = unsure, blank = decided", 320)


def decode_order(events: list[Event]) -> go.Figure:
    """The step at which each position was committed, one heatmap row per sample (blank: kept/masked)."""
    rows = fold_rows(events)
    if not rows:
        return empty_figure("no diffusion steps yet", 160)
    z, hover = [], []
    for row in rows:
        n = min(len(row.tokens), MAX_POSITIONS)
        z.append([row.commit_step.get(p) for p in range(n)])
        hover.append([[_label(row.tokens[p]), p] for p in range(n)])
    fig = go.Figure(
        go.Heatmap(
            z=z,
            y=[f"sample {r.sample + 1}" for r in rows],
            customdata=hover,
            colorscale="Blues",
            reversescale=True,
            colorbar={"title": {"text": "step"}, "thickness": 12},
            hovertemplate="%{y} · pos %{customdata[1]}<br>token %{customdata[0]}<br>committed at step %{z}<extra></extra>",
            hoverongaps=False,
            xgap=1,
            ygap=2,
        )
    )
    fig.update_xaxes(title="position in the answer")
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Decode order: the step at which each position was committed (dark = early, light = late)",
                   200 + 34 * len(rows))


def followed_position(row) -> int:
    """The position worth watching now: the most uncertain still-masked one, else the latest committed."""
    masked = [p for p in range(len(row.masked)) if _at(row.masked, p, False)]
    if masked:
        return max(masked, key=lambda p: _finite(_at(row.entropy, p, 0.0)) or 0.0)
    return max(row.commit_step, key=row.commit_step.get) if row.commit_step else 0


def topk_figure(events: list[Event], position: int | None, sample: int = 0) -> go.Figure:
    """The model's top-k alternatives at one position, as of the latest step in `events`; a position of
    None or < 0 follows the run (`followed_position`)."""
    row = next((r for r in fold_rows(events) if r.sample == sample), None)
    if row is None:
        return empty_figure("no diffusion steps yet", 220)
    following = position is None or position < 0
    if following:
        position = followed_position(row)
    alts = _at(row.topk, position, [])
    pairs = [(a[0], _finite(a[1])) for a in alts if isinstance(a, list) and len(a) >= 2] if isinstance(alts, list) else []
    pairs = [(t, p) for t, p in pairs if p is not None][:10]
    if not pairs:
        return empty_figure(f"no top-k recorded at position {position}", 220)
    chosen = str(_at(row.tokens, position, ""))
    labels = [f"{_label(t)}" for t, _ in pairs]
    colours = ["#1e8449" if str(t) == chosen else "#9db4d6" for t, _ in pairs]
    fig = go.Figure(
        go.Bar(
            x=[p for _, p in pairs],
            y=labels,
            orientation="h",
            marker_color=colours,
            text=[f"{p:.3f}" for _, p in pairs],
            textposition="outside",
            hovertemplate="%{y}: p=%{x:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(range=[0, 1.15], title="probability")
    fig.update_yaxes(autorange="reversed", type="category")
    state = "still masked" if _at(row.masked, position, False) else "committed"
    where = f"position {position}" + (" (followed)" if following else "")
    title = f"Top-{len(pairs)} at {where}<br><sup>step {row.step} · {state} · green = the token shown</sup>"
    fig = _layout(fig, title, 260)
    fig.update_layout(margin={"t": 60})
    return fig
