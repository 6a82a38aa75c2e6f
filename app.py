"""Decoding Lens: watch a language model decode, step by step.

Wiring only, and generic: one tab per method of the registry (decoding/methods.py), built from what the method
declares (its parameters' UI hints, its view module's panels and options), and one set of run / stop / scrub /
replay handlers shared by every tab. Decoders live in decoding/, views in viz/, the live run and its throttled
stream in decoding/live.py; this file turns the stream's frames into Gradio outputs.

API names (gradio_client), per method `<name>`: /run_<name> (model, prompt, the method's parameters by name, seed,
the view options), /stop_<name>, /scrub_<name> (frame, the view options); and /upload_trace, /scrub_replay.
A tab's runs belong to it: live runs are keyed by (session, method), so Run and Stop in one tab never touch a
run in another.

`python app.py` serves on 127.0.0.1:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT override (a Space sets
GRADIO_SERVER_NAME=0.0.0.0). DECODING_LENS_ZOO points at another zoo folder, DECODING_LENS_METHODS names
modules that register more methods (comma-separated).

The model field runs only the app's list (decoding/allowlist.py): the zoo, the registry's hub ids, and what the
operator adds with DECODING_LENS_MODELS (comma-separated folders or hub ids) or `python app.py --allow-model SPEC`
(repeatable). Anything else typed there gets one message that names no path. Python and the CLI load any folder.
"""

from __future__ import annotations

import os
import sys

# Memory a large replay freed goes back to the OS only under the C allocator: under Python's own, a server kept
# ~40 MB more after each 50 MB upload, under malloc a few MB; two malloc arenas keep many users' runs from
# spreading the heap over one arena per thread (docs/HARDENING.md). Both are read when the interpreter starts,
# so `python app.py` restarts itself once with them; an operator's own settings are kept.
if __name__ == "__main__" and "PYTHONMALLOC" not in os.environ:
    os.execve(sys.executable, [sys.executable, *sys.argv],
              {"MALLOC_ARENA_MAX": "2", **os.environ, "PYTHONMALLOC": "malloc"})

import html
import importlib
import inspect
import re
import tempfile
import threading
import time
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import gradio as gr
from gradio.components.plot import PlotData
from pydantic import ValidationError

from decoding import allowlist, live, methods, models
from decoding.fold import State
from decoding.gpu import gpu
from decoding.methods import Method
from decoding.params import Context, describe_error
from decoding.tasks import task_for
from decoding.trace import Meta, Trace, TraceError
from viz.heatmap import empty_figure
from viz.panels import Option, Panel
from viz.tokens import md_escape

ROOT = Path(__file__).resolve().parent
TRACE_DIR = Path(tempfile.mkdtemp(prefix="decoding-lens-"))  # inside the temp dir Gradio serves files from
LOAD_TIMEOUT = 180  # seconds before a model load is reported as stuck
RUNS = live.Runs()  # live runs by (session, method name)
VIEWS = live.Views()  # uploaded traces being replayed, by (session, "replay"); gr.State holds only the key
# Saved run traces (TRACE_DIR) and Gradio's cached files (uploads, downloads) are deleted after this many seconds.
TRACE_TTL = max(60, int(os.environ.get("DECODING_LENS_TRACE_TTL", "3600")))
# The models this app runs (decoding/allowlist.py): the picker offers them, every run and load checks against them.
# build() adds `python app.py --allow-model SPEC`.
ALLOWED: list[str] = allowlist.allowed_models()
RESERVED = {"model", "prompt", "seed", "request"}  # run inputs every tab has: no parameter or option may use them

HEADER = """
# Decoding Lens
**Watch a language model decode, step by step.** Each tab below is one decoding method: pick a model at the
top (the tiny zoo models come first), a problem and the method's settings, press **Run**, and the views update
while the model works. When a run ends, scrub back through its steps or download its trace; the last tab
replays a downloaded trace with no model loaded.
Each chip is one token: **grey** = still masked (light text: the model's current guess),
**red / orange / green** = committed at this step with low / medium / high confidence,
**blue** = committed earlier. **Click (or tap) a chip** to see its top alternatives and its entropy and confidence
over the steps; a folded "EOS × 60" chip opens on click.
The zoo models are tiny models trained on arithmetic chains like `12+7-5*3=?` → `#42`.
"""

ABOUT = ROOT / "docs" / "ABOUT.md"  # the About box's general part; each method adds its own (Method.about)

CSS = (ROOT / "viz" / "page.css").read_text()  # the chips' classes, answer styles, narrow screens
PANEL_JS = (ROOT / "viz" / "page.js").read_text()  # every HTML panel: a chip click selects it, EOS tails unfold
SELECT = ("position", "sample")  # view options a chip click sets (viz/panels.py), when a view declares them

# Plots carry their own titles, so their Gradio labels are hidden (show_label=False): Gradio's plotly wrapper
# forces a 100 px top margin on a titled figure whose label is shown, which leaves short figures a negative
# plot height; plotly then throws "Something went wrong with axis scaling" and the plots drop out mid-run.


# ---------------------------------------------------------------- what a tab is built from


@dataclass
class Tab:
    """One method's tab: the method, its view module, and the components its handlers read and write."""

    method: Method
    views: ModuleType
    panels: list[Panel]
    options: list[Option]
    default_seed: int = 0
    # filled while the layout is built
    panel_components: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.method.name


def _tab(method: Method) -> Tab:
    views = importlib.import_module(method.views)
    panels, options = list(views.PANELS), list(getattr(views, "OPTIONS", []))
    names = [n for n, _, _ in method.params.controls()] + [o.name for o in options]
    clash = sorted((set(names) & RESERVED) | {n for n in names if names.count(n) > 1})
    if clash:
        raise ValueError(f"method {method.name!r}: parameter / view option names {clash} clash with each other or "
                         f"with the app's own inputs ({', '.join(sorted(RESERVED))})")
    seed = inspect.signature(method.decode).parameters.get("seed")
    default_seed = seed.default if seed is not None and isinstance(seed.default, int) else 0
    return Tab(method, views, panels, options, default_seed)


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "default"


def _warn(message: str) -> str:
    """A message in a pop-up and in the status line ("⚠ message"). It can quote user input (a file's field
    names, a model id), so it is escaped for both: gr.Warning renders HTML, the status line is Markdown."""
    gr.Warning(html.escape(message))
    return f"⚠ **{md_escape(message)}**"


# ---------------------------------------------------------------- models


def _load_adapter(spec: str):
    """models.load of a model on the app's list (else allowlist.ModelNotAllowed, one message whatever was typed),
    with a time limit, so a model whose weights cannot be had answers instead of hanging. Error messages name
    no server path."""
    spec = allowlist.resolve_for_app(spec, ALLOWED)
    box: dict = {}

    def target() -> None:
        try:
            box["adapter"] = models.load(spec)
        except Exception as e:  # any failure is reported in the page
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(LOAD_TIMEOUT)
    if thread.is_alive():
        raise models.ModelLoadError(f"loading {spec!r} took more than {LOAD_TIMEOUT}s; try a zoo model")
    if "error" in box:
        err = box["error"]
        raise models.ModelLoadError(allowlist.public_message(str(err) if isinstance(err, models.ModelLoadError)
                                                            else f"{spec!r}: {err}"))
    return box["adapter"]


def _folder_kind(folder: Path) -> str | None:
    """The kind a model folder holds (models.folder_settings), None if it is no model folder."""
    try:
        return str(models.folder_settings(folder)[1]["kind"])
    except models.ModelLoadError:
        return None


def _model_choices(kinds: set[str]) -> list[tuple[str, str]]:
    """(label, spec) for the picker: the app's list (ALLOWED, decoding/allowlist.py) in its order, zoo first, only
    models of kinds some method runs on. DECODING_LENS_ZOO points at another zoo folder (tests build a tiny one in
    a temp dir); its folders replace the zoo names. Labels name no server folder, only its last part."""
    zoo_env = os.environ.get(allowlist.ZOO_ENV, "").strip()
    try:
        rows = {str(row.get("name")): row for row in models.list_models()}
    except Exception:  # the picker still offers the rest
        rows = {}
    choices: list[tuple[str, str]] = []
    for spec in ALLOWED:
        row = rows.get(spec)
        if row is not None:  # a built zoo model or a registry model
            kind = str(row.get("kind"))
            if kind not in kinds or (zoo_env and spec in models.ZOO_NAMES):
                continue
            where = "zoo" if spec in models.ZOO_NAMES else "downloaded" if row.get("available_locally") \
                else "needs download"
        elif spec in models.ZOO_NAMES or spec in models.REGISTRY:
            continue  # a zoo model that is not built
        elif (folder := Path(spec).expanduser()).is_dir():
            kind = _folder_kind(folder)
            if kind is None or kind not in kinds or not (folder / "config.json").is_file():
                continue
            zoo_folder = bool(zoo_env) and folder.parent == Path(zoo_env).expanduser() and folder.name in models.ZOO_NAMES
            choices.append((f"{folder.name} ({'zoo' if zoo_folder else 'local folder'}, {kind.replace('_', ' ')})",
                            spec))
            continue
        else:  # a hub id the operator listed: its kind is known once it is loaded
            choices.append((f"{spec} (listed hub model)", spec))
            continue
        needs = f", {row['needs']}" if row.get("needs") else ""
        choices.append((f"{spec} ({where}, {kind.replace('_', ' ')}{needs})", spec))
    return choices or [(f"{models.ZOO_NAMES[0]} (zoo)", models.ZOO_NAMES[0])]


def _kinds_text(kinds: tuple[str, ...] | list[str]) -> str:
    return " or ".join(k.replace("_", " ") for k in kinds)


def model_status(model: str) -> str:
    info = models.REGISTRY.get(model)
    about = f"\n\n{md_escape(info.note)} ({md_escape(models.hardware_need(info))})." if info else ""
    try:
        adapter = _load_adapter(model)
    except models.ModelLoadError as e:
        return _warn(str(e) if isinstance(e, allowlist.ModelNotAllowed) else f"cannot load {model}: {e}") + about
    tabs = [m.title for m in methods.all_methods().values() if adapter.kind in m.kinds]
    where = f"runs in: {', '.join(tabs)}" if tabs else "no tab runs this kind of model"
    shown = Path(model).name if Path(model).expanduser().is_dir() else model  # a folder: its last part, as the picker
    return (f"✓ **{md_escape(shown)}** loaded: {adapter.kind.replace('_', ' ')}, context {adapter.max_length} tokens, "
            f"on {adapter.device} · {where}.") + about


# ---------------------------------------------------------------- turning states into outputs


def _plot_payload(fig: object) -> PlotData:
    """A figure serialised once, as gr.Plot sends it (its postprocess passes PlotData through unchanged)."""
    return PlotData(type="plotly", plot=fig.to_json())  # type: ignore[attr-defined]


def _render(tab: Tab, state: State, meta: Meta, options: dict, *, plots: bool = True,
            shown: dict[str, PlotData] | None = None, only: str | None = None) -> list:
    """The panels' outputs, in PANELS order. Plot panels the view left out (plots=False) re-send the payload
    last shown (`shown`): see `_stream`. Without `shown`, figures go out as they are. `only`: of the plots, only
    this one is redrawn (the others re-send what they show, if they show something)."""
    rendered = tab.views.render(state, meta, plots=plots, **options)
    out = []
    for panel in tab.panels:
        value = rendered.get(panel.name)
        if panel.kind == "plot" and shown is not None:
            if value is not None and (only in (None, panel.name) or panel.name not in shown):
                shown[panel.name] = _plot_payload(value)
            out.append(shown.get(panel.name, gr.skip()))
        else:
            out.append(gr.skip() if value is None else value)
    return out


def _scrubber(frames: int, label: str = "Step") -> gr.Slider:
    return gr.Slider(minimum=0, maximum=max(frames, 1), value=frames, step=1, interactive=frames > 0,
                     label=f"{label} (0–{frames}): scrub through the finished run")


def _idle_scrubber() -> gr.Slider:
    return gr.Slider(minimum=0, maximum=1, value=0, step=1, interactive=False, label="Step (available after a run)")


def _prune_traces(now: float | None = None) -> int:
    """Delete saved run traces older than TRACE_TTL (called on each save); returns how many went."""
    now = time.time() if now is None else now
    gone = 0
    for old in TRACE_DIR.glob("trace-*.json"):
        try:
            if now - old.stat().st_mtime > TRACE_TTL:
                old.unlink()
                gone += 1
        except OSError:  # another request deleted it first
            pass
    return gone


def _save(trace: Trace) -> str:
    _prune_traces()
    path = TRACE_DIR / f"trace-{re.sub(r'[^A-Za-z0-9_-]', '', trace.meta.method)[:40] or 'run'}-" \
                       f"{time.time_ns() // 1000}.json"
    return str(trace.save(path))


def _final(tab: Tab, run: live.LiveRun, options: dict) -> list:
    """(*panels, status, scrubber, trace file, TraceView) of a finished run."""
    view = run.view
    if run.input_error:
        return _error_outputs(tab, run.error or "the run did not start")
    state = view.latest()
    panels = _render(tab, state, view.meta, options, shown={})
    if run.error:
        status = _warn(f"the run failed: {run.error}")
    elif state.end is None:
        status = _warn("the run ended without its summary")
    else:
        status = tab.views.progress(state, view.meta)
    return [*panels, status, _scrubber(view.frames), _save(run.trace), view]


def _error_outputs(tab: Tab, message: str) -> list:
    return [*[gr.skip()] * len(tab.panels), _warn(message), gr.skip(), gr.skip(), gr.skip()]


# ---------------------------------------------------------------- the generic handlers


def slow_motion_pace(steps_per_second: object) -> float:
    """Seconds each step is held (`live.LiveRun`'s pace) for the page's slow-motion slider: 0 (or anything that is
    not a positive number) = full speed."""
    if isinstance(steps_per_second, bool) or not isinstance(steps_per_second, (int, float)) or \
            not 0 < steps_per_second <= SLOW_MOTION_MAX:
        return 0.0
    return 1.0 / float(steps_per_second)


def _start(tab: Tab, model: str, prompt: str, values: dict, seed: float | None, pace: float = 0.0) -> live.LiveRun:
    """Validate, load, format the prompt through the task, start the decoder in a thread. ValueError with a
    message a user can act on."""
    method = tab.method
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty: type a problem like 12+7-5*3=? or pick an example")
    try:
        params = method.params(**values)  # parameter errors first: no need to load a model to report them
    except ValidationError as e:
        raise ValueError(describe_error(e)) from None
    if seed is None or float(seed) != int(seed):
        raise ValueError(f"the seed must be a whole number, got {seed!r}")
    if not model:
        raise ValueError("pick a model first")
    try:
        adapter = _load_adapter(model)
    except models.ModelLoadError as e:
        raise ValueError(str(e) if isinstance(e, allowlist.ModelNotAllowed) else f"cannot load the model: {e}") \
            from None
    if adapter.kind not in method.kinds:
        raise ValueError(f"{model} is a {adapter.kind.replace('_', ' ')} model; the {method.title} tab runs on "
                         f"{_kinds_text(method.kinds)} models (e.g. a zoo model of that kind)")
    task = task_for(model)
    text = task.format_prompt(prompt)
    trace = Trace.new(model, method.name, params.model_dump(mode="json"), int(seed), task=task.name,
                      expected=task.expected_answer(prompt), **adapter.numerics())
    return live.LiveRun(trace, lambda should_stop: method.decode(adapter, text, params, task=task, seed=int(seed),
                                                                 should_stop=should_stop), pace=pace)


def _split(tab: Tab, values: dict) -> tuple[dict, dict]:
    """The run's keyword inputs: (method parameters, view options)."""
    names = {o.name for o in tab.options}
    return ({k: v for k, v in values.items() if k not in names and k != "seed"},
            {k: v for k, v in values.items() if k in names})


def _stream(tab: Tab, run: live.LiveRun, options: dict) -> Iterator[list]:
    """Yield (*panels, status, scrubber, file, state) as the run goes (live.stream decides when, and when the
    plots are redrawn); the last yield is the finished run.

    Between plot redraws the plot outputs re-send the *same* serialised figure, never gr.skip(): Gradio streams
    a generator's outputs as diffs against its previous yield, and the browser applies those diffs in place to
    the object the Plot is showing, so a skip ({"__type__": "update"}) diffed against a figure deletes the
    figure's keys and the plot vanishes (plotly: "Something went wrong with axis scaling") until the next full
    value. An unchanged payload diffs to nothing: the plot stays as it is."""
    shown: dict[str, PlotData] = {}
    first, scrubber = True, None
    # A periodic plot refresh redraws one plot, in turn: the browser redraws a plotly figure on its main thread,
    # and three at once held the canvas back ~0.5 s at batch 8 (python -m viz.bench_browser --dump).
    plot_names = [p.name for p in tab.panels if p.kind == "plot"]
    turn, drawn = 0, False  # drawn: plots of a step past 0 have gone out
    for frame in live.stream(run, plots_every=live.PLOTS_EVERY / max(len(plot_names), 1)):
        if frame.final:
            final = run.final_options() or options
            if not first:  # the answer first, then the final plots, scrubber and file
                state = run.view.latest()
                panels = _render(tab, state, run.trace.meta, final, plots=False, shown=shown)
                yield [*panels, tab.views.progress(state, run.trace.meta), scrubber, None, run.view]
            yield _final(tab, run, final)
            return
        only = None
        if frame.plots and not frame.forced and plot_names:
            only, turn = plot_names[turn % len(plot_names)], turn + 1
        status = tab.views.progress(frame.state, run.trace.meta)
        if frame.forced and plot_names and drawn:
            # All plots redrawn (a new round, a clicked chip): the canvas of this state goes out on its own first,
            # the plots right behind it, so their drawing does not hold the canvas back. Not the first plots of a
            # step: the page would show a later step with plots still empty.
            panels = _render(tab, frame.state, run.trace.meta, run.options, plots=False, shown=shown)
            yield [*panels, status, scrubber, None, run.view]
        # run.options: the view options as the page has them now (a chip clicked during the run: scrub_tab)
        panels = _render(tab, frame.state, run.trace.meta, run.options, plots=frame.plots, shown=shown, only=only)
        # The scrubber, the download and the page's state follow this run from its first frame (not the previous
        # run's); the scrubber moves with the plots (its listener is `.input`: this redraws nothing). Every output
        # gets a value, the same one as last time when nothing changed (it diffs to nothing): a gr.skip() costs
        # the browser a snapshot of the component's state on every frame.
        if first or frame.plots:
            scrubber = _live_scrubber(frame.state.frame)
        yield [*panels, status, scrubber, None, run.view]
        first, drawn = False, drawn or (frame.plots and frame.state.frame > 0)


@gpu  # ZeroGPU: a GPU is attached while a run streams (a no-op without the `spaces` package)
def run_tab(tab: Tab, model: str, prompt: str, values: dict, request: gr.Request | None) -> Iterator[list]:
    """Run button of any tab: start this tab's run (stopping only this tab's previous run) and stream it."""
    values = dict(values)
    pace = slow_motion_pace(values.pop("slow_motion", 0))
    params, options = _split(tab, values)
    try:
        run = _start(tab, model, prompt, params, values.get("seed"), pace)
    except (ValueError, TypeError) as e:  # ModelLoadError is a ValueError
        yield _error_outputs(tab, str(e))
        return
    run.options = dict(options)
    RUNS.start((_session(request), tab.name), run)
    yield from _stream(tab, run, options)


def stop_tab(tab: Tab, request: gr.Request | None, options: dict) -> list:
    """Stop button of any tab: set the flag this tab's run polls (it ends after its current step), then draw the
    stopped run: `cancels=` may have ended the stream already, so this handler returns the final views itself."""
    run = RUNS.get((_session(request), tab.name))
    if run is None or run.done.is_set():
        return [*[gr.skip()] * len(tab.panels), "Nothing is running.", gr.skip(), gr.skip(), gr.skip()]
    if not run.request_stop():
        return _error_outputs(tab, "the run did not stop in time; it will stop after its step")
    run.final_options()  # `cancels=` ends the stream: later chip clicks draw the stopped run themselves
    return _final(tab, run, options)


def scrub_tab(tab: Tab, view: live.TraceView | None, frame: float | None, options: dict,
              session: str | None = None) -> list:
    """The scrubber (and the view options) of a run: the state after `frame` steps. While the run is live (the
    session's run of this tab, still going), its latest state with these options, which the stream keeps
    using from its next frame on."""
    if view is None or frame is None:
        return [gr.skip()] * len(tab.panels)
    if frame < 0:  # the live scrubber (LIVE): the page shows the run as it goes, or its end if it just ended
        run = RUNS.get((session, tab.name)) if session is not None else None
        if run is not None and run.view is view and run.set_options(options):
            return [gr.skip()] * len(tab.panels)  # the stream draws them, plots included, at its next frame
        return _render(tab, view.latest(), view.meta, options)
    return _render(tab, view.at(int(frame)), view.meta, options)


SLOW_MOTION_MAX = 20  # steps per second the slow-motion slider offers at most
LIVE = -1  # the scrubber's value while a run streams: "the latest step", whichever that is when a handler runs


def _live_scrubber(frame: int) -> gr.Slider:
    """The scrubber during a run: it says which step is shown and holds LIVE, so a chip clicked now selects in the
    live run, and a click that is handled only after the run has ended redraws the end, not a stale step."""
    return gr.Slider(minimum=LIVE, maximum=max(frame, 1), value=LIVE, step=1, interactive=False,
                     label=f"Step {frame} (live: scrub when the run ends)")


def step_or_live(raw: object) -> int | None:
    """A step slider's raw value from the page: LIVE, a step (whole number >= 0), or None (anything else)."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not float(raw).is_integer():
        return None
    return int(raw) if raw >= LIVE else None


def checked_inputs(components: dict, raw: dict) -> dict:
    """Raw event inputs through their components' own checks (what Gradio does when `preprocess` is on)."""
    return {name: components[name].preprocess(value) for name, value in raw.items()}


def chip_options(options: dict, data: object) -> dict:
    """The view options after a chip click (page.js sends {position, sample}): only the options the view has,
    only whole numbers in range; anything else in the event is ignored."""
    out = dict(options)
    if isinstance(data, dict):
        for name in SELECT:
            value = data.get(name)
            if name in out and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and float(value).is_integer() and 0 <= value < 1_000_000:
                out[name] = int(value)
    return out


def upload_trace(tabs: dict[str, Tab], path: str | None, options: dict[str, dict], session: str = "default",
                 path_b: str | None = None) -> list:
    """Replay tab: load a trace file (validated, its cost bounded: decoding.trace.check_work), pick the views of
    its method, draw its final state. The TraceView stays server-side in VIEWS under (session, "replay"); the
    page's state gets only that key. The session's previous replay is dropped first (one at a time per page).
    With a second file (`path_b`), the two become one trace of the method that takes pairs (`Method.pair`)."""
    n_panels = sum(len(t.panels) for t in tabs.values())

    def fail(message: str) -> list:
        return [None, _idle_scrubber(), _warn(f"cannot replay this file: {message}"), *[gr.skip()] * len(tabs),
                *[gr.skip()] * n_panels]

    if not path:
        return fail("upload the first trace, then the second") if path_b else \
            [gr.skip(), gr.skip(), "", *[gr.skip()] * len(tabs), *[gr.skip()] * n_panels]
    VIEWS.drop((session, "replay"))
    try:
        size = Path(path).stat().st_size
        trace = Trace.load(path)
        if path_b:
            pair = next((t.method.pair for t in tabs.values() if t.method.pair), None)
            if pair is None:
                return fail("no method of this app compares two traces")
            try:
                second = Trace.load(path_b)
            except TraceError as e:
                return fail(f"the second file: {e}")
            size += Path(path_b).stat().st_size
            trace = pair(trace, second)
    except (TraceError, ValueError) as e:
        return fail(str(e))
    except Exception as e:  # a file the loader did not expect must not take the app down
        return fail(f"{type(e).__name__}: {e}")
    tab = tabs.get(trace.meta.method)
    if tab is None:
        return fail(f"it was made by the method {trace.meta.method[:60]!r}, which this app has no views for "
                    f"(it knows: {', '.join(tabs)})")
    view = live.TraceView(trace)
    try:
        frames = view.frames
        panels = _replay_panels(tabs, tab, view.latest(), trace.meta, options)
    except Exception as e:  # a file that passes the schema but does not make sense
        return fail(f"inconsistent trace ({type(e).__name__}: {e})")
    meta = trace.meta
    info = (f"▶ replaying **{md_escape(tab.method.title)}**{' (two traces)' if path_b else ''} on "
            f"**{md_escape(meta.model)}** (seed {meta.seed}), "
            f"{frames} steps"
            + (f" · expected answer {md_escape(meta.expected)}" if meta.expected is not None else ""))
    groups = [gr.Column(visible=name == tab.name) for name in tabs]
    return [VIEWS.put(session, "replay", view, size), _scrubber(frames), info, *groups, *panels]


def _replay_panels(tabs: dict[str, Tab], tab: Tab, state: State, meta: Meta, options: dict[str, dict]) -> list:
    out = []
    for other in tabs.values():
        out += _render(tab, state, meta, options.get(tab.name, {})) if other is tab else [gr.skip()] * len(other.panels)
    return out


def scrub_replay(tabs: dict[str, Tab], view: live.TraceView | tuple | None, frame: float | None,
                 options: dict[str, dict]) -> list:
    if not isinstance(view, live.TraceView):  # the key upload_trace put in the page's state
        view = VIEWS.get(view)
    tab = tabs.get(view.meta.method) if view is not None else None
    if tab is None or frame is None:
        return [gr.skip()] * sum(len(t.panels) for t in tabs.values())
    return _replay_panels(tabs, tab, view.at(int(frame)), view.meta, options)


def close_session(request: gr.Request) -> None:
    """The page closed (Gradio's unload, on the heartbeat's disconnect): free its replayed trace and its runs
    (stopping any still going) at once, not when Gradio drops its session state an hour later."""
    session = _session(request)
    if VIEWS.drop_session(session) + RUNS.drop_session(session):
        live.release_memory()


# ---------------------------------------------------------------- layout


def _examples(tab: Tab, prompt: gr.Textbox) -> gr.Examples:
    """The tab's examples (decoding.methods.examples: chosen by measurement, examples/prompts.json), each labelled
    with what it shows."""
    rows = methods.examples(tab.method)
    labels = [f"{e['label']} · {e['question']}" if e.get("label") else
              f"L{e['level']}: {e['question']}" if e.get("level") else str(e["question"]) for e in rows]
    return gr.Examples(
        examples=[[e["question"]] for e in rows],
        inputs=[prompt],
        example_labels=labels,
        label="Example problems, each chosen for what it shows (the answer is checked automatically)",
        examples_per_page=10,
    )


def _context(model: str, prompt: str) -> Context | None:
    """The model's context and the formatted prompt's length, for the parameters' limits; None when the model is not
    on the list or does not load (the run then says why)."""
    try:
        adapter = _load_adapter(model)
        return Context.of(adapter, task_for(model).format_prompt(prompt) if prompt and prompt.strip() else None)
    except Exception:  # the limits fall back to the controls' ranges
        return None


def _numeric(tab: Tab) -> list[str]:
    return [n for n, _, _ in tab.method.params.controls() if tab.method.params.model_fields[n].annotation in (int, float)]


def limits_tab(tab: Tab, model: str, prompt: str, values: dict, trigger: str | None = None,
               fields: list[str] | None = None) -> list:
    """A parameter (`trigger`) was typed or dragged (raw, un-clamped values: the event skips Gradio's preprocess), or
    the model or prompt changed (`trigger` None): bring each value to the nearest one that runs (Params.adjust), set
    each slider of `fields` (default: every numeric one) to the range that runs (Params.limits), and say what was
    changed and why in the tab's notes line. A value goes back to the page only when it was changed, or is the
    trigger's (the browser has clamped that one), so a slow answer never overwrites what was typed meanwhile."""
    params = tab.method.params
    context = _context(model, prompt)
    fixed, notes = params.adjust(values, context)
    limits = params.limits(fixed, context)
    hints = {n: h for n, _, h in params.controls()}
    out = []
    for name in _numeric(tab) if fields is None else fields:
        limit, hint = limits.get(name), hints[name]
        value = {"value": fixed[name]} if name == trigger or fixed[name] != values.get(name) else {}
        if limit is None or hint.get("minimum") is None or hint.get("maximum") is None:  # a Number: value only
            out.append(gr.update(**value))
            continue
        lo = hint["minimum"] if limit.minimum is None else limit.minimum
        hi = hint["maximum"] if limit.maximum is None else limit.maximum
        step = limit.step or hint.get("step")
        if step and not limit.step and limit.whole:  # an int slider's own grid (answer length in 8s) ends on it
            hi = lo + (hi - lo) // step * step
        out.append(gr.update(minimum=lo, maximum=hi, step=step, **value))
    note = "  \n".join(f"ℹ {md_escape(n)}" for n in notes)
    return [*out, note if note or trigger is not None else gr.skip()]  # a new prompt leaves the last note alone


def _context_fields(tab: Tab) -> list[str]:
    """The numeric parameters whose range depends on the model's context (their limits change with a tiny one)."""
    params = tab.method.params
    defaults = params().model_dump()
    free, tight = params.limits(defaults, None), params.limits(defaults, Context(max_length=1))
    return [n for n in _numeric(tab) if free.get(n) != tight.get(n)]


def _elem(tab: Tab | str, name: str) -> str:
    return f"{tab if isinstance(tab, str) else tab.name}-{name.replace('_', '-')}"


def _control(tab: Tab, name: str, default: object, hints: dict):
    """One parameter's input: Literal -> Dropdown, bool -> Checkbox, bounded number -> Slider, else Number; the
    hint's `help` line shows under it. The ranges here are the hints'; `limits_tab` narrows them to what runs."""
    annotation = tab.method.params.model_fields[name].annotation
    label, elem_id, info = str(hints.get("label", name)), _elem(tab, name), hints.get("help")
    lo, hi, step = hints.get("minimum"), hints.get("maximum"), hints.get("step")
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        return gr.Dropdown(choices, value=default, label=label, info=info, elem_id=elem_id)
    if annotation is bool:
        return gr.Checkbox(bool(default), label=label, info=info, elem_id=elem_id)
    if annotation in (int, float) and lo is not None and hi is not None:
        if step is None:
            step = 1 if annotation is int else (hi - lo) / 100
        return gr.Slider(lo, hi, value=default, step=step, label=label, info=info, elem_id=elem_id)
    # no minimum / maximum here: Gradio would refuse an out-of-range number with a pop-up of its own; the
    # method's validation says what is wrong in the status line instead
    return gr.Number(default, label=label, info=info, step=step or 1, precision=0 if annotation is int else None,
                     elem_id=elem_id)


def _wire_limits(tab: Tab, model: gr.Dropdown, prompt: gr.Textbox, params: dict, notes: gr.Markdown) -> None:
    """Every value a user sets goes through `limits_tab` with its raw value: Gradio clamps a slider's typed number in
    the browser and its preprocess refuses an out-of-range one, so these events skip preprocess (they see what was
    typed) and the notes line says what changed. Sliders on release, numbers on blur / submit, the rest on change,
    each its own event (one control's answer never waits behind another's, which would read clamped values); the
    page's load sets every range, a new model or prompt re-derives those that depend on the context."""
    names = list(params)
    common = {"inputs": [model, prompt, *params.values()], "preprocess": False, "show_progress": "hidden",
              "api_visibility": "private", "trigger_mode": "always_last"}

    def handler(trigger: str | None, fields: list[str]):
        def fn(model_value: str, prompt_value: str, *values) -> list:
            return limits_tab(tab, model_value, prompt_value, dict(zip(names, values, strict=True)), trigger, fields)
        return fn

    numeric = _numeric(tab)
    for name, component in params.items():
        if isinstance(component, gr.Slider):
            triggers = [component.release]
        elif isinstance(component, gr.Number):
            triggers = [component.blur, component.submit]
        else:
            triggers = [component.change]
        gr.on(triggers, handler(name, numeric), outputs=[*(params[n] for n in numeric), notes], **common)
    page = gr.context.Context.root_block  # the Blocks being built: its load sets every range for the default model
    if page is not None:
        page.load(handler(None, numeric), outputs=[*(params[n] for n in numeric), notes], **common)
    fields = _context_fields(tab)  # a new model or prompt re-bounds only these: no stale range for the others
    if fields:
        gr.on([model.change, prompt.change], handler(None, fields), outputs=[*(params[n] for n in fields), notes],
              **common)


def _option(prefix: str, option: Option) -> gr.Number:
    whole = float(option.default).is_integer()
    return gr.Number(option.default, label=option.label, minimum=option.minimum, precision=0 if whole else None,
                     elem_id=_elem(prefix, f"option-{option.name}"))


# Panels side by side wrap onto their own lines below this width: on a phone (390 px) two of them made columns
# of three words a line (the voting tally: test-output/teaching-voting-after-390.png)
PANEL_MIN_WIDTH = 320


def _panel(prefix: str, panel: Panel):
    if panel.kind == "plot":
        return gr.Plot(empty_figure(panel.placeholder or panel.label, panel.height), label=panel.label,
                       show_label=False, elem_id=_elem(prefix, panel.name))
    return gr.HTML(panel.placeholder, label=panel.label, elem_id=_elem(prefix, panel.name),
                   elem_classes="dl-html-panel", js_on_load=PANEL_JS)


def _panels(prefix: str, panels: list[Panel], after_first=None) -> list:
    """The panels in page order; consecutive panels with the same `row` sit side by side. `after_first`: a
    callback that places something (the scrubber) right below the first panel."""
    out: list = []
    i = 0
    while i < len(panels):
        group = [panels[i]]
        while panels[i].row is not None and i + len(group) < len(panels) and panels[i + len(group)].row == panels[i].row:
            group.append(panels[i + len(group)])
        if len(group) > 1:
            with gr.Row(equal_height=False):
                for p in group:
                    with gr.Column(min_width=PANEL_MIN_WIDTH):  # (an HTML block's own min_width is not applied)
                        out.append(_panel(prefix, p))
        else:
            out.append(_panel(prefix, group[0]))
        if i == 0 and after_first is not None:
            after_first()
        i += len(group)
    return out


def _method_tab(tab: Tab, model: gr.Dropdown, slow_motion: gr.Slider) -> None:
    method = tab.method
    with gr.Tab(method.title, id=method.name):
        if method.intro:
            look = f"\n\n**What to look for:** {method.look_for}" if method.look_for else ""
            gr.Markdown(method.intro + look, elem_id=_elem(tab, "intro"))
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                first = methods.examples(method)[0]["question"]  # the first example is the one the intro describes
                prompt = gr.Textbox(first, label="Prompt", lines=2, elem_id=_elem(tab, "prompt"))
                _examples(tab, prompt)
                controls = method.params.controls()
                params = {name: _control(tab, name, default, hints)
                          for name, default, hints in controls if not hints.get("advanced")}
                with gr.Accordion("More parameters", open=False):
                    params |= {name: _control(tab, name, default, hints)
                               for name, default, hints in controls if hints.get("advanced")}
                    seed = gr.Number(tab.default_seed, precision=0, label="Seed (sample i: seed + i)",
                                     elem_id=_elem(tab, "seed"))
                params = {name: params[name] for name, _, _ in controls}  # declaration order for the API
                notes = gr.Markdown("", elem_id=_elem(tab, "notes"))  # what a value was changed to, and why
                _wire_limits(tab, model, prompt, params, notes)
                with gr.Row():
                    run = gr.Button("▶ Run", variant="primary", elem_classes="dl-run", elem_id=_elem(tab, "run"))
                    stop = gr.Button("■ Stop", variant="stop", elem_classes="dl-stop", elem_id=_elem(tab, "stop"))
            with gr.Column(scale=3):
                status = gr.Markdown("Pick an example and press **Run**.", elem_id=_elem(tab, "status"))
                scrub: list = []
                options: dict[str, gr.Number] = {}

                def place_scrubber() -> None:  # the view controls sit below the first panel (the canvas)
                    scrub.append(gr.Slider(0, 1, 0, step=1, label="Step (available after a run)", interactive=False,
                                           elem_id=_elem(tab, "scrub")))
                    if tab.options:
                        with gr.Row():
                            options.update({o.name: _option(tab.name, o) for o in tab.options})

                tab.panel_components = _panels(tab.name, tab.panels, place_scrubber)
                file = gr.DownloadButton("↓ Download trace (JSON)", value=None, size="sm", elem_id=_elem(tab, "file"))
                extras = getattr(tab.views, "extras", None)  # optional: [(label, HTML or figure)] shown below
                if callable(extras):
                    for label, value in extras():
                        with gr.Accordion(label, open=True):
                            if isinstance(value, str):
                                gr.HTML(value)
                            else:
                                gr.Plot(value, label=label, show_label=False)
        trace_state = gr.State(None)
    outputs = [*tab.panel_components, status, scrub[0], file, trace_state]

    def run_fn(model: str, prompt: str, request: gr.Request, **values) -> Iterator[list]:
        yield from run_tab(tab, model, prompt, values, request)

    def stop_fn(request: gr.Request, **options) -> list:
        return stop_tab(tab, request, options)

    def scrub_fn(view: live.TraceView | None, frame: float, request: gr.Request, **options) -> list:
        return scrub_tab(tab, view, frame, options, _session(request))

    option_components = dict(options)

    def chip_fn(view: live.TraceView | None, frame: object, evt: gr.EventData, request: gr.Request,
                **options) -> list:
        options = checked_inputs(option_components, options)  # (registered with preprocess=False, below)
        chosen = chip_options(options, evt._data)
        return [*(chosen[n] for n in options), *scrub_tab(tab, view, step_or_live(frame), chosen, _session(request))]

    event = run.click(run_fn, [model, prompt], outputs,
                      inputs_kwargs={**params, "seed": seed, "slow_motion": slow_motion, **options},
                      api_name=f"run_{tab.name}", show_progress="minimal")
    stop.click(stop_fn, None, outputs, inputs_kwargs=options, cancels=[event], api_name=f"stop_{tab.name}",
               concurrency_limit=None)
    scrub_args = {"fn": scrub_fn, "inputs": [trace_state, scrub[0]], "outputs": tab.panel_components,
                  "inputs_kwargs": options, "show_progress": "hidden", "trigger_mode": "always_last"}
    # `.input`: a user's scrub or typed option; the stream's own updates of the scrubber redraw nothing
    scrub[0].input(**scrub_args, api_name=f"scrub_{tab.name}")
    for component in options.values():
        component.input(**scrub_args, api_visibility="private")
    if set(SELECT) & set(options):  # a chip click sets position / sample and redraws (viz/page.js)
        for component, panel in zip(tab.panel_components, tab.panels):
            if panel.kind == "html":
                # preprocess=False: the page still sends LIVE for a chip clicked as the run ends, after the
                # finished run's slider (0 to N) has gone out, and Gradio's check refused it (the click was lost)
                component.chip(chip_fn, [trace_state, scrub[0]], [*options.values(), *tab.panel_components],
                               inputs_kwargs=options, show_progress="hidden", trigger_mode="always_last",
                               api_visibility="private", preprocess=False)


def _replay_tab(tabs: dict[str, Tab]) -> None:
    with gr.Tab("Replay a trace", id="replay"):
        gr.Markdown("Upload a trace downloaded from this app: it replays with no model loaded, in the views of the "
                    "method that made it. Add a second trace (two seeds, methods or settings) to see where the two "
                    "part, and why, in the Divergence views.")
        file = gr.File(label="Trace (.json)", file_types=[".json"], elem_id="replay-file")
        file_b = gr.File(label="Second trace (optional, to compare)", file_types=[".json"], elem_id="replay-file-b")
        status = gr.Markdown("", elem_id="replay-status")
        scrub = gr.Slider(0, 1, 0, step=1, label="Step", interactive=False, elem_id="replay-scrub")
        groups, panels, options, own = [], [], {}, {}
        for tab in tabs.values():
            with gr.Column(visible=False) as group:
                own[tab.name] = _panels(f"replay-{tab.name}", tab.panels)
                panels += own[tab.name]
                if tab.options:
                    with gr.Row():
                        for o in tab.options:
                            options[f"{tab.name}__{o.name}"] = _option(f"replay-{tab.name}", o)
            groups.append(group)
        state = gr.State(None)

    def by_tab(values: dict) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for key, value in values.items():
            name, _, option = key.partition("__")
            out.setdefault(name, {})[option] = value
        return out

    def upload_fn(path: str | None, request: gr.Request, **values) -> list:
        return upload_trace(tabs, path, by_tab(values), _session(request))

    def scrub_fn(key: tuple | None, frame: float, **values) -> list:
        return scrub_replay(tabs, key, frame, by_tab(values))

    def pair_fn(path: str | None, path_b: str | None, request: gr.Request, **values) -> list:
        return upload_trace(tabs, path, by_tab(values), _session(request), path_b)

    file.upload(upload_fn, [file], [state, scrub, status, *groups, *panels], inputs_kwargs=options,
                api_name="upload_trace")
    file_b.upload(pair_fn, [file, file_b], [state, scrub, status, *groups, *panels], inputs_kwargs=options,
                  api_name="upload_pair")
    scrub_args = {"fn": scrub_fn, "inputs": [state, scrub], "outputs": panels, "inputs_kwargs": options,
                  "show_progress": "hidden", "trigger_mode": "always_last"}
    scrub.input(**scrub_args, api_name="scrub_replay")  # a user's scrub (upload_trace draws the last step itself)
    for component in options.values():
        component.input(**scrub_args, api_visibility="private")
    def chip_for(tab: Tab):
        def chip_fn(key: tuple | None, frame: float, evt: gr.EventData, **values) -> list:
            mine = chip_options(by_tab(values).get(tab.name, {}), evt._data)
            values |= {f"{tab.name}__{n}": v for n, v in mine.items()}
            return [*(values[k] for k in options), *scrub_replay(tabs, key, frame, by_tab(values))]
        return chip_fn

    for tab in tabs.values():  # a chip click in a replayed view sets that view's position / sample (viz/page.js)
        if not any(f"{tab.name}__{n}" in options for n in SELECT):
            continue
        for component, panel in zip(own[tab.name], tab.panels):
            if panel.kind == "html":
                component.chip(chip_for(tab), [state, scrub], [*options.values(), *panels], inputs_kwargs=options,
                               show_progress="hidden", trigger_mode="always_last", api_visibility="private")


def _about(tabs: dict[str, Tab]) -> str:
    """The About box: docs/ABOUT.md (for people: what the app shows, the models, how examples and limits are
    chosen), then each method's `about` (how it works, its strategies, every deviation from its paper)."""
    parts = [ABOUT.read_text().strip()] if ABOUT.is_file() else []
    for tab in tabs.values():
        if tab.method.about.strip():
            parts.append(f"### {tab.method.title}\n{tab.method.about.strip()}")
    return "\n\n".join(parts)


def build(allow_models: typing.Sequence[str] = ()) -> gr.Blocks:
    """The app. `allow_models`: folders or hub ids added to the model list (besides DECODING_LENS_MODELS)."""
    ALLOWED[:] = allowlist.allowed_models(allow_models)
    allowlist.enable(ALLOWED)
    tabs = {name: _tab(method) for name, method in methods.all_methods().items()}
    choices = _model_choices({kind for tab in tabs.values() for kind in tab.method.kinds})
    # delete_cache: Gradio's copies of uploads and downloads go after TRACE_TTL too (checked every TRACE_TTL / 4)
    with gr.Blocks(title="Decoding Lens", delete_cache=(max(60, TRACE_TTL // 4), TRACE_TTL)) as demo:
        gr.Markdown(HEADER)
        with gr.Row(equal_height=True):
            model = gr.Dropdown(choices, value=choices[0][1], label="Model (zoo first; hub models need their weights)",
                                allow_custom_value=True, scale=2, elem_id="model")
            model_info = gr.Markdown("", elem_id="model-info")
            # the zoo decodes a run in about a second: too fast to watch it live in a classroom
            slow_motion = gr.Slider(0, SLOW_MOTION_MAX, value=0, step=1, scale=1, elem_id="slow-motion",
                                    label="Slow motion: steps per second while a run is shown live (0 = full speed)")
        model.change(model_status, model, model_info, concurrency_limit=1)
        with gr.Tabs():
            for tab in tabs.values():
                _method_tab(tab, model, slow_motion)
            _replay_tab(tabs)
        with gr.Accordion("About these methods (and where this app deviates from the papers)", open=False):
            gr.Markdown(_about(tabs))
        demo.unload(close_session)
    return demo


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Serve Decoding Lens (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT).")
    parser.add_argument("--allow-model", action="append", default=[], metavar="SPEC",
                        help="add a local folder or hub id to the model list (repeatable; DECODING_LENS_MODELS: "
                             "comma-separated, the same)")
    demo = build(parser.parse_args().allow_model)
    # Bounded queue: a busy public demo refuses new work instead of piling it up; two runs at once per event.
    demo.queue(max_size=16, default_concurrency_limit=2)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        css=CSS,
        max_file_size="60mb",
        theme=gr.themes.Soft(),
    )
