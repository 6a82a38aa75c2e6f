"""The masked-diffusion engine: one `DiffusionStep` event per denoising forward pass.

    for event in denoise(adapter, prompt, DiffusionParams(strategy="low_confidence"), seed=0): ...

The loop (`denoise`) follows LLaDA's generate.py: predict every masked position with one forward pass,
choose a token per position (Gumbel-max at `temperature`), let the strategy pick which masked positions to
commit, repeat until no masks are left. Strategies are small named functions in `STRATEGIES`:

- scheduled (a fixed number of commits per step; LLaDA's linear schedule per semi-autoregressive block):
  `low_confidence` and `random` (LLaDA remasking), `maskgit_plus`, `topk_margin`, `entropy` (Dream's algs;
  `alg_temp` > 0 samples the positions from softmax(score / alg_temp) instead of taking the top ones);
- adaptive (as many commits as the model is sure of): `threshold` (Fast-dLLM: every masked token of the
  current block with confidence >= threshold, at least the top-1) and `entropy_threshold` (dVoting).

Randomness: each row has its own torch.Generator seeded `seed + rows[i]`, so a sample decodes the same
whether it runs alone or batched with others (dVoting seeds its samples 42, 43, ...).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from decoding import task
from decoding.trace import DecodeDone, DiffusionStep, Event, RunEnd, RunStart

MASK_TEXT = "[MASK]"
ROUND = 4  # decimals kept in events: small JSON, same bytes for the same run


# ---------------------------------------------------------------- parameters


@dataclass
class DiffusionParams:
    gen_length: int = 80
    steps: int = 40  # forward passes for the scheduled strategies (an upper bound is gen_length)
    block_length: int = 16  # semi-autoregressive block; block_length == gen_length: one block
    strategy: str = "low_confidence"
    temperature: float = 0.0  # Gumbel-max sampling; 0 = argmax
    threshold: float = 0.9  # `threshold` strategy (Fast-dLLM)
    entropy_threshold: float = 0.3  # `entropy_threshold` strategy (dVoting), nats
    alg_temp: float = 0.0  # > 0: sample positions from softmax(score / alg_temp) (Dream)
    cfg_scale: float = 0.0  # classifier-free guidance; 0 = off
    top_k: int = 3  # alternatives recorded per position in the events
    batch: int = 1

    @property
    def n_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def scheduled(self) -> bool:
        return self.strategy in SCHEDULED

    def validate(self, adapter=None, prompt: str | None = None) -> None:
        """Raise ValueError with a readable message; the adapter and prompt checks run when given."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {sorted(STRATEGIES)}")
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
        if not 1 <= self.top_k <= 20:
            raise ValueError(f"top_k must be in [1, 20], got {self.top_k}")
        if self.batch < 1:
            raise ValueError(f"batch must be at least 1, got {self.batch}")
        if adapter is not None and adapter.kind == "masked_diffusion" and adapter.mask_id is None:
            raise ValueError(f"model {adapter.spec!r} has no [MASK] token: it cannot run masked diffusion")
        if prompt is not None:
            if not prompt.strip():
                raise ValueError("the prompt is empty")
            if adapter is not None:
                n = len(adapter.encode_prompt(prompt))
                if n + self.gen_length > adapter.max_length:
                    raise ValueError(f"prompt ({n} tokens) + gen_length ({self.gen_length}) exceeds the model's "
                                     f"context of {adapter.max_length} tokens")


# ---------------------------------------------------------------- strategies


@dataclass
class StepState:
    """What a strategy sees at one step. Tensors are [rows in this pass, gen_length]."""

    logits: torch.Tensor  # [A, L, V], [MASK] at -inf
    probs: torch.Tensor  # [A, L, V] softmax(logits)
    x0: torch.Tensor  # chosen token per position
    confidence: torch.Tensor  # probs of x0
    entropy: torch.Tensor  # nats
    masked: torch.Tensor  # bool, before this step's commits
    in_block: torch.Tensor  # bool, the current block (scheduled: the schedule's; adaptive: leftmost unfinished)
    k: torch.Tensor | None  # [A] commits per row (scheduled strategies)
    params: DiffusionParams
    gens: list[torch.Generator]
    block_length: int


def _pick(score: torch.Tensor, s: StepState) -> torch.Tensor:
    """Commit s.k[i] eligible positions per row: the highest scores, or (alg_temp > 0) sampled from
    softmax(score / alg_temp) as Dream does. Ineligible positions get -inf (LLaDA: beyond the block)."""
    score = score.masked_fill(~(s.masked & s.in_block), -torch.inf)
    commit = torch.zeros_like(s.masked)
    for i, k in enumerate(s.k.tolist()):
        if k == 0:
            continue
        if s.params.alg_temp > 0:
            weights = torch.softmax(score[i].double() / s.params.alg_temp, -1)
            idx = torch.multinomial(weights, k, generator=s.gens[i])
        else:
            idx = torch.topk(score[i], k).indices
        commit[i, idx] = True
    return commit


def _scaled_probs(s: StepState) -> torch.Tensor:
    """Dream scores the temperature-scaled distribution it samples from."""
    t = s.params.temperature
    return torch.softmax(s.logits / t, -1) if t > 0 else s.probs


def low_confidence(s: StepState) -> torch.Tensor:
    return _pick(s.confidence, s)


def random_remask(s: StepState) -> torch.Tensor:
    score = torch.stack([torch.rand(s.masked.shape[1], generator=g) for g in s.gens])
    return _pick(score, s)


def maskgit_plus(s: StepState) -> torch.Tensor:
    return _pick(_scaled_probs(s).gather(-1, s.x0[..., None])[..., 0], s)


def topk_margin(s: StepState) -> torch.Tensor:
    top2 = _scaled_probs(s).topk(2, dim=-1).values
    return _pick(top2[..., 0] - top2[..., 1], s)


def neg_entropy(s: StepState) -> torch.Tensor:
    p = _scaled_probs(s)
    return _pick((p * torch.log(p + 1e-10)).sum(-1), s)


def threshold(s: StepState) -> torch.Tensor:
    """Fast-dLLM: every masked token of the current block with confidence >= threshold; always the top-1."""
    eligible = s.masked & s.in_block
    conf = s.confidence.masked_fill(~eligible, -torch.inf)
    commit = eligible & (conf >= s.params.threshold)
    commit[torch.arange(len(conf)), conf.argmax(-1)] = True
    return commit & eligible


def entropy_threshold(s: StepState) -> torch.Tensor:
    """dVoting: in the leftmost unfinished block, every masked token with entropy < entropy_threshold, else the
    single lowest-entropy one. When that fills the block, the same pass goes on into the next block, committing
    only the tokens under the threshold there (the at-least-one rule already held in this pass)."""
    commit = torch.zeros_like(s.masked)
    n = s.block_length
    for i in range(len(s.masked)):
        first = True
        for lo in range(0, s.masked.shape[1], n):
            cand = s.masked[i, lo : lo + n]
            if not cand.any():
                continue  # finished block
            ent = s.entropy[i, lo : lo + n]
            pick = cand & (ent < s.params.entropy_threshold)
            if first and not pick.any():
                pick[ent.masked_fill(~cand, torch.inf).argmin()] = True
            first = False
            commit[i, lo : lo + n] = pick
            if (cand & ~pick).any():
                break  # block not full: the pass ends here
    return commit


STRATEGIES: dict[str, Callable[[StepState], torch.Tensor]] = {
    "low_confidence": low_confidence,
    "random": random_remask,
    "maskgit_plus": maskgit_plus,
    "topk_margin": topk_margin,
    "entropy": neg_entropy,
    "threshold": threshold,
    "entropy_threshold": entropy_threshold,
}
SCHEDULED = {"low_confidence", "random", "maskgit_plus", "topk_margin", "entropy"}


# ---------------------------------------------------------------- model helpers


def gumbel_argmax(logits: torch.Tensor, temperature: float, gens: list[torch.Generator]) -> torch.Tensor:
    """LLaDA's sampler: argmax of exp(logits) / (-log U)^T in float64 (low precision hurts Gumbel-max)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.double()
    noise = torch.stack([torch.rand(logits.shape[1:], dtype=torch.float64, generator=g) for g in gens])
    return (logits.exp() / (-torch.log(noise)) ** temperature).argmax(-1)


def model_logits(adapter, prompt_ids: list[int], canvas: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """Logits [A, L, V] of the generated region (float32, Dream shift applied by the adapter); CFG optional."""
    prompt = torch.tensor(prompt_ids).expand(len(canvas), -1)
    x = torch.cat([prompt, canvas], 1).to(adapter.device)
    if cfg_scale > 0:
        un = x.clone()
        un[:, : len(prompt_ids)] = adapter.mask_id  # LLaDA: the unconditional copy has its prompt masked
        cond, uncond = adapter.logits(torch.cat([x, un])).float().chunk(2)
        logits = uncond + (cfg_scale + 1) * (cond - uncond)
    else:
        logits = adapter.logits(x).float()
    return logits[:, len(prompt_ids) :].cpu()


def schedule_count(masked_in_block: torch.Tensor, steps_left: int) -> torch.Tensor:
    """Commits at this step: ceil(masks left in the block / steps left in the block). This equals LLaDA's
    get_num_transfer_tokens (block masks split evenly over its steps, remainder to the first steps)."""
    return (masked_in_block.sum(-1) + steps_left - 1) // steps_left


def first_block(masked: torch.Tensor, block_length: int) -> torch.Tensor:
    """[A]: index of the leftmost block that still has masks, per row (0 for a finished row)."""
    return masked.view(len(masked), -1, block_length).any(-1).int().argmax(-1)


def leftmost_block(masked: torch.Tensor, block_length: int) -> torch.Tensor:
    """[A, L] bool: the positions of the leftmost block that still has masks, per row."""
    block_of = torch.arange(masked.shape[1]) // block_length
    return block_of[None, :] == first_block(masked, block_length)[:, None]


def _text(adapter, ids: list[int]) -> str:
    """Text up to the first EOS (the tail of a dLLM answer is EOS padding)."""
    for i, t in enumerate(ids):
        if t in adapter.eos_ids:
            ids = ids[:i]
            break
    return adapter.decode(ids)


class _TokenTexts:
    """adapter.token_text with a memo: the same few ids are shown thousands of times per run."""

    def __init__(self, adapter):
        self.adapter, self.memo = adapter, {}

    def __call__(self, ids: list[int]) -> list[str]:
        new = [i for i in set(ids) if i not in self.memo]
        if new:
            self.memo.update(zip(new, self.adapter.token_text(new)))
        return [self.memo[i] for i in ids]


def _r(x: float) -> float:
    return round(float(x), ROUND)


# ---------------------------------------------------------------- the loop


def denoise(adapter, prompt: str, params: DiffusionParams, seed: int = 0,
            init_canvas: list[list[int]] | None = None, should_stop: Callable[[], bool] | None = None,
            rows: list[int] | None = None, run_events: bool = True) -> Iterator[Event]:
    """Decode `prompt`: RunStart, one DiffusionStep per forward pass, DecodeDone, RunEnd (the run events are
    left out when run_events=False). `init_canvas[row][pos]`: mask_id where the row must be decoded, other
    tokens are kept as they are. `rows` labels the batch rows (sample indices, also their seed offsets)."""
    if adapter.kind == "native_diffusion":
        from decoding.native_diffusion import denoise_native

        yield from denoise_native(adapter, prompt, params, seed, init_canvas, should_stop, rows, run_events)
        return
    params.validate(adapter, prompt)
    n_rows = len(rows) if rows is not None else len(init_canvas) if init_canvas is not None else params.batch
    rows = list(rows) if rows is not None else list(range(n_rows))
    if init_canvas is None:
        init_canvas = [[adapter.mask_id] * params.gen_length for _ in rows]
    if len(init_canvas) != n_rows or any(len(r) != params.gen_length for r in init_canvas):
        raise ValueError(f"init_canvas must be {n_rows} rows of gen_length={params.gen_length} token ids")

    t0 = time.perf_counter()
    L, mask_id, strategy = params.gen_length, adapter.mask_id, STRATEGIES[params.strategy]
    prompt_ids = adapter.encode_prompt(prompt)
    text_of = _TokenTexts(adapter)
    canvas = torch.tensor(init_canvas, dtype=torch.long)
    gens = [torch.Generator().manual_seed(seed + r) for r in rows]
    spb = params.steps // params.n_blocks  # steps per block (scheduled strategies)
    # Per-position view state: committed positions keep what they had at commit time.
    guess = canvas.clone()
    conf = [[0.0] * L for _ in rows]
    ent = [[0.0] * L for _ in rows]
    topk: list[list[list]] = [[[] for _ in range(L)] for _ in rows]
    seen = torch.zeros(n_rows, L, dtype=torch.bool)  # positions with a recorded prediction
    row_nfe = [0] * n_rows
    nfe = step = t = 0
    stopped = False
    if run_events:
        yield RunStart(method="diffusion", prompt=prompt, prompt_tokens=adapter.token_text(prompt_ids),
                       gen_length=L, batch=n_rows, mask_token=MASK_TEXT)

    while True:
        masked = canvas == mask_id
        if not masked.any():
            break
        # 1. Which rows work this pass, and how many tokens each commits (scheduled strategies).
        if params.scheduled:
            if t >= params.steps:
                break
            block, steps_left = t // spb, spb - t % spb
            t += 1
            lo, hi = block * params.block_length, (block + 1) * params.block_length
            k_all = schedule_count(masked[:, lo:hi], steps_left)
            work = k_all > 0
            if not work.any():
                continue  # nothing to commit anywhere at this step (kept tokens): skip the pass
            in_block = torch.zeros(n_rows, L, dtype=torch.bool)
            in_block[:, lo:hi] = True
        else:
            work = masked.any(-1)
            k_all = None
            in_block = leftmost_block(masked, params.block_length)
            block = int(first_block(masked, params.block_length)[work].min())  # events carry one block: the leftmost
        idx = work.nonzero()[:, 0]
        wgens = [gens[i] for i in idx.tolist()]

        # 2. One forward pass over the working rows; choose a token for every position.
        with torch.inference_mode():
            logits = model_logits(adapter, prompt_ids, canvas[idx], params.cfg_scale)
            logits[..., mask_id] = -torch.inf
            probs = torch.softmax(logits, -1)
            x0 = gumbel_argmax(logits, params.temperature, wgens)
            x0 = torch.where(masked[idx], x0, canvas[idx])
            state = StepState(logits=logits, probs=probs, x0=x0, confidence=probs.gather(-1, x0[..., None])[..., 0],
                              entropy=torch.special.entr(probs).sum(-1), masked=masked[idx], in_block=in_block[idx],
                              k=None if k_all is None else k_all[idx], params=params, gens=wgens,
                              block_length=params.block_length)
            # 3. The strategy picks the masked positions to commit.
            commit = strategy(state) & state.masked
        step += 1
        nfe += 2 if params.cfg_scale > 0 else 1  # CFG runs the model on a second (unconditional) copy
        for i in idx.tolist():
            row_nfe[i] += 2 if params.cfg_scale > 0 else 1

        # 4. Record the prediction at still-masked (and never-seen kept) positions, then commit.
        update = state.masked | ~seen[idx]
        top_p, top_i = probs.topk(params.top_k, dim=-1)
        top_text = text_of(top_i.flatten().tolist())
        conf_l, ent_l = state.confidence.tolist(), state.entropy.tolist()
        top_p_l = top_p.tolist()
        for a, i in enumerate(idx.tolist()):
            for p in update[a].nonzero()[:, 0].tolist():
                conf[i][p], ent[i][p] = _r(conf_l[a][p]), _r(ent_l[a][p])
                base = (a * L + p) * params.top_k
                topk[i][p] = [[top_text[base + j], _r(top_p_l[a][p][j])] for j in range(params.top_k)]
        seen[idx] = True
        guess[idx] = x0
        canvas[idx] = torch.where(commit, x0, canvas[idx])

        committed = [[] for _ in rows]
        for a, i in enumerate(idx.tolist()):
            committed[i] = commit[a].nonzero()[:, 0].tolist()
        yield DiffusionStep(step=step, block=block, rows=rows, tokens=[text_of(r) for r in guess.tolist()],
                            token_ids=canvas.tolist(), masked=(canvas == mask_id).tolist(), committed=committed,
                            confidence=[list(r) for r in conf], entropy=[list(r) for r in ent],
                            topk=[list(r) for r in topk], nfe=nfe)
        if should_stop is not None and should_stop():
            stopped = True
            break

    texts = [_text(adapter, r) for r in canvas.tolist()]
    answers = [task.extract_answer(s) for s in texts]
    seconds = round(time.perf_counter() - t0, 4)
    yield DecodeDone(rows=rows, texts=texts, answers=answers, nfe=nfe, seconds=seconds, row_nfe=row_nfe)
    if run_events:
        votes = Counter(a for a in answers if a is not None)
        answer = answers[0] if n_rows == 1 else (votes.most_common(1)[0][0] if votes else None)
        yield RunEnd(nfe=nfe, seconds=seconds, answer=answer, stopped=stopped,
                     summary={"texts": texts, "answers": answers, "row_nfe": row_nfe, "steps": step,
                              "strategy": params.strategy})
