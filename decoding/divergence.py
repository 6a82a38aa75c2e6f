"""The divergence debugger: where two sequences part, and why. Pure: no torch, no model (replay and fork, which
need the model, are in decoding/replay.py).

    d = diverge(trace, 0, trace, 1)           # two samples of one run (voting, a batch, search)
    d = diverge(trace_a, 0, trace_b, 0)       # one sequence from each of two runs (seeds, methods, settings)
    print(d.text())                           # what `python -m decoding diff A.json B.json` prints

Each sequence is read from its `tokens` events: per position, the token it committed, the step (run-wide) and the
pass (the sequence's own forward-pass count: 1 = its first) at which it did, and what the model proposed there at
that step (probability, entropy, top-k). The split:

- autoregressive traces (no mask id): the first position where the committed tokens differ;
- diffusion traces: per position, the pass at which the two canvases first hold different tokens there (the later
  of the two commits); the split is the earliest such pass (ties: the leftmost position). `answer_pass`: the
  earliest such pass inside either side's answer (where its `node.answer` sits in its text).

The cause, checked in this order so that exactly one label fires:

1. `different context`: before the pass that committed the split token, the two sides' prompts or committed
   tokens differ (each side's extra commits and the conflicting ones are the evidence);
2. `sampling`: the two sides did not draw the same noise (other seeds, or seeds unknown), and a side's token is
   not the argmax of its own recorded distribution: the noise picked a non-argmax token. The diffusion engine
   records the Gumbel draw of each sampled commit (`Tokens.noise`), shown with how rare it is and what it had to
   beat; autoregressive sampling's uniform draw is not recorded, so there the label rests on the distribution;
3. `near-tie`: the same context, and either the same noise (same seed, same pass, same temperature; or both greedy)
   or both sides took their argmax, yet the tokens differ, so the distributions differ; a top-2 margin under
   `threshold` on either side says a tiny difference in the logits was enough;
4. `numerics`: the same, with both margins at least `threshold`: the logits themselves differ (batch shape,
   kernels, precision).

The mask token never counts as an argmax (the diffusion engine never chooses it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from decoding.fold import Fold, State
from decoding.trace import Meta, RunEnd, RunStart, Tokens, Trace, Vocab, check_work

CAUSES = ("different context", "sampling", "near-tie", "numerics")
NEAR_TIE = 0.1  # top-2 probability margin under which a split is a near-tie
SHOWN = 12  # positions listed in the text report before "..."
FORK_SEQ = 99  # the divergence tab's forked sample (decoding/replay.py decode_divergence); samples are 0 .. K - 1
# Methods whose sequence r draws its noise from seed + r (the divergence tab runs voting's decoder).
SEEDED_BY_ROW = ("diffusion", "voting", "divergence", "autoregressive")

INTRO = """**Where do two samples part, and why?** Run a vote (several samples of one problem, each with its own
random seed), pick two samples, and see the first point where they commit different tokens, what the model said
there on each side (top-k, entropy), what each side had already written that the other had not, and the cause:
*different context*, *sampling* (the random draw picked a token that was not the most likely), *near-tie* or
*numerics*. Then fork: force the other token at the split, from the pass that decided it, and decode that sample
again with the same seed. The same analysis runs on two saved traces (two seeds, methods or settings): the
**Replay a trace** tab's second file, or `python -m decoding diff A.json B.json`."""

LOOK_FOR = """in the **samples disagree** example, set sample A to 1 and sample B to 2: they share every token up
to one digit of a product, where sample 1's draw picked a 1 % token over a 71 % one (*sampling*); compare sample 1
with sample 4 for a *different context* split."""

ABOUT = """**How it works.** Each sample's committed tokens are read from the trace with the step at which it
committed them and what the model proposed there (probability, entropy, top-k). For a diffusion model the split
is, over all positions, the earliest of the sample's own passes at which both canvases hold a token there and the
tokens differ (the *pass* counts each sample's forward passes from 1, so samples decoded one after another line
up); for an autoregressive model, the first position where the tokens differ. The cause is checked in order:
*different context* (before the deciding pass the samples had committed different positions or tokens),
*sampling* (the noise differs, seed + sample number, and a side took a token that is not the argmax of its own
distribution), *near-tie* (otherwise, top-2 margin under 0.1) and *numerics* (otherwise: the same input and the same
noise, yet the probabilities differ).

**The noise.** Each sampled commit records the Gumbel draw g that chose its token: the evidence says how rare a
draw that large is and by how much it had to beat the most likely token's draw (the log-probability gap / T).

**Where this differs from the issue.** Only the draw of the taken token is recorded, not the argmax's, so "the noise
picked a non-argmax token" rests on the recorded distribution (the taken token is not the argmax). The fork forces
the token by replacing the model's distribution at that position with certainty in it, from the pass that had
committed the position on (the passes before it are decoded as they were, with the same seed and draws). Forks of
plain autoregressive traces and of greedy speculative ones (whose output is plain greedy decoding's) run from Python
(`decoding/replay.py`), not from this tab; search traces draw all beams from one generator, so one beam cannot be
re-drawn alone and is not forked. A replay or fork reproduces the original token for token only on the same dtype
and device (and kernels): in bf16, or on another GPU, the logits differ slightly, and a near-tie or a sampled draw
near its threshold can then go the other way (that is the *numerics* cause). Measured on an H100
(`python -m decoding.bench numerics`): of 124 dVoting samples recorded batched in bf16, all replayed alone in bf16
identically; in fp32, 4 split (3 changed their answer), each a sampled draw near the edge between two tokens.
`python -m decoding replay TRACE --dtype float32` asks it of one sample.

**Two runs from anywhere.** Two samples of the vote are the same prompt under two seeds (seed + sample number). To
compare two methods, two settings or two seeds of any tab: download both runs' traces and give them to the
**Replay a trace** tab, the second in its *Second trace* box: the pair opens in these views, each side named by
its file, with the settings that differ; no model is loaded, so there is no fork. The CLI does the same:
`python -m decoding diff A.json B.json`.

**Fork.** Set *Fork: sample*, *position* and *alternative* (the split line says which to pick to take the other
sample's token) and Run: after the vote, that sample is decoded again, alone, with the same seed: its passes up to
the one that committed that position as they were, and from that pass on the position forced to its k-th most
likely token there. The Fork panel shows the new answer, every position that changed and the vote recounted with
the new answer (later dVoting samples are not re-decoded). Alternative 0 forces nothing: the
sample is decoded alone by its seed, and the panel says whether that reproduces its run in the vote token for token
(batched against alone: where it does not, the cause at the split says why)."""

EXAMPLES = ({"question": "15+15+90-78*2*6-81=?", "label": "samples disagree",
             "why": "default dVoting (seed 42): samples 1 and 2 part at one digit of 84*6, sampling"},)


@dataclass
class Pick:
    """What a sequence committed at one position, and what the model said there at that step."""

    pos: int
    token: int
    step: int  # run-wide step
    pass_no: int  # the sequence's own pass (1 = its first; 0 = kept, not decoded)
    conf: float | None = None
    entropy: float | None = None
    top: list[tuple[int, float]] = field(default_factory=list)  # (id, p), best first, mask left out
    noise: float | None = None  # the recorded Gumbel draw that chose the token (sampled diffusion only)


class _Walk:
    """One sequence of a folded state: its picks and its canvas over its own passes. In a folded sequence a
    committed position keeps the proposal of its commit step (the engines propose only at positions not yet
    committed), so the top-k there is what the model said when it chose the token."""

    def __init__(self, state: State, seq: int):
        s = state.seqs[seq]
        mask = state.start.mask_id if state.start else None
        passes = {step: i + 1 for i, step in enumerate(sorted({h[0] for h in s.history} | set(s.commit_step.values())))}
        self.picks: dict[int, Pick] = {}
        for p, token in enumerate(s.ids):
            if token is None:
                continue
            if p in s.kept and p not in s.commit_step:
                self.picks[p] = Pick(p, token, 0, 0)
                continue
            step = s.commit_step.get(p, 0)
            top = [(t, q) for t, q in zip(*s.top[p]) if t != mask] if s.top[p] else []
            self.picks[p] = Pick(p, token, step, passes.get(step, 0), s.conf[p], s.entropy[p], top, s.noise.get(p))
        self.timeline = sorted((k.pass_no, k.pos, k.token) for k in self.picks.values())  # (pass, pos, token)

    def canvas(self, before_pass: int | None = None) -> dict[int, int]:
        """pos -> token committed before `before_pass` (None: at the end)."""
        return {p: t for n, p, t in self.timeline if before_pass is None or n < before_pass}


@dataclass
class Side:
    """One of the two sequences, and what it said at the split."""

    name: str  # "A" / "B"
    source: str  # where it comes from, for people ("a.json seq 2")
    seq: int
    tokens: list[int | None]  # final committed token per position (None: never committed)
    texts: list[str]  # their display text (untrusted: views escape it)
    answer: str | None
    seed: int | None  # the seed its noise came from, when the method says (seed + row)
    temperature: float | None
    runs_on: str | None = None  # where its logits were computed, "bfloat16 on cuda (…)" (the trace's meta), if known
    pick: Pick | None = None  # at the split position
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (id, text, p) at the split
    only: list[int] = field(default_factory=list)  # positions committed in its context that the other's lacks

    @property
    def argmax(self) -> int | None:
        return self.top[0][0] if self.top else None

    @property
    def margin(self) -> float | None:
        """Top-2 probability margin at the split (None without two recorded alternatives)."""
        return round(self.top[0][2] - self.top[1][2], 3) if len(self.top) >= 2 else None

    @property
    def rank(self) -> int | None:
        """1-based rank of the committed token in its own recorded top-k (None: not in it, or not recorded)."""
        if self.pick is None:
            return None
        return next((i + 1 for i, (t, _, _) in enumerate(self.top) if t == self.pick.token), None)

    vocab: dict[int, str] = field(default_factory=dict, repr=False)  # display text of the trace's ids

    def text_of(self, token: int | None) -> str:
        return self.vocab.get(token, "") if token is not None else ""


@dataclass
class PositionSplit:
    """A position where the final tokens differ: each side's token and the pass it committed it at."""

    pos: int
    token_a: int | None
    token_b: int | None
    pass_a: int | None
    pass_b: int | None

    @property
    def pass_no(self) -> int:
        """The pass at which the two canvases first hold different tokens here (the later commit)."""
        return max(p for p in (self.pass_a, self.pass_b, 0) if p is not None)


Mode = Literal["autoregressive", "diffusion"]
Cause = Literal["different context", "sampling", "near-tie", "numerics", "forced", "identical", "unknown"]


@dataclass
class Divergence:
    """Where two sequences part, what each side said there, and why (the cause with its evidence)."""

    mode: Mode
    a: Side
    b: Side
    position: int | None  # the split position (None: identical)
    pass_no: int | None  # the pass at which the canvases first differ (autoregressive: position + 1)
    splits: list[PositionSplit]  # every position whose final tokens differ
    answer_pass: int | None  # diffusion: the pass where the answers part (None: the answers agree or unknown)
    cause: Cause
    evidence: list[str]  # why the cause, in words with numbers
    notes: list[str]  # what else is true there (e.g. a near-tie behind a sampling split)
    conflicts: list[int]  # positions both contexts held with different tokens
    same_prompt: bool
    same_noise: bool
    threshold: float = NEAR_TIE

    @property
    def identical(self) -> bool:
        return self.position is None

    def text(self) -> str:
        """The plain-text report (the CLI prints it); token texts are shown with repr(), so nothing in them can
        move the terminal's cursor."""
        a, b = self.a, self.b
        lines = [f"{s.name}: {s.source} (seed {_s(s.seed)}, answer {s.answer!r}"
                 + (f", {s.runs_on})" if s.runs_on else ")") for s in (a, b)]
        if self.identical:
            lines.append(f"no split: the {self.mode} sequences commit the same {len(a.tokens)} tokens")
            return "\n".join(lines)
        pa, pb = a.pick, b.pick
        lines.append(f"split: position {self.position}, pass {self.pass_no} "
                     f"(A committed it at its pass {_s(pa and pa.pass_no)}, step {_s(pa and pa.step)}; "
                     f"B at its pass {_s(pb and pb.pass_no)}, step {_s(pb and pb.step)})")
        if self.mode == "diffusion":
            lines.append(f"positions that differ: {len(self.splits)}; the answers part at pass "
                         f"{_s(self.answer_pass)}" if self.answer_pass is not None else
                         f"positions that differ: {len(self.splits)}; the answers do not part")
        for s in (a, b):
            lines.append(f"  {s.name}: {_marked(s, self.position)!r}")
        for s in (a, b):
            if s.pick is None:
                lines.append(f"  {s.name} committed nothing at position {self.position}")
                continue
            top = " | ".join(f"{t!r} {p:.3f}" for _, t, p in s.top) or "not recorded"
            lines.append(f"  {s.name} took {s.text_of(s.pick.token)!r} (p={_f(s.pick.conf)}, entropy {_f(s.pick.entropy)} "
                         f"nats, top-2 margin {_f(s.margin)}); top-k: {top}")
        for s, o in ((a, b), (b, a)):
            if s.only:
                shown = ", ".join(f"{p}:{s.text_of(s.tokens[p] if p < len(s.tokens) else None)!r}"
                                  for p in s.only[:SHOWN])
                lines.append(f"  {s.name} had committed, {o.name} had not: {shown}{' ...' if len(s.only) > SHOWN else ''}")
        if self.conflicts:
            lines.append(f"  both had committed, differently: positions {self.conflicts[:SHOWN]}")
        lines.append(f"cause: {self.cause}")
        lines += [f"  - {e}" for e in self.evidence]
        lines += [f"  (also: {n})" for n in self.notes]
        return "\n".join(lines)


def _marked(side: Side, position: int | None) -> str:
    """The side's text with the split token in brackets, masks as '_', a trailing run of one token (EOS padding)
    collapsed to 'text x n'."""
    texts = ["_" if t is None else side.text_of(t) for t in side.tokens]
    end = len(texts)
    while end > 1 and side.tokens[end - 2] == side.tokens[-1] and (position is None or end - 2 > position):
        end -= 1
    out = "".join(f"[{t}]" if p == position else t for p, t in enumerate(texts[:end]))
    return out + (f" x{len(texts) - end + 1}" if end < len(texts) else "")


def _s(x) -> str:
    return "?" if x is None else str(x)


def _f(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"


def sequences(state: State, forks: bool = True) -> list[int]:
    """The sequence ids that hold committed tokens, in order (forks=False: without the divergence tab's fork)."""
    return [k for k in sorted(state.seqs) if any(t is not None for t in state.seqs[k].ids)
            and (forks or k != FORK_SEQ or (state.start is not None and state.start.method != "voting"))]


def _source(meta: Meta, seq: int) -> dict | None:
    """A pair trace's record of where sequence `seq` came from (`pair`), else None."""
    sources = meta.params.get("pair_sources")
    src = sources[seq] if isinstance(sources, list) and 0 <= seq < len(sources) else None
    return src if isinstance(src, dict) else None


def seed_of(meta: Meta, seq: int) -> int | None:
    """The seed of a sequence's noise: the engines seed row r with seed + r, and the diffusion, voting and plain
    autoregressive methods number their sequences by row. Other methods: unknown (None)."""
    if (src := _source(meta, seq)) is not None:
        return src.get("seed") if isinstance(src.get("seed"), int) else None
    if seq == FORK_SEQ and meta.method == "divergence":  # the tab's fork re-decodes its sample with that sample's seed
        sample = meta.params.get("fork_sample")
        return meta.seed + sample - 1 if isinstance(sample, int) and sample >= 1 else None
    return meta.seed + seq if meta.method in SEEDED_BY_ROW else None


def runs_on(meta: Meta, seq: int = 0) -> str | None:
    """Where a sequence's logits were computed, "bfloat16 on cuda (…)", when its trace says (a pair trace: its
    source's)."""
    if (src := _source(meta, seq)) is not None:
        text = src.get("runs_on") if isinstance(src.get("runs_on"), str) else None
    else:
        text = f"{meta.dtype or '?'} on {meta.device or '?'}" if meta.dtype or meta.device else None
    # from a file, so untrusted: printable characters only (the CLI prints it to a terminal), and short
    return "".join(c if c.isprintable() else "?" for c in text[:120]) if text else None


def _temperature(meta: Meta, seq: int = 0) -> float | None:
    t = (_source(meta, seq) or meta.params).get("temperature")
    return float(t) if isinstance(t, int | float) else None


def _prompt(state: State, meta: Meta, seq: int) -> list[int] | None:
    if (src := _source(meta, seq)) is not None:  # (an uploaded file's: checked, not trusted)
        prompts, f = meta.params.get("pair_prompts"), src.get("file")
        return prompts[f] if isinstance(prompts, list) and f in (0, 1) and len(prompts) == 2 else None
    return state.start.prompt_ids if state.start else None


def _side(name: str, state: State, meta: Meta, seq: int, label: str) -> Side:
    tokens = list(state.seqs[seq].ids)
    node = next((n for n in reversed(state.nodes.values()) if n.seq == seq), None)
    return Side(name=name, source=f"{label} seq {seq}", seq=seq, tokens=tokens, texts=[state.text(t) for t in tokens],
                answer=node.answer if node else None, seed=seed_of(meta, seq), temperature=_temperature(meta, seq),
                runs_on=runs_on(meta, seq),
                vocab=state.vocab)


def _answer_span(side: Side) -> set[int]:
    """Positions whose text holds the side's answer (its last occurrence in the text), by character offsets."""
    if not side.answer:
        return set()
    text, owner = "", []
    for p, t in enumerate(side.texts):
        text += t
        owner += [p] * len(t)
    at = text.rfind(side.answer)
    return set() if at < 0 else set(owner[at:at + len(side.answer)])


def diverge(trace_a: Trace, seq_a: int, trace_b: Trace, seq_b: int, *, threshold: float = NEAR_TIE,
            labels: tuple[str, str] = ("A", "B")) -> Divergence:
    """Align two sequences of two traces (one trace twice for two of its samples): the split and its cause."""
    return diverge_states(Fold(trace_a).latest(), trace_a.meta, seq_a, Fold(trace_b).latest(), trace_b.meta, seq_b,
                          threshold=threshold, labels=labels)


def diverge_states(state_a: State, meta_a: Meta, seq_a: int, state_b: State, meta_b: Meta, seq_b: int, *,
                   threshold: float = NEAR_TIE, labels: tuple[str, str] = ("A", "B")) -> Divergence:
    """`diverge` on folded states (a view diffs the frame it shows)."""
    for state, seq in ((state_a, seq_a), (state_b, seq_b)):
        if seq not in sequences(state):
            raise ValueError(f"sequence {seq} committed no tokens in this trace (sequences: "
                             f"{', '.join(map(str, sequences(state)[:20])) or 'none'})")
    start_a, start_b = state_a.start, state_b.start
    diffusion = all(s is not None and s.mask_id is not None for s in (start_a, start_b))
    mode: Mode = "diffusion" if diffusion else "autoregressive"
    walk_a, walk_b = _Walk(state_a, seq_a), _Walk(state_b, seq_b)
    a, b = _side("A", state_a, meta_a, seq_a, labels[0]), _side("B", state_b, meta_b, seq_b, labels[1])
    n = max(len(a.tokens), len(b.tokens))
    splits = []
    for p in range(n):
        ta = a.tokens[p] if p < len(a.tokens) else None
        tb = b.tokens[p] if p < len(b.tokens) else None
        if ta != tb:
            pa, pb = walk_a.picks.get(p), walk_b.picks.get(p)
            splits.append(PositionSplit(p, ta, tb, pa.pass_no if pa else None, pb.pass_no if pb else None))
    same_prompt = _prompt(state_a, meta_a, seq_a) == _prompt(state_b, meta_b, seq_b)
    out = Divergence(mode=mode, a=a, b=b, position=None, pass_no=None, splits=splits, answer_pass=None,
                     cause="identical", evidence=[], notes=[], conflicts=[], same_prompt=same_prompt,
                     same_noise=False, threshold=threshold)
    if not splits:
        return out
    first = min(splits, key=lambda s: s.pos) if mode == "autoregressive" else min(splits, key=lambda s: (s.pass_no, s.pos))
    out.position, out.pass_no = first.pos, first.pass_no
    span = _answer_span(a) | _answer_span(b)
    if mode == "diffusion" and a.answer != b.answer and span:
        out.answer_pass = min((s.pass_no for s in splits if s.pos in span), default=None)
    for side, walk in ((a, walk_a), (b, walk_b)):
        side.pick = walk.picks.get(first.pos)
        if side.pick is not None:
            side.top = [(t, side.text_of(t), p) for t, p in side.pick.top]
    # The contexts: each side's canvas before the pass that committed its split token.
    ctx_a = walk_a.canvas(a.pick.pass_no) if a.pick else walk_a.canvas()
    ctx_b = walk_b.canvas(b.pick.pass_no) if b.pick else walk_b.canvas()
    a.only = sorted(set(ctx_a) - set(ctx_b))
    b.only = sorted(set(ctx_b) - set(ctx_a))
    out.conflicts = sorted(p for p in set(ctx_a) & set(ctx_b) if ctx_a[p] != ctx_b[p])
    _label(out)
    return out


def _label(d: Divergence) -> None:
    a, b = d.a, d.b
    if a.pick is None or b.pick is None:
        missing = a if a.pick is None else b
        d.cause = "unknown"
        d.evidence.append(f"{missing.name} committed no token at position {d.position} (it ended or was stopped)")
        return
    greedy = a.temperature == 0 and b.temperature == 0
    d.same_noise = greedy or (a.seed is not None and a.seed == b.seed and a.temperature == b.temperature
                              and a.pick.pass_no == b.pick.pass_no)
    # 1. different context
    if not d.same_prompt or a.only or b.only or d.conflicts:
        d.cause = "different context"
        if not d.same_prompt:
            d.evidence.append("the prompts differ")
        for s, o in ((a, b), (b, a)):
            if s.only:
                d.evidence.append(f"{s.name} had committed {len(s.only)} position(s) that {o.name} had not "
                                  f"(first: {s.only[:6]}) before deciding position {d.position}")
        if d.conflicts:
            d.evidence.append(f"both had committed position(s) {d.conflicts[:6]} with different tokens")
        return
    context = (f"same context: the same prompt and the same {d.position} tokens before the split"
               if d.mode == "autoregressive" else
               "same context: the same prompt and the same committed positions and tokens before the split")
    if not a.top or not b.top:
        d.cause = "unknown"
        d.evidence += [context, "a side recorded no distribution at the split (no top-k)"]
        return
    off = [s for s in (a, b) if s.pick.token != s.argmax]
    margin = min(m for m in (a.margin, b.margin, 1.0) if m is not None)
    # 2. sampling: other noise picked a non-argmax token
    if off and not d.same_noise:
        d.cause = "sampling"
        d.evidence.append(context)
        for s in off:
            rank = f"rank {s.rank}" if s.rank else "outside the recorded top-k"
            d.evidence.append(f"{s.name}'s noise picked {s.text_of(s.pick.token)!r} (p={_f(s.pick.conf)}, {rank}), not "
                              f"its argmax {s.top[0][1]!r} (p={s.top[0][2]:.3f})")
            if s.pick.noise is not None:
                d.evidence.append(_draw(s))
        recorded = all(s.pick.noise is not None for s in off)
        d.evidence.append(f"the noise differs: seeds {_s(a.seed)} and {_s(b.seed)}, temperatures "
                          f"{_s(a.temperature)} and {_s(b.temperature)}" + ("" if recorded else
                          " (no draw recorded: inferred from the recorded distribution)"))
        if margin < d.threshold:
            d.notes.append(f"a near-tie too: top-2 margin {margin:.3f} < {d.threshold}")
        return
    # 3./4. the same context, and the same noise or both argmax: the distributions themselves differ
    d.evidence.append(context)
    if d.same_noise:
        d.evidence.append("same noise: " + ("both greedy" if greedy else f"seed {a.seed}, pass {a.pick.pass_no}, "
                                            f"temperature {a.temperature}"))
    else:
        d.evidence.append(f"both took their own argmax: {a.text_of(a.argmax)!r} and {b.text_of(b.argmax)!r}")
    d.evidence.append(_distribution_gap(a, b))
    if a.runs_on != b.runs_on and a.runs_on and b.runs_on:
        d.evidence.append(f"the two ran in different precisions or devices: {a.name} in {a.runs_on}, {b.name} in "
                          f"{b.runs_on}")
    if margin < d.threshold:
        d.cause = "near-tie"
        d.evidence.append(f"top-2 margin {margin:.3f} < {d.threshold}: a small difference in the logits flips it")
    else:
        d.cause = "numerics"
        if off and d.same_noise and not greedy:  # a sampled draw on the edge between two tokens
            d.evidence.append(f"top-2 margins {_f(a.margin)} and {_f(b.margin)} (>= {d.threshold}), but the same draw "
                              f"chose differently: a draw near the edge between two tokens is moved across by the "
                              f"difference in the probabilities above (batch shape, kernels or precision)")
        else:
            d.evidence.append(f"top-2 margins {_f(a.margin)} and {_f(b.margin)} (>= {d.threshold}): the logits "
                              f"differ, not only by a hair (batch shape, kernels or precision)")
    if off:
        d.notes.append(", ".join(f"{s.name} took a non-argmax token" for s in off) + " under the same noise")


def _draw(s: Side) -> str:
    """The recorded Gumbel draw g at the taken token: how rare a draw that large is, and what it had to beat."""
    g, rare = s.pick.noise, 1 - math.exp(-math.exp(-s.pick.noise))
    out = f"{s.name}'s Gumbel draw at {s.text_of(s.pick.token)!r} was g = {g:+.2f} (a draw this large: {rare:.1%})"
    if s.pick.conf and s.top and s.pick.conf > 0 and s.temperature:
        gap = math.log(s.top[0][2] / s.pick.conf) / s.temperature
        out += f"; it beat the argmax only if g exceeded the argmax's draw by {gap:.2f} (log-probability gap / T)"
    return out


def _distribution_gap(a: Side, b: Side) -> str:
    pa, pb = {t: p for t, _, p in a.top}, {t: p for t, _, p in b.top}
    common = set(pa) & set(pb)
    if not common:
        return "the recorded top-k lists share no token"
    gap = max(abs(pa[t] - pb[t]) for t in common)
    if gap == 0 and pa == pb:
        return "the recorded top-k probabilities are equal to 3 decimals: the difference lies below the recorded precision"
    return f"the recorded probabilities differ by up to {gap:.3f} on the tokens both top-k lists hold"


# ---------------------------------------------------------------- two traces as one (the Replay tab's second file)

PAIR_FILES = ("first file", "second file")


def pair(trace_a: Trace, trace_b: Trace) -> Trace:
    """Two traces as one divergence trace, so the Divergence views compare a sequence of one with a sequence of the
    other: samples 1 and 2 are the first sequence of each file, then come the first file's others, then the second's
    (FORK_SEQ sequences at most). Each sequence keeps its tokens, distributions, noise and final node; the second
    file's steps follow the first's. `meta.params` records each new sequence's file, method, model, number, seed and
    temperature, and each file's prompt ids, so seeds, temperatures and prompts compare as in the two files.
    Diffusion mode only when both are diffusion traces with one mask id. ValueError: a file has no committed tokens,
    or the two name one token id differently (other vocabularies: positions cannot be compared token by token)."""
    traces = (trace_a, trace_b)
    folds = [Fold(t).latest() for t in traces]
    seqs = [sequences(f) for f in folds]
    for name, found, state in zip(PAIR_FILES, seqs, folds):
        if not found or state.start is None:
            raise ValueError(f"the {name} has no sequence with committed tokens to compare")
    order = [(0, seqs[0][0]), (1, seqs[1][0]), *((0, q) for q in seqs[0][1:]), *((1, q) for q in seqs[1][1:])]
    new = {src: i for i, src in enumerate(order[:FORK_SEQ])}
    vocab = dict(folds[0].vocab)
    for i, text in folds[1].vocab.items():
        if vocab.setdefault(i, text) != text:
            raise ValueError(f"the two files name token id {i} differently: they come from different tokenizers, so "
                             "their tokens cannot be compared position by position")
    start_a, start_b = folds[0].start, folds[1].start
    mask = start_a.mask_id if start_a.mask_id == start_b.mask_id else None
    sources = [{"file": f, "seq": q, "method": traces[f].meta.method[:60], "model": traces[f].meta.model[:200],
                "seed": seed_of(traces[f].meta, q), "temperature": _temperature(traces[f].meta, q),
                "runs_on": runs_on(traces[f].meta, q)} for f, q in new]
    meta = traces[0].meta
    same = {k: getattr(meta, k) if getattr(meta, k) == getattr(trace_b.meta, k) else None for k in ("task", "expected")}
    out = Trace(Meta(model=meta.model if meta.model == trace_b.meta.model else f"{meta.model} | {trace_b.meta.model}",
                     method="divergence", seed=meta.seed, **same,
                     params={"pair_sources": sources, "pair_prompts": [start_a.prompt_ids, start_b.prompt_ids],
                             "pair_settings": _settings(trace_a.meta, trace_b.meta)}))
    out.add(RunStart(method="pair", prompt=start_a.prompt, prompt_ids=start_a.prompt_ids, rows=len(new),
                     length=max(start_a.length, start_b.length), mask_id=mask))
    out.add(Vocab(ids=sorted(vocab), texts=[vocab[i] for i in sorted(vocab)]))
    offset, nfe, seconds = 0, 0, 0.0
    for f, trace in enumerate(traces):
        for e in trace.events:
            if isinstance(e, Tokens) and (f, e.seq) in new:
                out.add(e.model_copy(update={"seq": new[f, e.seq], "step": e.step + offset}))
        for q in seqs[f]:  # each sequence's last node: its text and answer
            node = next((n for n in reversed(folds[f].nodes.values()) if n.seq == q), None)
            if node is not None and (f, q) in new:
                out.add(node.model_copy(update={"id": new[f, q], "seq": new[f, q], "parent": None,
                                                "step": node.step + offset}))
        offset += folds[f].step
        nfe += folds[f].end.nfe if folds[f].end else 0
        seconds += folds[f].end.seconds if folds[f].end else 0.0
    out.add(RunEnd(nfe=nfe, seconds=seconds, summary={"pair": [t.meta.method[:60] for t in traces]}))
    check_work(out.events)
    return out


def recount(answers: list[str | None], nodes: list[int], seq: int, answer: str | None
            ) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """A vote's tally before and after sequence `seq`'s answer is replaced by `answer` (a fork's): (answer, votes)
    most common first, ties first seen, no answer takes no part (as decoding/voting.py's tally, kept torch-free)."""
    def tally(values: list[str | None]) -> list[tuple[str, int]]:
        counts: dict[str, int] = {}
        for v in values:
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        return sorted(counts.items(), key=lambda item: item[1], reverse=True)

    return tally(answers), tally([answer if n == seq else a for n, a in zip(nodes, answers)])


def _settings(a: Meta, b: Meta) -> list[list]:
    """What differs between the two runs' settings: [name, first file's value, second's] (method, model, seed, device,
    precision and parameters; at most 20, values as short strings)."""
    first = {"method": a.method, "model": a.model, "seed": a.seed, "device": a.device, "dtype": a.dtype, **a.params}
    second = {"method": b.method, "model": b.model, "seed": b.seed, "device": b.device, "dtype": b.dtype, **b.params}
    return [[str(k)[:40], str(first.get(k))[:60], str(second.get(k))[:60]] for k in sorted(set(first) | set(second))
            if first.get(k) != second.get(k)][:20]
