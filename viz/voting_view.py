"""The voting tab's views (the view-module contract of viz/panels.py): the running tally, the forward-pass
meter, the agreement grid, the canvas (one line per sample) and the live status line; plus the benchmark
figure (accuracy against forward passes) the app shows beside them.

Pure: reads a decoding.fold.State and the trace's Meta (the latest Selection for the tally, grid and meter;
Node.nfe per sample); no torch, no gradio, no folding.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from decoding.fold import MAX_POSITIONS, State
from decoding.trace import Meta, Selection
from viz.diffusion_view import selection
from viz.heatmap import _title, empty_figure, figure, topk_figure
from viz.panels import Option, Panel
from viz.tokens import (
    MASK_BG,
    MAX_ROWS,
    NEW_HIGH,
    NEW_LOW,
    OLD_BG,
    answer_class,
    answer_text,
    end_line,
    plot_text,
    render_canvas,
    token_id,
)

# Categories of the agreement grid, in colour-scale order; colours echo the canvas. (letter, name, colour, text)
CATEGORIES = [
    ("k", "kept", OLD_BG, "kept (all earlier samples agreed: not re-decoded)"),
    ("a", "agree", NEW_HIGH, "decoded, agrees with every sample"),
    ("d", "disagree", NEW_LOW, "decoded, samples disagree"),
    ("r", "remasked", MASK_BG, "remasked for the next sample"),
]
STOP_REASONS = {
    "majority": "stopped early: one answer already holds a strict majority of K",
    "all_agree": "stopped early: every sample so far gives the same answer",
    "max_samples": "used all K samples",
}

PANELS = [
    Panel("tally", "html", "Tally",
          placeholder='<div class="dl-wait">The tally appears when the first sample is done.</div>', row="summary"),
    Panel("meter", "html", "Forward passes", placeholder="", row="summary"),
    Panel("grid", "plot", "Agreement", placeholder="agreement grid", height=200),
    Panel("canvas", "html", "Samples",
          placeholder='<div class="dl-canvas dl-wait">Samples appear here one after another when the run starts. '
                      "Then click a chip to see its alternatives and history.</div>"),
    Panel("topk", "plot", "Selected position", placeholder="click a chip: its top-k alternatives and history",
          height=220),
]
OPTIONS = [
    Option("sample", 1, "Sample the position view describes", minimum=1),
    Option("position", -1, "Position (click a chip; -1: follow the run)", minimum=-1),
]


def render(state: State, meta: Meta | None, *, plots: bool = True, position: float | None = -1,
           sample: float | None = 1) -> dict[str, object]:
    """tally, meter, canvas (HTML), grid and topk (plotly figures; None when plots=False). `sample` (1-based)
    and `position` (< 0: follow the run) pick the position the canvas outlines and the topk panel describes."""
    k = _k(meta)
    seq, pos = selection(state, sample, position)
    following = position is None or position < 0
    return {
        "tally": tally_html(state, k, meta),
        "meter": nfe_meter_html(state, k),
        "grid": agreement_grid(state) if plots else None,
        "canvas": render_canvas(state, meta, selected=(seq, pos) if seq is not None else None),
        "topk": topk_figure(state, -1 if following else pos, seq) if plots else None,
    }


BENCH_PATH = Path(__file__).resolve().parent.parent / "examples" / "bench" / "voting.json"


def extras() -> list[tuple[str, object]]:
    """Shown below the tab: the measured accuracy against forward passes (examples/bench/voting.json)."""
    return [("Benchmark: accuracy vs forward passes", bench_figure(load_bench(BENCH_PATH)))]


def progress(state: State, meta: Meta | None) -> str:
    """The status line (Markdown): "▶ **running** · sample 3 / 5 · step 60 (pass 12 of this sample, at most 48)
    · 2 samples finished". The step is the run-wide forward-pass index (Tokens.step), the one the canvas header,
    the heatmaps and the scrubber count; the pass counts from the sample's first. Once the run has ended, its
    summary."""
    if state.end is not None:
        return end_line(state, meta)
    params = meta.params if meta is not None else {}
    k = _k(meta)
    bound = _int(params.get("steps")) or _int(params.get("gen_length"))
    if bound is None and state.start is not None:
        bound = state.start.length or None
    finished = [n for n in state.nodes.values() if n.status != "active"]
    finished_seqs = {n.seq for n in finished}
    current = [s for s in state.rows() if s.step == state.step]  # the sequences of the latest pass
    running = [s for s in current if s.id not in finished_seqs]
    current = running or current
    ids = sorted(s.id + 1 for s in current)
    which = "sample 1" if not ids else f"sample {ids[0]}" if len(ids) == 1 else f"samples {ids[0]}–{ids[-1]}"
    first = min((s.first_step for s in current if s.first_step is not None), default=None)
    passes = state.step - first + 1 if first is not None else 0
    bits = ["▶ **running**", f"{which} / {k}",
            f"step {state.step} (pass {passes} of this sample" + (f", at most {bound})" if bound else ")")]
    sel = state.selection
    done = max(len(finished), len(sel.nodes) if sel is not None else 0)
    bits.append(f"{done} sample{'s' if done != 1 else ''} finished")
    return " · ".join(bits)


# ---------------------------------------------------------------- panels


def agreement_grid(state: State) -> go.Figure:
    """samples × positions, coloured by kept / agree / disagree / remasked, from the latest Selection's
    `agreement` rows (a last extra row: where the next sample starts)."""
    sel = state.selection
    if sel is None or not sel.agreement:
        return empty_figure("the agreement grid appears after the first round", 200)
    index = {letter: i for i, (letter, _, _, _) in enumerate(CATEGORIES)}
    names = {letter: name for letter, name, _, _ in CATEGORIES}
    seqs = _sample_seqs(state, sel)
    rows = [cells[:MAX_POSITIONS] for cells in sel.agreement[:MAX_ROWS]]
    width = max(1, max(len(r) for r in rows))
    z = np.full((len(rows), width), np.nan)
    text = np.full(z.shape, "", dtype=object)
    ys = []
    for i, cells in enumerate(rows):
        if i < len(seqs):
            sample = seqs[i]
            seq = state.seqs.get(sample)
            ys.append(f"sample {sample + 1}")
        else:  # where the next sample starts: kept tokens are the agreed ones (those of any sample)
            seq = state.seqs.get(seqs[0]) if seqs else None
            ys.append(f"next start (sample {i + 1})")
        z[i, :len(cells)] = [index.get(c, np.nan) for c in cells]
        for p, c in enumerate(cells):
            shown = "▒" if seq is None or (i >= len(seqs) and c != "k") else plot_text(state.text(token_id(seq, p)))
            text[i, p] = f"{shown}<br>{names.get(c, '?')}"
    n = len(CATEGORIES)
    scale = []
    for i, (_, _, colour, _) in enumerate(CATEGORIES):  # a step colour scale: category i fills [i/n, (i+1)/n]
        scale += [[i / n, colour], [(i + 1) / n, colour]]
    data = [
        go.Heatmap(
            z=z,
            x=np.arange(width),
            y=ys,
            text=text.astype(str),
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=scale,
            showscale=False,
            xgap=1,
            ygap=2,
            hoverongaps=False,
            hovertemplate="%{y} · pos %{x}<br>token %{text}<extra></extra>",
        )
    ]
    for _, _, colour, text in CATEGORIES:  # legend entries (a heatmap has no categorical legend of its own)
        data.append(go.Scatter(x=[None], y=[None], mode="markers", name=text,
                               marker={"size": 12, "color": colour, "symbol": "square"}))
    height = 280 + 36 * len(z)  # the legend sits below the axis title (100 px down), in the bottom margin
    return figure(data, f"Round {sel.round}: where the samples agree", height,
                  xaxis={"title": _title("position in the answer")}, yaxis={"autorange": "reversed"},
                  legend={"orientation": "h", "y": -100 / (height - 170), "yanchor": "top"},
                  margin={"l": 60, "r": 20, "t": 40, "b": 130})


TALLY_COLOURS = {"answer-correct": "#1e8449", "answer-wrong": "#c0392b", "answer-unchecked": "#5b6b82"}


def tally_html(state: State, k: int | None = None, meta: Meta | None = None) -> str:
    """The running vote: each answer with a bar, the final answer highlighted in the style of its verdict
    (correct / wrong / unchecked), and why voting stopped."""
    sel = state.selection
    if sel is None:
        return '<div class="dl-wait">The tally appears when the first sample is done.</div>'
    total = max(k or 0, len(sel.answers), 1)
    final_answer = sel.answer if sel.reason is not None else None
    lines = []
    for answer, votes in sel.tally[:20]:
        votes = votes if isinstance(votes, int) and not isinstance(votes, bool) else 0
        final = final_answer is not None and answer == final_answer
        shown = "no answer" if answer is None else html.escape(answer_text(answer))
        colour = TALLY_COLOURS[answer_class(answer, meta)] if final else "#7f9cc7"
        width = 100 * min(max(votes, 0), total) / total
        lines.append(
            f'<div style="display:flex;align-items:center;margin:3px 0;{"font-weight:700" if final else ""}">'
            f'<span class="dl-vote" style="width:70px;font-family:ui-monospace,monospace;overflow:hidden;'
            f'text-overflow:ellipsis;white-space:nowrap">{shown}</span>'
            f'<span style="flex:1;background:#eee;border-radius:4px;height:16px;margin:0 8px">'
            f'<span style="display:block;height:16px;width:{width:.0f}%;background:{colour};border-radius:4px"></span></span>'
            f'<span style="width:70px">{votes} vote{"s" if votes != 1 else ""}{" ✔" if final else ""}</span></div>'
        )
    answers = ", ".join("—" if a is None else html.escape(answer_text(a)) for a in sel.answers[:MAX_ROWS])
    parts = [f'<div style="font-size:13px;color:#555">round {sel.round} · answers so far: {answers}</div>', *lines]
    if sel.reason is not None:
        reason = STOP_REASONS.get(sel.reason, sel.reason)
        final = "none" if final_answer is None else answer_text(final_answer)
        won = next((v for a, v in sel.tally if a == final_answer), None)
        if isinstance(won, int) and not isinstance(won, bool) and k:  # say the numbers: "2 of K=3 votes"
            n = len(sel.answers)
            reason += f" ({won} of K={k} votes after {n} sample{'s' if n != 1 else ''})"
        parts.append(
            f'<div class="dl-final {answer_class(final_answer, meta)}" style="margin-top:8px;padding:6px 10px">'
            f"<b>final answer {html.escape(final)}{_mark(final_answer, meta)}</b> — {html.escape(reason)}</div>"
        )
    return "".join(parts)


def nfe_meter_html(state: State, k: int, full_cost: int | None = None) -> str:
    """Forward passes per sample (Node.nfe) and in total (Selection.nfe), against what majority@K would cost
    (K full decodes). full_cost: one full decode's passes; default = the first sample's (it always starts
    fully masked)."""
    sel = state.selection
    if sel is None:
        return ""
    per = []
    for node_id in sel.nodes[:MAX_ROWS]:
        node = state.nodes.get(node_id)
        per.append(node.nfe if node is not None and node.nfe is not None else 0)
    full = full_cost or (per[0] if per else 0)
    budget = max(k * full, sel.nfe, 1)
    bars = "".join(
        f'<span title="sample {i + 1}: {n} passes" style="display:inline-block;height:18px;width:{100 * n / budget:.2f}%;'
        f'background:{"#3b6fb6" if i % 2 == 0 else "#6d95cf"};border-right:1px solid white"></span>'
        for i, n in enumerate(per)
    )
    saving = f" — {k * full / sel.nfe:.1f}× fewer" if sel.nfe and full else ""
    detail = " + ".join(str(n) for n in per)
    return (
        '<div style="font-size:13px">'
        f'<div style="background:#eee;border-radius:4px;overflow:hidden;white-space:nowrap;height:18px">{bars}</div>'
        f'<div style="margin-top:4px"><b>{sel.nfe}</b> forward passes ({detail}) vs '
        f"≈ <b>{k * full}</b> for majority@{k} ({k} × {full}){saving}</div></div>"
    )


# ---------------------------------------------------------------- benchmark


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
    data = []
    for method, acc, nfe, sec in pts:
        data.append(
            go.Scatter(
                x=[nfe],
                y=[acc * scale],
                mode="markers",  # labels go in the legend: text labels collide when methods cost alike
                name=html.escape(method, quote=False),
                marker={"size": 12},
                hovertemplate=f"{html.escape(method, quote=False)}<br>accuracy %{{y:.1f}}%<br>%{{x:.0f}} forward passes"
                + (f"<br>{sec:.2f}s" if sec is not None else "")
                + "<extra></extra>",
            )
        )
    return figure(data, "Accuracy vs cost (held-out problems)", 320,
                  xaxis={"title": _title("forward passes per problem (NFE)"), "type": "log"},
                  yaxis={"title": _title("accuracy (%)")}, showlegend=True,
                  legend={"orientation": "v", "x": 1.02, "y": 1})


# ---------------------------------------------------------------- helpers


def _mark(answer: str | None, meta: Meta | None) -> str:
    cls = answer_class(answer, meta)
    if cls == "answer-unchecked" or meta is None:
        return ""
    return " ✓" if cls == "answer-correct" else f" ✗ (expected {html.escape(answer_text(meta.expected))})"


def _sample_seqs(state: State, sel: Selection) -> list[int]:
    """The sequence id of each candidate of a selection (its node's seq, else the node id)."""
    out = []
    for node_id in sel.nodes:
        node = state.nodes.get(node_id)
        out.append(node.seq if node is not None and node.seq is not None else node_id)
    return out


def _k(meta: Meta | None) -> int:
    k = (meta.params if meta is not None else {}).get("k")
    return k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else 1


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None
