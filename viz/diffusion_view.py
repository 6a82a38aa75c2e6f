"""The diffusion tab's views (the view-module contract of viz/panels.py): the canvas, the entropy heatmap,
the top-k alternatives at one position, the decode order, and the live status line.

Pure: reads a decoding.fold.State and the trace's Meta; no torch, no gradio, no folding.
"""

from __future__ import annotations

from decoding.fold import State
from decoding.trace import Meta
from viz.heatmap import decode_order, entropy_heatmap, topk_figure
from viz.panels import Option, Panel
from viz.tokens import end_line, render_canvas

# Strategies with a fixed number of steps (decoding.diffusion.SCHEDULED; copied: views do not import torch).
SCHEDULED = frozenset({"low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin"})

PANELS = [
    Panel("canvas", "html", "Canvas",
          placeholder='<div class="dl-canvas" style="color:#888;padding:12px 0">The answer appears here, '
                      "position by position, when the run starts.</div>"),
    Panel("entropy", "plot", "Entropy", placeholder="run to see the uncertainty per step", height=260, row="detail"),
    Panel("topk", "plot", "Top-k", placeholder="top-k alternatives at one position", height=220, row="detail"),
    Panel("order", "plot", "Decode order", placeholder="decode order", height=160),
]
OPTIONS = [Option("position", -1, "Top-k position (-1: follow the most uncertain masked one)", minimum=-1)]


def render(state: State, meta: Meta | None, *, plots: bool = True, position: float | None = -1) -> dict[str, object]:
    """canvas (HTML), entropy / topk / order (plotly figures; None when plots=False). `position` < 0 follows
    the most uncertain masked position of the first sequence."""
    pos = -1 if position is None else int(position)
    return {
        "canvas": render_canvas(state, meta),
        "entropy": entropy_heatmap(state) if plots else None,
        "topk": topk_figure(state, pos) if plots else None,
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
