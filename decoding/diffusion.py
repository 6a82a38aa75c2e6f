"""The masked-diffusion engine: LLaDA's sampler as one loop, recording each pass as token deltas.

    for event in denoise(adapter, prompt, DiffusionParams(strategy="low_confidence"), seed=0, task=task): ...

`denoise` follows LLaDA's generate.py: predict every masked position with one forward pass (`step`: a pure
tensor function), choose a token per position (Gumbel-max at `temperature`, never [MASK]), let the strategy
pick which masked positions to commit, repeat until no masks are left. All of it runs on the model's device;
the recorder (decoding/record.py) moves only [rows, positions, k] tensors to the host. Strategies:

- scheduled (a fixed number of commits per step; LLaDA's linear schedule per semi-autoregressive block):
  `low_confidence` and `random` (LLaDA remasking), `maskgit_plus`, `topk_margin`, `entropy` (Dream's algs;
  `alg_temp` > 0 samples the positions from softmax(score / alg_temp) instead of taking the top ones). With a
  Dream model (adapter.settings["schedule"] == "dream") Dream's algs count commits as Dream's
  diffusion_generate does (`dream_count`: int(n_mask * (1 - s / t)) on linspace(1, eps, steps + 1), per block);
  `origin` (Dream's random reveal: each mask revealed with probability 1 - s / t) always follows Dream;
  `sample_top_p` / `sample_top_k` filter the token choice as Dream's sample_tokens does (on logits /
  temperature; Dream's algs then score that filtered distribution);
- adaptive (as many commits as the model is sure of): `threshold` (Fast-dLLM: every masked token of the
  current block with confidence >= threshold, at least the top-1) and `entropy_threshold` (dVoting).

As LLaDA: the confidence is the softmax over the whole vocabulary, [MASK] included (only the token choice
leaves [MASK] out), and the commit choice is torch.topk over the whole prompt + answer row, so exact ties
break as LLaDA's do. Randomness: each row has its own generator on the model's device, seeded
`seed + row`, so a sample decodes the same whether it runs alone or batched with others.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import model_validator

from decoding.params import Context, Limit, Params, ui
from decoding.record import Recorder
from decoding.trace import Node, RunEnd, RunStart, Tokens

MASK_TEXT = "[MASK]"
Strategy = Literal["low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin", "threshold",
                   "entropy_threshold"]
SCHEDULED = {"low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin"}
# Dream's algs: with a Dream model (adapter.settings["schedule"] == "dream") they follow Dream's own timestep
# schedule (`dream_count`); `origin` (Dream's random reveal) always does. DREAM_EPS: DreamGenerationConfig's eps.
DREAM_ALGS = {"maskgit_plus", "topk_margin", "entropy", "origin"}
DREAM_EPS = 1e-3


# ---------------------------------------------------------------- parameters


class DiffusionParams(Params):
    strategy: Strategy = ui("low_confidence", "Strategy (which masks to commit)",
                            help="Which masked positions get their token at each step; the About box explains each.")
    steps: int = ui(40, "Steps (forward passes, fixed schedules)", 1, 512, 1,
                    help="Fewer steps = more tokens committed per pass; must divide evenly over the blocks.")
    gen_length: int = ui(80, "Answer length (tokens)", 8, 512, 8,
                         help="How many masked positions the answer gets; capped by the model's context.")
    block_length: int = ui(16, "Block length (semi-autoregressive)", 1, 512, 1,
                           help="The answer is decoded block by block, left to right; must divide the answer length.")
    temperature: float = ui(0.0, "Temperature (0 = greedy)", 0, 2, 0.05, advanced=True,
                            help="Randomness of each token's choice: 0 takes the most likely token.")
    threshold: float = ui(0.9, "Confidence threshold (Fast-dLLM strategy)", 0.01, 1, 0.01, advanced=True,
                          help="threshold strategy: commit every token at least this sure of itself.")
    entropy_threshold: float = ui(0.3, "Entropy threshold τ (entropy_threshold strategy), nats", 0.01, 3, 0.01,
                                  advanced=True, help="entropy_threshold strategy: commit every token whose "
                                                      "uncertainty (entropy) is below τ.")
    alg_temp: float = ui(0.0, "Position temperature (Dream's alg_temp; 0 = top scores)", 0, 2, 0.05, advanced=True,
                         help="Dream's strategies: above 0, which positions get committed is drawn at random, "
                              "favouring the confident ones, instead of always the most confident.")
    cfg_scale: float = ui(0.0, "Classifier-free guidance (0 = off)", 0, 3, 0.1, advanced=True,
                          help="Above 0, each step also runs the model with the prompt masked and pushes the "
                               "prediction away from that prompt-less guess (two passes per step).")
    sample_top_p: float = ui(1.0, "Nucleus top-p for the token choice (Dream's top_p; 1 = off)", 0.01, 1, 0.01,
                             advanced=True, help="Choose each token only among the most likely ones whose "
                                                 "probabilities add up to p (Dream's top_p).")
    sample_top_k: int = ui(0, "Top-k for the token choice (Dream's top_k; 0 = off)", 0, 1000, 1, advanced=True,
                           help="Choose each token only among its k most likely candidates (Dream's top_k).")
    top_k: int = ui(3, "Alternatives recorded per position", 1, 20, 1, advanced=True,
                    help="How many runner-up tokens the views can show for each position.")
    batch: int = ui(1, "Batch (samples side by side)", 1, 8, 1, advanced=True,
                    help="Decode several samples of the same prompt at once (sample i uses seed + i).")

    @classmethod
    def limits(cls, values, context: Context | None = None) -> dict[str, Limit]:
        """The answer fits the model's context, blocks divide the answer, scheduled steps divide over the blocks."""
        out = super().limits(values, context)
        return out | answer_limits(out, values, context, scheduled=values.get("strategy", "low_confidence") in SCHEDULED)

    @property
    def n_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def scheduled(self) -> bool:
        return self.strategy in SCHEDULED

    @model_validator(mode="after")
    def _check(self) -> DiffusionParams:
        if self.gen_length < 1:
            raise ValueError(f"gen_length must be at least 1, got {self.gen_length}")
        if not 1 <= self.block_length <= self.gen_length:
            raise ValueError(f"block_length must be in [1, gen_length={self.gen_length}], got {self.block_length}")
        if self.gen_length % self.block_length:
            raise ValueError(f"gen_length {self.gen_length} must be a multiple of block_length {self.block_length}")
        if not 1 <= self.steps <= self.gen_length:
            raise ValueError(f"steps must be in [1, gen_length={self.gen_length}], got {self.steps}")
        if self.scheduled and self.steps % self.n_blocks:
            raise ValueError(f"steps {self.steps} must divide evenly over the {self.n_blocks} blocks "
                             f"(gen_length {self.gen_length} / block_length {self.block_length})")
        if self.temperature < 0 or self.alg_temp < 0 or self.cfg_scale < 0:
            raise ValueError("temperature, alg_temp and cfg_scale must be >= 0")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.entropy_threshold <= 0:
            raise ValueError(f"entropy_threshold must be positive, got {self.entropy_threshold}")
        if not 0 < self.sample_top_p <= 1:
            raise ValueError(f"sample_top_p must be in (0, 1], got {self.sample_top_p}")
        if self.sample_top_k < 0:
            raise ValueError(f"sample_top_k must be >= 0 (0 = off), got {self.sample_top_k}")
        if not 1 <= self.top_k <= 20:
            raise ValueError(f"top_k must be in [1, 20], got {self.top_k}")
        if not 1 <= self.batch <= 64:
            raise ValueError(f"batch must be in [1, 64], got {self.batch}")
        return self

    def check(self, adapter, prompt: str) -> None:
        """What only the model and prompt can tell: a [MASK] token, the context length."""
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        if adapter.kind == "masked_diffusion" and adapter.mask_id is None:
            raise ValueError(f"model {adapter.spec!r} has no [MASK] token: it cannot run masked diffusion")
        n = len(adapter.encode_prompt(prompt))
        if n + self.gen_length > adapter.max_length:
            raise ValueError(f"prompt ({n} tokens) + gen_length ({self.gen_length}) exceeds the model's "
                             f"context of {adapter.max_length} tokens")
        self.check_context(Context(adapter.max_length, n))


def answer_limits(base: dict[str, Limit], values, context: Context | None, scheduled: bool) -> dict[str, Limit]:
    """gen_length / block_length / steps as they run (shared with voting): the answer fits the context, the block
    length divides the answer length, and steps are at most the answer length (at least one token per pass) and,
    scheduled, a multiple of the block count (each block gets the same number of passes)."""
    out = {}
    gen = base["gen_length"]
    room = context.room if context is not None else None
    if room is not None and gen.maximum is not None and room < gen.maximum:
        gen = Limit(gen.minimum, room, whole=True, soft=False,
                    why=f"the model's context is {context.max_length} tokens, the prompt takes {context.prompt_tokens}")
    out["gen_length"] = gen
    try:
        L = int(values.get("gen_length", 0))
        block = int(values.get("block_length", 0))
    except (TypeError, ValueError):
        return out
    if L >= 1:
        out["block_length"] = Limit(1, L, choices=tuple(d for d in range(1, L + 1) if L % d == 0), whole=True,
                                    soft=False, why=f"it must divide the answer length {L}")
    if L >= 1 and block >= 1 and L % block == 0 and "steps" in base:
        n_blocks = L // block
        low = base["steps"].minimum
        if scheduled:
            out["steps"] = Limit(max(n_blocks, low or 0), L, n_blocks, whole=True, soft=False,
                                 why=f"a multiple of the {n_blocks} blocks, at most the answer length {L}")
        else:
            out["steps"] = Limit(low, L, whole=True, soft=False, why=f"at most the answer length {L}")
    return out


# ---------------------------------------------------------------- strategies


@dataclass
class StepState:
    """What a strategy sees at one step. Tensors are [rows in this pass, gen_length], on the model's device."""

    logits: torch.Tensor  # [A, L, V], [MASK] at -inf
    probs: torch.Tensor  # [A, L, V] softmax over the full vocabulary ([MASK] included, as LLaDA)
    x0: torch.Tensor  # chosen token per position
    confidence: torch.Tensor  # probs of x0
    entropy: torch.Tensor  # nats
    masked: torch.Tensor  # bool, before this step's commits
    in_block: torch.Tensor  # bool, the current block (scheduled: the schedule's; adaptive: leftmost unfinished)
    k: list[int] | None  # commits per row (scheduled strategies)
    params: DiffusionParams
    gens: list[torch.Generator]
    block_length: int
    prompt_length: int = 0  # LLaDA ranks over the prompt + answer row: ties break the same way
    p_transfer: float = 1.0  # `origin`: each masked position of the block is revealed with this probability
    commit: torch.Tensor | None = None  # set by `step`: the positions the strategy commits
    noise: torch.Tensor | None = None  # the Gumbel draw at each chosen token (temperature > 0), recorded


def _pick(score: torch.Tensor, s: StepState) -> torch.Tensor:
    """Commit s.k[i] eligible positions per row: the highest scores (torch.topk over the prompt + answer row,
    as LLaDA), or (alg_temp > 0) sampled from softmax(score / alg_temp) as Dream does."""
    score = score.masked_fill(~(s.masked & s.in_block), -torch.inf)
    row = torch.cat([score.new_full((len(score), s.prompt_length), -torch.inf), score], 1)
    commit = torch.zeros_like(s.masked)
    for i, k in enumerate(s.k):
        if k == 0:
            continue
        if s.params.alg_temp > 0:
            weights = torch.softmax(score[i].double() / s.params.alg_temp, -1)
            idx = torch.multinomial(weights, k, generator=s.gens[i])
        else:
            idx = torch.topk(row[i], k).indices - s.prompt_length
        commit[i, idx] = True
    return commit


def _scaled_probs(s: StepState) -> torch.Tensor:
    """Dream scores the temperature-scaled distribution it samples from."""
    t = s.params.temperature
    return torch.softmax(s.logits / t, -1) if t > 0 else torch.softmax(s.logits, -1)


def low_confidence(s: StepState) -> torch.Tensor:
    return _pick(s.confidence, s)


def random_remask(s: StepState) -> torch.Tensor:
    score = torch.stack([torch.rand(s.masked.shape[1], generator=g, device=g.device) for g in s.gens])
    return _pick(score, s)


def maskgit_plus(s: StepState) -> torch.Tensor:
    return _pick(_scaled_probs(s).gather(-1, s.x0[..., None])[..., 0], s)


def topk_margin(s: StepState) -> torch.Tensor:
    top2 = _scaled_probs(s).topk(2, dim=-1).values
    return _pick(top2[..., 0] - top2[..., 1], s)


def neg_entropy(s: StepState) -> torch.Tensor:
    p = _scaled_probs(s)
    return _pick((p * torch.log(p + 1e-10)).sum(-1), s)


def origin(s: StepState) -> torch.Tensor:
    """Dream's `origin`: every masked position of the block is revealed independently with p_transfer."""
    u = torch.stack([torch.rand(s.masked.shape[1], generator=g, device=g.device) for g in s.gens])
    return s.masked & s.in_block & (u < s.p_transfer)


def threshold(s: StepState) -> torch.Tensor:
    """Fast-dLLM: every masked token of the current block with confidence >= threshold; always the top-1."""
    eligible = s.masked & s.in_block
    conf = s.confidence.masked_fill(~eligible, -torch.inf)
    commit = eligible & (conf >= s.params.threshold)
    commit[torch.arange(len(conf), device=conf.device), conf.argmax(-1)] = True
    return commit & eligible


def entropy_threshold(s: StepState) -> torch.Tensor:
    """dVoting, as its reference: in the leftmost unfinished block, every masked token with entropy <
    entropy_threshold, else (once per pass) the single lowest-entropy one. A block that fills lets the same pass
    go on into the next block; the at-least-one fallback stays armed there until it has fired once."""
    commit = torch.zeros_like(s.masked)
    n = s.block_length
    masked, below = s.masked.tolist(), (s.entropy < s.params.entropy_threshold).tolist()
    for i in range(len(masked)):
        armed = True
        for lo in range(0, len(masked[i]), n):
            cand = masked[i][lo:lo + n]
            if not any(cand):
                continue  # finished block
            pick = [c and b for c, b in zip(cand, below[i][lo:lo + n])]
            if not any(pick) and armed:
                ent = s.entropy[i, lo:lo + n].masked_fill(~s.masked[i, lo:lo + n], torch.inf)
                pick[int(ent.argmin())] = True
                armed = False
            commit[i, lo:lo + n] = torch.tensor(pick, device=commit.device)
            if any(c and not p for c, p in zip(cand, pick)):
                break  # block not full: the pass ends here
    return commit


STRATEGIES: dict[str, Callable[[StepState], torch.Tensor]] = {
    "low_confidence": low_confidence,
    "random": random_remask,
    "maskgit_plus": maskgit_plus,
    "topk_margin": topk_margin,
    "entropy": neg_entropy,
    "origin": origin,
    "threshold": threshold,
    "entropy_threshold": entropy_threshold,
}


# ---------------------------------------------------------------- tensor helpers


def gumbel_argmax(logits: torch.Tensor, temperature: float, gens: list[torch.Generator],
                  with_noise: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """LLaDA's sampler: argmax of exp(logits) / (-log U)^T in float64 (low precision hurts Gumbel-max).
    `with_noise`: also the Gumbel draw -log(-log U) at the chosen token ([A, L]; None when greedy), which is
    what the choice added to its logits / T (recorded for the divergence debugger)."""
    if temperature == 0:
        return (logits.argmax(-1), None) if with_noise else logits.argmax(-1)
    logits = logits.double()
    noise = torch.stack([torch.rand(logits.shape[1:], dtype=torch.float64, generator=g, device=g.device)
                         for g in gens])
    chosen = (logits.exp() / (-torch.log(noise)) ** temperature).argmax(-1)
    if not with_noise:
        return chosen
    return chosen, -torch.log(-torch.log(noise.gather(-1, chosen[..., None])[..., 0]))


def restrict(logits: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """Dream's sample_tokens filters: on logits / temperature, keep the smallest set whose probability reaches top_p
    (the first token always stays), then the top_k of what is left; the rest become -inf. Off at 1 and 0."""
    if top_p >= 1 and top_k <= 0:
        return logits
    scaled = logits / temperature if temperature > 0 else logits
    drop = torch.zeros_like(logits, dtype=torch.bool)
    if top_p < 1:
        ranked, order = scaled.sort(-1, descending=True)
        beyond = ranked.softmax(-1).cumsum(-1) > top_p
        beyond = torch.cat([torch.zeros_like(beyond[..., :1]), beyond[..., :-1]], -1)  # keep the crossing token
        drop.scatter_(-1, order, beyond)
    if top_k > 0:
        kth = scaled.masked_fill(drop, -torch.inf).topk(min(top_k, logits.shape[-1]), -1).values[..., -1:]
        drop |= scaled < kth
    return logits.masked_fill(drop, -torch.inf)


def entropy_of(logits: torch.Tensor, probs: torch.Tensor, exact: bool = False) -> torch.Tensor:
    """Entropy (nats) of softmax(logits). `exact`: as dVoting's reference computes it (float64,
    -sum p log(p + 1e-12)), for the strategy that thresholds it; else -sum p log p from the softmax already
    computed (two kernels; logsumexp - E[logits] takes four full-vocabulary passes more in eager PyTorch)."""
    if exact:
        p = torch.softmax(logits.double(), -1)
        return -(p * torch.log(p + 1e-12)).sum(-1).float()
    return torch.special.entr(probs).sum(-1)


def topk_last(x: torch.Tensor, k: int, chunk: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(x, k, dim=-1) (values, indices) for a long last dimension in about one read of x (torch.topk
    makes ~9 passes over a 126k vocabulary): the k largest values lie in the k chunks with the largest maxima,
    so rank the chunk maxima, then take the top k of those k chunks (and the tail that fills no chunk).
    Same values as torch.topk; among exactly tied values the index chosen may differ."""
    n = x.shape[-1] // chunk
    if n < 4 * k:
        return x.topk(k, dim=-1)
    head = x[..., : n * chunk].unflatten(-1, (n, chunk))
    best = head.amax(-1).topk(k, dim=-1).indices  # [..., k] chunks
    values = head.gather(-2, best[..., None].expand(*best.shape, chunk)).flatten(-2)  # [..., k * chunk]
    ids = (best[..., None] * chunk + torch.arange(chunk, device=x.device)).flatten(-2)
    if n * chunk < x.shape[-1]:
        tail = x[..., n * chunk:]
        values = torch.cat([values, tail], -1)
        ids = torch.cat([ids, torch.arange(n * chunk, x.shape[-1], device=x.device).expand(*tail.shape)], -1)
    top = values.topk(k, dim=-1)
    return top.values, ids.gather(-1, top.indices)


def model_logits(adapter, x: torch.Tensor, prompt_length: int, mask_id: int, cfg_scale: float) -> torch.Tensor:
    """Logits [A, P + L, V] of the whole rows (float32, Dream shift applied by the adapter); CFG optional."""
    if cfg_scale > 0:
        un = x.clone()
        un[:, :prompt_length] = mask_id  # LLaDA: the unconditional copy has its prompt masked
        cond, uncond = adapter.logits(torch.cat([x, un])).chunk(2)
        logits = uncond + (cfg_scale + 1) * (cond - uncond)
    else:
        logits = adapter.logits(x)
    return logits


def schedule_count(masked_in_block: torch.Tensor, steps_left: int) -> torch.Tensor:
    """Commits at this step: ceil(masks left in the block / steps left in the block). This equals LLaDA's
    get_num_transfer_tokens (block masks split evenly over its steps, remainder to the first steps)."""
    return (masked_in_block.sum(-1) + steps_left - 1) // steps_left


def dream_timesteps(steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Dream's diffusion_generate: torch.linspace(1, eps, steps + 1) (float32)."""
    return torch.linspace(1, DREAM_EPS, steps + 1, device=device)


def dream_count(masked_in_block: torch.Tensor, i: int, steps: int) -> torch.Tensor:
    """Commits at step i of `steps` as Dream's diffusion_generate: int(n_mask * (1 - s / t)) on its timesteps
    (t = timesteps[i], s = timesteps[i + 1]); the last step commits every mask left. At 32 masks and 8 steps:
    [3, 4, 4, 4, 4, 4, 4, 5]."""
    n = masked_in_block.sum(-1)
    if i >= steps - 1:
        return n
    ts = dream_timesteps(steps, masked_in_block.device)
    return (n.float() * (1 - ts[i + 1] / ts[i])).long()  # int() of a non-negative float: truncation


def dream_p_transfer(i: int, steps: int) -> float:
    """Dream's `origin`: the probability that a masked position is revealed at step i, 1 - s / t (last: 1)."""
    if i >= steps - 1:
        return 1.0
    ts = dream_timesteps(steps)
    return float(1 - ts[i + 1] / ts[i])


def uses_dream_schedule(adapter, strategy: str) -> bool:
    """Dream's algs on a Dream model, and `origin` on any model, follow Dream's timestep schedule."""
    return strategy == "origin" or (strategy in DREAM_ALGS and (getattr(adapter, "settings", None) or {}).get(
        "schedule") == "dream")


def leftmost_block(masked: torch.Tensor, block_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([A] index of the leftmost block with masks per row, [A, L] bool: that block's positions)."""
    first = masked.view(len(masked), -1, block_length).any(-1).int().argmax(-1)
    block_of = torch.arange(masked.shape[1], device=masked.device) // block_length
    return first, block_of[None, :] == first[:, None]


def step(adapter, x: torch.Tensor, prompt_length: int, mask_id: int, in_block: torch.Tensor, k: list[int] | None,
         params: DiffusionParams, gens: list[torch.Generator], p_transfer: float = 1.0,
         force: dict[int, int] | None = None) -> StepState:
    """One denoising pass over rows x = [prompt | answer]: predict, choose tokens, pick the commits.
    Returns the StepState with `commit` set: x[:, prompt_length:] takes x0 where commit is True.
    `force` {position: token} (a fork): the model's distribution there is replaced by certainty in that token
    before anything is chosen, so the token is chosen, fully confident, and the noise is drawn as always."""
    answer = x[:, prompt_length:]
    masked = answer == mask_id
    rows = model_logits(adapter, x, prompt_length, mask_id, params.cfg_scale)
    logits = rows[:, prompt_length:]
    # The full vocabulary, [MASK] included (LLaDA's confidence). Batched, the answer slice is strided and softmax
    # would copy it first: over the whole contiguous rows it is faster (on a GPU) than over the slice.
    probs = torch.softmax(logits if logits.is_contiguous() else rows, -1)[:, -logits.shape[1]:]
    entropy = entropy_of(logits, probs, exact=params.strategy == "entropy_threshold")
    for pos, token in (force or {}).items():
        logits[:, pos] = -torch.inf
        logits[:, pos, token] = 0.0
        probs[:, pos] = 0.0
        probs[:, pos, token] = 1.0
        entropy[:, pos] = 0.0
    logits[..., mask_id] = -torch.inf  # [MASK] is never the chosen token
    n_text = getattr(adapter, "text_vocab", None)
    if n_text and logits.shape[-1] > n_text:
        logits[..., n_text:] = -torch.inf  # nor an id of a padded vocabulary that the tokenizer cannot render
    logits = restrict(logits, params.temperature, params.sample_top_p, params.sample_top_k)
    chosen, noise = gumbel_argmax(logits, params.temperature, gens, with_noise=True)
    x0 = torch.where(masked, chosen, answer)
    confidence = probs.gather(-1, x0[..., None])[..., 0]
    s = StepState(logits=logits, probs=probs, x0=x0, confidence=confidence, entropy=entropy, masked=masked,
                  in_block=in_block, k=k, params=params, gens=gens, block_length=params.block_length,
                  prompt_length=prompt_length, p_transfer=p_transfer, noise=noise)
    s.commit = STRATEGIES[params.strategy](s) & masked
    return s


# ---------------------------------------------------------------- the loop


@dataclass
class Decoded:
    """What `denoise` returns (generator return value) besides its events."""

    canvas: list[list[int]]  # final answer ids per row (mask_id where a stopped run left masks)
    texts: list[str]
    answers: list[str | None]
    row_nfe: list[int]  # forward passes each row paid for (a finished row stops counting)
    steps: int  # the last step number used
    stopped: bool


def _text(adapter, ids: list[int]) -> str:
    """Text up to the first EOS (the tail of a dLLM answer is EOS padding)."""
    for i, t in enumerate(ids):
        if t in adapter.eos_ids:
            ids = ids[:i]
            break
    return adapter.decode([t for t in ids if t != adapter.mask_id])


def denoise(adapter, prompt: str, params: DiffusionParams, seed: int = 0, *, task=None,  # noqa: C901 -- one loop, read top to bottom like LLaDA's generate()
            init_canvas: list[list[int]] | None = None, should_stop: Callable[[], bool] | None = None,
            rows: list[int] | None = None, run_events: bool = True, first_step: int = 0,
            recorder: Recorder | None = None, force: dict[int, int] | None = None,
            force_from: int = 1) -> Generator[object, None, Decoded]:
    """Decode `prompt`: RunStart, per pass a `propose` and a `commit` delta per row, a finished Node per row,
    RunEnd (run events left out when run_events=False). `init_canvas[row][pos]`: mask_id where the row must be
    decoded; other tokens are kept (a `keep` delta). `rows` labels the batch rows (sample ids, also their seed
    offsets); steps are numbered from first_step + 1. `task.extract_answer` reads each row's answer. A run that
    decodes several times (voting) passes its own `recorder`, so each token id is named once per trace.
    `force` {position: token}: from this decode's pass `force_from` (1 = its first) on, every row takes that token
    there (`step`'s force) until it is committed: a fork mid-run; the passes before it are the plain decode's."""
    if adapter.kind == "native_diffusion":
        if force:
            raise ValueError("a fork of the native DiffusionGemma sampler is not supported")
        from decoding.native_diffusion import denoise_native

        return (yield from denoise_native(adapter, prompt, params, seed, task=task, init_canvas=init_canvas,
                                          should_stop=should_stop, rows=rows, run_events=run_events,
                                          first_step=first_step))
    params.check(adapter, prompt)
    n_rows = len(rows) if rows is not None else len(init_canvas) if init_canvas is not None else params.batch
    rows = list(rows) if rows is not None else list(range(n_rows))
    L, mask_id, dev = params.gen_length, adapter.mask_id, adapter.device
    if init_canvas is None:
        init_canvas = [[mask_id] * L for _ in rows]
    if len(init_canvas) != n_rows or any(len(r) != L for r in init_canvas):
        raise ValueError(f"init_canvas must be {n_rows} rows of gen_length={L} token ids")

    t0 = time.perf_counter()
    prompt_ids = adapter.encode_prompt(prompt)
    P = len(prompt_ids)
    x = torch.tensor([prompt_ids + list(c) for c in init_canvas], dtype=torch.long, device=dev)
    gens = [torch.Generator(device=dev).manual_seed(seed + r) for r in rows]
    rec = recorder or Recorder(adapter.token_text)
    if run_events:
        yield RunStart(method="diffusion", prompt=prompt, prompt_ids=prompt_ids, rows=n_rows, length=L,
                       mask_id=mask_id)
        yield from rec.name(prompt_ids)
    kept = [[(p, t) for p, t in enumerate(c) if t != mask_id] for c in init_canvas]
    if any(kept):
        yield from rec.name(t for row in kept for _, t in row)
        for seq, row in zip(rows, kept):
            if row:
                yield Tokens(seq=seq, step=first_step, action="keep", pos=[p for p, _ in row], ids=[t for _, t in row])

    spb = params.steps // params.n_blocks  # steps per block (scheduled strategies)
    dream = uses_dream_schedule(adapter, params.strategy)  # Dream's timesteps per block instead of LLaDA's counts
    p_transfer = 1.0
    row_nfe = [0] * n_rows
    per_pass = 2 if params.cfg_scale > 0 else 1  # CFG runs the model on a second (unconditional) copy
    nfe, step_no, t, stopped, pending = 0, first_step, 0, False, None
    with torch.inference_mode():
        while True:
            masked = x[:, P:] == mask_id
            # 1. Which rows work this pass, and how many tokens each commits (scheduled strategies).
            if params.scheduled:
                if t >= params.steps:
                    break
                block, steps_left = t // spb, spb - t % spb
                t += 1
                lo, hi = block * params.block_length, (block + 1) * params.block_length
                if params.strategy == "origin":
                    p_transfer = dream_p_transfer(spb - steps_left, spb)
                    k_all = masked[:, lo:hi].sum(-1).tolist()  # rows with masks left in the block work
                elif dream:
                    k_all = dream_count(masked[:, lo:hi], spb - steps_left, spb).tolist()
                else:
                    k_all = schedule_count(masked[:, lo:hi], steps_left).tolist()
                work = [i for i, k in enumerate(k_all) if k > 0]
                if not work:
                    continue  # nothing to commit anywhere at this step (kept tokens): skip the pass
                in_block = torch.zeros(len(work), L, dtype=torch.bool, device=dev)
                in_block[:, lo:hi] = True
                k = [k_all[i] for i in work]
            else:
                work = masked.any(-1).nonzero()[:, 0].tolist()
                if not work:
                    break
                first, in_block = leftmost_block(masked[work], params.block_length)
                block, k = int(first.min()), None  # events carry one block: the leftmost
            # 2. One pass over the working rows: predict, choose, pick the commits (all on the device).
            forced = force if force and step_no - first_step + 1 >= force_from else None
            if len(work) == n_rows:  # every row works (the usual case): no gather / scatter, no index copy
                s = step(adapter, x, P, mask_id, in_block, k, params, gens, p_transfer, forced)
                x[:, P:] = torch.where(s.commit, s.x0, x[:, P:])
            else:
                idx = torch.tensor(work, device=dev)
                s = step(adapter, x[idx], P, mask_id, in_block, k, params, [gens[i] for i in work], p_transfer,
                         forced)
                x[idx, P:] = torch.where(s.commit, s.x0, x[idx, P:])
            step_no += 1
            nfe += per_pass
            for i in work:
                row_nfe[i] += per_pass
            top_p, top_ids = topk_last(s.probs, params.top_k)
            staged = rec.stage(step_no, [rows[i] for i in work], block, s.x0, s.masked, s.commit, s.confidence,
                               s.entropy, top_ids, top_p, noise=s.noise)
            # 3. Events of the previous pass, built while the device runs this one.
            if pending is not None:
                yield from pending.events()
            pending = staged
            if should_stop is not None and should_stop():
                stopped = True
                break
    if pending is not None:
        yield from pending.events()

    canvas = x[:, P:].tolist()
    texts = [_text(adapter, r) for r in canvas]
    answers = [task.extract_answer(s) if task is not None else None for s in texts]
    seconds = round(time.perf_counter() - t0, 4)
    for i, seq in enumerate(rows):
        done = mask_id not in canvas[i]
        yield Node(id=seq, seq=seq, step=step_no, status="finished" if done else "active", text=texts[i],
                   answer=answers[i], nfe=row_nfe[i])
    if run_events:
        votes = Counter(a for a in answers if a is not None)
        answer = answers[0] if n_rows == 1 else (votes.most_common(1)[0][0] if votes else None)
        yield RunEnd(nfe=nfe, seconds=seconds, answer=answer, stopped=stopped,
                     summary={"steps": step_no, "row_nfe": row_nfe, "strategy": params.strategy})
    return Decoded(canvas=canvas, texts=texts, answers=answers, row_nfe=row_nfe, steps=step_no, stopped=stopped)


INTRO = """**Watch a diffusion language model write its answer.** It does not write left to right: the answer
starts as a row of masks (`▒`), and at every step the model guesses a token for *every* masked position at once,
then keeps ("commits") only some of its guesses. The rest stay masked and are guessed again next step, with more
of the answer known. Which guesses are kept, and how many per step, is the **strategy**."""

LOOK_FOR = """in the **unsure step** example, the uncertainty heatmap lights up where the model hesitates; scrub to that
step and see which token it committed while unsure (red or orange chip). In the **wrong answer** example, find the
first committed token that differs from the solution: every later step builds on it."""

ABOUT = """**How it works.** The answer is a row of masked positions. Each step is one forward pass of the model over
the prompt and the partly filled answer: for every masked position it gives a guess, how sure it is of that guess
(*confidence*: the probability of the chosen token) and how spread its guesses are (*entropy*, in nats: 0 = certain).
The strategy keeps some guesses; the others are masked again. With a block length shorter than the answer, the
answer is filled block by block, left to right, and the fixed-schedule strategies give each block steps ÷ blocks
passes (so the steps must divide evenly over the blocks).

**The strategies in plain words.**
- `low_confidence` (LLaDA): keep the guesses the model is surest of, a fixed number per step.
- `random` (LLaDA): keep randomly chosen guesses, a fixed number per step: the baseline that shows why confidence
  matters.
- `maskgit_plus` (Dream): keep the guesses with the highest probability (as `low_confidence`).
- `topk_margin` (Dream): keep the guesses that lead their runner-up by the widest margin.
- `entropy` (Dream): keep the guesses whose distribution is the least spread out.
- `origin` (Dream): reveal each masked position with a probability that grows as the steps run out, whatever
  the model's confidence.
- `threshold` (Fast-dLLM): keep every guess in the current block that is at least `threshold` sure (at least
  one per step): easy stretches take one pass, hard ones many.
- `entropy_threshold` (dVoting): keep every guess in the current block whose entropy is below τ (at least the
  single surest one).

**The other settings.** *Temperature*: 0 always takes the most likely token; higher values draw tokens at random,
so samples differ. *Position temperature* (`alg_temp`, Dream's strategies): above 0, which positions are kept is
drawn at random, favouring confident ones. *Classifier-free guidance* (`cfg_scale`): each step also runs the model
with the prompt masked and moves the prediction away from that prompt-less guess (logits = uncond +
(cfg + 1)(cond − uncond), as LLaDA); each step then costs two forward passes. *Sampling top-p / top-k* (Dream):
draw tokens only from the most likely ones.

**Where this differs from the papers and their code.**
- The zoo models are tiny (about 4 million parameters) and trained only on arithmetic chains; the papers
  use 7-8B models, so accuracy and pass counts here are not comparable with theirs.
- A step in which no row would commit anything is skipped (LLaDA would spend a pass on it).
- The masked token is never chosen as a guess (LLaDA's generate() can choose it), while the confidence is still
  the probability over the whole vocabulary, mask included, as in LLaDA.
- Answers are read up to the first end-of-text token.
- Each sample has its own random generator (seed + sample number), so a sample decodes the same alone or in a
  batch; LLaDA draws from one global generator, so with temperature > 0 the same seed gives other samples than
  LLaDA's script (greedy decoding is identical).
- Dream's strategies on a LLaDA-style model (the zoo) use LLaDA's per-block linear schedule; on a Dream model they
  follow Dream's own timestep schedule.
- Fast-dLLM's KV cache is not implemented (its threshold rule is), so `threshold` saves passes but not the cost of
  each pass.
- `entropy_threshold` follows dVoting's reference code exactly: when a block fills, the same pass continues into
  the next block.
- The native DiffusionGemma path runs transformers' own sampler: the strategy, temperature and block settings of
  this tab do not apply there."""


def decode(adapter, prompt: str, params: DiffusionParams, *, task=None, seed: int = 0,
           should_stop: Callable[[], bool] | None = None) -> Generator[object, None, Decoded]:
    """The registry's decoder signature over `denoise`."""
    return (yield from denoise(adapter, prompt, params, seed, task=task, should_stop=should_stop))
