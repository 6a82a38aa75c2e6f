"""The canvas: one chip per generated position, one line per sequence (sample), coloured like LLaDA's demo.

masked -> dark grey (#444) with "▒" or the model's current guess, faint;
committed at the sequence's latest step (while that step is the run's latest) -> red / orange / green by
confidence (<0.3, <0.7, else); committed earlier or kept -> blue; special tokens ([EOS], <|eot_id|>) dim;
newline -> "⏎".

Reads a decoding.fold.State only (no folding here). Every string from a trace (token text, prompt, answers,
meta fields) is untrusted: it is html-escaped wherever it becomes HTML, and Markdown-escaped as well in the
status lines (`md_escape`).
"""

from __future__ import annotations

import html
import math
import re
from functools import lru_cache

from decoding.fold import MAX_POSITIONS, Seq, State
from decoding.trace import Meta, Node

MASK_BG = "#444444"
NEW_LOW, NEW_MID, NEW_HIGH = "#f4a3a3", "#f8cf8c", "#a8e0b5"  # backgrounds; borders below are darker
NEW_LOW_B, NEW_MID_B, NEW_HIGH_B = "#c0392b", "#d68910", "#1e8449"
OLD_BG, OLD_FG = "#d6e4f7", "#1a3d6d"
MAX_ROWS = 64  # sequences drawn at most (a hostile trace cannot make the page draw millions of rows)
_SPECIAL = re.compile(r"^(\[[A-Za-z_]+\]|<\|?[^<>\s]{1,40}\|?>|</?s>)$")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()|~#+!])")
_MD_AUTOLINK = re.compile(r"[:@]|(?i:www)\.")

# One style block per canvas: chips carry class names only (a live run redraws the canvas ~10×/s). The
# selectors escape the hyphen (`.dl\-mask` matches class dl-mask) so that a class name appears in the HTML
# only where a chip has it: callers check `"dl-mask" in canvas` for "still masked".
STYLE = (
    "<style>"
    ".dl\\-chip{display:inline-block;min-width:1.1em;padding:1px 4px;margin:1px;border-radius:4px;text-align:center;"
    "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:15px;line-height:1.35;border:1px solid #b5c8e6;"
    f"background:{OLD_BG};color:{OLD_FG}}}"
    f".dl\\-chip.dl\\-mask{{border-color:#333;background:{MASK_BG};color:#9a9a9a}}"
    ".dl\\-chip.dl\\-new{color:#111;font-weight:600}"
    f".dl\\-chip.dl\\-lo{{background:{NEW_LOW};border-color:{NEW_LOW_B}}}"
    f".dl\\-chip.dl\\-mid{{background:{NEW_MID};border-color:{NEW_MID_B}}}"
    f".dl\\-chip.dl\\-hi{{background:{NEW_HIGH};border-color:{NEW_HIGH_B}}}"
    ".dl\\-chip.dl\\-sp{font-size:10px}.dl\\-old.dl\\-sp,.dl\\-new.dl\\-sp{opacity:0.45}"
    "</style>"
)


# ---------------------------------------------------------------- text


@lru_cache(maxsize=8192)
def is_special(text: str) -> bool:
    return bool(_SPECIAL.match(text))


@lru_cache(maxsize=8192)
def display_text(text: str) -> str:
    """How a token reads on a chip (still unescaped): newline as ⏎, spaces visible, specials shortened."""
    if is_special(text):
        return text.strip("[]<>|/") or text
    text = text.replace("\r", "").replace("\n", "⏎").replace("\t", "⇥")
    return text.replace(" ", "␣") if text.strip() == "" else text


@lru_cache(maxsize=8192)
def label(text: str) -> str:
    """A token's chip / hover label: display_text, html-escaped (quotes too)."""
    return html.escape(display_text(text))


def md_escape(value: object) -> str:
    """An untrusted string for a Markdown status line, shown as text: html-escaped, Markdown punctuation
    backslash-escaped, newlines as spaces (no heading / list / quote can start), and `:` `@` `www.` as character
    references so that no bare URL or e-mail address becomes an autolink (GFM autolinks `http://…`, `www.…`)."""
    text = _MD_SPECIAL.sub(r"\\\1", html.escape(str(value), quote=False).replace("\r", " ").replace("\n", " "))
    return _MD_AUTOLINK.sub(lambda m: "&#58;" if m[0] == ":" else "&#64;" if m[0] == "@" else m[0][:3] + "&#46;", text)


def answer_text(answer: object) -> str:
    """`#42` for an answer (unescaped)."""
    return f"#{answer}"


# ---------------------------------------------------------------- answers


def is_correct(answer: str | None, meta: Meta | None) -> bool | None:
    """Whether `answer` equals meta.expected (as strings: a view never runs a task's number parsing on an
    uploaded trace's strings); None when there is nothing to compare."""
    expected = meta.expected if meta is not None else None
    if expected is None or answer is None:
        return None
    return str(answer).strip() == str(expected).strip()


def verdict(answer: str | None, meta: Meta | None) -> str:
    """" ✓ correct" / " ✗ (expected #x)" (html-escaped) or "" when there is nothing to compare."""
    ok = is_correct(answer, meta)
    if ok is None:
        return ""
    return " ✓ correct" if ok else f" ✗ (expected {html.escape(answer_text(meta.expected))})"


def end_line(state: State, meta: Meta | None) -> str:
    """The status line of a finished run (Markdown, escaped): "✓ done: answer **#3** ✓ · 5 forward passes ·
    0.10s · 5 steps" ("■ stopped" when the user pressed Stop)."""
    end = state.end
    if end is None:
        return ""
    how = "■ stopped" if end.stopped else "✓ done"
    answer = "no answer line" if end.answer is None else f"answer **#{md_escape(end.answer)}**"
    ok = is_correct(end.answer, meta)
    mark = "" if ok is None else " ✓" if ok else f" ✗ (expected #{md_escape(meta.expected)})"
    return f"{how}: {answer}{mark} · {end.nfe} forward passes · {end.seconds:.2f}s · {state.step} steps"


# ---------------------------------------------------------------- chips


def confidence_colours(conf: float) -> tuple[str, str]:
    """(background, border) of a newly committed chip: LLaDA demo thresholds 0.3 / 0.7."""
    if conf < 0.3:
        return NEW_LOW, NEW_LOW_B
    if conf < 0.7:
        return NEW_MID, NEW_MID_B
    return NEW_HIGH, NEW_HIGH_B


def confidence_class(conf: float) -> str:
    """The class of a newly committed chip (its colours: `confidence_colours`)."""
    return "dl-lo" if conf < 0.3 else "dl-mid" if conf < 0.7 else "dl-hi"


def token_id(seq: Seq, pos: int) -> int | None:
    """The id shown at a position: the committed / kept token, else the latest guess."""
    if not 0 <= pos < len(seq.ids):
        return None
    tid = seq.ids[pos]
    return tid if tid is not None else seq.guess[pos]


def position_state(seq: Seq, pos: int) -> str:
    if not 0 <= pos < len(seq.ids) or seq.ids[pos] is None:
        return "masked"
    if pos in seq.commit_step:
        return f"committed at step {seq.commit_step[pos]}"
    return "kept" if pos in seq.kept else "committed"


def top_pairs(state: State, seq: Seq, pos: int, k: int | None = None) -> list[tuple[int, str, float]]:
    """(id, text, probability) of the latest proposal's alternatives at a position (finite ones, at most k)."""
    top = seq.top[pos] if 0 <= pos < len(seq.top) else None
    if not isinstance(top, tuple) or len(top) != 2:
        return []
    out = []
    for tid, p in zip(top[0], top[1]):
        p = _num(p)
        if p is not None and isinstance(tid, int):
            out.append((tid, state.text(tid), p))
            if k is not None and len(out) >= k:
                break
    return out


def tooltip(state: State, seq: Seq, pos: int, top: int = 5) -> str:
    """Plain-text tooltip (escaped by the caller): position, state, confidence, entropy, top-k alternatives."""
    conf = _num(seq.conf[pos]) if pos < len(seq.conf) else None
    ent = _num(seq.entropy[pos]) if pos < len(seq.entropy) else None
    lines = [f"position {pos} · {position_state(seq, pos)}", f"confidence {_fmt(conf)} · entropy {_fmt(ent)} nats"]
    for _, text, p in top_pairs(state, seq, pos, top):
        lines.append(f"  {display_text(text):>6}  {_fmt(p)}")
    return "\n".join(lines)


def chip(state: State, seq: Seq, pos: int, new: set[int] | frozenset = frozenset(), show_guesses: bool = True) -> str:
    """One position's chip (styled by the canvas's STYLE block). `new`: the positions drawn as just committed
    (coloured by confidence)."""
    text = state.text(token_id(seq, pos))
    title = html.escape(tooltip(state, seq, pos), quote=True)
    sp = " dl-sp" if is_special(text) else ""  # specials ([EOS]) stay small, masked or not: no layout jumps
    if seq.ids[pos] is None:
        shown = label(text) if show_guesses and text else "▒"
        return f'<span class="dl-chip dl-mask{sp}" title="{title}">{shown}</span>'
    if pos in new:
        conf = _num(seq.conf[pos]) if pos < len(seq.conf) else None
        cls = "dl-new " + confidence_class(conf if conf is not None else 1.0)
    else:
        cls = "dl-old"
    return f'<span class="dl-chip {cls}{sp}" title="{title}">{label(text)}</span>'


def new_positions(state: State, seq: Seq) -> set[int]:
    """Positions drawn as just committed: the sequence's latest commits, while its step is the run's latest
    (a sample finished earlier in a voting run shows all blue)."""
    return seq.new if seq.step == state.step else set()


def seq_nodes(state: State) -> dict[int, Node]:
    """The latest node of each sequence (by Node.seq)."""
    out: dict[int, Node] = {}
    for node in state.nodes.values():
        if node.seq is not None and (node.seq not in out or node.step >= out[node.seq].step):
            out[node.seq] = node
    return out


def render_row(state: State, seq: Seq, show_guesses: bool = True, title: str | None = None,
               node: Node | None = None) -> str:
    new = new_positions(state, seq)
    n = min(len(seq.ids), MAX_POSITIONS)
    chips = "".join(chip(state, seq, p, new, show_guesses) for p in range(n))
    head = ""
    if title is not None:
        head = f'<div style="font-size:12px;color:#666;margin:6px 0 2px">{html.escape(title)}</div>'
    tail = ""
    if node is not None and node.status != "active":
        if node.answer is not None:
            tail = (f'<span class="dl-answer" style="margin-left:8px;font-weight:700;color:#1e8449">'
                    f'→ {html.escape(answer_text(node.answer))}</span>')
        else:
            tail = '<span class="dl-answer" style="margin-left:8px;color:#c0392b">→ no answer line</span>'
    return f'{head}<div class="dl-row" style="display:flex;flex-wrap:wrap;align-items:center">{chips}{tail}</div>'


def legend() -> str:
    items = [
        (MASK_BG, "▒ masked (faint: current guess)"),
        (NEW_LOW, "new, confidence < 0.3"),
        (NEW_MID, "new, < 0.7"),
        (NEW_HIGH, "new, ≥ 0.7"),
        (OLD_BG, "committed earlier / kept"),
    ]
    spans = "".join(
        f'<span style="display:inline-block;margin:0 10px 0 0"><span style="display:inline-block;width:12px;height:12px;'
        f'border-radius:3px;background:{bg};vertical-align:middle;margin-right:4px"></span>'
        f'<span style="color:#555;font-size:12px">{html.escape(text)}</span></span>'
        for bg, text in items
    )
    return f'<div class="dl-legend" style="margin:2px 0 8px">{spans}</div>'


def render_canvas(state: State, meta: Meta | None = None, show_guesses: bool = True) -> str:
    """The whole canvas: a header line, one line per sequence (64 at most), a stop note, the legend."""
    rows = state.rows()[:MAX_ROWS]
    head = _header(state, meta, rows)
    if not rows:
        prompt = html.escape(state.start.prompt) if state.start else ""
        body = f'<div style="color:#888;padding:12px 0">Waiting for the first step… {prompt}</div>'
        return f'<div class="dl-canvas">{head}{body}</div>'
    multi = len(rows) > 1 or (state.start is not None and state.start.rows > 1)
    nodes = seq_nodes(state)
    lines = "".join(render_row(state, s, show_guesses, f"sample {s.id + 1}" if multi else None, nodes.get(s.id))
                    for s in rows)
    foot = ""
    if state.end is not None and state.end.stopped:
        foot = '<div style="color:#c0392b;margin-top:6px">■ stopped by the user — the canvas shows where it got to.</div>'
    return f'<div class="dl-canvas" style="padding:4px 2px">{STYLE}{head}{lines}{foot}{legend()}</div>'


def _header(state: State, meta: Meta | None, rows: list[Seq]) -> str:
    if state.start is None:
        return ""
    total = sum(len(s.ids) for s in rows)
    masked = sum(s.ids.count(None) for s in rows)
    prompt = html.escape(state.start.prompt.strip()).replace("\n", "⏎")
    bits = [f'<b style="font-family:ui-monospace,monospace">{prompt}</b>', f"step {state.step}",
            f"{total - masked}/{total} decoded"]
    end, sel = state.end, state.selection
    answer = None
    if end is not None:
        answer = end.answer
    elif sel is not None and sel.reason is not None:
        answer = sel.answer
    elif len(rows) == 1:
        node = seq_nodes(state).get(rows[0].id)
        if node is not None and node.status != "active":
            answer = node.answer
    if answer is not None:
        bits.append(f'<span class="dl-final" style="color:#1e8449;font-weight:700">answer '
                    f'{html.escape(answer_text(answer))}{verdict(answer, meta)}</span>')
    if end is not None:
        bits.append(f"{end.nfe} forward passes · {end.seconds:.2f}s")
    return f'<div style="font-size:13px;color:#444;margin-bottom:6px">{" · ".join(bits)}</div>'


# ---------------------------------------------------------------- numbers


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"
