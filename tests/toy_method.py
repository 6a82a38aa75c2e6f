"""A toy decoding method, registered only here: the app must show it as one more tab with no change of its own.

`DECODING_LENS_METHODS=toy_method` (with tests/ on PYTHONPATH) makes the app import this module, which
registers the method "toy". Its decoder calls no model: it spells the (task-formatted) prompt backwards, a
few characters per step, recording each step as `propose` and `commit` token deltas (ids = code points), so it
exercises the whole spine (trace, fold, live stream, scrubbing, replay) in milliseconds. Its parameters cover
every control the app generates (Literal -> Dropdown, bool -> Checkbox, bounded int / float -> Slider,
unbounded -> Number, advanced ones in "More parameters"); its view module is this module too: PANELS, OPTIONS,
render, progress (the contract of viz/panels.py).
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable, Iterator
from typing import Literal

import plotly.graph_objects as go
from pydantic import model_validator

from decoding.fold import State
from decoding.methods import Method, register
from decoding.params import Params, ui
from decoding.trace import Meta, Node, RunEnd, RunStart, Tokens, Vocab
from viz.panels import Option, Panel


class ToyParams(Params):
    steps: int = ui(6, "Steps (characters are committed over this many steps)", 1, 64, 1)
    direction: Literal["backwards", "forwards"] = ui("backwards", "Spell the prompt")
    shout: bool = ui(False, "Upper case")
    delay: float = ui(0.02, "Seconds per step", 0, 2, 0.01, advanced=True)
    limit: int = ui(400, "At most this many characters", minimum=1, advanced=True)  # no maximum: a Number

    @model_validator(mode="after")
    def _check(self) -> ToyParams:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        return self


def decode(adapter, prompt: str, params: ToyParams, *, task=None, seed: int = 7,
           should_stop: Callable[[], bool] | None = None) -> Iterator:
    """RunStart, Vocab, per step a `propose` (the characters still to come) and a `commit`, a Node, RunEnd."""
    t0 = time.perf_counter()
    text = prompt.strip()[: params.limit]
    text = text[::-1] if params.direction == "backwards" else text
    text = text.upper() if params.shout else text
    if not text:
        raise ValueError("the toy method needs a prompt with some characters in it")
    ids = [ord(c) for c in text]
    yield RunStart(method="toy", prompt=prompt, prompt_ids=[], rows=1, length=len(ids))
    named = sorted(set(ids))
    yield Vocab(ids=named, texts=[chr(i) for i in named])
    steps = min(params.steps, len(ids))
    done, stopped, step = 0, False, 0
    for step in range(1, steps + 1):
        upto = len(ids) * step // steps
        rest = list(range(done, len(ids)))
        yield Tokens(seq=0, step=step, action="propose", pos=rest, ids=[ids[p] for p in rest],
                     conf=[0.9] * len(rest), entropy=[0.1] * len(rest))
        yield Tokens(seq=0, step=step, action="commit", pos=list(range(done, upto)), ids=ids[done:upto])
        done = upto
        time.sleep(params.delay)
        if should_stop is not None and should_stop() and step < steps:
            stopped = True
            break
    out = "".join(chr(i) for i in ids[:done])
    answer = task.extract_answer(out) if task is not None else None
    yield Node(id=0, seq=0, step=step, status="active" if stopped else "finished", text=out, answer=answer, nfe=step)
    yield RunEnd(nfe=step, seconds=round(time.perf_counter() - t0, 4), answer=answer, stopped=stopped,
                 summary={"seed": seed})


# ---------------------------------------------------------------- its view module (this module)

PANELS = [
    Panel("text", "html", "Text", placeholder='<div class="toy-text" style="color:#888">Press Run.</div>'),
    Panel("commits", "plot", "Commits per step", placeholder="characters committed per step", height=200),
]
OPTIONS = [Option("mark", -1, "Mark a position (-1: none)", minimum=-1)]


def render(state: State, meta: Meta | None, *, plots: bool = True, mark: float | None = -1) -> dict[str, object]:
    seq = state.seqs.get(0)
    cells = []
    for p, tid in enumerate(seq.ids if seq is not None else []):
        shown = "▒" if tid is None else html.escape(state.text(tid))
        style = "outline:2px solid #c0392b;" if mark is not None and p == int(mark) else ""
        cls = "toy-mask" if tid is None else "toy-char"
        cells.append(f'<span class="{cls}" style="{style}font-family:monospace;padding:0 2px">{shown}</span>')
    body = "".join(cells) or "nothing yet"
    text = f'<div class="toy-text">step {state.step} · {body}</div>'
    if not plots:
        return {"text": text, "commits": None}
    per_step: dict[int, int] = {}
    for s in (seq.commit_step.values() if seq is not None else []):
        per_step[s] = per_step.get(s, 0) + 1
    fig = go.Figure(go.Bar(x=sorted(per_step), y=[per_step[s] for s in sorted(per_step)]))
    fig.update_layout(height=200, margin={"l": 40, "r": 10, "t": 30, "b": 30}, title="characters per step")
    return {"text": text, "commits": fig}


def progress(state: State, meta: Meta | None) -> str:
    if state.end is not None:
        how = "■ stopped" if state.end.stopped else "✓ done"
        return f"{how}: {state.end.nfe} steps · {state.end.seconds:.2f}s"
    steps = (meta.params if meta is not None else {}).get("steps", "?")
    return f"▶ **running** · step {state.step} / {steps}"


register(Method(
    name="toy",
    title="Toy",
    params=ToyParams,
    decode=decode,
    views=__name__,
    kinds=("masked_diffusion",),
    intro="**Toy**: spells the prompt backwards, a few characters per step (a test method: no model calls).",
    about="A test method registered by tests/toy_method.py through DECODING_LENS_METHODS.",
))
