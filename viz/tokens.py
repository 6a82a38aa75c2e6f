"""The canvas: one chip per generated position, one line per sequence (sample), coloured like LLaDA's demo.

masked -> dark grey with "▒" or the model's current guess in light text; committed at the sequence's latest
step (while that step is the run's latest) -> red / orange / green by confidence (<0.3, <0.7, else); committed
earlier or kept -> blue; special tokens ([EOS], <|eot_id|>) small; newline -> "⏎". A trailing run of one special
token (the EOS tail) folds into one chip, "EOS × 60", that opens on click. Answers are styled by verdict:
answer-correct, answer-wrong, answer-unchecked (nothing to compare with); a prompt outside the model's task gets
a note. The chips carry class names and data-p (the row: data-s) only; viz/page.css styles them and
viz/page.js turns a click into a selection (docs/CONTRACTS.md, "The page").

Reads a decoding.fold.State only (no folding here). Every string from a trace (token text, prompt, answers,
meta fields) is untrusted: it is html-escaped wherever it becomes HTML, and Markdown-escaped as well in the
status lines (`md_escape`); in plot labels only &, <, > are escaped (`plot_text`).
"""

from __future__ import annotations

import html
import math
import re
from functools import lru_cache

from decoding.fold import MAX_POSITIONS, Seq, State
from decoding.trace import Meta, Node

MASK_BG = "#444444"
NEW_LOW, NEW_MID, NEW_HIGH = "#f4a3a3", "#f8cf8c", "#a8e0b5"  # backgrounds (viz/page.css; the plots reuse them)
NEW_LOW_B, NEW_MID_B, NEW_HIGH_B = "#c0392b", "#d68910", "#1e8449"
OLD_BG, OLD_FG = "#d6e4f7", "#1a3d6d"
MAX_ROWS = 64  # sequences drawn at most (a hostile trace cannot make the page draw millions of rows)
FOLD_MIN = 4  # a tail of at least this many identical special tokens ([EOS] × 60) is folded into one chip
_SPECIAL = re.compile(r"^(\[[A-Za-z_]+\]|<\|?[^<>\s]{1,40}\|?>|</?s>)$")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()|~#+!])")
_MD_AUTOLINK = re.compile(r"[:@]|(?i:www)\.")

# The chips carry class names only; their styles live in viz/page.css, which the app loads once per page (a
# live run redraws the canvas ~10×/s, so every byte of a chip counts). STYLE stays for views that embed it.
STYLE = ""


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


def plot_text(text: str) -> str:
    """A token for a plotly label (hover, tick, bar text): display_text with only `&`, `<`, `>` escaped. Plotly
    reads a small subset of HTML in labels (tags such as <br>, <b>, <a>, and the entities &lt; &gt; &amp;) but
    not &quot;, so html.escape's quote escaping would show "&quot;" literally; with < and > escaped no tag can
    form, so a token shows as the text it is."""
    return html.escape(display_text(text), quote=False)


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


def answer_class(answer: str | None, meta: Meta | None) -> str:
    """answer-correct / answer-wrong / answer-unchecked (no expected answer to compare with): each its own style
    (viz/page.css), so a wrong answer never looks like a right one."""
    ok = is_correct(answer, meta)
    return "answer-unchecked" if ok is None else "answer-correct" if ok else "answer-wrong"


def verdict(answer: str | None, meta: Meta | None) -> str:
    """" ✓ correct" / " ✗ (expected #x)" (html-escaped) or "" when there is nothing to compare."""
    ok = is_correct(answer, meta)
    if ok is None:
        return ""
    return " ✓ correct" if ok else f" ✗ (expected {html.escape(answer_text(meta.expected))})"


def outside_task(meta: Meta | None) -> bool:
    """The prompt is outside the model's task: a task that knows the answer of every prompt in its format (the
    zoo's arithmetic chains: decoding.tasks.ZooArithmetic.expected_answer is None only when the prompt does not
    parse as a chain) found none. A task that never knows answers (math) says nothing about the prompt."""
    return meta is not None and meta.task == "zoo" and meta.expected is None


OUTSIDE_TASK_NOTE = ('<div class="dl-note">⚠ This prompt is not one of the zoo model\'s arithmetic chains (like '
                     "<code>12+7-5*3=?</code>): the tiny model was trained only on those, so what it writes here "
                     "means little, and its answer is not checked.</div>")


def end_line(state: State, meta: Meta | None) -> str:
    """The status line of a finished run (Markdown, escaped): "✓ done: answer **#3** ✓ · 5 forward passes ·
    0.10s · 5 steps" ("■ stopped" when the user pressed Stop)."""
    end = state.end
    if end is None:
        return ""
    how = "■ stopped" if end.stopped else "✓ done"
    answer = ("no answer yet" if end.stopped else "no answer line") if end.answer is None \
        else f"answer **#{md_escape(end.answer)}**"
    ok = is_correct(end.answer, meta)
    mark = "" if ok is None else " ✓" if ok else f" ✗ (expected #{md_escape(meta.expected)})"
    unchecked = " (not checked: the prompt is outside the model's task)" if outside_task(meta) else ""
    return f"{how}: {answer}{mark}{unchecked} · {end.nfe} forward passes · {end.seconds:.2f}s · {state.step} steps"


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
    """A position's details as plain text (escaped by the caller): position, state, confidence, entropy, top-k
    alternatives. The canvas no longer carries one per chip (a click selects the position and the plots show
    all of this, on touch screens too); other views may still use it."""
    conf = _num(seq.conf[pos]) if pos < len(seq.conf) else None
    ent = _num(seq.entropy[pos]) if pos < len(seq.entropy) else None
    lines = [f"position {pos} · {position_state(seq, pos)}", f"confidence {_fmt(conf)} · entropy {_fmt(ent)} nats"]
    for _, text, p in top_pairs(state, seq, pos, top):
        lines.append(f"  {display_text(text):>6}  {_fmt(p)}")
    return "\n".join(lines)


def chip(state: State, seq: Seq, pos: int, new: set[int] | frozenset = frozenset(), show_guesses: bool = True,
         selected: bool = False) -> str:
    """One position's chip: class names (viz/page.css; a plain `dl-chip` is a token committed earlier or kept)
    and its position (data-p: a click selects it). No inline style and no per-chip tooltip: a live run sends
    the canvas ~10×/s, so a chip is ~45 bytes. `new`: the positions drawn as just committed (coloured by
    confidence)."""
    text = state.text(token_id(seq, pos))
    extra = (" dl-sp" if is_special(text) else "") + (" dl-sel" if selected else "")  # specials stay small
    if seq.ids[pos] is None:
        shown = label(text) if show_guesses and text else "▒"
        return f'<span class="dl-chip dl-mask{extra}" data-p="{pos}">{shown}</span>'
    return f'<span class="dl-chip{_committed_class(seq, pos, new)}{extra}" data-p="{pos}">{label(text)}</span>'


def _committed_class(seq: Seq, pos: int, new: set[int] | frozenset) -> str:
    """" dl-new dl-hi" (low / mid / high confidence) for a just-committed position, "" for an earlier one."""
    if pos not in new:
        return ""
    conf = _num(seq.conf[pos]) if pos < len(seq.conf) else None
    return " dl-new " + confidence_class(conf if conf is not None else 1.0)


def folded_tail(state: State, seq: Seq, n: int) -> int:
    """Where the row's folded tail starts: the trailing run of one committed special token ([EOS] …) when it is
    at least FOLD_MIN long, else n (nothing folded)."""
    last = seq.ids[n - 1] if n else None
    if last is None or not is_special(state.text(last)):
        return n
    start = n - 1
    while start > 0 and seq.ids[start - 1] == last:
        start -= 1
    return start if n - start >= FOLD_MIN else n


def _fold(state: State, seq: Seq, start: int, n: int, new: set[int] | frozenset, selected: int | None) -> str:
    """The folded tail: one labelled chip ("EOS × 60", a click opens it) and the tail's chips, hidden until then
    (minimal markup: class only where it differs from a plain earlier commit)."""
    text = label(state.text(seq.ids[start]))
    fresh = [p for p in range(start, n) if p in new]
    cls = _committed_class(seq, fresh[0], new) if fresh else ""
    sel = " dl-sel" if selected is not None and start <= selected < n else ""
    head = (f'<span class="dl-chip{cls} dl-sp dl-fold{sel}" title="positions {start}–{n - 1}: {n - start} × {text} '
            f'(click to show or hide them)">{text} × {n - start}</span>')
    tail = []
    for p in range(start, n):
        classes = ("" if p not in new else _committed_class(seq, p, new)) + (" dl-sel" if p == selected else "")
        attr = f' class="{classes.strip()}"' if classes.strip() else ""
        tail.append(f'<span{attr} data-p="{p}">{text}</span>')
    return f'{head}<span class="dl-tail">{"".join(tail)}</span>'


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


def row_mark(state: State, node: Node | None, meta: Meta | None) -> str:
    """What ends a row: its answer in the style of its verdict (correct / wrong / unchecked), "■ stopped" for a
    row the user's Stop cut short, "no answer line" for a finished row without one, nothing while it runs."""
    finished = node is not None and node.status != "active"
    if finished and node.answer is not None:
        ok = is_correct(node.answer, meta)
        mark = "" if ok is None else " ✓" if ok else f" ✗ expected {html.escape(answer_text(meta.expected))}"
        return (f'<span class="dl-answer {answer_class(node.answer, meta)}">→ '
                f"{html.escape(answer_text(node.answer))}{mark}</span>")
    if state.end is not None and state.end.stopped:
        return '<span class="dl-answer dl-stopped">■ stopped</span>'
    if finished:
        return '<span class="dl-answer answer-none">→ no answer line</span>'
    return ""


def render_row(state: State, seq: Seq, show_guesses: bool = True, title: str | None = None,
               node: Node | None = None, *, meta: Meta | None = None, selected: int | None = None) -> str:
    """One sequence's line of chips (data-s: its id, for a click), its trailing special tokens folded, and its
    mark (`row_mark`). `selected`: the position drawn outlined."""
    new = new_positions(state, seq)
    n = min(len(seq.ids), MAX_POSITIONS)
    fold = folded_tail(state, seq, n)
    chips = "".join(chip(state, seq, p, new, show_guesses, p == selected) for p in range(fold))
    if fold < n:
        chips += _fold(state, seq, fold, n, new, selected)
    head = f'<div class="dl-sample">{html.escape(title)}</div>' if title is not None else ""
    return f'{head}<div class="dl-row" data-s="{seq.id}">{chips}{row_mark(state, node, meta)}</div>'


def legend() -> str:
    items = [
        ("dl-key-mask", "▒ masked (light text: the current guess)"),
        ("dl-key-lo", "new, confidence < 0.3"),
        ("dl-key-mid", "new, < 0.7"),
        ("dl-key-hi", "new, ≥ 0.7"),
        ("dl-key-old", "committed earlier / kept"),
    ]
    keys = "".join(f'<span class="dl-key {cls}"></span>{html.escape(text)}' for cls, text in items)
    return f'<div class="dl-legend">{keys} · click a chip for its top-k and history</div>'


def render_canvas(state: State, meta: Meta | None = None, show_guesses: bool = True,
                  selected: tuple[int, int] | None = None) -> str:
    """The whole canvas: a header line, one line per sequence (64 at most), a stop note, the legend.
    `selected`: (sequence id, position) drawn outlined (the position the plots describe)."""
    rows = state.rows()[:MAX_ROWS]
    head = _header(state, meta, rows)
    if not rows:
        prompt = html.escape(state.start.prompt) if state.start else ""
        body = f'<div class="dl-wait">Waiting for the first step… {prompt}</div>'
        return f'<div class="dl-canvas">{head}{body}</div>'
    multi = len(rows) > 1 or (state.start is not None and state.start.rows > 1)
    nodes = seq_nodes(state)
    sel_seq, sel_pos = selected if selected is not None else (None, None)
    lines = "".join(render_row(state, s, show_guesses, f"sample {s.id + 1}" if multi else None, nodes.get(s.id),
                               meta=meta, selected=sel_pos if s.id == sel_seq else None)
                    for s in rows)
    foot = ""
    if state.end is not None and state.end.stopped:
        foot = '<div class="dl-stopnote">■ stopped by the user — the canvas shows where it got to.</div>'
    return f'<div class="dl-canvas">{head}{lines}{foot}{legend()}</div>'


def _header(state: State, meta: Meta | None, rows: list[Seq]) -> str:
    if state.start is None:
        return ""
    total = sum(len(s.ids) for s in rows)
    masked = sum(s.ids.count(None) for s in rows)
    prompt = html.escape(state.start.prompt.strip()).replace("\n", "⏎")
    bits = [f'<b class="dl-prompt">{prompt}</b>', f"step {state.step}", f"{total - masked}/{total} decoded"]
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
        bits.append(f'<span class="dl-final {answer_class(answer, meta)}">answer '
                    f"{html.escape(answer_text(answer))}{verdict(answer, meta)}</span>")
    if end is not None:
        bits.append(f"{end.nfe} forward passes · {end.seconds:.2f}s")
    note = OUTSIDE_TASK_NOTE if outside_task(meta) else ""
    return f'{note}<div class="dl-head">{" · ".join(bits)}</div>'


# ---------------------------------------------------------------- numbers


def _num(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"
