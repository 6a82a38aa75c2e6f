"""The autoregressive decoder for causal models: a KV cache, batched rows, each token recorded on the device.

    config = generation_config(max_new_tokens=40)                      # greedy; temperature / top_k / top_p sample
    done = yield from generate(adapter, [prompt_ids], config, seed=0)  # token deltas + a Node per row; -> Generated

Per step: one forward pass over the rows (the prompt first, then one token each with the KV cache), the
sampling settings applied as transformers' own logits warpers built from a `GenerationConfig` (`warpers`),
a token chosen per row (`Sampler`: argmax, or an inverse-CDF draw from a per-row generator seeded
`seed + row`, so a row samples the same alone or batched), and what the model said recorded on the device:
the chosen token, its probability, the entropy (nats) and the top-k of the raw next-token distribution (before
temperature / top-k / top-p), staged through the Recorder (decoding/record.py) as a `propose` and a `commit`
delta per row at the row's answer position. Rows of different lengths are left-padded (attention mask and
position ids, as `model.generate()` does); a row stops at its first EOS (later steps feed it the pad token).
Greedy, the tokens equal `model.generate(do_sample=False)`'s, token for token (tests/test_autoregressive.py).

A `policy(rows, raw, live, sampler, u)` may change the logits a step chooses from and add records: HARP
(decoding/harp.py) mixes a reframed pass in at hesitating rows this way. Public helpers (docs/CONTRACTS.md):
`generation_config`, `warpers`, `Sampler`, `token_stats`, `Rows`, `Extra`, `generate`, `ARParams`, `decode`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import torch
from pydantic import model_validator
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from decoding.params import Params, ui
from decoding.record import Recorder
from decoding.trace import Node, RunEnd, RunStart

# ---------------------------------------------------------------- sampling settings


def generation_config(max_new_tokens: int, temperature: float = 0.0, top_k: int = 0,
                      top_p: float = 1.0) -> GenerationConfig:
    """A GenerationConfig: greedy at temperature 0, else sampling with the given temperature / top-k / top-p."""
    if temperature <= 0:
        return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False)
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_k=top_k,
                            top_p=top_p)


def warpers(config: GenerationConfig) -> LogitsProcessorList:
    """The warpers `model.generate()` applies when sampling, in its order (temperature, top-k, top-p); none when
    greedy (argmax is unchanged by them)."""
    out = LogitsProcessorList()
    if not config.do_sample:
        return out
    if config.temperature is not None and config.temperature != 1.0:
        out.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k:
        out.append(TopKLogitsWarper(top_k=config.top_k))
    if config.top_p is not None and config.top_p < 1.0:
        out.append(TopPLogitsWarper(top_p=config.top_p))
    return out


class Sampler:
    """Chooses one token per row from logits: argmax (greedy), or the inverse CDF of the warped distribution at
    a uniform draw `u` per row (`draw()`, one per step from the row's generator). Two logits chosen from with the
    same `u` differ only where the distributions do (HARP's "would the plain model have picked the same?")."""

    def __init__(self, config: GenerationConfig, seeds: list[int], device: torch.device):
        self.config, self.warpers = config, warpers(config)
        self.gens = [torch.Generator(device=device).manual_seed(s) for s in seeds] if config.do_sample else []

    def draw(self) -> torch.Tensor | None:
        """This step's uniform per row (None when greedy)."""
        if not self.gens:
            return None
        return torch.cat([torch.rand(1, generator=g, device=g.device) for g in self.gens])

    def choose(self, input_ids: torch.Tensor, logits: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
        """[B] token ids from raw logits [B, V] (the warpers applied here)."""
        if u is None:
            return logits.argmax(-1)
        probs = torch.softmax(self.warpers(input_ids, logits), -1)
        cdf = probs.cumsum(-1)
        idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
        return idx.clamp(max=logits.shape[-1] - 1)


@dataclass
class Stats:
    """What is recorded about one distribution per row: [A] conf / entropy (nats), [A, k] top_p / top_ids."""

    conf: torch.Tensor
    entropy: torch.Tensor
    top_p: torch.Tensor
    top_ids: torch.Tensor


def token_stats(logits: torch.Tensor, tokens: torch.Tensor, k: int) -> Stats:
    """Stats of softmax(logits) [A, V] (raw: no temperature) at the chosen `tokens` [A], on the device."""
    probs = torch.softmax(logits.float(), -1)
    top_p, top_ids = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return Stats(conf=probs.gather(-1, tokens[:, None])[:, 0], entropy=torch.special.entr(probs).sum(-1),
                 top_p=top_p, top_ids=top_ids)


# ---------------------------------------------------------------- the rows and their cache


class Rows:
    """Left-padded rows [B, prompt + max_new] of token ids, their attention mask and (use_cache) a KV cache.
    `forward()` runs the model on what the cache has not seen yet (all of it without a cache) and returns the
    float32 logits at the last position; `append(tokens)` adds one token per row."""

    def __init__(self, adapter, prompts: list[list[int]], max_new_tokens: int, use_cache: bool = True):
        if not prompts or any(not p for p in prompts):
            raise ValueError("every row needs at least one prompt token")
        self.model, dev = adapter.model, adapter.device
        self.pad_id = _pad_id(adapter)
        P = max(len(p) for p in prompts)
        self.ids = torch.full((len(prompts), P + max_new_tokens), self.pad_id, dtype=torch.long, device=dev)
        self.mask = torch.zeros_like(self.ids)
        for i, p in enumerate(prompts):
            self.ids[i, P - len(p):P] = torch.tensor(p, device=dev)
            self.mask[i, P - len(p):P] = 1
        self.prompt_length = self.length = P
        self.padded = any(len(p) < P for p in prompts)
        self.cache = DynamicCache(config=self.model.config) if use_cache else None
        self.seen = 0  # positions already in the cache
        self._keep = "logits_to_keep" in inspect.signature(self.model.forward).parameters

    def __len__(self) -> int:
        return len(self.ids)

    def inputs(self, rows: torch.Tensor | None = None, start: int = 0) -> dict:
        """The forward kwargs for positions [start, length) of `rows` (default all): the attention mask and
        position ids when rows are padded (real tokens count from 0, as in the unpadded sequence)."""
        mask = self.mask[:, :self.length] if rows is None else self.mask[rows, :self.length]
        kwargs: dict = {"logits_to_keep": 1} if self._keep else {}
        if self.padded:
            kwargs["attention_mask"] = mask
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)[:, start:]
        return kwargs

    def forward(self) -> torch.Tensor:
        """Raw logits [B, V] (float32) of the next token of every row."""
        start = self.seen if self.cache is not None else 0
        out = self.model(input_ids=self.ids[:, start:self.length], past_key_values=self.cache,
                         use_cache=self.cache is not None, **self.inputs(start=start))
        self.seen = self.length
        return out.logits[:, -1].float()

    def append(self, tokens: torch.Tensor) -> None:
        self.ids[:, self.length] = tokens
        self.mask[:, self.length] = 1
        self.length += 1


def _pad_id(adapter) -> int:
    pad = getattr(adapter.tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else int(adapter.eos_ids[0]) if adapter.eos_ids else 0


# ---------------------------------------------------------------- the loop


@dataclass
class Extra:
    """More `propose` records for this step from a policy: `rows` [A'] (batch indices) recorded as `seqs`, with
    their chosen `tokens` [A'] and `stats`; `passes`: forward passes the policy ran (counted in nfe)."""

    seqs: list[int]
    rows: list[int]
    tokens: torch.Tensor
    stats: Stats
    passes: int = 0


Policy = Callable[["Rows", torch.Tensor, torch.Tensor, "Sampler", "torch.Tensor | None"],
                  tuple[torch.Tensor, list[Extra]]]


@dataclass
class Generated:
    """What `generate` returns besides its events."""

    tokens: list[list[int]]  # per row: the generated ids, its EOS included when it finished
    texts: list[str]
    answers: list[str | None]
    finished: list[bool]
    row_nfe: list[int]  # forward passes each row took part in (policy passes included)
    nfe: int  # batched forward passes
    steps: int  # the last step number used
    seconds: float
    stopped: bool
    extra: dict = field(default_factory=dict)


def _stage(rec: Recorder, step: int, seqs: list[int], live: torch.Tensor, tokens: torch.Tensor, stats: Stats,
           extras: list[Extra]):
    """One Recorder.stage for the step: the rows' propose + commit (live rows only), then the policy's proposes."""
    ids, conf, ent, tp, tids = [tokens], [stats.conf], [stats.entropy], [stats.top_p], [stats.top_ids]
    proposed, committed = [live], [live]
    all_seqs = list(seqs)
    for e in extras:
        all_seqs += e.seqs
        ids.append(e.tokens)
        conf.append(e.stats.conf)
        ent.append(e.stats.entropy)
        tp.append(e.stats.top_p)
        tids.append(e.stats.top_ids)
        proposed.append(torch.ones(len(e.seqs), dtype=torch.bool, device=live.device))
        committed.append(torch.zeros(len(e.seqs), dtype=torch.bool, device=live.device))
    col = lambda xs: torch.cat(xs)[:, None]  # noqa: E731 -- [A] -> [A, 1]: one position per row
    return rec.stage(step, all_seqs, None, col(ids), col(proposed), col(committed), col(conf), col(ent),
                     torch.cat(tids)[:, None], torch.cat(tp)[:, None])


def _at(events: list, pos: int) -> list:
    """The staged events at answer position `pos` (the recorder numbers the single staged column 0)."""
    return [e.model_copy(update={"pos": [pos]}) if getattr(e, "kind", "") == "tokens" else e for e in events]


def generate(adapter, prompts: list[list[int]], config: GenerationConfig, *, seed: int = 0,
             seqs: list[int] | None = None, recorder: Recorder | None = None, first_step: int = 0, record_k: int = 5,
             use_cache: bool = True, task=None, should_stop: Callable[[], bool] | None = None,
             policy: Policy | None = None, nodes: bool = True) -> Generator[object, None, Generated]:
    """Decode `prompts` (token id lists) side by side: per step a `propose` + `commit` delta per live row (seq
    `seqs[row]`, position = the token's index in the answer), the policy's extra records, a finished Node per
    row (`nodes`); returns `Generated`. Steps are numbered from first_step + 1; row r samples with seed + r."""
    t0 = time.perf_counter()
    B = len(prompts)
    seqs = list(seqs) if seqs is not None else list(range(B))
    rec = recorder or Recorder(adapter.token_text)
    rows = Rows(adapter, prompts, config.max_new_tokens, use_cache)
    sampler = Sampler(config, [seed + r for r in range(B)], adapter.device)
    eos = torch.tensor(adapter.eos_ids or [-1], device=adapter.device)
    live = torch.ones(B, dtype=torch.bool, device=adapter.device)
    row_nfe = torch.zeros(B, dtype=torch.long, device=adapter.device)
    nfe, step, pending, stopped = 0, first_step, None, False
    with torch.inference_mode():
        for t in range(config.max_new_tokens):
            raw = rows.forward()
            nfe += 1
            row_nfe += live
            u = sampler.draw()
            logits, extras = policy(rows, raw, live, sampler, u) if policy is not None else (raw, [])
            tokens = torch.where(live, sampler.choose(rows.ids[:, :rows.length], logits, u), rows.pad_id)
            for e in extras:
                nfe += e.passes
                if e.passes:
                    row_nfe[e.rows] += e.passes
            step += 1
            staged = (_stage(rec, step, seqs, live, tokens, token_stats(raw, tokens, record_k), extras), t)
            rows.append(tokens)
            live = live & ~torch.isin(tokens, eos)
            if pending is not None:  # the previous step's events, built while the device works on this one
                yield from _at(pending[0].events(), pending[1])
            pending = staged
            if not bool(live.any()):
                break
            if should_stop is not None and should_stop():
                stopped = True
                break
    if pending is not None:
        yield from _at(pending[0].events(), pending[1])
    out = rows.ids[:, rows.prompt_length:rows.length].tolist()
    eos_ids = set(adapter.eos_ids)
    tokens_out, texts, finished = [], [], []
    for row in out:
        end = next((i for i, x in enumerate(row) if x in eos_ids), None)
        tokens_out.append(row if end is None else row[:end + 1])
        texts.append(adapter.decode(row if end is None else row[:end]))
        finished.append(end is not None)
    answers = [task.extract_answer(s) if task is not None else None for s in texts]
    row_nfe_list = row_nfe.tolist()
    if nodes:
        for i, s in enumerate(seqs):
            yield Node(id=s, seq=s, step=step, status="finished" if finished[i] or not stopped else "active",
                       text=texts[i], answer=answers[i], nfe=row_nfe_list[i])
    return Generated(tokens=tokens_out, texts=texts, answers=answers, finished=finished, row_nfe=row_nfe_list,
                     nfe=nfe, steps=step, seconds=time.perf_counter() - t0, stopped=stopped)


# ---------------------------------------------------------------- plain decoding as a method


class ARParams(Params):
    max_new_tokens: int = ui(80, "Max new tokens", 1, 1024, 1)
    temperature: float = ui(0.0, "Temperature (0 = greedy)", 0, 2, 0.05, advanced=True)
    top_k: int = ui(0, "Top-k sampling (0 = off)", 0, 500, 1, advanced=True)
    top_p: float = ui(1.0, "Top-p sampling (1 = off)", 0.01, 1, 0.01, advanced=True)
    use_cache: bool = ui(True, "KV cache (off: every step re-reads the whole sequence)", advanced=True)
    alternatives: int = ui(5, "Alternatives recorded per token", 1, 20, 1, advanced=True)

    @model_validator(mode="after")
    def _check_sampling(self) -> ARParams:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0 or self.top_k < 0:
            raise ValueError("temperature and top_k must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 1 <= self.alternatives <= 20:
            raise ValueError(f"alternatives must be in [1, 20], got {self.alternatives}")
        return self

    def config(self) -> GenerationConfig:
        return generation_config(self.max_new_tokens, self.temperature, self.top_k, self.top_p)

    def check(self, adapter, prompt: str) -> None:
        """What only the model and prompt can tell (the app and the CLI call it before decoding): a causal
        model, a prompt, the context length."""
        if adapter.kind != "causal":
            raise ValueError(f"model {adapter.spec!r} is a {adapter.kind.replace('_', ' ')} model; autoregressive "
                             f"decoding needs a causal LM")
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        n = len(adapter.encode_prompt(prompt))
        if n + self.max_new_tokens > adapter.max_length:
            raise ValueError(f"prompt ({n} tokens) + max_new_tokens ({self.max_new_tokens}) exceeds the model's "
                             f"context of {adapter.max_length} tokens")


def decode(adapter, prompt: str, params: ARParams, *, task=None, seed: int = 0,
           should_stop: Callable[[], bool] | None = None) -> Generator[object, None, Generated]:
    """Plain autoregressive decoding of one prompt, with the registry's decoder signature."""
    params.check(adapter, prompt)
    ids = adapter.encode_prompt(prompt)
    rec = Recorder(adapter.token_text)
    yield RunStart(method="autoregressive", prompt=prompt, prompt_ids=ids, rows=1, length=params.max_new_tokens)
    yield from rec.name(ids)
    done = yield from generate(adapter, [ids], params.config(), seed=seed, recorder=rec, record_k=params.alternatives,
                               use_cache=params.use_cache, task=task, should_stop=should_stop)
    yield RunEnd(nfe=done.nfe, seconds=round(done.seconds, 4), answer=done.answers[0], stopped=done.stopped,
                 summary={"steps": done.steps, "tokens": len(done.tokens[0])})
    return done
