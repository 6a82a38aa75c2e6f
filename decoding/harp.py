"""HARP, Hesitation-Aware Reframing (arXiv 2412.07282; reference code github romsto/HARP, harp.py).

At every step the model runs its usual (vanilla) forward pass. When it hesitates, it looks again:
- hesitation: the Shannon entropy in **bits** of the next-token distribution at the last position, from the raw
  logits (before temperature / top-k / top-p), -sum p log2(p + 1e-15) as the reference; a step hesitates when
  the entropy is **strictly greater** than θ;
- reframing: the input embeddings of the whole sequence (prompt included, every position and hidden dimension)
  are multiplied by a fresh mask `rand > δ`, with **no** 1/(1 - δ) rescaling, and the model runs a second full
  forward pass on them;
- the two passes mix as **raw logits** at the last position, β·vanilla + (1 - β)·reframed, and the token is
  chosen from the mix (greedy, or sampled after the temperature / top-k / top-p warpers).
Defaults θ = 1.0 bit, δ = 0.2, β = 0.5 and seed 3 (the reference demo's). The mask comes from a generator per
row seeded `seed + 1000003 + row` (`mask_generator`), drawn afresh at every hesitation: a run replays exactly.

Where this departs from the reference (batch 1, `use_cache=False` on both passes):
- the vanilla pass runs with a KV cache, and rows are batched (left-padded); the reframed pass, which needs the
  whole sequence under a fresh mask, runs only for the rows that hesitate, without a cache. With the cache off
  (`use_cache=False`) the tokens equal a cache-free, batch-1 implementation of the same rule
  (tests/test_harp.py); with it on they agree up to floating-point ties;
- the mask comes from its own seeded generator (the reference draws from torch's global generator), drawn in
  float32 (the reference draws in the embeddings' dtype); a row's mask covers its real tokens (a left-padded
  row's pads are masked out of attention anyway);
- logits are float32 (the reference keeps the model's dtype);
- beyond the reference, each step is recorded: the vanilla entropy, and at hesitation points the vanilla,
  reframed and mixed top-k and picks (the reference returns token ids only), and (option `compare`) the plain
  decoding of the same prompt runs after HARP, for the first position where the two part and the cost.

Trace (docs/CONTRACTS.md): per prompt row r, sequences 5r + role: OUT (0) the HARP output (propose: the vanilla
distribution's stats at the token taken; commit: the token), VANILLA (1), REFRAMED (2) and MIXED (3) a `propose`
at hesitation points only (each distribution's pick under the same random draw, with its stats), PLAIN (4) the
plain decoding of the same prompt. A hesitation point is a position of the REFRAMED sequence; it flipped when
the MIXED pick differs from the VANILLA one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator

import torch
from pydantic import model_validator

from decoding import autoregressive as ar
from decoding.params import ui
from decoding.record import Recorder
from decoding.trace import RunEnd, RunStart

OUT, VANILLA, REFRAMED, MIXED, PLAIN = range(5)
ROLES = ("harp", "vanilla", "reframed", "mixed", "plain")
SEQS_PER_ROW = len(ROLES)
MASK_SALT = 1_000_003  # mask generators are seeded apart from the sampling ones (seed + row)

INTRO = """**HARP: watch an autoregressive model hesitate, reframe, and change its mind.** At every token the
model's uncertainty is measured (entropy, in bits). Where it exceeds θ, the model *hesitates*: it reads the whole
text again with a random δ share of its input embeddings zeroed (a "reframed" view) and mixes the two
predictions, β·vanilla + (1−β)·reframed. The strip shows the entropy per token; pick a hesitation point
(click a chip of the HARP row, or type its position) to compare the vanilla, reframed and mixed top-k, and whether the token flipped.
*Departure from the reference:* the vanilla pass uses a KV cache and only hesitating rows pay the second pass
(the reference runs batch 1 without a cache); with the cache off the tokens equal a cache-free run of the rule."""

LOOK_FOR = ("Look for the red bar in the entropy strip: there the model hesitated and the mix changed the token; "
            "the plain-decoding row parts from HARP at that position.")
# The tab's examples, measured with tiny-ar on the CPU (float32) at the defaults (θ 1, δ 0.2, β 0.5, seed 3).
EXAMPLES = (
    {"question": "63-49-6+49-25-11*5=?", "label": "a flip that fixes the answer", "level": 6,
     "why": "hesitates once (position 6, 1.09 bits); the mix flips 2 to 1 and HARP answers #105 ✓, plain #95 ✗"},
    {"question": "3+31*5+6+25=?", "label": "a flip that breaks the answer", "level": 4,
     "why": "hesitates once (position 35); the mix flips the token and HARP answers #291 ✗, plain #201 ✓"},
    {"question": "56-29-26+83*6-88-8=?", "label": "hesitations, no flip", "level": 6,
     "why": "two hesitations; the mix keeps the vanilla token both times (both answer #382, expected #408)"},
    {"question": "13-2=?", "label": "no hesitation", "level": 1,
     "why": "every entropy below 0.2 bits: HARP is plain decoding, at the same cost"},
)


def seq_of(row: int, role: int) -> int:
    return SEQS_PER_ROW * row + role


# ---------------------------------------------------------------- the rule (pure tensor functions)


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of softmax(logits) over the last dim, as the reference: -sum p log2(p + 1e-15)."""
    p = torch.softmax(logits.float(), -1)
    return -(p * torch.log2(p + 1e-15)).sum(-1)


def hesitates(entropy: torch.Tensor, theta: float) -> torch.Tensor:
    """Strictly greater: an entropy equal to θ does not hesitate."""
    return entropy > theta


def mask_generator(seed: int, row: int, device: torch.device | str) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed + MASK_SALT + row)


def reframe_mask(length: int, hidden: int, delta: float, gen: torch.Generator) -> torch.Tensor:
    """[length, hidden] bool: True keeps an embedding entry (rand > δ), fresh at every call."""
    return torch.rand((length, hidden), generator=gen, device=gen.device) > delta


def drop_out(embeds: torch.Tensor, lengths: list[int], delta: float, gens: list[torch.Generator]) -> torch.Tensor:
    """embeds [A, T, D] times a fresh mask over each row's last `lengths[a]` positions (its real tokens, the
    prompt included), no rescaling. Left pads keep their embeddings (the attention mask hides them)."""
    mask = torch.ones(embeds.shape, dtype=torch.bool, device=embeds.device)
    for a, (n, g) in enumerate(zip(lengths, gens)):
        mask[a, embeds.shape[1] - n:] = reframe_mask(n, embeds.shape[-1], delta, g).to(embeds.device)
    return embeds * mask


def mix(vanilla: torch.Tensor, reframed: torch.Tensor, beta: float) -> torch.Tensor:
    """Raw logits: β·vanilla + (1 − β)·reframed."""
    return beta * vanilla + (1 - beta) * reframed


# ---------------------------------------------------------------- parameters


class HarpParams(ar.ARParams):
    theta: float = ui(1.0, "θ: hesitate when the entropy is above θ (bits)", 0, 8, 0.05)
    delta: float = ui(0.2, "δ: share of embedding entries zeroed when reframing", 0, 0.95, 0.05)
    beta: float = ui(0.5, "β: weight of the vanilla logits in the mix", 0, 1, 0.05)
    compare: bool = ui(True, "Also decode without HARP (first split, cost)")

    @model_validator(mode="after")
    def _check_harp(self) -> HarpParams:
        if self.theta < 0:
            raise ValueError(f"theta must be >= 0, got {self.theta}")
        if not 0 <= self.delta < 1:
            raise ValueError(f"delta must be in [0, 1), got {self.delta}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        return self


# ---------------------------------------------------------------- the decoder


class Reframer:
    """The HARP policy for `autoregressive.generate`: at rows whose vanilla entropy is above θ, one batched
    reframed pass (no cache) and the mixed logits; records the three distributions there."""

    def __init__(self, adapter, params: HarpParams, seed: int, seqs: list[int]):
        self.model, self.params, self.seqs = adapter.model, params, seqs
        self.embed = adapter.model.get_input_embeddings()
        B = len(seqs)
        self.gens = [mask_generator(seed, r, adapter.device) for r in range(B)]
        self.hesitated = torch.zeros(B, dtype=torch.long, device=adapter.device)
        self.flipped = torch.zeros(B, dtype=torch.long, device=adapter.device)

    def __call__(self, rows: ar.Rows, raw: torch.Tensor, live: torch.Tensor, sampler: ar.Sampler,
                 u: torch.Tensor | None) -> tuple[torch.Tensor, list[ar.Extra]]:
        p = self.params
        hes = hesitates(entropy_bits(raw), p.theta) & live
        idx = hes.nonzero()[:, 0]
        if len(idx) == 0:
            return raw, []
        which = idx.tolist()
        ids = rows.ids[idx, :rows.length]
        lengths = rows.mask[idx, :rows.length].sum(-1).tolist()
        embeds = drop_out(self.embed(ids), lengths, p.delta, [self.gens[r] for r in which])
        reframed = self.model(inputs_embeds=embeds, use_cache=False, **rows.inputs(idx)).logits[:, -1].float()
        mixed = mix(raw[idx], reframed, p.beta)
        logits = raw.clone()
        logits[idx] = mixed
        u_h = None if u is None else u[idx]
        picks = [sampler.choose(ids, x, u_h) for x in (raw[idx], reframed, mixed)]
        self.hesitated[idx] += 1
        self.flipped[idx] += (picks[0] != picks[2]).long()
        k = p.alternatives
        return logits, [ar.Extra([self.seqs[r] + role for r in which], which, pick, ar.token_stats(x, pick, k),
                                 passes=int(role == VANILLA))
                        for role, x, pick in zip((VANILLA, REFRAMED, MIXED), (raw[idx], reframed, mixed), picks)]


def harp_generate(adapter, prompts: list[list[int]], params: HarpParams, *, seed: int = 3,
                  recorder: Recorder | None = None, first_step: int = 0, task=None,
                  should_stop: Callable[[], bool] | None = None) -> Generator[object, None, ar.Generated]:
    """HARP over `autoregressive.generate` for several prompts (row r: sequences 5r + role). The returned
    Generated's `extra` holds per row `hesitations` and `flips`."""
    seqs = [seq_of(r, OUT) for r in range(len(prompts))]
    policy = Reframer(adapter, params, seed, seqs)
    done = yield from ar.generate(adapter, prompts, params.config(), seed=seed, seqs=seqs, recorder=recorder,
                                  first_step=first_step, record_k=params.alternatives, use_cache=params.use_cache,
                                  task=task, should_stop=should_stop, policy=policy)
    done.extra = {"hesitations": policy.hesitated.tolist(), "flips": policy.flipped.tolist()}
    return done


def first_split(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ (a shorter one ends there), None when equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def decode(adapter, prompt: str, params: HarpParams, *, task=None, seed: int = 3,
           should_stop: Callable[[], bool] | None = None) -> Generator[object, None, ar.Generated]:
    """The registry's decoder: HARP on one prompt, then (params.compare) plain decoding of the same prompt with
    the same settings and seed. RunEnd.nfe counts both; its summary splits passes and seconds."""
    t0 = time.perf_counter()
    params.check(adapter, prompt)
    ids = adapter.encode_prompt(prompt)
    rec = Recorder(adapter.token_text)
    yield RunStart(method="harp", prompt=prompt, prompt_ids=ids, rows=SEQS_PER_ROW if params.compare else PLAIN,
                   length=params.max_new_tokens)
    yield from rec.name(ids)
    done = yield from harp_generate(adapter, [ids], params, seed=seed, recorder=rec, task=task, should_stop=should_stop)
    summary: dict = {"harp_nfe": done.nfe, "harp_seconds": round(done.seconds, 4), "tokens": len(done.tokens[0]),
                     "hesitations": done.extra["hesitations"][0], "flips": done.extra["flips"][0]}
    nfe, stopped = done.nfe, done.stopped
    if params.compare and not stopped:
        plain = yield from ar.generate(adapter, [ids], params.config(), seed=seed, seqs=[PLAIN], recorder=rec,
                                       first_step=done.steps, record_k=params.alternatives,
                                       use_cache=params.use_cache, task=task, should_stop=should_stop)
        nfe, stopped = nfe + plain.nfe, plain.stopped
        summary |= {"plain_nfe": plain.nfe, "plain_seconds": round(plain.seconds, 4), "plain_answer": plain.answers[0],
                    "plain_tokens": len(plain.tokens[0]), "first_split": first_split(done.tokens[0], plain.tokens[0])}
    yield RunEnd(nfe=nfe, seconds=round(time.perf_counter() - t0, 4), answer=done.answers[0], stopped=stopped,
                 summary=summary)
    return done
