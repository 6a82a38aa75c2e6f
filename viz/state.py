"""Step scrubbing: cut a trace at a step, and fold events into per-sample rows the views can draw.

Pure Python over decoding.trace events (no torch, no gradio). Views never trust the events to be
consistent (an uploaded trace can be anything that passed the shallow schema check), so every list
access here tolerates short or ragged lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from decoding.trace import DecodeDone, DiffusionStep, Event, RunEnd, RunStart, Trace, VotingRound


def step_count(trace: Trace | list[Event]) -> int:
    """How many DiffusionStep events (scrubber positions) a trace holds."""
    return sum(1 for e in _events(trace) if isinstance(e, DiffusionStep))


def state_at(trace: Trace | list[Event], step_index: int) -> list[Event]:
    """The events needed to draw the canvas after the `step_index`-th DiffusionStep (1-based over the whole
    trace; 0 = before the first step). Everything up to that step is kept (RunStart, earlier decodes and
    voting rounds); a step index at or past the last step returns the whole trace (RunEnd included)."""
    events = _events(trace)
    if step_index >= step_count(events):
        return list(events)
    out: list[Event] = []
    seen = 0
    for e in events:
        if isinstance(e, DiffusionStep):
            if seen == step_index:
                break
            seen += 1
        out.append(e)
    return out


@dataclass
class Row:
    """One sample's canvas as of its latest DiffusionStep."""

    sample: int
    tokens: list[str]
    masked: list[bool]
    confidence: list[float]
    entropy: list[float]
    topk: list[list]
    new: set[int] = field(default_factory=set)  # committed by the most recent step of the whole run
    commit_step: dict[int, int] = field(default_factory=dict)  # position -> decode step it was committed at
    step: int = 0  # decode step of this row's latest state
    text: str | None = None  # final text once its decode is done
    answer: int | None = None
    done: bool = False


def fold_rows(events: list[Event]) -> list[Row]:
    """Latest state of every sample (ordered by sample index) from a list of events."""
    rows: dict[int, Row] = {}
    last_step: DiffusionStep | None = None
    for e in events:
        if isinstance(e, DiffusionStep):
            last_step = e
            for r, sample in enumerate(e.rows):
                prev = rows.get(sample)
                row = Row(
                    sample=sample,
                    tokens=[str(t) for t in _at(e.tokens, r, [])],
                    masked=list(_at(e.masked, r, [])),
                    confidence=list(_at(e.confidence, r, [])),
                    entropy=list(_at(e.entropy, r, [])),
                    topk=list(_at(e.topk, r, [])),
                    commit_step=dict(prev.commit_step) if prev and not prev.done else {},
                    step=e.step,
                )
                for p in _at(e.committed, r, []):
                    if isinstance(p, int):
                        row.commit_step.setdefault(p, e.step)
                rows[sample] = row
        elif isinstance(e, DecodeDone):
            for i, sample in enumerate(e.rows):
                if sample in rows:
                    rows[sample].done = True
                    rows[sample].text = str(_at(e.texts, i, ""))
                    rows[sample].answer = _at(e.answers, i, None)
    if last_step is not None:  # "new" = committed by the run's latest step (only rows it touched)
        for r, sample in enumerate(last_step.rows):
            if sample in rows:
                rows[sample].new = {p for p in _at(last_step.committed, r, []) if isinstance(p, int)}
    return [rows[s] for s in sorted(rows)]


def first(events: list[Event], kind: type) -> Any:
    return next((e for e in events if isinstance(e, kind)), None)


def last(events: list[Event], kind: type) -> Any:
    return next((e for e in reversed(events) if isinstance(e, kind)), None)


def run_start(events: list[Event]) -> RunStart | None:
    return first(events, RunStart)


def run_end(events: list[Event]) -> RunEnd | None:
    return last(events, RunEnd)


def last_round(events: list[Event]) -> VotingRound | None:
    return last(events, VotingRound)


def _events(trace: Trace | list[Event]) -> list[Event]:
    return trace.events if isinstance(trace, Trace) else trace


def _at(seq: Any, i: int, default: Any) -> Any:
    """seq[i] if seq is a list long enough, else default (hostile traces have ragged lists)."""
    return seq[i] if isinstance(seq, list) and 0 <= i < len(seq) else default


def progress_line(events: list[Event], total_steps: int | None = None, k: int | None = None,
                  max_steps: int | None = None) -> str:
    """The status line of a live run (Markdown): where the decoder is, e.g.
    "▶ running · step 14 / 80 · 14 of 80 tokens decoded" (diffusion, a fixed schedule of `total_steps`) or
    "▶ running · sample 3 / 5 · step 12 (at most 48) · 2 samples finished" (voting: `k` samples at most).
    `max_steps`: the upper bound shown when the number of steps is not fixed (adaptive strategies)."""
    step = last(events, DiffusionStep)
    s = step.step if step is not None else 0
    bits = ["▶ **running**"]
    if k is not None:
        rows = [r + 1 for r in step.rows if isinstance(r, int)] if step is not None else []
        which = "sample 1" if not rows else f"sample {rows[0]}" if len(rows) == 1 else f"samples {min(rows)}–{max(rows)}"
        bits.append(f"{which} / {k}")
    if total_steps:
        bits.append(f"step {s} / {total_steps}")
    elif max_steps:
        bits.append(f"step {s} (at most {max_steps})")
    else:
        bits.append(f"step {s}")
    if k is None:
        rows_now = fold_rows(events)
        total = sum(len(r.masked) for r in rows_now)
        if total:
            left = sum(1 for r in rows_now for m in r.masked if m)
            bits.append(f"{total - left} of {total} tokens decoded")
    else:
        rnd = last(events, VotingRound)
        finished = len(rnd.samples) if rnd is not None and isinstance(rnd.samples, list) else 0
        bits.append(f"{finished} sample{'s' if finished != 1 else ''} finished")
    return " · ".join(bits)
