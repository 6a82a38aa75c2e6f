"""The HARP tab's views (the view-module contract of viz/panels.py): the HARP output beside plain decoding
with the first position where they part, the entropy strip (bits, θ line, hesitation points), the vanilla /
reframed / mixed top-k at one hesitation point, and the cost meter (forward passes, wall time vs plain).

Reads the sequences decoding/harp.py records (row 0): 0 the HARP output, 1 / 2 / 3 the vanilla / reframed /
mixed proposals at hesitation points only, 4 plain decoding. The selected point comes in as the `position`
option (an answer position; -1 follows: the first hesitation that flipped the token, else the most uncertain).
Pure: no torch, no gradio; every token text is escaped (`label`).
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go

from decoding.fold import MAX_POSITIONS, Seq, State
from decoding.trace import Meta
from viz.heatmap import _title, empty_figure, figure
from viz.panels import Option, Panel
from viz.tokens import STYLE, answer_text, is_correct, label, md_escape, plot_text, render_row, seq_nodes, top_pairs

OUT, VANILLA, REFRAMED, MIXED, PLAIN = range(5)  # decoding.harp's roles (copied: views do not import torch)
LN2 = math.log(2)
COLOURS = {"flip": "#c0392b", "hes": "#d68910", "calm": "#9db4d6", "theta": "#555555"}

PANELS = [
    Panel("output", "html", "HARP vs plain",
          placeholder='<div class="dl-canvas" style="color:#888;padding:12px 0">The HARP output and the plain '
                      "decoding of the same prompt appear here when the run starts.</div>"),
    Panel("strip", "plot", "Entropy", placeholder="entropy per token (bits) with the θ line", height=260),
    Panel("point", "html", "Hesitation point",
          placeholder='<div style="color:#888">The vanilla, reframed and mixed top-k at a hesitation point.</div>'),
    Panel("cost", "html", "Cost", placeholder=""),
]
OPTIONS = [Option("position", -1, "Hesitation point (answer position; -1: the first flip, else the most "
                                  "uncertain)", minimum=-1)]


def render(state: State, meta: Meta | None, *, plots: bool = True, position: float | None = -1) -> dict[str, object]:
    pos = selected(state, -1 if position is None else int(position))
    return {
        "output": output_html(state, meta, pos),
        "strip": entropy_strip(state, meta, pos) if plots else None,
        "point": point_html(state, meta, pos),
        "cost": cost_html(state),
    }


# ---------------------------------------------------------------- reading the trace


def _seq(state: State, role: int) -> Seq | None:
    return state.seqs.get(role)


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def theta(meta: Meta | None) -> float | None:
    return _num((meta.params if meta is not None else {}).get("theta"))


def bits(seq: Seq, p: int) -> float | None:
    """The recorded entropy (nats) at p, in bits."""
    e = _num(seq.entropy[p]) if 0 <= p < len(seq.entropy) else None
    return None if e is None else e / LN2


def decoded(seq: Seq | None) -> int:
    """Positions decoded so far (the answer grows left to right)."""
    return 0 if seq is None else sum(1 for t in seq.ids[:MAX_POSITIONS] if t is not None)


def points(state: State) -> list[int]:
    """Hesitation points: the positions where the reframed pass ran."""
    s = _seq(state, REFRAMED)
    return [] if s is None else [p for p, g in enumerate(s.guess[:MAX_POSITIONS]) if g is not None]


def flipped(state: State, p: int) -> bool:
    v, m = _seq(state, VANILLA), _seq(state, MIXED)
    return v is not None and m is not None and p < min(len(v.guess), len(m.guess)) and v.guess[p] != m.guess[p]


def selected(state: State, position: int) -> int | None:
    """The position to inspect: the one asked for, else the first flip, else the most uncertain hesitation."""
    if position >= 0:
        return position
    pts = points(state)
    if not pts:
        return None
    flips = [p for p in pts if flipped(state, p)]
    if flips:
        return flips[0]
    out = _seq(state, OUT)
    return max(pts, key=lambda p: (bits(out, p) or 0.0) if out is not None else 0.0)


def split_at(state: State) -> int | None:
    """The first position where HARP and plain decoding differ (None: the same so far, or no plain row)."""
    a, b = _seq(state, OUT), _seq(state, PLAIN)
    if a is None or b is None:
        return None
    n = min(decoded(a), decoded(b))
    split = next((p for p in range(n) if a.ids[p] != b.ids[p]), None)
    if split is None and state.end is not None and decoded(a) != decoded(b):
        split = n
    return split


# ---------------------------------------------------------------- panels


def _answer(state: State, role: int, meta: Meta | None) -> str:
    node = seq_nodes(state).get(role)
    if node is None or node.status == "active":
        return ""
    if node.answer is None:
        return '<span style="color:#c0392b">no answer line</span>'
    ok = is_correct(node.answer, meta)
    mark = "" if ok is None else " ✓" if ok else " ✗"
    colour = "#555" if ok is None else "#1e8449" if ok else "#c0392b"
    return (f'<span class="dl-harp-answer" style="color:{colour};font-weight:700">answer '
            f"{html.escape(answer_text(node.answer))}{mark}</span>")


def output_html(state: State, meta: Meta | None, pos: int | None) -> str:
    out = _seq(state, OUT)
    if state.start is None or out is None:
        return '<div class="dl-canvas" style="color:#888;padding:12px 0">Waiting for the first token…</div>'
    prompt = html.escape(state.start.prompt.strip()).replace("\n", "⏎")
    expected = f" · expected {html.escape(answer_text(meta.expected))}" if meta and meta.expected else ""
    head = f'<div style="font-size:13px;color:#444;margin-bottom:4px"><b>{prompt}</b>{expected}</div>'
    rows = [("HARP", out, OUT)] + ([("plain decoding", _seq(state, PLAIN), PLAIN)] if _seq(state, PLAIN) else [])
    body = ""
    for title, seq, role in rows:
        answer = _answer(state, role, meta)
        body += render_row(state, _trim(seq), title=f"{title} · {decoded(seq)} tokens") + (
            f'<div style="margin:2px 0 6px">{answer}</div>' if answer else "")
    pts = points(state)
    notes = []
    split = split_at(state)
    if split is not None:
        a, b = state.text(out.ids[split]) if split < len(out.ids) else "", ""
        plain = _seq(state, PLAIN)
        if plain is not None and split < len(plain.ids):
            b = state.text(plain.ids[split])
        notes.append(f'<span class="dl-harp-split">first split at position {split}: HARP '
                     f"<code>{label(a) or '(end)'}</code> vs plain <code>{label(b) or '(end)'}</code></span>")
    elif _seq(state, PLAIN) is not None and state.end is not None:
        notes.append('<span class="dl-harp-split">HARP and plain decoding wrote the same tokens</span>')
    n_flip = sum(flipped(state, p) for p in pts)
    notes.append(f"{len(pts)} hesitation point{'s' * (len(pts) != 1)} ({n_flip} flipped the token)"
                 + (f" at positions {', '.join(_point_label(state, p, pos) for p in pts[:40])}" if pts else ""))
    foot = "".join(f'<div style="font-size:13px;color:#444;margin-top:3px">{n}</div>' for n in notes)
    return f'<div class="dl-canvas" style="padding:4px 2px">{STYLE}{head}{body}{foot}</div>'


def _trim(seq: Seq) -> Seq:
    """The row up to its last decoded token: the positions an early EOS left empty are not drawn as masks."""
    n = decoded(seq)
    out = seq.copy()
    for name in ("ids", "guess", "conf", "entropy", "top"):
        setattr(out, name, getattr(out, name)[:n])
    return out


def _point_label(state: State, p: int, pos: int | None) -> str:
    mark = "⟲" if flipped(state, p) else ""
    style = "font-weight:700;text-decoration:underline" if p == pos else ""
    return f'<span class="dl-harp-point" style="{style}">{p}{mark}</span>'


def entropy_strip(state: State, meta: Meta | None, pos: int | None) -> go.Figure:
    """Entropy (bits) of the vanilla distribution per generated token, the θ line, hesitation points coloured
    (red: the token flipped; orange: hesitated, same token), the selected point ringed."""
    out = _seq(state, OUT)
    n = decoded(out)
    if out is None or n == 0:
        return empty_figure("no tokens yet", 260)
    pts = set(points(state))
    xs = list(range(n))
    ys = [bits(out, p) for p in xs]
    kind = ["flip" if p in pts and flipped(state, p) else "hes" if p in pts else "calm" for p in xs]
    texts = [plot_text(state.text(out.ids[p])) for p in xs]
    hover = [f"{t} · {'hesitated, token flipped' if k == 'flip' else 'hesitated' if k == 'hes' else 'no hesitation'}"
             for t, k in zip(texts, kind)]
    data: list = [go.Bar(x=xs, y=[y if y is not None else 0 for y in ys], marker_color=[COLOURS[k] for k in kind],
                         customdata=hover, hovertemplate="position %{x}: %{customdata}<br>%{y:.3f} bits<extra></extra>",
                         showlegend=False)]
    th = theta(meta)
    shapes = []
    if th is not None:
        shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": th, "y1": th,
                       "line": {"color": COLOURS["theta"], "dash": "dash", "width": 1.5}})
    if pos is not None and 0 <= pos < n:
        data.append(go.Scatter(x=[pos], y=[(ys[pos] or 0) + 0.05], mode="markers", showlegend=False,
                               marker={"symbol": "triangle-down", "size": 12, "color": "#111"},
                               hovertemplate="selected: position %{x}<extra></extra>"))
    top = max([y for y in ys if y is not None] + [th or 0, 0.5]) * 1.15
    title = (f"Entropy per token (bits) · θ = {th:g}<br><sup>orange = hesitated · red = the token flipped · "
             f"grey = below θ</sup>" if th is not None else "Entropy per token (bits)")
    return figure(data, title, 260, xaxis={"title": _title("position in the answer")},
                  yaxis={"title": _title("bits"), "range": [0, top]}, shapes=shapes, bargap=0.15,
                  margin={"l": 50, "r": 10, "t": 60, "b": 40})


def _topk_table(state: State, seq: Seq | None, p: int, name: str, css: str, chosen: bool = False) -> str:
    """One distribution's top-k at p (its own pick highlighted), as an escaped HTML table."""
    pairs = top_pairs(state, seq, p, 10) if seq is not None else []
    guess = seq.guess[p] if seq is not None and p < len(seq.guess) else None
    rows = "".join(
        f'<tr style="{"background:#e3f4e8;font-weight:700" if tid == guess else ""}"><td><code>{label(text)}</code>'
        f'</td><td style="text-align:right;padding:0 4px">{prob:.3f}</td><td style="width:34px"><div style="height:8px;'
        f'background:#5b8def;width:{max(1, round(32 * prob))}px"></div></td></tr>'
        for tid, text, prob in pairs)
    pick = f"pick <code>{label(state.text(guess))}</code>" if guess is not None else "no record"
    ent = bits(seq, p) if seq is not None else None
    ent_text = f" · {ent:.3f} bits" if ent is not None else ""
    note = ' <span style="color:#888">(HARP takes its pick)</span>' if chosen else ""
    return (f'<div class="dl-harp-topk {css}" style="flex:1 1 0;min-width:104px;margin:0 6px 6px 0">'
            f'<div style="font-weight:600">{html.escape(name)}{note}</div><div style="font-size:12px;color:#555">'
            f'{pick}{ent_text}</div><table style="font-size:13px;border-collapse:collapse">{rows}</table></div>')


def point_html(state: State, meta: Meta | None, pos: int | None) -> str:
    """At the selected hesitation point: the vanilla, reframed and mixed top-k side by side, and the verdict."""
    out = _seq(state, OUT)
    if out is None or pos is None:
        msg = "no hesitation point yet" if state.end is None else "no token hesitated in this run (every entropy ≤ θ)"
        return f'<div style="color:#888">{msg}</div>'
    if pos >= decoded(out):
        return f'<div class="dl-harp-none" style="color:#555">Position {pos} is past the answer ({decoded(out)} tokens).</div>'
    if pos not in points(state):
        e = bits(out, pos)
        th = theta(meta)
        why = f" (entropy {e:.3f} bits ≤ θ = {th:g})" if e is not None and th is not None else ""
        return (f'<div class="dl-harp-none" style="color:#555">Position {pos} did not hesitate{html.escape(why)}: '
                f"one vanilla pass chose its token.</div>" + _topk_table(state, out, pos, "vanilla", "dl-harp-vanilla"))
    flip = flipped(state, pos)
    v, m = _seq(state, VANILLA), _seq(state, MIXED)
    verdict = (f'<div class="dl-harp-verdict" style="font-weight:700;color:{"#c0392b" if flip else "#1e8449"}">'
               + (f"flipped: vanilla <code>{label(state.text(v.guess[pos]))}</code> → mixed "
                  f"<code>{label(state.text(m.guess[pos]))}</code>" if flip else "not flipped: the mix kept the "
                  "vanilla token") + "</div>")
    e = bits(out, pos)
    head = f'<div style="font-size:13px;color:#444">position {pos} · vanilla entropy {e:.3f} bits</div>' if e is not None else ""
    tables = "".join(_topk_table(state, seq, pos, name, f"dl-harp-{name.split()[0]}", chosen=name == "mixed")
                     for seq, name in ((v, "vanilla"), (_seq(state, REFRAMED), "reframed (δ of the embeddings zeroed)"),
                                       (m, "mixed")))
    return f'<div class="dl-harp-point-view">{head}{verdict}<div style="display:flex;flex-wrap:wrap">{tables}</div></div>'


def _cost(state: State) -> tuple[int, int, float | None, float | None]:
    """(HARP passes, plain passes, HARP seconds, plain seconds): from the run's summary once it ended, else
    counted from the trace (one pass per token, one more per hesitation)."""
    summary = state.end.summary if state.end is not None else {}
    harp = summary.get("harp_nfe")
    plain = summary.get("plain_nfe")
    harp = harp if isinstance(harp, int) else decoded(_seq(state, OUT)) + len(points(state))
    plain = plain if isinstance(plain, int) else decoded(_seq(state, PLAIN))
    return harp, plain, _num(summary.get("harp_seconds")), _num(summary.get("plain_seconds"))


def _bar(name: str, value: float, top: float, text: str, colour: str) -> str:
    width = 0 if top <= 0 else max(2, round(240 * value / top))
    return (f'<div style="display:flex;align-items:center;margin:2px 0"><span style="width:110px;font-size:13px">'
            f'{name}</span><span style="display:inline-block;height:12px;width:{width}px;background:{colour};'
            f'border-radius:2px"></span><span style="margin-left:6px;font-size:13px">{text}</span></div>')


def cost_html(state: State) -> str:
    harp, plain, hs, ps = _cost(state)
    if harp == 0:
        return ""
    parts = ['<div class="dl-harp-cost"><div style="font-weight:600">Cost: forward passes and wall time</div>']
    top = max(harp, plain)
    parts.append(_bar("HARP", harp, top, f"{harp} passes", "#d68910"))
    if plain:
        parts.append(_bar("plain", plain, top, f"{plain} passes", "#9db4d6"))
        parts.append(f'<div style="font-size:13px">passes: {harp / plain:.2f}× plain</div>')
    if hs is not None and ps:
        t = max(hs, ps)
        parts.append(_bar("HARP time", hs, t, f"{hs:.3f} s", "#d68910") + _bar("plain time", ps, t, f"{ps:.3f} s",
                                                                              "#9db4d6"))
        parts.append(f'<div style="font-size:13px">wall time: {hs / ps:.2f}× plain (one run on this machine, '
                     f"noisy, and HARP ran first, so a cold start counts against it; the README's benchmark interleaves "
                     f"many runs)</div>")
    return "".join(parts) + "</div>"


def progress(state: State, meta: Meta | None) -> str:
    """"▶ **running** HARP · token 23 / 80 · 2 hesitations (1 flipped)", then plain decoding's progress; at
    the end both answers, the hesitations and the cost."""
    out, plain = _seq(state, OUT), _seq(state, PLAIN)
    pts = points(state)
    flips = sum(flipped(state, p) for p in pts)
    hes = f"{len(pts)} hesitation{'s' * (len(pts) != 1)} ({flips} flipped)"
    bound = state.start.length if state.start is not None else None
    if state.end is None:
        if plain is not None:
            return f"▶ **running** plain decoding (for comparison) · token {decoded(plain)} · HARP: {hes}"
        return f"▶ **running** HARP · token {decoded(out)}{f' / {bound}' if bound else ''} · {hes}"
    end = state.end
    how = "■ stopped" if end.stopped else "✓ done"
    bits_ = [f"{how}: HARP answer {_md_answer(end.answer, meta)}"]
    nodes = seq_nodes(state)
    if PLAIN in nodes:
        bits_.append(f"plain {_md_answer(nodes[PLAIN].answer, meta)}")
    bits_.append(hes)
    harp, plain_n, hs, ps = _cost(state)
    cost = f"{harp} forward passes"
    if plain_n:
        cost += f" vs {plain_n} plain"
    if hs is not None and ps:
        cost += f" · {hs / ps:.2f}× plain time"
    bits_.append(cost)
    return " · ".join(bits_)


def _md_answer(answer: str | None, meta: Meta | None) -> str:
    if answer is None:
        return "(no answer line)"
    ok = is_correct(answer, meta)
    return f"**#{md_escape(answer)}**" + ("" if ok is None else " ✓" if ok else " ✗")
