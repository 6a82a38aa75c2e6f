"""Plotly views of a diffusion decode: step × position entropy, decode order, top-k alternatives.

Read a decoding.fold.State (no folding here). Token text goes into hover labels html-escaped (plotly renders
a subset of HTML in labels). The entropy heatmap, the largest figure (steps × positions), is handed to plotly
as numpy arrays (NaN = blank): plotly validates nested lists cell by cell, arrays at once, and serialises
them compactly.
"""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go

from decoding.fold import MAX_POSITIONS, Seq, State
from viz.tokens import MAX_ROWS, label, position_state, token_id, top_pairs

MAX_HEATMAP_CELLS = 1_000_000  # steps x positions drawn at most in the entropy heatmap
FONT = {"family": "Inter, system-ui, sans-serif", "size": 12}


def figure(data: list, title: str, height: int, *, xaxis: dict | None = None, yaxis: dict | None = None,
           **layout) -> go.Figure:
    """A figure with its whole layout given at once (each update_* call on a figure costs a validation pass)."""
    base = {
        "title": {"text": title, "font": {"size": 14}},
        "height": height,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "font": FONT,
        "plot_bgcolor": "white",
        "paper_bgcolor": "white",
        "xaxis": xaxis or {},
        "yaxis": yaxis or {},
    }
    return go.Figure(data=data, layout=base | layout)


def _title(text: str) -> dict:
    return {"text": text}


def empty_figure(message: str, height: int = 260) -> go.Figure:
    return figure([], "", height, xaxis={"visible": False}, yaxis={"visible": False},
                  annotations=[{"text": html.escape(message), "showarrow": False,
                                "font": {"size": 13, "color": "#888"}}])


def _finite(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _seq(state: State, seq: int | None) -> Seq | None:
    """The sequence `seq`, or the first one (None when the state has none)."""
    if seq is not None and seq in state.seqs:
        return state.seqs[seq]
    return next(iter(state.rows()), None) if seq is None else None


def _sample(seq: Seq) -> str:
    return f"sample {seq.id + 1}"


def entropy_heatmap(state: State, seq: int | None = None) -> go.Figure:
    """Entropy (nats) of the model's prediction at each still-masked position, per step, for one sequence
    (default: the first). Positions decided at earlier steps are blank, so the blank area is what is already
    decided; a dot marks the positions committed at that step."""
    s = _seq(state, seq)
    if s is None or not s.history:
        return empty_figure("no diffusion steps yet")
    n = min(len(s.ids), MAX_POSITIONS)
    # a long run (or a hostile trace) would make a figure of millions of cells: draw every stride-th pass
    stride = -(-len(s.history) * max(n, 1) // MAX_HEATMAP_CELLS)
    history = s.history[::stride] if stride > 1 else s.history
    z = np.full((len(history), max(n, 1)), np.nan, dtype=np.float32)
    ys = np.empty(len(history), dtype=np.int64)
    dots_x, dots_y, dots_text = [], [], []
    for i, (step, positions, entropies, committed) in enumerate(history):
        ys[i] = step
        if positions:
            pos = np.asarray(positions, dtype=np.int64)
            ent = np.asarray(entropies, dtype=np.float64)  # None -> NaN
            keep = (pos >= 0) & (pos < n)
            if len(ent) == len(pos):
                z[i, pos[keep]] = ent[keep]
        for p in committed:
            if 0 <= p < n:
                dots_x.append(p)
                dots_y.append(step)
                shown = label(state.text(s.ids[p])) if s.commit_step.get(p) == step else "(since remasked)"
                dots_text.append(shown)
    z[~np.isfinite(z)] = np.nan
    data = [
        go.Heatmap(
            z=z,
            x=np.arange(z.shape[1]),
            y=ys,
            colorscale="Viridis",
            reversescale=True,
            zmin=0,
            colorbar={"title": {"text": "entropy<br>(nats)"}, "thickness": 12},
            hovertemplate="step %{y} · pos %{x}<br>entropy %{z:.3f} nats<extra></extra>",
            hoverongaps=False,
        )
    ]
    if dots_x:
        data.append(
            go.Scatter(
                x=np.asarray(dots_x),
                y=np.asarray(dots_y),
                text=dots_text,
                mode="markers",
                marker={"size": 5, "color": "#c0392b", "symbol": "circle"},
                showlegend=False,
                hovertemplate="step %{y} · pos %{x}<br>committed now: token %{text}<extra></extra>",
            )
        )
    every = f" · every {stride}th pass" if stride > 1 else ""
    title = (f"Uncertainty per step ({_sample(s)}{every})<br><sup>dark = unsure · blank = decided · "
             f"dot = committed</sup>")
    return figure(data, title, 320,
                  xaxis={"title": _title("position in the answer")},
                  yaxis={"title": _title("step"), "autorange": "reversed"},
                  margin={"l": 60, "r": 20, "t": 60, "b": 40})


def decode_order(state: State) -> go.Figure:
    """The step at which each position was committed, one heatmap row per sequence (blank: kept / masked)."""
    rows = state.rows()[:MAX_ROWS]
    if not rows:
        return empty_figure("no diffusion steps yet", 160)
    n = max(min(len(s.ids), MAX_POSITIONS) for s in rows)
    z = np.full((len(rows), max(n, 1)), np.nan, dtype=np.float64)
    text = np.full(z.shape, "", dtype=object)
    for i, s in enumerate(rows):
        for p, step in s.commit_step.items():
            if 0 <= p < n:
                z[i, p] = step
        for p in range(min(len(s.ids), n)):
            text[i, p] = label(state.text(token_id(s, p)))
    heat = go.Heatmap(
        z=z,
        x=np.arange(z.shape[1]),
        y=[_sample(s) for s in rows],
        text=text.astype(str),
        colorscale="Blues",
        reversescale=True,
        colorbar={"title": {"text": "step"}, "thickness": 12},
        hovertemplate="%{y} · pos %{x}<br>token %{text}<br>committed at step %{z}<extra></extra>",
        hoverongaps=False,
        xgap=1,
        ygap=2,
    )
    return figure([heat], "Decode order: the step at which each position was committed (dark = early, light = late)",
                  200 + 34 * len(rows), xaxis={"title": _title("position in the answer")},
                  yaxis={"autorange": "reversed"})


def followed_position(seq: Seq) -> int:
    """The position worth watching now: the most uncertain still-masked one, else the latest committed."""
    n = min(len(seq.ids), MAX_POSITIONS)
    masked = [p for p in range(n) if seq.ids[p] is None]
    if masked:
        return max(masked, key=lambda p: _finite(seq.entropy[p]) or 0.0)
    return max(seq.commit_step, key=seq.commit_step.get) if seq.commit_step else 0


def topk_figure(state: State, position: int | None, seq: int | None = None) -> go.Figure:
    """The model's top-k alternatives at one position of one sequence (default: the first), as of the state's
    latest proposal there; a position of None or < 0 follows the run (`followed_position`)."""
    s = _seq(state, seq)
    if s is None:
        return empty_figure("no diffusion steps yet", 220)
    following = position is None or position < 0
    position = followed_position(s) if following else int(position)
    pairs = top_pairs(state, s, position, 10)
    if not pairs:
        return empty_figure(f"no top-k recorded at position {position}", 220)
    chosen = token_id(s, position)
    labels, seen = [], set()
    for tid, text, _ in pairs:
        shown = label(text)
        if shown in seen:  # two ids with the same text: a category axis would merge their bars
            shown = f"{shown} (id {tid})"
        seen.add(shown)
        labels.append(shown)
    colours = ["#1e8449" if tid == chosen else "#9db4d6" for tid, _, _ in pairs]
    bars = go.Bar(
        x=[p for _, _, p in pairs],
        y=labels,
        orientation="h",
        marker_color=colours,
        text=[f"{p:.3f}" for _, _, p in pairs],
        textposition="outside",
        hovertemplate="%{y}: p=%{x:.3f}<extra></extra>",
    )
    where_state = position_state(s, position)
    where_state = "still masked" if where_state == "masked" else where_state
    where = f"position {position}" + (" (followed)" if following else "")
    title = f"Top-{len(pairs)} at {where}<br><sup>step {s.step} · {where_state} · green = the token shown</sup>"
    return figure([bars], title, 260, xaxis={"range": [0, 1.15], "title": _title("probability")},
                  yaxis={"autorange": "reversed", "type": "category"},
                  margin={"l": 60, "r": 20, "t": 60, "b": 40})
