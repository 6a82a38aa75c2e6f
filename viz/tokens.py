"""The canvas: one chip per generated position, one line per sample, coloured like LLaDA's demo.

masked -> dark grey (#444) with "▒" or the model's current guess, faint;
committed at this step -> red / orange / green by confidence (<0.3, <0.7, else);
committed earlier -> blue; special tokens ([EOS], <|eot_id|>) dim; newline -> "⏎".
Every piece of token text is html-escaped (it comes from a tokenizer or an uploaded file).
"""

from __future__ import annotations

import html
import math
import re

from decoding.trace import Event
from viz.state import Row, fold_rows, last_round, run_end, run_start

MASK_BG = "#444444"
NEW_LOW, NEW_MID, NEW_HIGH = "#f4a3a3", "#f8cf8c", "#a8e0b5"  # backgrounds; borders below are darker
NEW_LOW_B, NEW_MID_B, NEW_HIGH_B = "#c0392b", "#d68910", "#1e8449"
OLD_BG, OLD_FG = "#d6e4f7", "#1a3d6d"
_SPECIAL = re.compile(r"^(\[[A-Za-z_]+\]|<\|?[^<>\s]{1,40}\|?>|</?s>)$")
MAX_POSITIONS = 4096  # a hostile trace cannot make the page draw millions of chips


def is_special(text: str) -> bool:
    return bool(_SPECIAL.match(text))


def display_text(text: str) -> str:
    """How a token reads on a chip (still unescaped): newline as ⏎, spaces visible, specials shortened."""
    if is_special(text):
        return text.strip("[]<>|/") or text
    text = text.replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")
    return text.replace(" ", "␣") if text.strip() == "" else text


def confidence_colours(conf: float) -> tuple[str, str]:
    """(background, border) of a newly committed chip: LLaDA demo thresholds 0.3 / 0.7."""
    if conf < 0.3:
        return NEW_LOW, NEW_LOW_B
    if conf < 0.7:
        return NEW_MID, NEW_MID_B
    return NEW_HIGH, NEW_HIGH_B


def tooltip(row: Row, pos: int, top: int = 5) -> str:
    """Plain-text tooltip (escaped by the caller): position, confidence, entropy, top-k alternatives."""
    conf = _num(row.confidence, pos)
    ent = _num(row.entropy, pos)
    state = "masked" if _flag(row.masked, pos) else f"committed at step {row.commit_step[pos]}" if pos in row.commit_step else "kept"
    lines = [f"position {pos} · {state}", f"confidence {_fmt(conf)} · entropy {_fmt(ent)} nats"]
    alts = row.topk[pos] if pos < len(row.topk) and isinstance(row.topk[pos], list) else []
    for alt in alts[:top]:
        if isinstance(alt, list) and len(alt) >= 2:
            lines.append(f"  {display_text(str(alt[0]))!s:>6}  {_fmt(alt[1])}")
    return "\n".join(lines)


def chip(row: Row, pos: int, show_guesses: bool = True) -> str:
    token = row.tokens[pos] if pos < len(row.tokens) else ""
    conf = _num(row.confidence, pos)
    title = html.escape(tooltip(row, pos), quote=True)
    special = is_special(token)
    base = "display:inline-block;min-width:1.1em;padding:1px 4px;margin:1px;border-radius:4px;text-align:center;"
    base += "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:15px;line-height:1.35;border:1px solid "
    small = "font-size:10px;" if special else ""  # specials ([EOS]) stay small, masked or not: no layout jumps
    if _flag(row.masked, pos):
        label = html.escape(display_text(token)) if show_guesses and token else "▒"
        style = base + f"#333;background:{MASK_BG};color:#9a9a9a;{small}"
        return f'<span class="dl-chip dl-mask" style="{style}" title="{title}">{label}</span>'
    label = html.escape(display_text(token))
    if pos in row.new:
        bg, border = confidence_colours(conf if conf is not None else 1.0)
        style = base + f"{border};background:{bg};color:#111;font-weight:600;"
        cls = "dl-new"
    else:
        style = base + f"#b5c8e6;background:{OLD_BG};color:{OLD_FG};"
        cls = "dl-old"
    if special:
        style += "opacity:0.45;" + small
    return f'<span class="dl-chip {cls}" style="{style}" title="{title}">{label}</span>'


def render_row(row: Row, show_guesses: bool = True, label: str | None = None) -> str:
    n = min(len(row.tokens), MAX_POSITIONS)
    chips = "".join(chip(row, p, show_guesses) for p in range(n))
    head = ""
    if label is not None:
        head = f'<div style="font-size:12px;color:#666;margin:6px 0 2px">{html.escape(label)}</div>'
    tail = ""
    if row.done and row.answer is not None:
        tail = f'<span class="dl-answer" style="margin-left:8px;font-weight:700;color:#1e8449">→ #{html.escape(str(row.answer))}</span>'
    elif row.done:
        tail = '<span class="dl-answer" style="margin-left:8px;color:#c0392b">→ no answer line</span>'
    return f'{head}<div class="dl-row" style="display:flex;flex-wrap:wrap;align-items:center">{chips}{tail}</div>'


def legend() -> str:
    items = [
        (MASK_BG, "#8a8a8a", "▒ masked (faint: current guess)"),
        (NEW_LOW, "#111", "new, confidence < 0.3"),
        (NEW_MID, "#111", "new, < 0.7"),
        (NEW_HIGH, "#111", "new, ≥ 0.7"),
        (OLD_BG, OLD_FG, "committed earlier"),
    ]
    spans = "".join(
        f'<span style="display:inline-block;margin:0 10px 0 0"><span style="display:inline-block;width:12px;height:12px;'
        f'border-radius:3px;background:{bg};vertical-align:middle;margin-right:4px"></span>'
        f'<span style="color:#555;font-size:12px">{html.escape(text)}</span></span>'
        for bg, _fg, text in items
    )
    return f'<div class="dl-legend" style="margin:2px 0 8px">{spans}</div>'


def render_canvas(events: list[Event], show_guesses: bool = True, expected: int | None = None) -> str:
    """The whole canvas for a (possibly cut) list of events: a header line, one line per sample, legend."""
    start = run_start(events)
    rows = fold_rows(events)
    end = run_end(events)
    head = _header(events, rows, expected)
    if not rows:
        prompt = html.escape(start.prompt) if start else ""
        body = f'<div style="color:#888;padding:12px 0">Waiting for the first step… {prompt}</div>'
        return f'<div class="dl-canvas">{head}{body}</div>'
    multi = len(rows) > 1 or (start is not None and start.batch > 1)
    lines = "".join(render_row(r, show_guesses, f"sample {r.sample + 1}" if multi else None) for r in rows)
    foot = ""
    if end is not None and end.stopped:
        foot = '<div style="color:#c0392b;margin-top:6px">■ stopped by the user — the canvas shows where it got to.</div>'
    return f'<div class="dl-canvas" style="padding:4px 2px">{head}{lines}{foot}{legend()}</div>'


def _header(events: list[Event], rows: list[Row], expected: int | None) -> str:
    start = run_start(events)
    if start is None:
        return ""
    steps = max((r.step for r in rows), default=0)
    masked = sum(sum(1 for m in r.masked if m) for r in rows)
    total = sum(len(r.masked) for r in rows)
    prompt = html.escape(start.prompt.strip()).replace("\n", "⏎")
    bits = [f'<b style="font-family:ui-monospace,monospace">{prompt}</b>', f"step {steps}", f"{total - masked}/{total} decoded"]
    end = run_end(events)
    rnd = last_round(events)
    answer = end.answer if end is not None else (rnd.final_answer if rnd is not None else None)
    if end is None and len(rows) == 1 and rows[0].done:
        answer = rows[0].answer
    if answer is not None:
        verdict = ""
        if expected is not None:
            verdict = " ✓ correct" if answer == expected else f" ✗ (expected #{expected})"
        bits.append(f'<span class="dl-final" style="color:#1e8449;font-weight:700">answer #{html.escape(str(answer))}{verdict}</span>')
    if end is not None:
        bits.append(f"{end.nfe} forward passes · {end.seconds:.2f}s")
    return f'<div style="font-size:13px;color:#444;margin-bottom:6px">{" · ".join(bits)}</div>'


def _num(seq: list, i: int) -> float | None:
    v = seq[i] if i < len(seq) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _flag(seq: list, i: int) -> bool:
    return bool(seq[i]) if i < len(seq) else False


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"
