"""Native transformers diffusion (`diffusion_gemma`) seen through the same `DiffusionStep` events.

transformers' own `generate()` runs unchanged in a worker thread; a streamer with `_takes_logits = True`
receives each denoising draft's logits through `put_draft(logits=...)` and every finished canvas through
`put(ids)`. What DiffusionGemma does per step (EntropyBoundSampler): sample every position, accept the
lowest-entropy tokens while sum(entropy) - max(entropy) <= entropy_bound, renoise the rest with random tokens;
the draft shown is the argmax canvas. In the events:
- block = canvas (config.canvas_length tokens, generated left to right, autoregressively);
- masked = not accepted at this step (renoised), token_ids -1 there (the model has no [MASK] token);
- committed = accepted now but not at the previous step; when a canvas is finalized (its `put`), every
  position of it is committed with the final token (EOS padding included);
- confidence / entropy / top-k come from the temperature-scheduled logits the sampler used.
The acceptance mask is recomputed from the streamed logits by transformers' own `EntropyBoundSampler`.
Stopping: a StoppingCriteria (checked by generate() after each canvas) plus the streamer, which raises
between denoising steps once a stop was asked for, so a stop takes effect after the current step.
Each event is sent one draft late: only the next draft (or the canvas's `put`) tells whether it was final.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer
from transformers.models.diffusion_gemma.generation_diffusion_gemma import (
    EntropyBoundSampler,
    EntropyBoundSamplerConfig,
)

from decoding import task
from decoding.diffusion import MASK_TEXT, DiffusionParams, _r, _text
from decoding.trace import DecodeDone, DiffusionStep, Event, RunEnd, RunStart

DEFAULT_ENTROPY_BOUND = 0.1  # DiffusionGemmaGenerationConfig's default


class _Stopped(Exception):
    """Raised inside generate() (from the streamer) to end it between two denoising steps."""


class StopFlag(StoppingCriteria):
    """generate() checks its stopping criteria after each canvas: stop every row once the flag is set."""

    def __init__(self, flag: threading.Event):
        self.flag = flag

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device)


class DraftStreamer(BaseStreamer):
    """Turns DiffusionGemma's drafts into DiffusionStep events, pushed to `emit`."""

    def __init__(self, adapter, n_rows: int, gen_length: int, canvas_length: int, entropy_bound: float,
                 top_k: int, rows: list[int], emit: Callable[[Event], None], stop: threading.Event):
        self._takes_logits = True  # generate() then calls put_draft(logits=...) instead of put_draft(value=...)
        self.adapter, self.top_k, self.rows, self.emit, self.stop = adapter, top_k, rows, emit, stop
        self.C, self.G = canvas_length, gen_length
        self.sampler = EntropyBoundSampler(EntropyBoundSamplerConfig(entropy_bound=entropy_bound), canvas_length,
                                           vocab_size=0, max_denoising_steps=1)
        self.ids = [[-1] * gen_length for _ in range(n_rows)]
        self.masked = [[True] * gen_length for _ in range(n_rows)]
        self.conf = [[0.0] * gen_length for _ in range(n_rows)]
        self.ent = [[0.0] * gen_length for _ in range(n_rows)]
        self.topk: list[list[list]] = [[[] for _ in range(gen_length)] for _ in range(n_rows)]
        self.tokens = [[MASK_TEXT] * gen_length for _ in range(n_rows)]
        self.canvas = -1  # index of the canvas being denoised; -1 until the prompt arrived
        self.prev_logits: torch.Tensor | None = None
        self.finished = [False] * n_rows  # rows that produced EOS in an earlier canvas (generate stops counting them)
        self.row_nfe = [0] * n_rows
        self.nfe = 0
        self.committed: list[list[int]] | None = None  # the pending (not yet emitted) step's commits
        self.final_ids: list[list[int]] = [[] for _ in range(n_rows)]

    def put(self, value: torch.Tensor) -> None:
        if self.canvas < 0:  # the first put is the prompt
            self.canvas = 0
            return
        lo = self.canvas * self.C
        hi = min(lo + self.C, self.G)
        for i, row in enumerate(value.tolist()):
            for p in range(lo, hi):
                if self.masked[i][p] and self.committed is not None:
                    self.committed[i].append(p)
                self.masked[i][p] = False
                self.ids[i][p] = row[p - lo]
                self.tokens[i][p] = self.adapter.token_text([row[p - lo]])[0]
            self.final_ids[i] += row[: hi - lo]
            self.finished[i] = self.finished[i] or any(t in self.adapter.eos_ids for t in row)
        self._flush()
        self.canvas += 1
        self.prev_logits = None

    def put_draft(self, value=None, logits: torch.Tensor | None = None, **kwargs) -> None:
        self._flush()  # the previous draft was not the canvas's last: send it as it was
        if self.stop.is_set():
            raise _Stopped
        logits = logits.float()
        changed = torch.ones(len(logits), dtype=torch.bool) if self.prev_logits is None else (
            (logits != self.prev_logits).flatten(1).any(-1))  # a row done denoising gets its old logits back
        self.prev_logits = logits
        self.nfe += 1
        for i in range(len(logits)):
            if changed[i] and not self.finished[i]:
                self.row_nfe[i] += 1
        probs = torch.softmax(logits, -1)
        conf, ids = probs.max(-1)
        ent = torch.special.entr(probs).sum(-1)
        self.sampler.accept_canvas(ids, ids, logits, 0)
        accepted = self.sampler.accepted_token_mask.tolist()
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        top_text = self.adapter.token_text(top_i.flatten().tolist())
        conf_l, ent_l, ids_l, top_p_l = conf.tolist(), ent.tolist(), ids.tolist(), top_p.tolist()
        lo = self.canvas * self.C
        self.committed = [[] for _ in self.rows]
        for i in range(len(logits)):
            for c in range(min(self.C, self.G - lo)):
                p = lo + c
                if accepted[i][c] and self.masked[i][p]:
                    self.committed[i].append(p)
                self.masked[i][p] = not accepted[i][c]
                self.ids[i][p] = ids_l[i][c] if accepted[i][c] else -1
                self.tokens[i][p] = top_text[(i * self.C + c) * self.top_k]  # the argmax draft
                self.conf[i][p], self.ent[i][p] = _r(conf_l[i][c]), _r(ent_l[i][c])
                base = (i * self.C + c) * self.top_k
                self.topk[i][p] = [[top_text[base + j], _r(top_p_l[i][c][j])] for j in range(self.top_k)]

    def _flush(self) -> None:
        if self.committed is None:
            return
        self.emit(DiffusionStep(step=self.nfe, block=self.canvas, rows=self.rows,
                                tokens=[list(r) for r in self.tokens], token_ids=[list(r) for r in self.ids],
                                masked=[list(r) for r in self.masked], committed=self.committed,
                                confidence=[list(r) for r in self.conf], entropy=[list(r) for r in self.ent],
                                topk=[list(r) for r in self.topk], nfe=self.nfe))
        self.committed = None

    def end(self) -> None:
        self._flush()


def validate_native(adapter, prompt: str, params: DiffusionParams, init_canvas, rows) -> None:
    if init_canvas is not None:
        raise ValueError("init_canvas is not supported by native diffusion models (they start from random tokens)")
    if params.cfg_scale > 0:
        raise ValueError("classifier-free guidance is not supported by native diffusion models")
    if params.gen_length < 1 or params.steps < 1 or params.batch < 1:
        raise ValueError("gen_length, steps and batch must be at least 1")
    if not 1 <= params.top_k <= 20:
        raise ValueError(f"top_k must be in [1, 20], got {params.top_k}")
    if not prompt.strip():
        raise ValueError("the prompt is empty")
    if rows is not None and len(rows) != params.batch:
        raise ValueError(f"rows has {len(rows)} labels but batch is {params.batch}")
    n = len(adapter.encode_prompt(prompt))
    if n + params.gen_length > adapter.max_length:
        raise ValueError(f"prompt ({n} tokens) + gen_length ({params.gen_length}) exceeds the model's context "
                         f"of {adapter.max_length} tokens")


def denoise_native(adapter, prompt: str, params: DiffusionParams, seed: int = 0,
                   init_canvas: list[list[int]] | None = None, should_stop: Callable[[], bool] | None = None,
                   rows: list[int] | None = None, run_events: bool = True) -> Iterator[Event]:
    """`denoise` for a native diffusion model: the model's own generate(), one event per denoising step.
    params: gen_length -> max_new_tokens (rounded up to whole canvases), steps -> max_denoising_steps per
    canvas, top_k, batch; the sampler and temperature schedule are the model's (entropy bound from
    adapter.settings["entropy_bound"] or the model's generation config)."""
    validate_native(adapter, prompt, params, init_canvas, rows)
    model = adapter.model
    rows = list(rows) if rows is not None else list(range(params.batch))
    C = model.config.canvas_length
    G = math.ceil(params.gen_length / C) * C
    sampler_config = getattr(model.generation_config, "sampler_config", None)
    bound = float(adapter.settings.get("entropy_bound") or getattr(sampler_config, "entropy_bound", None)
                  or DEFAULT_ENTROPY_BOUND)
    prompt_ids = adapter.encode_prompt(prompt)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    streamer = DraftStreamer(adapter, len(rows), G, C, bound, params.top_k, rows, events.put, stop)

    def work() -> None:
        try:
            torch.manual_seed(seed)  # DiffusionGemma samples from the global generator
            input_ids = torch.tensor([prompt_ids] * len(rows), device=adapter.device)
            # generate() tests `input_ids == config.image_token_id` unless pixel_values is given, which fails
            # for a text-only config with image_token_id None: say "no image" explicitly then.
            extra = {"pixel_values": None} if model.config.image_token_id is None else {}
            model.generate(input_ids, max_new_tokens=G, max_denoising_steps=params.steps, streamer=streamer,
                           sampler_config=EntropyBoundSamplerConfig(entropy_bound=bound),
                           stopping_criteria=StoppingCriteriaList([StopFlag(stop)]), **extra)
        except _Stopped:
            pass
        except Exception as e:  # noqa: BLE001 -- handed to the consumer thread, raised there
            events.put(e)
        events.put(None)

    t0 = time.perf_counter()
    if run_events:
        yield RunStart(method="diffusion", prompt=prompt, prompt_tokens=adapter.token_text(prompt_ids),
                       gen_length=G, batch=len(rows), mask_token=MASK_TEXT)
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    stopped = False
    try:
        while (event := events.get()) is not None:
            if isinstance(event, Exception):
                raise event
            yield event
            if should_stop is not None and should_stop():
                stopped = True
                break
    finally:
        stop.set()  # also when the consumer closes this generator early
        thread.join()
    ids = [list(r) for r in streamer.final_ids] if not stopped else [
        [t for t in r if t >= 0] for r in streamer.ids]
    texts = [_text(adapter, r) for r in ids]
    answers = [task.extract_answer(s) for s in texts]
    seconds = round(time.perf_counter() - t0, 4)
    yield DecodeDone(rows=rows, texts=texts, answers=answers, nfe=streamer.nfe, seconds=seconds,
                     row_nfe=streamer.row_nfe)
    if run_events:
        yield RunEnd(nfe=streamer.nfe, seconds=seconds, answer=answers[0], stopped=stopped,
                     summary={"texts": texts, "answers": answers, "row_nfe": streamer.row_nfe, "strategy": "native",
                              "entropy_bound": bound})
