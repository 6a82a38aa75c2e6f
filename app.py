"""Decoding Lens: watch a language model decode, step by step.

Wiring only: decoders live in decoding/, views in viz/. A run executes in a background thread that appends
events to a Trace; the Gradio generator polls that trace and yields throttled views, so Stop (a flag the
decoder polls every step) ends the run within one step even when the stream itself is cancelled.

`python app.py` serves on 127.0.0.1:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override (a Space sets
GRADIO_SERVER_NAME=0.0.0.0).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import gradio as gr
from gradio.components.plot import PlotData

from decoding import diffusion, models, task, voting
from decoding.trace import RunEnd, Trace, TraceError
from viz.heatmap import decode_order, empty_figure, entropy_heatmap, topk_figure
from viz.state import progress_line, state_at, step_count
from viz.tokens import render_canvas
from viz.voting import agreement_grid, bench_figure, load_bench, nfe_meter_html, tally_html

ROOT = Path(__file__).resolve().parent
EXAMPLES = json.loads((ROOT / "examples" / "prompts.json").read_text())
BENCH_PATH = ROOT / "examples" / "bench" / "voting.json"
TRACE_DIR = Path(tempfile.mkdtemp(prefix="decoding-lens-"))  # inside the temp dir Gradio serves files from
CANVAS_EVERY, PLOTS_EVERY = 0.1, 1.5  # seconds between streamed updates: ~10/s for HTML, plots every 1.5 s
LOAD_TIMEOUT = 180  # seconds before a model load is reported as stuck
MAX_LIVE = 256  # sessions whose latest run we remember (for Stop)

HEADER = """
# Decoding Lens
**Watch a diffusion language model write its answer.** A masked-diffusion model (LLaDA-style) starts
from an answer made only of `▒` masks and, at every step, predicts *all* masked positions at once, then
commits a few of them. Which ones, and how many, is the **decoding strategy**.
Each chip below is one token: **grey** = still masked (faint text: the model's current guess),
**red / orange / green** = committed at this step with low / medium / high confidence,
**blue** = committed earlier. Hover a chip for its confidence, entropy and the top alternatives.
The default model is the tiny zoo dLLM trained on arithmetic chains like `12+7-5*3=?` → `#42`.
"""

VOTING_INTRO = """
**Voting** decodes several samples of the same problem and takes the most common answer.
**dVoting** notices that samples agree on most positions: each later sample *keeps* the agreed tokens and
re-decodes only the rest, so it costs far fewer forward passes than majority@K.
"""


def _first_doc_paragraphs(module: object, n: int = 40) -> str:
    doc = (module.__doc__ or "").strip()
    return "\n".join(doc.splitlines()[:n])


ABOUT = f"""
### How the engine decodes
{_first_doc_paragraphs(diffusion)}

### Voting and dVoting
{_first_doc_paragraphs(voting)}

*Where this app deviates from the papers is stated above in each module's notes (for example batched dVoting,
which goes beyond the reference's one-sample-at-a-time order, and the tiny zoo models instead of LLaDA-8B).*
"""


# ---------------------------------------------------------------- runs in a background thread


class LiveRun:
    """One run: a thread feeds decoder events into a Trace; `stop` is the flag the decoder polls."""

    def __init__(self, trace: Trace, events: Callable[[Callable[[], bool]], Iterator]):
        self.trace, self.stop, self.done = trace, threading.Event(), threading.Event()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, args=(events,), daemon=True)
        self.thread.start()

    def _run(self, events: Callable[[Callable[[], bool]], Iterator]) -> None:
        try:
            for event in events(self.stop.is_set):
                self.trace.add(event)
        except Exception as e:  # noqa: BLE001 -- any decoder failure must reach the page, not kill the worker
            self.error = f"{type(e).__name__}: {e}"
        finally:
            self.done.set()


LIVE: dict[str, LiveRun] = {}


def _remember(session: str, run: LiveRun) -> None:
    previous = LIVE.pop(session, None)
    if previous is not None:
        previous.stop.set()  # a new Run in the same page stops the old one
    LIVE[session] = run
    while len(LIVE) > MAX_LIVE:
        LIVE.pop(next(iter(LIVE))).stop.set()


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def _save(trace: Trace) -> str:
    path = TRACE_DIR / f"trace-{trace.meta.get('method', 'run')}-{int(time.time() * 1000)}.json"
    return str(trace.save(path))


def _warn(message: str) -> str:
    gr.Warning(message)
    return f"⚠ **{message}**"


def _load_adapter(spec: str):
    """models.load with a time limit, so a model whose weights cannot be had answers instead of hanging."""
    box: dict = {}

    def target() -> None:
        try:
            box["adapter"] = models.load(spec)
        except Exception as e:  # noqa: BLE001 -- reported in the page
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(LOAD_TIMEOUT)
    if thread.is_alive():
        raise models.ModelLoadError(f"loading {spec!r} took more than {LOAD_TIMEOUT}s; try the zoo model")
    if "error" in box:
        err = box["error"]
        raise err if isinstance(err, models.ModelLoadError) else models.ModelLoadError(f"{spec!r}: {err}")
    return box["adapter"]


DIFFUSION_KINDS = ("masked_diffusion", "native_diffusion")


def _model_choices() -> list[tuple[str, str]]:
    """(label, spec) for the picker: zoo first, then registry models (diffusion kinds only: what these tabs run).
    DECODING_LENS_ZOO points at another zoo folder (tests build a tiny one in a temp dir)."""
    zoo_env = os.environ.get("DECODING_LENS_ZOO")
    choices: list[tuple[str, str]] = []
    if zoo_env:
        for name in models.ZOO_NAMES:
            if (Path(zoo_env) / name / "config.json").is_file() and name == "tiny-dllm":
                choices.append((f"{name} (zoo, masked diffusion)", str(Path(zoo_env) / name)))
    try:
        rows = models.list_models()
    except Exception:  # noqa: BLE001 -- the picker still offers the zoo
        rows = []
    for row in rows:
        name, kind = str(row.get("name")), str(row.get("kind"))
        if kind not in DIFFUSION_KINDS or (zoo_env and name in models.ZOO_NAMES):
            continue
        where = "zoo" if name in models.ZOO_NAMES else "downloaded" if row.get("available_locally") else "needs download"
        choices.append((f"{name} ({where}, {kind.replace('_', ' ')})", name))
    return choices or [("tiny-dllm (zoo, masked diffusion)", "tiny-dllm")]


def _prepare(model: str, prompt: str, params: diffusion.DiffusionParams) -> tuple[object, str, int | None]:
    """Adapter, the prompt as the model expects it, the expected answer. Raises ValueError with a message."""
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty: type a problem like 12+7-5*3=? or pick an example")
    params.validate()  # parameter errors first: no need to load a model to report them
    try:
        adapter = _load_adapter(model)
    except models.ModelLoadError as e:
        raise ValueError(f"cannot load the model: {e}") from None
    if adapter.kind not in DIFFUSION_KINDS:
        raise ValueError(f"{model} is a {adapter.kind} model; these tabs need a diffusion model (e.g. tiny-dllm)")
    problem = task.solve(prompt.strip())  # an arithmetic chain: use the zoo's format (question + newline)
    text = problem.prompt if problem is not None else prompt
    params.validate(adapter, text)  # context length, [MASK] token
    return adapter, text, problem.answer if problem is not None else None


def model_status(model: str) -> str:
    try:
        adapter = _load_adapter(model)
    except models.ModelLoadError as e:
        return _warn(f"cannot load {model}: {e}")
    return f"✓ **{model}** loaded: {adapter.kind}, context {adapter.max_length} tokens, on {adapter.device}."


# ---------------------------------------------------------------- streaming views


def _diffusion_views(trace: Trace, step: int | None = None, position: int = -1, with_plots: bool = True) -> tuple:
    """(canvas, entropy, decode order, top-k); with_plots=False leaves the figures out (None): the live
    stream redraws them only every PLOTS_EVERY seconds."""
    events = trace.events if step is None else state_at(trace, step)
    expected = trace.meta.get("expected")
    return (
        render_canvas(events, expected=expected),
        entropy_heatmap(events) if with_plots else None,
        decode_order(events) if with_plots else None,
        topk_figure(events, -1 if position is None else int(position)) if with_plots else None,
    )


def _voting_k(trace: Trace) -> int:
    return int(trace.meta.get("params", {}).get("k", 1) or 1)


def _voting_views(trace: Trace, step: int | None = None, with_plots: bool = True) -> tuple:
    events = trace.events if step is None else state_at(trace, step)
    k = _voting_k(trace)
    return (
        render_canvas(events, expected=trace.meta.get("expected")),
        agreement_grid(events) if with_plots else None,
        tally_html(events, k),
        nfe_meter_html(events, k),
    )


def _diffusion_progress(trace: Trace) -> str:
    """Status line of a live diffusion run: step s / total (fixed schedules) or step s (at most gen_length)."""
    p = trace.meta.get("params", {})
    fixed = p.get("strategy") in diffusion.SCHEDULED
    return progress_line(trace.events, total_steps=p.get("steps") if fixed else None, max_steps=p.get("gen_length"))


def _voting_progress(trace: Trace) -> str:
    """Status line of a live voting run: sample i / K, step s of its decode (adaptive: at most gen_length)."""
    return progress_line(trace.events, k=_voting_k(trace), max_steps=trace.meta.get("params", {}).get("gen_length"))


def _summary(trace: Trace, run: LiveRun) -> str:
    if run.error:
        return _warn(f"the run failed: {run.error}")
    end = next((e for e in reversed(trace.events) if isinstance(e, RunEnd)), None)
    if end is None:
        return "… running"
    how = "■ stopped" if end.stopped else "✓ done"
    answer = "no answer line" if end.answer is None else f"answer **#{end.answer}**"
    expected = trace.meta.get("expected")
    verdict = "" if expected is None or end.answer is None else (" ✓" if end.answer == expected else f" ✗ (expected #{expected})")
    return f"{how}: {answer}{verdict} · {end.nfe} forward passes · {end.seconds:.2f}s · {step_count(trace)} steps"


def _plot_payload(fig: object) -> PlotData:
    """A figure serialised once, as gr.Plot sends it (its postprocess passes PlotData through unchanged)."""
    return PlotData(type="plotly", plot=fig.to_json())  # type: ignore[attr-defined]


def _stream(run: LiveRun, views: Callable[..., tuple], plots: set[int],
            progress: Callable[[Trace], str]) -> Iterator[tuple]:
    """Yield (*views, status, scrubber, file, state) as the run progresses: HTML and the status line
    (`progress`: step s / total) ~10×/s, the plotly views (indices in `plots`) redrawn every PLOTS_EVERY s
    and at each new voting round, and the final state always.

    Between redraws the plot outputs re-send the *same* serialised figure, never gr.skip(): Gradio streams
    a generator's outputs as diffs against its previous yield, and the browser applies those diffs in place
    to the object the Plot is showing, so a skip ({"__type__": "update"}) diffed against a figure deletes
    the figure's keys and the plot vanishes (plotly: "Something went wrong with axis scaling") until the
    next full value. An unchanged payload diffs to nothing: the plot stays as it is."""
    trace = run.trace
    last_canvas = last_plots = 0.0
    rounds = 0
    shown_plots: dict[int, PlotData] = {}

    def render(view: Trace, send_plots: bool) -> tuple:
        rendered = views(view, with_plots=send_plots)
        if send_plots:
            shown_plots.update({i: _plot_payload(rendered[i]) for i in plots})
        shown = [shown_plots[i] if i in plots else v for i, v in enumerate(rendered)]
        return (*shown, progress(view), gr.skip(), gr.skip(), gr.skip())

    try:
        while not run.done.wait(0.02):
            now = time.monotonic()
            missed = _round_snapshots(trace, rounds)
            if not trace.events or (now - last_canvas < CANVAS_EVERY and not missed):
                continue
            for snapshot in missed[:-1]:  # several rounds ended since the last poll: each reaches the page in turn
                yield render(snapshot, True)
                time.sleep(CANVAS_EVERY)
            send_plots = bool(missed) or not shown_plots or now - last_plots >= PLOTS_EVERY
            rounds += len(missed)
            last_canvas, last_plots = now, now if send_plots else last_plots
            yield render(trace, send_plots)
    finally:
        if not run.done.is_set():  # the page went away or the event was cancelled: stop the decoder too
            run.stop.set()
    for snapshot in _round_snapshots(trace, rounds)[:-1]:  # a fast run ends between polls: replay its rounds
        yield render(snapshot, True)
        time.sleep(CANVAS_EVERY)
    yield _final(run, views)


def _round_snapshots(trace: Trace, shown: int) -> list[Trace]:
    """The trace cut just after each voting round past the first `shown` (diffusion traces have none)."""
    ends = [i for i, e in enumerate(list(trace.events)) if e.kind == "round"]
    return [Trace(trace.meta, trace.events[: i + 1]) for i in ends[shown:]]


def _final(run: LiveRun, views: Callable[[Trace], tuple]) -> tuple:
    trace = run.trace
    n = step_count(trace)
    scrub = gr.Slider(minimum=0, maximum=max(n, 1), value=n, step=1, interactive=n > 0,
                      label=f"Step (0–{n}): scrub through the finished run")
    return (*views(trace), _summary(trace, run), scrub, _save(trace), trace)


def _error_outputs(message: str) -> tuple:
    return (*[gr.skip()] * 4, _warn(message), gr.skip(), gr.skip(), gr.skip())


def run_diffusion(model: str, prompt: str, strategy: str, gen_length: int, steps: int, block_length: int,
                  temperature: float, threshold: float, entropy_threshold: float, seed: int, batch: int,
                  request: gr.Request) -> Iterator[tuple]:
    """Run button of the Diffusion tab: stream the canvas and plots of one denoise run."""
    try:
        params = diffusion.DiffusionParams(
            gen_length=int(gen_length), steps=int(steps), block_length=int(block_length), strategy=strategy,
            temperature=float(temperature), threshold=float(threshold), entropy_threshold=float(entropy_threshold),
            batch=int(batch),
        )
        adapter, text, expected = _prepare(model, prompt, params)
    except (ValueError, TypeError) as e:  # ModelLoadError is a ValueError
        yield _error_outputs(str(e))
        return
    trace = Trace.new(model, "diffusion", asdict(params), int(seed))
    trace.meta["expected"] = expected
    run = LiveRun(trace, lambda stop: diffusion.denoise(adapter, text, params, seed=int(seed), should_stop=stop))
    _remember(_session(request), run)
    yield from _stream(run, _diffusion_views, plots={1, 2, 3}, progress=_diffusion_progress)


def run_voting(model: str, prompt: str, method: str, k: int, tau: float, agreement: float, temperature: float,
               gen_length: int, block_length: int, batched: bool, seed: int, request: gr.Request) -> Iterator[tuple]:
    """Run button of the Voting tab: stream samples, rounds, tally and cost."""
    try:
        params = voting.VotingParams(k=int(k), tau=float(tau), agreement=float(agreement),
                                     temperature=float(temperature), block_length=int(block_length),
                                     gen_length=int(gen_length), batched=bool(batched), seed_base=int(seed))
        adapter, text, expected = _prepare(model, prompt, params.diffusion(1))
    except (ValueError, TypeError) as e:
        yield _error_outputs(str(e))
        return
    trace = Trace.new(model, method, asdict(params), int(seed))
    trace.meta["expected"] = expected
    vote = voting.majority_vote if method == "majority" else voting.dvoting
    run = LiveRun(trace, lambda stop: vote(adapter, text, params, should_stop=stop))
    _remember(_session(request), run)
    yield from _stream(run, _voting_views, plots={1}, progress=_voting_progress)


def _stop(request: gr.Request | None, views: Callable[[Trace], tuple]) -> tuple:
    """Set the flag the decoder polls (the run ends after its current step), then draw the stopped state:
    `cancels=` may have ended the stream already, so this handler returns the final views itself."""
    run = LIVE.get(_session(request))
    if run is None or run.done.is_set():
        return (gr.skip(),) * 4 + ("Nothing is running.",) + (gr.skip(),) * 3
    run.stop.set()
    run.done.wait(30)  # at most one step of the decoder
    return _final(run, views)


def stop_diffusion(request: gr.Request) -> tuple:
    return _stop(request, _diffusion_views)


def stop_voting(request: gr.Request) -> tuple:
    return _stop(request, _voting_views)


def scrub_diffusion(trace: Trace | None, step: float, position: float) -> tuple:
    if trace is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return _diffusion_views(trace, int(step), -1 if position is None else int(position))


def scrub_voting(trace: Trace | None, step: float) -> tuple:
    if trace is None:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    return _voting_views(trace, int(step))


def upload_trace(path: str | None) -> tuple:
    """Replay tab: load a trace file (validated) and draw its final state; no model needed."""
    if not path:
        return (gr.skip(),) * 8 + ("",)
    try:
        trace = Trace.load(path)
        n = step_count(trace)
        canvas, heat, order, _ = _diffusion_views(trace)
        _, grid, tally, meter = _voting_views(trace)
    except TraceError as e:
        return (gr.skip(),) * 8 + (_warn(f"cannot replay this file: {e}"),)
    except Exception as e:  # noqa: BLE001 -- a file that passes the schema but does not make sense
        return (gr.skip(),) * 8 + (_warn(f"cannot replay this file: inconsistent trace ({type(e).__name__}: {e})"),)
    scrub = gr.Slider(minimum=0, maximum=max(n, 1), value=n, step=1, interactive=n > 0, label=f"Step (0–{n})")
    meta = trace.meta
    info = f"▶ replaying **{meta.get('method', '?')}** on **{meta.get('model', '?')}** (seed {meta.get('seed', '?')}), {n} steps"
    return trace, scrub, canvas, heat, order, grid, tally, meter, info


def scrub_replay(trace: Trace | None, step: float) -> tuple:
    if trace is None:
        return (gr.skip(),) * 6
    canvas, heat, order, _ = _diffusion_views(trace, int(step))
    _, grid, tally, meter = _voting_views(trace, int(step))
    return canvas, heat, order, grid, tally, meter


# ---------------------------------------------------------------- layout


def _examples(prompt: gr.Textbox) -> gr.Examples:
    return gr.Examples(
        examples=[[e["question"]] for e in EXAMPLES],
        inputs=[prompt],
        example_labels=[f"L{e['level']}: {e['question']}" for e in EXAMPLES],
        label="Example problems (level = number of steps; the answer is checked automatically)",
        examples_per_page=10,
    )


def _run_stop_buttons() -> tuple[gr.Button, gr.Button]:
    with gr.Row():
        run = gr.Button("▶ Run", variant="primary", elem_classes="dl-run")
        stop = gr.Button("■ Stop", variant="stop", elem_classes="dl-stop")
    return run, stop


# Plots carry their own titles, so their Gradio labels are hidden (show_label=False): Gradio's plotly
# wrapper forces a 100 px top margin on a titled figure whose label is shown, which leaves short figures
# (decode order, top-k) a negative plot height; plotly then throws "Something went wrong with axis
# scaling" and the plots drop out of the page mid-run.


def build() -> gr.Blocks:
    choices = _model_choices()
    strategies = list(diffusion.STRATEGIES)
    with gr.Blocks(title="Decoding Lens") as demo:
        gr.Markdown(HEADER)
        with gr.Row(equal_height=True):
            model = gr.Dropdown(choices, value=choices[0][1], label="Model (zoo first; hub models need their weights)",
                                allow_custom_value=True, scale=2, elem_id="model")
            model_info = gr.Markdown("", elem_id="model-info")
        model.change(model_status, model, model_info, concurrency_limit=1)

        with gr.Tabs():
            # ---------------- Diffusion
            with gr.Tab("Diffusion", id="diffusion"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        d_prompt = gr.Textbox(EXAMPLES[2]["question"], label="Prompt", lines=2, elem_id="d-prompt")
                        _examples(d_prompt)
                        d_strategy = gr.Dropdown(strategies, value="low_confidence" if "low_confidence" in strategies
                                                 else strategies[0], label="Strategy (which masks to commit)")
                        d_steps = gr.Slider(1, 512, 40, step=1, label="Steps (forward passes, fixed schedules)", elem_id="d-steps")
                        d_gen = gr.Slider(8, 512, 80, step=8, label="Answer length (tokens)", elem_id="d-gen")
                        d_block = gr.Slider(1, 512, 16, step=1, label="Block length (semi-autoregressive)")
                        with gr.Accordion("More parameters", open=False):
                            d_temp = gr.Slider(0, 2, 0.0, step=0.05, label="Temperature (0 = greedy)")
                            d_thr = gr.Slider(0, 1, 0.9, step=0.01, label="Confidence threshold (Fast-dLLM strategy)")
                            d_ent = gr.Slider(0.01, 3, 0.3, step=0.01, label="Entropy threshold τ (entropy strategy)")
                            d_seed = gr.Number(0, precision=0, label="Seed")
                            d_batch = gr.Slider(1, 8, 1, step=1, label="Batch (samples side by side)")
                        d_run, d_stop = _run_stop_buttons()
                    with gr.Column(scale=3):
                        d_status = gr.Markdown("Pick an example and press **Run**.", elem_id="d-status")
                        d_canvas = gr.HTML(render_canvas([]), elem_id="d-canvas", min_height=120)
                        d_scrub = gr.Slider(0, 1, 0, step=1, label="Step (available after a run)", interactive=False,
                                            elem_id="d-scrub")
                        with gr.Row():
                            d_heat = gr.Plot(empty_figure("run to see the uncertainty per step"), label="Entropy", scale=3, elem_id="d-heat",
                                             show_label=False)
                            with gr.Column(scale=2):
                                d_pos = gr.Number(-1, precision=0, minimum=-1,
                                                  label="Top-k position (-1: follow the most uncertain masked one)")
                                d_topk = gr.Plot(empty_figure("top-k alternatives at one position", 220), label="Top-k", elem_id="d-topk",
                                                 show_label=False)
                        d_order = gr.Plot(empty_figure("decode order", 160), label="Decode order", show_label=False,
                                  elem_id="d-order")
                        d_file = gr.DownloadButton("↓ Download trace (JSON)", value=None, size="sm")
                d_trace = gr.State(None)
                d_outputs = [d_canvas, d_heat, d_order, d_topk, d_status, d_scrub, d_file, d_trace]
                d_event = d_run.click(
                    run_diffusion,
                    [model, d_prompt, d_strategy, d_gen, d_steps, d_block, d_temp, d_thr, d_ent, d_seed, d_batch],
                    d_outputs, api_name="run_diffusion", show_progress="minimal",
                )
                d_stop.click(stop_diffusion, None, d_outputs, cancels=[d_event], api_name="stop",
                             concurrency_limit=None)
                d_scrub.change(scrub_diffusion, [d_trace, d_scrub, d_pos], [d_canvas, d_heat, d_order, d_topk],
                               show_progress="hidden", trigger_mode="always_last", api_name="scrub_diffusion")
                d_pos.change(scrub_diffusion, [d_trace, d_scrub, d_pos], [d_canvas, d_heat, d_order, d_topk],
                             show_progress="hidden", trigger_mode="always_last", api_visibility="private")

            # ---------------- Voting
            with gr.Tab("Voting", id="voting"):
                gr.Markdown(VOTING_INTRO)
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        v_prompt = gr.Textbox(EXAMPLES[3]["question"], label="Prompt", lines=2, elem_id="v-prompt")
                        _examples(v_prompt)
                        v_method = gr.Radio([("dVoting", "dvoting"), ("majority@K", "majority")], value="dvoting",
                                            label="Method")
                        v_k = gr.Slider(1, 9, 5, step=1, label="K (samples at most)", elem_id="v-k")
                        v_tau = gr.Slider(0.01, 2, 0.3, step=0.01, label="τ: commit every masked token with entropy < τ")
                        v_agree = gr.Slider(0.5, 1, 1.0, step=0.05, label="Agreement share to keep a position (1 = all)")
                        v_gen = gr.Slider(8, 512, 80, step=8, label="Answer length (tokens)", elem_id="v-gen")
                        v_batched = gr.Checkbox(False, label="Batched (faster; beyond the reference order)")
                        with gr.Accordion("More parameters", open=False):
                            v_temp = gr.Slider(0, 2, 0.6, step=0.05, label="Temperature")
                            v_block = gr.Slider(1, 512, 16, step=1, label="Block length")
                            v_seed = gr.Number(42, precision=0, label="Seed of sample 1 (sample i: seed + i)")
                        v_run, v_stop = _run_stop_buttons()
                    with gr.Column(scale=3):
                        v_status = gr.Markdown("Press **Run**: samples appear one after another.", elem_id="v-status")
                        with gr.Row():
                            v_tally = gr.HTML("", elem_id="v-tally")
                            v_meter = gr.HTML("", elem_id="v-meter")
                        v_grid = gr.Plot(empty_figure("agreement grid", 200), label="Agreement", show_label=False, elem_id="v-grid")
                        v_canvas = gr.HTML(render_canvas([]), elem_id="v-canvas", min_height=120)
                        v_scrub = gr.Slider(0, 1, 0, step=1, label="Step (available after a run)", interactive=False,
                                            elem_id="v-scrub")
                        v_file = gr.DownloadButton("↓ Download trace (JSON)", value=None, size="sm")
                        with gr.Accordion("Benchmark: accuracy vs forward passes", open=True):
                            gr.Plot(bench_figure(load_bench(BENCH_PATH)), label="Benchmark", show_label=False)
                v_trace = gr.State(None)
                v_outputs = [v_canvas, v_grid, v_tally, v_meter, v_status, v_scrub, v_file, v_trace]
                v_event = v_run.click(
                    run_voting,
                    [model, v_prompt, v_method, v_k, v_tau, v_agree, v_temp, v_gen, v_block, v_batched, v_seed],
                    v_outputs, api_name="run_voting", show_progress="minimal",
                )
                v_stop.click(stop_voting, None, v_outputs, cancels=[v_event], api_name="stop_voting",
                             concurrency_limit=None)
                v_scrub.change(scrub_voting, [v_trace, v_scrub], [v_canvas, v_grid, v_tally, v_meter],
                               show_progress="hidden", trigger_mode="always_last", api_name="scrub_voting")

            # ---------------- Replay
            with gr.Tab("Replay a trace", id="replay"):
                gr.Markdown("Upload a trace downloaded from this app: it replays with no model loaded.")
                r_file = gr.File(label="Trace (.json)", file_types=[".json"], elem_id="r-file")
                r_status = gr.Markdown("", elem_id="r-status")
                r_canvas = gr.HTML("", elem_id="r-canvas")
                r_scrub = gr.Slider(0, 1, 0, step=1, label="Step", interactive=False, elem_id="r-scrub")
                with gr.Row():
                    r_tally = gr.HTML("")
                    r_meter = gr.HTML("")
                r_heat = gr.Plot(empty_figure("entropy per step (upload a trace)"), label="Entropy", show_label=False)
                r_order = gr.Plot(empty_figure("decode order (upload a trace)", 160), label="Decode order",
                                  show_label=False)
                r_grid = gr.Plot(empty_figure("agreement grid (voting traces)", 200), label="Agreement (voting traces)",
                                 show_label=False)
                r_trace = gr.State(None)
                r_file.upload(upload_trace, r_file,
                              [r_trace, r_scrub, r_canvas, r_heat, r_order, r_grid, r_tally, r_meter, r_status],
                              api_name="upload_trace")
                r_scrub.change(scrub_replay, [r_trace, r_scrub], [r_canvas, r_heat, r_order, r_grid, r_tally, r_meter],
                               show_progress="hidden", trigger_mode="always_last", api_name="scrub_replay")

        with gr.Accordion("About these methods (and where this app deviates from the papers)", open=False):
            gr.Markdown(ABOUT)
    return demo


CSS = """
.dl-canvas { font-size: 14px; }
#d-canvas, #v-canvas, #r-canvas { background: #fbfbfd; border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px; }
"""

if __name__ == "__main__":
    demo = build()
    # Bounded queue: a busy public demo refuses new work instead of piling it up; two runs at once per event.
    demo.queue(max_size=16, default_concurrency_limit=2)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        css=CSS,
        max_file_size="60mb",
        theme=gr.themes.Soft(),
    )
