"""The test-time search tab's views (the view contract of viz/panels.py): the search tree as it grows, the answer
clusters, each completion's per-step PRM scores, the cost line; plus the compute-optimal figure (extras).

The tree: one node per step (its text, PRM score and status: kept / pruned / finished / duplicate), edges to its
parent, the chosen answer's path drawn thick. Scrubbing goes by iteration (one frame per iteration: a search
records each iteration's tokens at the pass that ended it). The `rank_by` option (0 last, 1 min, 2 prod)
re-ranks the final candidates from the trace's per-step scores (each node's score, read along its path), with
no rerun; the statuses during the search stay those of the run's own aggregation.

Pure: reads a decoding.fold.State and the trace's Meta; no torch, no gradio. Every model string is escaped.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from decoding.fold import State
from decoding.selection import AGGREGATIONS, aggregate, pick, weighted_tally
from decoding.tasks import normalize
from decoding.trace import Meta, Node, Selection
from viz.panels import Option, Panel
from viz.tokens import md_escape

STATUS_STYLE = {  # status -> (colour, marker symbol, legend text)
    "kept": ("#16a34a", "circle", "kept (expanded next)"),
    "pruned": ("#9ca3af", "circle", "pruned"),
    "finished": ("#2563eb", "square", "finished (EOS / length / empty / answer)"),
    "duplicate": ("#d1d5db", "circle-open", "duplicate (dropped)"),
    "active": ("#f59e0b", "circle", "active"),
}
CHOSEN = "#ea580c"
FONT = {"family": "Inter, system-ui, sans-serif", "size": 12}
RULE_OF = {"best_of_n": "naive", "weighted_best_of_n": "weighted", "majority": "majority"}
RULE_TEXT = {"naive": "highest score (Best-of-N)", "weighted": "largest summed score (weighted BoN)",
             "majority": "most votes (majority)"}
MAX_LABELS = 60  # nodes drawn with their text beside them; above this only the chosen path is labelled
MAX_NODES = 3000  # a hostile trace cannot make the tree figure unbounded

PANELS = [
    Panel("tree", "plot", "Search tree", placeholder="the search tree grows here, one column per step", height=360),
    Panel("cost", "html", "Cost", placeholder=""),
    Panel("clusters", "html", "Answers", placeholder='<div style="color:#888">Answer clusters appear when the '
          "run has candidates.</div>", row="scores"),
    Panel("strips", "plot", "Per-step scores", placeholder="per-step PRM scores", height=240, row="scores"),
]
OPTIONS = [Option("rank_by", 0, "Rank by: 0 last · 1 min · 2 prod (re-ranks the trace, no rerun)",
                  minimum=0)]


# ---------------------------------------------------------------- reading the trace


def how_of(option: object, meta: Meta | None = None) -> str:
    """The option's number (0 last, 1 min, 2 prod) as an aggregation; out of range: the run's own."""
    if isinstance(option, (int, float)) and not isinstance(option, bool) and math.isfinite(option) \
            and 0 <= int(option) < len(AGGREGATIONS):
        return AGGREGATIONS[int(option)]
    run = (meta.params.get("aggregation") if meta is not None else None) or "last"
    return run if run in AGGREGATIONS else "last"


def rule_of(meta: Meta | None) -> str:
    params = meta.params if meta is not None else {}
    method = str(params.get("method", "beam_search"))
    rule = RULE_OF.get(method) or str(params.get("final", "naive"))
    return rule if rule in RULE_TEXT else "naive"


def path(nodes: dict[int, Node], node_id: int) -> list[Node]:
    """Root-to-node chain (cycles and missing parents in an uploaded trace just end it)."""
    out, seen, cur = [], set(), nodes.get(node_id)
    while cur is not None and cur.id not in seen and len(out) < MAX_NODES:
        out.append(cur)
        seen.add(cur.id)
        cur = nodes.get(cur.parent) if cur.parent is not None else None
    return out[::-1]


def path_scores(nodes: dict[int, Node], node_id: int) -> list[float]:
    return [n.score for n in path(nodes, node_id) if n.score is not None]


@dataclass
class Ranking:
    """The candidates the view ranks: the final selection's outputs (else the latest iteration's)."""

    nodes: list[int]
    answers: list[str | None]
    scores: list[float]  # aggregated under `how`, from the path's per-step scores
    chosen: int | None  # index into nodes
    how: str
    rule: str
    final: bool


def ranking(state: State, meta: Meta | None, how: str) -> Ranking | None:
    sel = _final(state) or state.selection
    if sel is None or not sel.nodes:
        return None
    ids = [i for i in sel.nodes if i in state.nodes]
    answers = [state.nodes[i].answer for i in ids]
    scores = [aggregate(path_scores(state.nodes, i), how) for i in ids]
    final = _final(state) is not None
    rule = rule_of(meta)
    chosen = pick(answers, scores, rule) if final and ids else None
    return Ranking(ids, answers, scores, chosen, how, rule, final)


def _final(state: State) -> Selection | None:
    return next((s for s in reversed(state.selections) if s.reason is not None), None)


def expected(meta: Meta | None) -> str | None:
    return meta.expected if meta is not None else None


def correct(answer: str | None, meta: Meta | None) -> bool | None:
    exp = expected(meta)
    if exp is None:
        return None
    return answer is not None and normalize(answer) == normalize(exp)


# ---------------------------------------------------------------- the tree


def layout(nodes: dict[int, Node]) -> dict[int, tuple[int, float]]:
    """(depth, y) per node: a tidy tree, leaves in depth-first order (children by id), parents centred."""
    children: dict[int | None, list[int]] = {}
    for n in list(nodes.values())[:MAX_NODES]:
        parent = n.parent if n.parent in nodes and n.parent != n.id else None
        children.setdefault(parent, []).append(n.id)
    for kids in children.values():
        kids.sort()
    pos: dict[int, tuple[int, float]] = {}
    next_leaf = 0.0
    stack: list[tuple[int, int, bool]] = [(c, 1, False) for c in reversed(children.get(None, []))]
    while stack:  # iterative DFS (an uploaded trace can be deep)
        node, depth, done = stack.pop()
        kids = [k for k in children.get(node, []) if k not in pos]
        if done or not kids:
            ys = [pos[k][1] for k in kids if k in pos] if done else []
            if not ys:
                ys = [next_leaf]
                next_leaf += 1
            pos[node] = (depth, sum(ys) / len(ys))
            continue
        stack.append((node, depth, True))
        stack += [(k, depth + 1, False) for k in reversed(kids)]
    return pos


def _short(text: str | None, n: int = 18) -> str:
    text = (text or "").replace("\n", "⏎")
    return text if len(text) <= n else text[:n - 1] + "…"


def tree_figure(state: State, meta: Meta | None, how: str) -> go.Figure:
    nodes = state.nodes
    if not nodes:
        return _empty("the tree appears after the first iteration", 360)
    pos = layout(nodes)
    rank = ranking(state, meta, how)
    chosen_path: set[int] = set()
    if rank is not None and rank.chosen is not None:
        chosen_path = {n.id for n in path(nodes, rank.nodes[rank.chosen])}
    data: list = []
    for style, ids in (("plain", [i for i in pos if i not in chosen_path]), ("chosen", sorted(chosen_path))):
        xs, ys = [], []
        for i in ids:
            parent = nodes[i].parent
            if parent in pos and parent != i:
                xs += [pos[parent][0], pos[i][0], None]
                ys += [pos[parent][1], pos[i][1], None]
        if xs:
            data.append(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                   line={"color": CHOSEN if style == "chosen" else "#cbd5e1",
                                         "width": 4 if style == "chosen" else 1.2}))
    label_all = len(pos) <= MAX_LABELS
    for status, (colour, symbol, legend) in STATUS_STYLE.items():
        ids = [i for i in pos if nodes[i].status == status]
        if not ids:
            continue
        data.append(go.Scatter(
            x=[pos[i][0] for i in ids], y=[pos[i][1] for i in ids], name=legend,
            mode="markers+text", text=[html.escape(_short(nodes[i].text)) if label_all or i in chosen_path else ""
                                       for i in ids],
            textposition="top center", textfont={"size": 10, "color": "#374151"},
            marker={"color": colour, "symbol": symbol, "size": 11,
                    "line": {"color": [CHOSEN if i in chosen_path else colour for i in ids],
                             "width": [3 if i in chosen_path else 1 for i in ids]}},
            hovertext=[_hover(nodes, i, how) for i in ids], hoverinfo="text"))
    leaves = max((y for _, y in pos.values()), default=0) + 1
    depth = max((d for d, _ in pos.values()), default=1)
    sel = state.selection
    title = f"Search tree · iteration {len(_iterations(state))} · {len(pos)} nodes"
    if rank is not None and rank.chosen is not None:
        title += f" · chosen #{html.escape(str(rank.answers[rank.chosen]))} ({how})"
    elif sel is not None and sel.answer is not None:
        title += f" · best finished so far #{html.escape(sel.answer)}"
    fig = go.Figure(data)
    fig.update_layout(title={"text": title, "font": {"size": 13}, "x": 0.01}, font=FONT,
                      height=int(max(300, min(900, 22 * leaves + 110))), margin={"l": 30, "r": 10, "t": 40, "b": 30},
                      plot_bgcolor="white", legend={"orientation": "h", "y": -0.08},
                      xaxis={"title": "step", "dtick": 1, "range": [0.5, depth + 0.9], "gridcolor": "#f1f5f9"},
                      yaxis={"visible": False, "range": [leaves - 0.4, -0.9]})  # reversed, room for labels
    return fig


def _hover(nodes: dict[int, Node], i: int, how: str) -> str:
    n = nodes[i]
    bits = [f"<b>{html.escape(_short(n.text, 60))}</b>", f"node {n.id} · {n.status}"
            + (f" ({html.escape(n.stop)})" if n.stop else "")]
    if n.score is not None:
        bits.append(f"PRM step score {n.score:.3f} · path {how} {aggregate(path_scores(nodes, i), how):.3f}")
    if n.answer is not None:
        bits.append(f"answer #{html.escape(n.answer)}")
    return "<br>".join(bits)


def _iterations(state: State) -> list[Selection]:
    return [s for s in state.selections if s.reason is None]


# ---------------------------------------------------------------- clusters, strips, cost


def clusters_html(state: State, meta: Meta | None, how: str) -> str:
    rank = ranking(state, meta, how)
    if rank is None:
        return '<div style="color:#888">Answer clusters appear when the run has candidates.</div>'
    votes: dict[str, int] = {}
    best: dict[str, float] = {}
    for a, s in zip(rank.answers, rank.scores):
        if a is not None:
            votes[a] = votes.get(a, 0) + 1
            best[a] = max(best.get(a, 0.0), s)
    summed = weighted_tally(rank.answers, rank.scores)
    chosen = rank.answers[rank.chosen] if rank.chosen is not None else None
    rows = []
    for a in sorted(summed, key=lambda a: (-summed[a], -votes[a])):
        ok = correct(a, meta)
        mark = "" if ok is None else (" ✓" if ok else " ✗")
        style = f"background:{CHOSEN}22;font-weight:600" if a == chosen else ""
        rows.append(f'<tr style="{style}"><td>#{html.escape(a)}{mark}</td><td>{votes[a]}</td>'
                    f"<td>{summed[a]:.3f}</td><td>{best[a]:.3f}</td></tr>")
    none = sum(a is None for a in rank.answers)
    what = "final candidates" if rank.final else "candidates of the latest iteration"
    head = (f"<div><b>{len(rank.nodes)} {what}</b>, scored by <b>{how}</b> · pick: {RULE_TEXT[rank.rule]}"
            + (f" · {none} without an answer" if none else "") + "</div>")
    table = ('<table style="border-collapse:collapse;width:100%;font-size:13px"><tr><th align=left>answer</th>'
             "<th align=left>count</th><th align=left>summed score</th><th align=left>best score</th></tr>"
             + "".join(rows) + "</table>")
    return head + (table if rows else '<div style="color:#888">no answer yet</div>')


def strips_figure(state: State, meta: Meta | None, how: str) -> go.Figure:
    rank = ranking(state, meta, how)
    if rank is None or not rank.nodes:
        return _empty("per-step scores appear with the candidates", 240)
    rows = [path_scores(state.nodes, i) for i in rank.nodes[:64]]
    width = max((len(r) for r in rows), default=0)
    if not width:
        return _empty("no PRM scores in this run (majority@N does not score)", 240)
    z = [r + [None] * (width - len(r)) for r in rows]
    labels = [f"{'★ ' if k == rank.chosen else ''}{k + 1}: {'no answer' if a is None else '#' + html.escape(a)} "
              f"({s:.2f})"
              for k, (a, s) in enumerate(zip(rank.answers, rank.scores))][:64]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(1, width + 1)), y=labels, zmin=0, zmax=1, colorscale="RdYlGn",
                               hovertemplate="step %{x}<br>score %{z:.3f}<extra>%{y}</extra>",
                               colorbar={"title": "P(good)", "thickness": 10}))
    fig.update_layout(title={"text": f"PRM score per step ({how} ranks them)", "font": {"size": 13}, "x": 0.01},
                      font=FONT, height=int(max(200, min(700, 18 * len(rows) + 90))),
                      margin={"l": 10, "r": 10, "t": 40, "b": 30}, xaxis={"title": "step", "dtick": 1},
                      yaxis={"autorange": "reversed", "automargin": True})
    return fig


def cost_html(state: State) -> str:
    end = state.end
    summary = end.summary if end is not None else {}
    tokens = summary.get("tokens")
    if not isinstance(tokens, int):
        tokens = sum(sum(t is not None for t in s.ids) for s in state.seqs.values())
    passes = end.nfe if end is not None else (state.selection.nfe if state.selection else state.step)
    calls = summary.get("prm_calls")
    if not isinstance(calls, int):
        calls = len(_iterations(state))
    prm_passes = summary.get("prm_passes")
    bits = [f"<b>{tokens}</b> tokens generated", f"<b>{passes}</b> forward passes (policy)",
            f"<b>{calls}</b> PRM calls" + (f" ({prm_passes} PRM passes)" if isinstance(prm_passes, int) else "")]
    if end is not None:
        bits.append(f"{end.seconds:.2f} s")
    return '<div style="font-size:14px">' + " · ".join(bits) + "</div>"


# ---------------------------------------------------------------- the contract


def render(state: State, meta: Meta | None, *, plots: bool = True, rank_by: float = 0) -> dict[str, object]:
    how = how_of(rank_by, meta)
    return {
        "tree": tree_figure(state, meta, how) if plots else None,
        "cost": cost_html(state),
        "clusters": clusters_html(state, meta, how),
        "strips": strips_figure(state, meta, how) if plots else None,
    }


def progress(state: State, meta: Meta | None) -> str:
    params = meta.params if meta is not None else {}
    method = md_escape(str(params.get("method", "search")).replace("_", " "))
    if state.end is None:
        return (f"▶ **running** {method} · iteration {len(_iterations(state)) + 1} · {len(state.nodes)} nodes · "
                f"{state.step} forward passes")
    end = state.end
    answer = "no answer" if end.answer is None else f"answer **#{md_escape(end.answer)}**"
    ok = correct(end.answer, meta)
    mark = "" if ok is None else (" ✓" if ok else f" ✗ (expected #{md_escape(expected(meta))})")
    head = "■ stopped" if end.stopped else "✓ done"
    reason = end.summary.get("stop_reason")
    return (f"{head}: {method}, {answer}{mark} · {end.nfe} forward passes · {end.seconds:.2f}s"
            + (f" · {md_escape(reason)}" if isinstance(reason, str) else ""))


def _empty(message: str, height: int) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(height=height, font=FONT, xaxis={"visible": False}, yaxis={"visible": False},
                      plot_bgcolor="white", margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      annotations=[{"text": html.escape(message), "showarrow": False,
                                    "font": {"size": 13, "color": "#888"}}])
    return fig


# ---------------------------------------------------------------- compute-optimal figure (the benchmark)

BENCH_DIR = Path(__file__).resolve().parent.parent / "examples" / "bench"
BENCH_PATH = BENCH_DIR / "search.json"  # CPU: more problems, N up to 16
BENCH_GPU_PATH = BENCH_DIR / "search_cuda.json"  # H100: fewer problems, N up to 64
BENCH_HARD_PATH = BENCH_DIR / "search_hard.json"  # CPU: levels 5-6 only, N up to 8
METHOD_COLOURS = {"majority": "#9ca3af", "best_of_n": "#2563eb", "weighted_best_of_n": "#7c3aed",
                  "beam_search": "#ea580c", "dvts": "#16a34a"}


def load_bench(path: Path = BENCH_PATH) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("results"), list) else None


def compute_optimal_figure(data: dict | None, cost: str = "tokens") -> go.Figure:
    """Accuracy against cost (generated tokens per problem, log scale) per method, overall and per level; the
    compute-optimal method per (level, budget) is ringed."""
    if not data or not data.get("results"):
        return _empty("run `python -m decoding.bench search` to draw the compute-optimal figure", 300)
    results = data["results"]
    levels = sorted({lv for r in results for lv in r.get("by_level", {})}, key=int)
    panels = ["all", *levels]
    cols = 4
    rows = math.ceil(len(panels) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[f"level {p}" if p != "all" else "all levels"
                                                              for p in panels],
                        horizontal_spacing=0.05, vertical_spacing=0.14)
    best = data.get("best", {})
    for k, panel in enumerate(panels):
        row, col = k // cols + 1, k % cols + 1
        for method in METHOD_COLOURS:
            pts = sorted((r for r in results if r["method"] == method), key=lambda r: r["n"])
            part = [r if panel == "all" else r.get("by_level", {}).get(panel) for r in pts]
            xs = [p[cost] for p in part if p]
            ys = [p["accuracy"] for p in part if p]
            ns = [r["n"] for r, p in zip(pts, part) if p]
            if not xs:
                continue
            ringed = [method in str(best.get(str(panel), {}).get(str(n), "")).split(" / ") for n in ns]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=method.replace("_", " "),
                                     legendgroup=method, showlegend=k == 0,
                                     line={"color": METHOD_COLOURS[method], "width": 1.5},
                                     marker={"size": [11 if b else 6 for b in ringed],
                                             "line": {"width": [2 if b else 0 for b in ringed], "color": "#111"}},
                                     customdata=ns, hovertemplate="N=%{customdata}<br>%{x:.0f} " + cost
                                     + "<br>accuracy %{y:.1%}<extra>" + method + "</extra>"),
                          row=row, col=col)
        fig.update_xaxes(type="log", row=row, col=col)
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=row, col=col)
    meta = data.get("meta", {})
    fig.update_layout(title={"text": html.escape(f"Accuracy vs {cost} generated per problem (N = "
                                                 f"{', '.join(map(str, meta.get('budgets', [])))}; ringed: "
                                                 "compute-optimal method per level and budget)"),
                             "font": {"size": 13}, "x": 0.01},
                      font=FONT, height=300 * rows + 60, margin={"l": 40, "r": 10, "t": 70, "b": 40},
                      legend={"orientation": "h", "y": -0.08}, plot_bgcolor="white")
    return fig


SHORT = {"majority": "maj", "best_of_n": "BoN", "weighted_best_of_n": "wBoN", "beam_search": "beam", "dvts": "DVTS"}


def _short_names(cell: object) -> str:
    return " / ".join(SHORT.get(m, m) for m in str(cell).split(" / "))


def best_table_html(data: dict | None) -> str:
    """The compute-optimal method per (level, budget), as the benchmark measured it."""
    if not data or not data.get("best"):
        return '<div style="color:#888">No benchmark yet: run `python -m decoding.bench search`.</div>'
    best = data["best"]
    budgets = sorted({int(n) for row in best.values() for n in row})
    head = "".join(f"<th>N={n}</th>" for n in budgets)
    lines = []
    for level in sorted(best, key=lambda x: (x != "all", x)):
        cells = "".join(f"<td>{html.escape(_short_names(best[level].get(str(n), '')))}</td>" for n in budgets)
        lines.append(f"<tr><td><b>{html.escape(str(level))}</b></td>{cells}</tr>")
    meta = data.get("meta", {})
    note = html.escape(f"{meta.get('problems', '?')} held-out problems, device {meta.get('device', '?')}; "
                       f"`{meta.get('command', 'python -m decoding.bench search')}`")
    return (f'<div style="overflow-x:auto"><table style="font-size:13px;border-collapse:collapse"><tr><th>level</th>'
            f'{head}</tr>{"".join(lines)}</table></div><div style="color:#666;font-size:12px">{note} · "tie": every '
            "method equally accurate; a / b: tied best; maj = majority, BoN = Best-of-N, wBoN = weighted BoN</div>")


def extras() -> list[tuple[str, object]]:
    """Below the tab: the compute-optimal figures and tables from examples/bench/search*.json."""
    out: list[tuple[str, object]] = []
    for path in (BENCH_PATH, BENCH_GPU_PATH, BENCH_HARD_PATH):
        data = load_bench(path)
        if data is None and path is not BENCH_PATH:
            continue
        meta = (data or {}).get("meta", {})  # Accordion labels are plain text
        levels = f", levels {meta['levels']}" if meta.get("levels") else ""
        where = f"{meta.get('problems', '?')} problems{levels}, {meta.get('device', '?')}" if data else ""
        out += [(f"Compute-optimal search ({where or 'no benchmark yet'}): accuracy vs generated tokens",
                 compute_optimal_figure(data)),
                (f"Best method per (level, budget) ({where})", best_table_html(data))]
    return out
