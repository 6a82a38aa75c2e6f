"""Majority voting and dVoting (arXiv 2602.12153, reference code fscdc/dVoting) over the diffusion engine.

Majority voting: K samples of one prompt decoded side by side (one `denoise`, batch K), answers
extracted with `task.extract_answer`, the most common answer wins (ties: the answer seen first).

dVoting, as the reference runs it (`dvoting(..., VotingParams(batched=False))`):
- every sample decodes adaptively (engine strategy `entropy_threshold`, τ = `tau`): in the leftmost
  unfinished block every masked token with entropy < τ is committed in the same pass, else the single
  lowest-entropy one;
- samples 1..⌊K/2⌋+1 start from a fully masked answer; each later sample starts from the positions where
  the previous samples agree (the most common token's share ≥ `agreement`, 1.0 = unanimous), the rest
  remasked, and the last quarter of the answer (gen_length // 4) always remasked;
- before each new sample, once two exist: stop when the top answer has more than ⌊K/2⌋ votes
  ("majority"), or every valid answer is the same one with at least ⌊K/2⌋ votes ("all_agree");
- the answer is the majority vote; the cost is the forward passes summed over samples.
Reference details kept: samples seeded `seed` + i (42, 43, ... with the default seed 42); samples without an answer take no
part in the tally (the reference drops them before counting); a tie between tokens in the agreement
count goes to the smallest token id (torch.unique + argmax in the reference).

Batched dVoting (`VotingParams(batched=True)`) goes beyond the reference, which decodes one sample at
a time. It runs two batches: the ⌊K/2⌋+1 fully masked samples together, then all later samples together,
each starting from the agreement of the first batch. What that changes:
- the later samples do not see each other. With the unanimous default this changes nothing: a later
  sample copies the agreed positions, so it cannot add agreement outside the always-remasked last
  quarter, and cannot remove it either: sample j's start canvas equals sample j+1's. With a lower
  `agreement`, each later sample's start differs from the reference (the reference recounts with the
  new samples included).
- early stopping is checked on every prefix in reference order once a batch has finished, so the run
  stops where the reference would, and the majority over the batch is the reference's answer (a stop
  after n samples means the top answer leads by more than the remaining samples of that batch can undo,
  ties going to the first seen). With the same per-sample seeds, the answers equal the reference's.
- cost: a batch pays for samples the reference would have skipped (e.g. sample 3 when samples 1 and 2
  already agree), so forward passes are never fewer than the reference's; wall time drops to two
  batched decodes. Finished rows stop counting passes (per-row NFE from the engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import model_validator

from decoding.diffusion import DiffusionParams, answer_limits, denoise
from decoding.params import Context, Limit, Params, ui
from decoding.record import Recorder
from decoding.trace import RunEnd, RunStart, Selection

STOP_REASONS = ("majority", "all_agree", "max_samples")
GRID_LETTERS = {"kept": "k", "agree": "a", "disagree": "d", "remasked": "r"}

INTRO = """**Ask several times, take the most common answer.** Voting decodes several samples of the same problem
(with some randomness, so they can differ) and returns the answer most of them give. **dVoting** saves work: the
samples agree on most positions, so after the first few, each new sample *keeps* the tokens they all agree on and
re-decodes only the rest, and it stops as soon as the vote is settled."""

LOOK_FOR = """in the **samples disagree** example the first samples give different answers, so the vote is not
settled: in the agreement grid, the fourth sample's row shows **kept** cells (copied, not re-decoded)
and only the rest is decoded again, in far fewer forward passes. **Vote fixes sample 1**: the first sample is
wrong, the majority is right. **Early stop**: two samples agree and dVoting stops."""

ABOUT = """**How it works.** Majority voting (majority@K) decodes K samples and counts their answers. dVoting decodes
one sample at a time. The first ⌊K/2⌋+1 samples start from a fully masked answer. Each later sample starts from the
positions where all earlier samples agree (the *agreement* share), with the rest, and always the last quarter of the
answer, masked again, so the model re-decides only where the samples differed. Before each new sample, once two
exist, it stops if one answer already has a majority of K, or if all answers so far are the same. Each sample is
decoded adaptively: every pass commits all tokens whose entropy is below τ (at least the surest one). Cost is the
number of forward passes summed over the samples.

**Where this differs from the paper and its code.**
- The zoo model is tiny and trained only on arithmetic chains (the paper uses LLaDA-8B on GSM8K, MATH, ARC), and the
  default answer length is 80 tokens (the paper's is 256), so accuracy and pass counts are not comparable.
- The default temperature is 1.0 (the paper's is 0.6). With the zoo model at 0.6 the first two samples agreed on
  20 of 20 level-5/6 held-out problems, so dVoting always stopped before a sample could keep anything; at 1.0 a
  later sample kept positions on 5 of 20, with the same majority accuracy (14 of 20), at 2.65 samples per problem
  instead of 2.0 (`python -m decoding.pick_examples --levels 5,6 --per-level 10 --seed 1 --sweep 0.6,0.8,1.0`).
- Answers are read up to the first end-of-text token (the reference also reads text after it).
- *Batched* (off by default) decodes the first samples together and the later ones together; the reference decodes
  one sample at a time. The answers are the same; it pays for samples the reference would skip (more passes, less
  wall time), and with an agreement share below 1 the later samples start from a different canvas.
- majority@K decodes adaptively (entropy < τ) unless *Steps per sample* is set; with steps > 0 it uses the fixed
  low-confidence schedule of the paper's baseline.
- Each sample has its own random generator (seed + sample number; the default seed 42 gives 42, 43, … as the
  reference), but it draws other noise than the reference's global generator, so with temperature > 0 individual
  samples differ from the reference's."""


class VotingParams(Params):
    method: Literal["dvoting", "majority"] = ui("dvoting", "Method (dVoting or majority@K)",
                                                help="dVoting re-decodes only where samples disagree; majority@K "
                                                     "decodes every sample in full.")
    k: int = ui(5, "K (samples at most)", 1, 9, 1, help="The most samples a vote may take.")
    tau: float = ui(0.3, "τ: commit every masked token with entropy < τ (nats)", 0.01, 2, 0.01,
                    help="Each pass commits every token the model is this sure of (lower = more passes).")
    agreement: float = ui(1.0, "Agreement share to keep a position (1 = all)", 0.5, 1, 0.05,
                          help="A later sample keeps a position when this share of the samples so far agree on it.")
    gen_length: int = ui(80, "Answer length (tokens)", 8, 512, 8,
                         help="How many masked positions each sample gets; capped by the model's context.")
    batched: bool = ui(False, "Batched (faster; beyond the reference order)",
                       help="Decode the first samples together, then the later ones together (the paper's code "
                            "decodes one at a time).")
    temperature: float = ui(1.0, "Temperature", 0, 2, 0.05, advanced=True,
                            help="Randomness of each token's choice: above 0, samples can differ.")
    block_length: int = ui(16, "Block length", 1, 512, 1, advanced=True,
                           help="Samples are decoded block by block, left to right; must divide the answer length.")
    steps: int = ui(0, "Steps per sample for majority@K (0 = adaptive, entropy < τ)", 0, 512, 1, advanced=True,
                    help="0 decodes adaptively; a fixed schedule must divide evenly over the blocks.")

    @classmethod
    def limits(cls, values, context: Context | None = None) -> dict[str, Limit]:
        """As diffusion (decoding/diffusion.py answer_limits); steps: 0 (adaptive) or a multiple of the blocks."""
        out = super().limits(values, context)
        out |= answer_limits(out, values, context, scheduled=True)
        if "steps" in out and out["steps"].step:
            out["steps"] = Limit(0, out["steps"].maximum, out["steps"].step, whole=True, soft=False,
                                 why=f"0 = adaptive, else {out['steps'].why}")
        return out

    @model_validator(mode="after")
    def _check(self) -> VotingParams:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, got {self.k}")
        if self.tau <= 0:
            raise ValueError(f"tau must be positive, got {self.tau}")
        if not 0 < self.agreement <= 1:
            raise ValueError(f"agreement must be in (0, 1], got {self.agreement}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.block_length < 1 or self.gen_length < 1:
            raise ValueError("block_length and gen_length must be positive")
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length {self.gen_length} must be a multiple of block_length {self.block_length}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        return self

    def diffusion(self, batch: int, steps: int | None = None) -> DiffusionParams:
        """Engine settings: adaptive entropy decoding, or (steps > 0) the fixed low-confidence schedule."""
        steps = self.steps if steps is None else steps
        if not steps:
            return DiffusionParams(gen_length=self.gen_length, steps=self.gen_length, block_length=self.block_length,
                                   strategy="entropy_threshold", temperature=self.temperature,
                                   entropy_threshold=self.tau, batch=batch)
        return DiffusionParams(gen_length=self.gen_length, steps=steps, block_length=self.block_length,
                               strategy="low_confidence", temperature=self.temperature, batch=batch)


# ---------------------------------------------------------------- pure rules (no model)


def n_fresh(k: int) -> int:
    """How many samples start from a fully masked answer."""
    return k // 2 + 1


def tally(answers: Sequence[str | None]) -> list[tuple[str, int]]:
    """[(answer, votes), ...] most common first; ties keep the order first seen; None takes no part."""
    counts: dict[str, int] = {}
    for a in answers:
        if a is not None:
            counts[a] = counts.get(a, 0) + 1
    # sorted() is stable and dicts keep insertion order, so equal counts stay first-seen first.
    return sorted(counts.items(), key=lambda item: item[1], reverse=True)


def majority(answers: Sequence[str | None]) -> str | None:
    counts = tally(answers)
    return counts[0][0] if counts else None


def stop_reason(answers: Sequence[str | None], k: int) -> str | None:
    """The reference's early stop, checked before each new sample once two samples exist."""
    counts = tally(answers)
    if len(answers) < 2 or not counts:
        return None
    top = counts[0][1]
    if top > k // 2:
        return "majority"
    if len(counts) == 1 and top >= k // 2:  # reference: ratio == 1.0 and top >= int(K / 2)
        return "all_agree"
    return None


def first_stop(answers: Sequence[str | None], k: int, after: int = 1) -> str | None:
    """Why the run stops, checking the rule after each sample n >= `after` in order (a batch adds several):
    the early-stop rule, or "max_samples" once K samples exist (the reference does not check after the last)."""
    for n in range(after, len(answers) + 1):
        if n >= k:
            return "max_samples"
        if reason := stop_reason(answers[:n], k):
            return reason
    return None


def consensus(canvases: Sequence[Sequence[int]]) -> tuple[list[int], list[float]]:
    """Per position: the most common token (ties: smallest id, as the reference) and its share."""
    tokens, shares = [], []
    for column in zip(*canvases):
        counts: dict[int, int] = {}
        for t in column:
            counts[t] = counts.get(t, 0) + 1
        top = min(counts, key=lambda t: (-counts[t], t))
        tokens.append(top)
        shares.append(counts[top] / len(column))
    return tokens, shares


def keep_mask(canvases: Sequence[Sequence[int]], agreement: float = 1.0) -> list[bool]:
    """Positions a later sample keeps: agreed by the previous samples, outside the last quarter."""
    _, shares = consensus(canvases)
    gen_length = len(shares)
    last_quarter = gen_length - gen_length // 4  # the reference always remasks from here on
    return [share >= agreement and p < last_quarter for p, share in enumerate(shares)]


def start_canvas(previous: Sequence[Sequence[int]], mask_id: int, agreement: float = 1.0) -> list[int]:
    """The canvas a later sample starts from: agreed tokens kept, every other position masked."""
    tokens, _ = consensus(previous)
    return [t if keep else mask_id for t, keep in zip(tokens, keep_mask(previous, agreement))]


def agreement_grid(canvases: Sequence[Sequence[int]], starts: Sequence[Sequence[int]], mask_id: int,
                   agreement: float = 1.0) -> list[list[str]]:
    """grid[s][p]: "kept" (s started with it), "agree" (s decoded the token the samples agree on), or
    "disagree" (the samples do not agree there, or s decoded a minority token)."""
    tokens, shares = consensus(canvases)
    grid = []
    for canvas, start in zip(canvases, starts):
        row = []
        for p, t in enumerate(canvas):
            if start[p] != mask_id:
                row.append("kept")
            elif t == tokens[p] and shares[p] >= agreement:
                row.append("agree")
            else:
                row.append("disagree")
        grid.append(row)
    return grid


# ---------------------------------------------------------------- runs over the engine


@dataclass
class _Sample:
    index: int
    start: list[int]  # the canvas it started from (mask_id where it decoded)
    canvas: list[int]  # the finished canvas
    text: str
    answer: str | None
    nfe: int


class _Votes:
    """The samples finished so far, in sample order, and what a round's Selection reports about them."""

    def __init__(self, adapter, agreement: float):
        self.mask_id, self.agreement = adapter.mask_id, agreement
        self.recorder = Recorder(adapter.token_text)  # one per run: each token id is named once in the trace
        self.samples: list[_Sample] = []
        self.unfinished_nfe = 0  # passes of a decode the user stopped: paid for, no sample
        self.steps = 0  # the run-wide step counter (samples decode one after another)

    @property
    def answers(self) -> list[str | None]:
        return [s.answer for s in self.samples]

    @property
    def canvases(self) -> list[list[int]]:
        return [s.canvas for s in self.samples]

    @property
    def nfe(self) -> int:
        return sum(s.nfe for s in self.samples) + self.unfinished_nfe

    def round(self, number: int, reason: str | None, next_start: list[int] | None) -> Selection:
        grid = agreement_grid(self.canvases, [s.start for s in self.samples], self.mask_id, self.agreement)
        if next_start is not None:  # one more row: where the next sample(s) start, kept or remasked
            grid.append(["remasked" if t == self.mask_id else "kept" for t in next_start])
        return Selection(round=number, nodes=[s.index for s in self.samples], answers=self.answers,
                         tally=tally(self.answers), answer=majority(self.answers), reason=reason, nfe=self.nfe,
                         agreement=["".join(GRID_LETTERS[c] for c in row) for row in grid])


def _decode(adapter, prompt: str, params: DiffusionParams, rows: list[int], starts: list[list[int]], seed: int,
            task, should_stop: Callable[[], bool] | None, votes: _Votes) -> Generator[object, None, list[_Sample]]:
    """One batched decode of `rows` (sample indices, seeded seed + index by the engine); yields the engine's
    events and returns the finished samples ([] when the user stopped it, its cost then going to
    votes.unfinished_nfe)."""
    done = yield from denoise(adapter, prompt, params, seed, task=task, init_canvas=starts, should_stop=should_stop,
                              rows=rows, run_events=False, first_step=votes.steps, recorder=votes.recorder)
    votes.steps = done.steps
    if done.stopped and any(adapter.mask_id in c for c in done.canvas):  # stopped before every row finished
        votes.unfinished_nfe += sum(done.row_nfe)
        return []
    return [_Sample(index=r, start=starts[i], canvas=done.canvas[i], text=done.texts[i], answer=done.answers[i],
                    nfe=done.row_nfe[i]) for i, r in enumerate(rows)]


def _run_start(adapter, prompt: str, params: VotingParams, votes: _Votes) -> list:
    ids = adapter.encode_prompt(prompt)
    return [RunStart(method="voting", prompt=prompt, prompt_ids=ids, rows=params.k, length=params.gen_length,
                     mask_id=adapter.mask_id), *votes.recorder.name(ids)]


def _run_end(votes: _Votes, t0: float, stopped: bool, reason: str | None) -> RunEnd:
    return RunEnd(nfe=votes.nfe, seconds=round(time.perf_counter() - t0, 4), answer=majority(votes.answers),
                  stopped=stopped, summary={"samples": len(votes.samples), "stop_reason": reason,
                                            "tally": [list(t) for t in tally(votes.answers)],
                                            "nfe_per_sample": [s.nfe for s in votes.samples]})


def majority_vote(adapter, prompt: str, params: VotingParams, *, task=None, seed: int = 42,
                  should_stop: Callable[[], bool] | None = None) -> Generator:
    """K samples in one batch, then one Selection with the majority. params.steps = 0 decodes adaptively
    (entropy threshold τ, as dVoting does); > 0 uses the fixed low-confidence schedule with that many steps
    (the paper's baseline)."""
    t0 = time.perf_counter()
    votes = _Votes(adapter, params.agreement)
    yield from _run_start(adapter, prompt, params, votes)
    rows = list(range(params.k))
    starts = [[adapter.mask_id] * params.gen_length for _ in rows]
    votes.samples = yield from _decode(adapter, prompt, params.diffusion(params.k), rows, starts, seed, task,
                                       should_stop, votes)
    stopped = not votes.samples
    if not stopped:
        yield votes.round(1, "max_samples", None)
    yield _run_end(votes, t0, stopped, None if stopped else "max_samples")


def dvoting(adapter, prompt: str, params: VotingParams, *, task=None, seed: int = 42,
            should_stop: Callable[[], bool] | None = None) -> Generator:
    """dVoting: samples one at a time in the reference order, or (params.batched) in two batches."""
    t0 = time.perf_counter()
    k, mask_id = params.k, adapter.mask_id
    votes = _Votes(adapter, params.agreement)
    yield from _run_start(adapter, prompt, params, votes)
    fully_masked = [mask_id] * params.gen_length
    # Groups of samples decoded together: the reference runs one at a time.
    groups = [list(range(n_fresh(k))), list(range(n_fresh(k), k))] if params.batched else [[i] for i in range(k)]
    reason = None
    for round_number, rows in enumerate(filter(None, groups), start=1):
        if should_stop is not None and should_stop():
            yield _run_end(votes, t0, True, None)
            return
        start = fully_masked if rows[0] < n_fresh(k) else start_canvas(votes.canvases, mask_id, params.agreement)
        finished = yield from _decode(adapter, prompt, params.diffusion(len(rows)), rows, [start] * len(rows),
                                      seed, task, should_stop, votes)
        if not finished:  # the user pressed Stop
            yield _run_end(votes, t0, True, None)
            return
        n_before = len(votes.samples)
        votes.samples += finished  # a batch's extra samples are paid for, so they vote (same majority)
        reason = first_stop(votes.answers, k, after=n_before + 1)
        next_start = None
        if not reason:
            next_start = fully_masked if len(votes.samples) < n_fresh(k) else start_canvas(
                votes.canvases, mask_id, params.agreement)
        yield votes.round(round_number, reason, next_start)
        if reason:
            break
    yield _run_end(votes, t0, False, reason)


def decode(adapter, prompt: str, params: VotingParams, *, task=None, seed: int = 42,
           should_stop: Callable[[], bool] | None = None) -> Generator:
    """The registry's decoder signature: majority@K or dVoting, as params.method says."""
    run = majority_vote if params.method == "majority" else dvoting
    return (yield from run(adapter, prompt, params, task=task, seed=seed, should_stop=should_stop))
