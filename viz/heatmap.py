"""Plotly views of a diffusion decode: step × position entropy, decode order, top-k alternatives.

Read a decoding.fold.State (no folding here). Token text goes into plot labels through `plot_text` (plotly
renders a subset of HTML in labels: &, <, > escaped, so no tag can form and a quote shows as a quote). The entropy
heatmap, the largest figure (steps × positions), is handed to plotly as numpy arrays (NaN = blank): plotly
validates nested lists cell by cell, arrays at once, and serialises them compactly. Figures use the empty
"none" template with the few settings they need: plotly's default template is 6.5 kB of JSON per figure,
re-sent with every live redraw.
"""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go

from decoding.fold import MAX_POSITIONS, Seq, State
from viz.tokens import MAX_ROWS, is_special, plot_text, position_state, token_id, top_pairs

# steps x positions drawn at most in the entropy heatmap: a ~600 px plot cannot show more, and the browser's
# redraw of a 690 x 690 one made a scrub of a 50 MB trace take 2.4 s end to end (1.1 s at this cap:
# tests/load/bench_upload_server.py)
MAX_HEATMAP_CELLS = 120_000
FONT = {"family": "Inter, system-ui, sans-serif", "size": 12, "color": "#333"}
AXIS = {"gridcolor": "#eceff3", "zeroline": False, "linecolor": "#999", "automargin": True}
# Entropy: light (sure) to dark (unsure); decided cells are blank (the white background), so nothing on the
# page is louder than the uncertainty itself.
ENTROPY_SCALE = [[0.0, "#f3f1fa"], [0.2, "#cfc6ea"], [0.5, "#8c6fcf"], [0.8, "#4b2a99"], [1.0, "#241050"]]


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
        "xaxis": AXIS | (xaxis or {}),
        "yaxis": AXIS | (yaxis or {}),
        "template": "none",
        "hoverlabel": {"font": {"family": FONT["family"], "size": 12}},
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


def entropy_heatmap(state: State, seq: int | None = None, position: int | None = None) -> go.Figure:
    """Entropy (nats) of the model's prediction at each still-masked position, per step, for one sequence
    (default: the first). Positions decided at earlier steps are blank, so the blank area is what is already
    decided; a dot marks the positions committed at that step; `position` (the selected one) is outlined."""
    s = _seq(state, seq)
    if s is None or not s.history:
        return empty_figure("no diffusion steps yet")
    n = min(len(s.ids), MAX_POSITIONS)
    # a long run (or a hostile trace) would make a figure of millions of cells: draw every stride-th pass
    stride = -(-len(s.history) * max(n, 1) // MAX_HEATMAP_CELLS)
    history = s.history[::stride] if stride > 1 else s.history
    z = np.full((len(history), max(n, 1)), np.nan, dtype=np.float32)
    ys = np.empty(len(history), dtype=np.int64)
    for i, (step, positions, entropies, _) in enumerate(history):
        ys[i] = step
        if positions:
            pos = np.asarray(positions, dtype=np.int64)
            ent = np.asarray(entropies, dtype=np.float64)  # None -> NaN
            keep = (pos >= 0) & (pos < n)
            if len(ent) == len(pos):
                z[i, pos[keep]] = ent[keep]
    dots_x, dots_y, dots_text = [], [], []
    for step, _, _, committed in s.history:  # every pass's commits, also those of passes the stride skips
        for p in committed:
            if 0 <= p < n:
                dots_x.append(p)
                dots_y.append(step)
                shown = plot_text(state.text(s.ids[p])) if s.commit_step.get(p) == step else "(since remasked)"
                dots_text.append(shown)
    z[~np.isfinite(z)] = np.nan
    data = [
        go.Heatmap(
            z=z,
            x=np.arange(z.shape[1]),
            y=ys,
            colorscale=ENTROPY_SCALE,
            zmin=0,
            # at least 1 nat for full dark: a run that is sure everywhere (0.004 nats at most) stays light
            zmax=max(1.0, float(np.nanmax(z)) if np.isfinite(z).any() else 1.0),
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
                marker={"size": 5, "color": "#e8590c", "symbol": "circle"},
                showlegend=False,
                hovertemplate="step %{y} · pos %{x}<br>committed now: token %{text}<extra></extra>",
            )
        )
    shapes = []
    if position is not None and 0 <= position < n:
        shapes.append({"type": "rect", "x0": position - 0.5, "x1": position + 0.5, "yref": "paper", "y0": 0, "y1": 1,
                       "line": {"color": "#6b21a8", "width": 2}, "fillcolor": "rgba(0,0,0,0)"})
    every = f" · one pass in {stride}" if stride > 1 else ""
    title = (f"Uncertainty per step ({_sample(s)}{every})<br><sup>dark = unsure · light = sure · blank = decided · "
             f"dot = committed</sup>")
    return figure(data, title, 320,
                  xaxis={"title": _title("position in the answer"), "showgrid": False},
                  yaxis={"title": _title("step"), "autorange": "reversed", "showgrid": False},
                  margin={"l": 60, "r": 20, "t": 60, "b": 40}, shapes=shapes)


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
            text[i, p] = plot_text(state.text(token_id(s, p)))
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


def followed_position(seq: Seq, state: State | None = None) -> int:
    """The position worth watching: while the run decodes, the most uncertain still-masked one; once nothing is
    masked, the committed position whose choice was the least sure (highest entropy when it was committed),
    special tokens ([EOS] at p = 1.000) last."""
    n = min(len(seq.ids), MAX_POSITIONS)
    masked = [p for p in range(n) if seq.ids[p] is None]
    if masked:
        return max(masked, key=lambda p: _finite(seq.entropy[p]) or 0.0)
    if not n:
        return 0

    def informative(p: int) -> tuple:
        special = state is not None and is_special(state.text(seq.ids[p]))
        return (not special, _finite(seq.entropy[p]) or 0.0, seq.commit_step.get(p, -1))

    return max(range(n), key=informative)


def position_history(seq: Seq, position: int) -> tuple[list[int], list[float | None], list[float | None]]:
    """(steps, entropies, confidences) the model proposed at one position, over the sequence's passes."""
    steps, ents, confs = [], [], []
    conf_rows = seq.confs if len(seq.confs) == len(seq.history) else [None] * len(seq.history)
    for (step, positions, entropies, _), cs in zip(seq.history, conf_rows):
        try:
            j = positions.index(position)
        except ValueError:
            continue
        steps.append(step)
        ents.append(_finite(entropies[j]) if j < len(entropies) else None)
        confs.append(_finite(cs[j]) if cs is not None and j < len(cs) else None)
    return steps, ents, confs


def _topk_bars(state: State, s: Seq, position: int) -> go.Bar | None:
    pairs = top_pairs(state, s, position, 10)
    if not pairs:
        return None
    chosen = token_id(s, position)
    labels, seen = [], set()
    for tid, text, _ in pairs:
        shown = plot_text(text)
        if shown in seen:  # two ids with the same text: a category axis would merge their bars
            shown = f"{shown} (id {tid})"
        seen.add(shown)
        labels.append(shown)
    return go.Bar(
        x=[p for _, _, p in pairs],
        y=labels,
        orientation="h",
        marker_color=["#1e8449" if tid == chosen else "#9db4d6" for tid, _, _ in pairs],
        text=[f"{p:.3f}" for _, _, p in pairs],
        textposition="outside",
        cliponaxis=False,
        hovertemplate="%{y}: p=%{x:.3f}<extra></extra>",
        showlegend=False,
    )


def topk_figure(state: State, position: int | None, seq: int | None = None) -> go.Figure:
    """One position of one sequence (default: the first): the model's top-k alternatives as of its latest
    proposal there (left), and its entropy and confidence over the steps with the step it was committed at
    (right). A position of None or < 0 follows the run (`followed_position`)."""
    s = _seq(state, seq)
    if s is None:
        return empty_figure("no diffusion steps yet", 220)
    following = position is None or position < 0
    position = followed_position(s, state) if following else int(position)
    bars = _topk_bars(state, s, position)
    if bars is None:
        return empty_figure(f"position {position} of {_sample(s)}: {position_state(s, position)}, no top-k recorded",
                            220)
    steps, ents, confs = position_history(s, position)
    # two panels side by side, laid out by hand (plotly.subplots validates every step: ~10x slower)
    history = [
        go.Scatter(x=steps, y=ents, mode="lines+markers", name="entropy (nats)", xaxis="x2", yaxis="y2",
                   line={"color": "#6b21a8"}, marker={"size": 4},
                   hovertemplate="step %{x}: entropy %{y:.3f} nats<extra></extra>"),
        go.Scatter(x=steps, y=confs, mode="lines+markers", name="confidence", xaxis="x2", yaxis="y2",
                   line={"color": "#1e8449", "dash": "dot"}, marker={"size": 4},
                   hovertemplate="step %{x}: confidence %{y:.3f}<extra></extra>"),
    ]
    committed = s.commit_step.get(position)
    shapes = []
    if committed is not None:
        shapes.append({"type": "line", "xref": "x2", "yref": "y2 domain", "x0": committed, "x1": committed,
                       "y0": 0, "y1": 1, "line": {"color": "#e8590c", "dash": "dash", "width": 2}})
    where_state = position_state(s, position)
    where_state = "still masked" if where_state == "masked" else where_state
    where = f"position {position} of {_sample(s)}" + (" (followed)" if following else " (selected)")
    title = (f"{where}: top-{len(bars.x)} and history<br><sup>step {s.step} · {where_state} · green bar = the "
             f"token shown{' · dashed line = commit step' if committed is not None else ''}</sup>")
    return figure([bars, *history], title, 300, margin={"l": 60, "r": 20, "t": 64, "b": 40}, shapes=shapes,
                  legend={"orientation": "h", "x": 1, "xanchor": "right", "y": -0.32},
                  xaxis={"range": [0, 1.2], "title": _title("probability"), "domain": [0, 0.42]},
                  yaxis={"autorange": "reversed", "type": "category"},
                  xaxis2=AXIS | {"title": _title("step"), "anchor": "y2", "domain": [0.58, 1]},
                  yaxis2=AXIS | {"anchor": "x2", "rangemode": "tozero"})
