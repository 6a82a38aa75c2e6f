"""The diffusion tab's views (the view-module contract of viz/panels.py): the canvas, the entropy heatmap,
the top-k alternatives at one position, the decode order, and the live status line.

Pure: reads a decoding.fold.State and the trace's Meta; no torch, no gradio, no folding.
"""

from __future__ import annotations

import math

from decoding.fold import State
from decoding.trace import Meta
from viz.heatmap import decode_order, entropy_heatmap, followed_position, topk_figure
from viz.panels import Option, Panel
from viz.tokens import end_line, render_canvas

# Strategies with a fixed number of steps (decoding.diffusion.SCHEDULED; copied: views do not import torch).
SCHEDULED = frozenset({"low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin"})

PANELS = [
    Panel("canvas", "html", "Canvas",
          placeholder='<div class="dl-canvas dl-wait">The answer appears here, position by position, when the run '
                      "starts. Then click a chip to see its alternatives and history.</div>"),
    Panel("entropy", "plot", "Entropy", placeholder="run to see the uncertainty per step", height=260, row="detail"),
    Panel("topk", "plot", "Selected position", placeholder="click a chip: its top-k alternatives and history",
          height=220, row="detail"),
    Panel("order", "plot", "Decode order", placeholder="decode order", height=160),
]
OPTIONS = [
    Option("sample", 1, "Sample (row) the plots describe", minimum=1),
    Option("position", -1, "Position (click a chip; -1: follow the run)", minimum=-1),
]


def selection(state: State, sample: float | None, position: float | None) -> tuple[int | None, int]:
    """(sequence id, position) the plots describe: sample `sample` (1-based: sequence id + 1, as the canvas labels
    its rows; the first row when there is no such sample) and `position`, or the followed one
    (`followed_position`) when it is < 0."""
    rows = state.rows()
    wanted = int(sample) - 1 if sample is not None and math.isfinite(sample) else 0
    seq = state.seqs.get(wanted) or (rows[0] if rows else None)
    if seq is None:
        return None, -1
    pos = -1 if position is None else int(position)
    return seq.id, followed_position(seq, state) if pos < 0 else pos


def render(state: State, meta: Meta | None, *, plots: bool = True, position: float | None = -1,
           sample: float | None = 1) -> dict[str, object]:
    """canvas (HTML), entropy / topk / order (plotly figures; None when plots=False). `sample` (1-based) picks
    the row the heatmap and the position view describe; `position` < 0 follows the run (`selection`)."""
    seq, pos = selection(state, sample, position)
    following = position is None or position < 0
    return {
        "canvas": render_canvas(state, meta, selected=(seq, pos) if seq is not None else None),
        "entropy": entropy_heatmap(state, seq, pos) if plots else None,
        "topk": topk_figure(state, -1 if following else pos, seq) if plots else None,
        "order": decode_order(state) if plots else None,
    }


def progress(state: State, meta: Meta | None) -> str:
    """The status line (Markdown): "▶ **running** · step 14 / 80 · 14 of 80 tokens decoded" on a fixed
    schedule, "step 14 (at most 80)" for adaptive strategies; once the run has ended, its summary
    ("✓ done: answer **#3** ✓ · 5 forward passes · 0.10s · 5 steps")."""
    if state.end is not None:
        return end_line(state, meta)
    params = meta.params if meta is not None else {}
    steps, bound = _int(params.get("steps")), _int(params.get("gen_length"))
    if bound is None and state.start is not None:
        bound = state.start.length or None
    bits = ["▶ **running**"]
    if params.get("strategy") in SCHEDULED and steps:
        bits.append(f"step {state.step} / {steps}")
    elif bound:
        bits.append(f"step {state.step} (at most {bound})")
    else:
        bits.append(f"step {state.step}")
    rows = state.rows()
    total = sum(len(s.ids) for s in rows)
    if total:
        left = sum(s.ids.count(None) for s in rows)
        bits.append(f"{total - left} of {total} tokens decoded")
    return " · ".join(bits)


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None
