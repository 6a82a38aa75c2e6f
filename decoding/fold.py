"""Folding a trace into what the views draw: the state after any step, incrementally.

    fold = Fold(trace)           # works on a trace that is still growing (a live run appends to it)
    state = fold.latest()        # applies only the events added since the last call
    state = fold.at(frame)       # the state after the frame-th step (0 = before the first pass)

A *frame* is one step of the trace (one forward pass), with the events that follow it up to the next step's
first delta (a finished node, a selection). Scrubbing restores the nearest checkpoint (taken every
`CHECKPOINT_EVERY` frames while folding forward) and applies at most that many frames' events, so a scrub
costs the same at step 5 as at step 500. Plain Python: no torch, no gradio. Views never trust a trace to be
consistent (an uploaded one can be anything that passed the schema): positions are bounded, unknown ids
have no text, and nothing here raises on a strange but valid trace.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from decoding.trace import Node, RunEnd, RunStart, Selection, Tokens, Trace, Vocab

CHECKPOINT_EVERY = 8
MAX_POSITIONS = 4096  # a hostile trace cannot make a view allocate millions of positions


@dataclass
class Seq:
    """One sequence (sample, beam, row): per position, its token and what the model said there."""

    id: int
    ids: list[int | None] = field(default_factory=list)  # committed or kept token; None = masked / not yet
    guess: list[int | None] = field(default_factory=list)  # the latest proposed token
    conf: list[float | None] = field(default_factory=list)
    entropy: list[float | None] = field(default_factory=list)
    top: list[tuple | None] = field(default_factory=list)  # (ids, probs) of the latest proposal
    kept: set[int] = field(default_factory=set)  # carried over, not decoded
    commit_step: dict[int, int] = field(default_factory=dict)  # position -> step it was committed at
    noise: dict[int, float] = field(default_factory=dict)  # position -> the sampling draw of its commit, if recorded
    new: set[int] = field(default_factory=set)  # committed at this sequence's latest step
    step: int = 0  # its latest step
    first_step: int | None = None  # its first pass
    block: int | None = None
    # (step, positions, entropies, committed positions) per pass: the entropy heatmap's rows. Rows are
    # appended, never changed, so a checkpoint shares them and a restore only truncates the list.
    history: list[tuple[int, list[int], list[float | None], list[int]]] = field(default_factory=list)
    confs: list[list[float | None]] = field(default_factory=list)  # per history row: the confidences proposed

    @property
    def length(self) -> int:
        return len(self.ids)

    def masked(self, p: int) -> bool:
        return self.ids[p] is None

    def _grow(self, n: int) -> None:
        n = min(n, MAX_POSITIONS)
        while len(self.ids) < n:
            for column in (self.ids, self.guess, self.conf, self.entropy, self.top):
                column.append(None)

    def copy(self) -> Seq:
        out = copy.copy(self)
        for name in ("ids", "guess", "conf", "entropy", "top", "history", "confs"):
            setattr(out, name, list(getattr(self, name)))
        out.kept, out.commit_step, out.new = set(self.kept), dict(self.commit_step), set(self.new)
        out.noise = dict(self.noise)
        return out


@dataclass
class State:
    start: RunStart | None = None
    end: RunEnd | None = None
    vocab: dict[int, str] = field(default_factory=dict)
    seqs: dict[int, Seq] = field(default_factory=dict)
    nodes: dict[int, Node] = field(default_factory=dict)  # latest version of each node
    selections: list[Selection] = field(default_factory=list)
    step: int = 0  # the latest step applied
    events: int = 0  # how many of the trace's events are applied
    frame: int = 0

    def text(self, token_id: int | None) -> str:
        """Display text of an id ("" for None or an id the trace never named)."""
        return "" if token_id is None else self.vocab.get(token_id, "")

    def rows(self) -> list[Seq]:
        return [self.seqs[k] for k in sorted(self.seqs)]

    @property
    def selection(self) -> Selection | None:
        return self.selections[-1] if self.selections else None

    def copy(self) -> State:
        out = copy.copy(self)
        out.vocab = dict(self.vocab)  # ids only get added: a shallow copy is enough
        out.seqs = {k: s.copy() for k, s in self.seqs.items()}
        out.nodes, out.selections = dict(self.nodes), list(self.selections)
        return out

    def apply(self, e) -> None:
        self.events += 1
        if isinstance(e, Tokens):
            self._tokens(e)
        elif isinstance(e, Vocab):
            self.vocab.update(zip(e.ids, e.texts))
        elif isinstance(e, Node):
            self.nodes[e.id] = e
        elif isinstance(e, Selection):
            self.selections.append(e)
        elif isinstance(e, RunStart):
            self.start = e
        elif isinstance(e, RunEnd):
            self.end = e

    def _tokens(self, e: Tokens) -> None:
        seq = self.seqs.get(e.seq)
        if seq is None:
            seq = self.seqs[e.seq] = Seq(e.seq)
            if self.start is not None:
                seq._grow(self.start.length)
        if e.step != seq.step:  # the first delta of this sequence's new step
            seq.new = set()
            seq.step = e.step
        if e.step > 0 and seq.first_step is None and e.action != "keep":
            seq.first_step = e.step
        self.step = max(self.step, e.step)
        if e.block is not None:
            seq.block = e.block
        pos = [p for p in e.pos if 0 <= p < MAX_POSITIONS]
        if pos:
            seq._grow(max(pos) + 1)
        if e.action == "propose":
            # one pass over the columns (the hot loop of replaying a large trace: ~1M positions at 50 MB)
            n = len(e.pos)
            confs = e.conf or [None] * n
            entropies = e.entropy or [None] * n
            tops = list(zip(e.top_ids, e.top_p, strict=False)) if e.top_ids and e.top_p else [None] * n
            for p, token, conf, entropy, top in zip(e.pos, e.ids, confs, entropies, tops, strict=False):
                if 0 <= p < MAX_POSITIONS:
                    seq.guess[p], seq.conf[p], seq.entropy[p], seq.top[p] = token, conf, entropy, top
            if len(pos) < n:  # positions out of range: drop their values too
                confs = [c for c, p in zip(confs, e.pos, strict=False) if 0 <= p < MAX_POSITIONS]
                entropies = [h for h, p in zip(entropies, e.pos, strict=False) if 0 <= p < MAX_POSITIONS]
            seq.history.append((e.step, pos, list(entropies), []))
            seq.confs.append(list(confs))
        elif e.action in ("commit", "keep", "accept"):
            for j, p in enumerate(e.pos):
                if 0 <= p < MAX_POSITIONS:
                    seq.ids[p] = seq.guess[p] = e.ids[j]
                    if e.action == "keep":
                        seq.kept.add(p)
                    else:
                        seq.commit_step.setdefault(p, e.step)
                        seq.new.add(p)
                        if e.noise:
                            seq.noise[p] = e.noise[j]
            if e.action == "commit" and seq.history and seq.history[-1][0] == e.step:
                last = seq.history[-1]
                seq.history[-1] = (last[0], last[1], last[2], last[3] + pos)
        elif e.action in ("remask", "reject"):
            for p in pos:
                seq.ids[p] = None
                seq.commit_step.pop(p, None)
                seq.noise.pop(p, None)
                seq.new.discard(p)


class Fold:
    """The states of a (possibly growing) trace: `latest()` folds forward, `at(frame)` scrubs."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self.head = State()
        self.frame_starts: list[int] = []  # index of the first event of frame f + 1 (step f + 1's first delta)
        self._step: int | None = None
        self.checkpoints: list[State] = []  # checkpoints[i]: the state after frame i * CHECKPOINT_EVERY

    @property
    def frames(self) -> int:
        """Steps folded so far: the scrubber goes from 0 to this."""
        self.latest()
        return len(self.frame_starts)

    def latest(self) -> State:
        """The head state, with every event appended to the trace since the last call applied."""
        events = self.trace.events
        while self.head.events < len(events):
            e = events[self.head.events]
            if isinstance(e, Tokens) and e.step > 0 and e.step != self._step and e.action != "keep":
                self._step = e.step
                self.frame_starts.append(self.head.events)
                done = len(self.frame_starts) - 1  # the head now holds exactly the frames before this one
                if done % CHECKPOINT_EVERY == 0:
                    self.checkpoints.append(self.head.copy())
                    self.checkpoints[-1].frame = done
            self.head.apply(e)
        self.head.frame = len(self.frame_starts)
        return self.head

    def at(self, frame: int | None) -> State:
        """The state after `frame` steps (None, or the last step or past it: everything, the run's end included)."""
        head = self.latest()
        if frame is None or frame >= len(self.frame_starts) or not self.checkpoints:
            return head
        frame = max(0, int(frame))
        state = self.checkpoints[min(frame // CHECKPOINT_EVERY, len(self.checkpoints) - 1)].copy()
        end, events = self.frame_starts[frame], self.trace.events
        while state.events < end:
            state.apply(events[state.events])
        state.frame = frame
        return state
