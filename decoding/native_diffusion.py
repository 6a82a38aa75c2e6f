"""Native transformers diffusion (`diffusion_gemma`) seen through the same token deltas as the engine.

transformers' own `generate()` runs unchanged in a worker thread; a streamer with `_takes_logits = True`
receives each denoising draft's logits through `put_draft(logits=...)` and every finished canvas through
`put(ids)`. What DiffusionGemma does per step (EntropyBoundSampler): sample every position, accept the
lowest-entropy sampled tokens while sum(entropy) - max(entropy) <= entropy_bound, renoise the rest with random
tokens. Accepted tokens are not frozen: the next step samples and accepts afresh. The model's own sampler is
observed, not re-derived: `_prepare_sampler` is wrapped once per model, and in a run's worker thread the sampler
hands each step's sampled canvas and acceptance mask to the streamer (`_Observed`). In the events (step = one
denoising pass):
- block = canvas (config.canvas_length tokens, generated left to right, autoregressively);
- `propose`: the argmax draft at every position of the canvas (the model's current guess, what generate() keeps
  as the canvas's output), with confidence, entropy and top-k from the temperature-scheduled logits;
- `commit`: a token the sampler accepted now and had not accepted before (the sampled token, which may differ
  from the argmax); a position whose accepted token changed gets `remask` (old) then `commit` (new) at the same
  step; `remask` alone: accepted at an earlier draft, renoised by this one (the model has no [MASK] token: a
  renoised position holds a random token);
- when a canvas is finalized (its `put`), every position whose token differs from the final (argmax) token is
  committed with the final token (EOS padding included).
Stopping: a StoppingCriteria (checked by generate() after each canvas) plus the streamer, which raises
between denoising steps once a stop was asked for, so a stop takes effect after the current step.
Each event is sent one draft late: only the next draft (or the canvas's `put`) tells whether it was final.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Generator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer
from transformers.models.diffusion_gemma.generation_diffusion_gemma import EntropyBoundSamplerConfig

from decoding.diffusion import Decoded, DiffusionParams, _text
from decoding.record import Recorder
from decoding.trace import Node, RunEnd, RunStart, Tokens, r

DEFAULT_ENTROPY_BOUND = 0.1  # DiffusionGemmaGenerationConfig's default


_RUN = threading.local()  # in a run's generate() thread: `on_accept`, the streamer's hook for the sampler


class _Observed:
    """transformers' sampler, passed through unchanged, reporting each accept_canvas decision (the sampled canvas
    and its acceptance mask) to the run that owns this thread."""

    def __init__(self, sampler, on_accept: Callable[[torch.Tensor, torch.Tensor], None]):
        self._sampler, self._on_accept = sampler, on_accept

    def accept_canvas(self, current_canvas, denoiser_canvas, logits, cur_step):
        accepted = self._sampler.accept_canvas(current_canvas, denoiser_canvas, logits, cur_step)
        self._on_accept(denoiser_canvas, self._sampler.accepted_token_mask)
        return accepted

    def __getattr__(self, name: str):
        return getattr(self._sampler, name)


def observe_sampler(model) -> None:
    """Wrap the model's `_prepare_sampler` once: generate() called from a thread with `_RUN.on_accept` set gets
    an observed sampler; any other call (another thread, plain use of the model) gets the model's own."""
    if getattr(model, "_decoding_lens_observed", False):
        return
    prepare = model._prepare_sampler

    def prepare_observed(generation_config):
        sampler = prepare(generation_config)
        on_accept = getattr(_RUN, "on_accept", None)
        return _Observed(sampler, on_accept) if on_accept is not None else sampler

    model._prepare_sampler = prepare_observed
    model._decoding_lens_observed = True


class _Stopped(Exception):
    """Raised inside generate() (from the streamer) to end it between two denoising steps."""


class StopFlag(StoppingCriteria):
    """generate() checks its stopping criteria after each canvas: stop every row once the flag is set."""

    def __init__(self, flag: threading.Event):
        self.flag = flag

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:  # noqa: ARG002 -- StoppingCriteria API
        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device)


class DraftStreamer(BaseStreamer):
    """Turns DiffusionGemma's drafts into token deltas, pushed to `emit` (one draft late, see the module doc)."""

    def __init__(self, adapter, n_rows: int, gen_length: int, canvas_length: int,
                 top_k: int, rows: list[int], emit: Callable[[object], None], stop: threading.Event,
                 first_step: int = 0):
        self._takes_logits = True  # generate() then calls put_draft(logits=...) instead of put_draft(value=...)
        self.adapter, self.top_k, self.rows, self.emit, self.stop = adapter, top_k, rows, emit, stop
        self.C, self.G, self.first_step = canvas_length, gen_length, first_step
        self.sampled: torch.Tensor | None = None  # this step's sampled canvas and acceptance mask (the sampler's)
        self.accepted: torch.Tensor | None = None
        self.recorder = Recorder(adapter.token_text)
        self.ids: list[list[int | None]] = [[None] * gen_length for _ in range(n_rows)]  # accepted token or None
        self.canvas = -1  # index of the canvas being denoised; -1 until the prompt arrived
        self.prev_logits: torch.Tensor | None = None
        self.finished = [False] * n_rows  # rows that produced EOS in an earlier canvas (generate stops counting them)
        self.row_nfe = [0] * n_rows
        self.nfe = 0
        self.pending: list | None = None  # the latest draft's events, sent once the next draft (or put) comes
        self.final_ids: list[list[int]] = [[] for _ in range(n_rows)]

    @property
    def step(self) -> int:
        return self.first_step + self.nfe

    def _set(self, i: int, positions: list[int], ids: list[int], action: str) -> None:
        if positions:
            self.pending += self.recorder.name(ids)
            self.pending.append(Tokens(seq=self.rows[i], step=self.step, action=action, pos=positions, ids=ids,
                                       block=self.canvas))

    def put(self, value: torch.Tensor) -> None:
        if self.canvas < 0:  # the first put is the prompt
            self.canvas = 0
            return
        lo = self.canvas * self.C
        hi = min(lo + self.C, self.G)
        if self.pending is None:
            self.pending = []
        for i, row in enumerate(value.tolist()):
            changed = [p for p in range(lo, hi) if self.ids[i][p] != row[p - lo]]
            for p in changed:
                self.ids[i][p] = row[p - lo]
            self._set(i, changed, [row[p - lo] for p in changed], "commit")  # a finalized canvas: all committed
            self.final_ids[i] += row[: hi - lo]
            self.finished[i] = self.finished[i] or any(t in self.adapter.eos_ids for t in row)
        self._flush()
        self.canvas += 1
        self.prev_logits = None

    def on_accept(self, sampled: torch.Tensor, accepted: torch.Tensor) -> None:
        """The sampler's decision of the step whose draft comes next (accept_canvas runs before put_draft)."""
        self.sampled, self.accepted = sampled.cpu(), accepted.cpu()

    def put_draft(self, value=None, logits: torch.Tensor | None = None, **kwargs) -> None:  # noqa: ARG002 -- streamer API
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
        if self.accepted is None:
            raise RuntimeError("the model's sampler was not observed (decoding.native_diffusion.observe_sampler)")
        accepted, sampled = self.accepted.tolist(), self.sampled.tolist()
        self.accepted = self.sampled = None
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        lo = self.canvas * self.C
        width = min(self.C, self.G - lo)
        self.pending = []
        ids_l, conf_l, ent_l = ids.tolist(), conf.tolist(), ent.tolist()
        top_i_l, top_p_l = top_i.tolist(), top_p.tolist()
        for i in range(len(logits)):
            pos = list(range(lo, lo + width))
            self.pending += self.recorder.name(ids_l[i][:width] + [t for c in top_i_l[i][:width] for t in c])
            self.pending.append(Tokens(seq=self.rows[i], step=self.step, action="propose", pos=pos,
                                       ids=ids_l[i][:width], conf=[r(v) for v in conf_l[i][:width]],
                                       entropy=[r(v) for v in ent_l[i][:width]], top_ids=top_i_l[i][:width],
                                       top_p=[[r(v) for v in c] for c in top_p_l[i][:width]], block=self.canvas))
            if not changed[i]:
                continue  # done denoising: generate() keeps this row's canvas, the sampler's verdict is unused
            token = {p: sampled[i][p - lo] for c, p in enumerate(pos) if accepted[i][c]}  # accepted: sampled token
            swapped = [p for p in token if self.ids[i][p] is not None and self.ids[i][p] != token[p]]
            gone = [p for p in pos if p not in token and self.ids[i][p] is not None]
            self._set(i, gone + swapped, [self.ids[i][p] for p in gone + swapped], "remask")  # renoised / replaced
            now = [p for p in pos if p in token and self.ids[i][p] != token[p]]
            for p in gone:
                self.ids[i][p] = None
            for p in now:
                self.ids[i][p] = token[p]
            self._set(i, now, [token[p] for p in now], "commit")

    def _flush(self) -> None:
        for event in self.pending or []:
            self.emit(event)
        self.pending = None

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


def denoise_native(adapter, prompt: str, params: DiffusionParams, seed: int = 0, *, task=None,
                   init_canvas: list[list[int]] | None = None, should_stop: Callable[[], bool] | None = None,
                   rows: list[int] | None = None, run_events: bool = True,
                   first_step: int = 0) -> Generator[object, None, Decoded]:
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
    streamer = DraftStreamer(adapter, len(rows), G, C, params.top_k, rows, events.put, stop, first_step)

    observe_sampler(model)

    def work() -> None:
        _RUN.on_accept = streamer.on_accept
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
        except Exception as e:
            events.put(e)
        finally:
            _RUN.on_accept = None
        events.put(None)

    t0 = time.perf_counter()
    if run_events:
        yield RunStart(method="diffusion", prompt=prompt, prompt_ids=prompt_ids, rows=len(rows), length=G)
        yield from streamer.recorder.name(prompt_ids)
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    stopped = False
    try:
        current = None  # the step being yielded: Stop is polled once per step, when the next one begins
        while (event := events.get()) is not None:
            if isinstance(event, Exception):
                raise event
            if isinstance(event, Tokens) and event.step != current:
                if current is not None and should_stop is not None and should_stop():
                    stopped = True
                    break
                current = event.step
            yield event
    finally:
        stop.set()  # also when the consumer closes this generator early
        thread.join()
    ids = [list(r) for r in streamer.final_ids] if not stopped else [
        [t for t in r if t is not None] for r in streamer.ids]
    texts = [_text(adapter, r) for r in ids]
    answers = [task.extract_answer(s) if task is not None else None for s in texts]
    seconds = round(time.perf_counter() - t0, 4)
    for i, seq in enumerate(rows):
        yield Node(id=seq, seq=seq, step=streamer.step, status="active" if stopped else "finished", text=texts[i],
                   answer=answers[i], nfe=streamer.row_nfe[i])
    if run_events:
        yield RunEnd(nfe=streamer.nfe, seconds=seconds, answer=answers[0], stopped=stopped,
                     summary={"row_nfe": streamer.row_nfe, "strategy": "native", "entropy_bound": bound})
    canvas = [[t if t is not None else -1 for t in r] for r in streamer.ids]
    return Decoded(canvas=canvas, texts=texts, answers=answers, row_nfe=streamer.row_nfe, steps=streamer.step,
                   stopped=stopped)
