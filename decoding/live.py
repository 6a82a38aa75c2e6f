"""Live runs: a decoder in a background thread appending to a Trace, and the loop that decides what to show.

    run = LiveRun(trace, lambda should_stop: method.decode(adapter, prompt, params, task=task, seed=seed,
                                                          should_stop=should_stop))
    RUNS.start((session, method.name), run)   # a new run of the same key stops the previous one
    for frame in stream(run):                 # Frame(state, plots, final): what the page should show now
        ...                                   # the app renders frame.state with the method's view module

`stream` polls the growing trace and folds only the events added since its last look (decoding.fold.Fold), so a
tick costs the new events, not the whole trace. It throttles: the HTML panels ~12×/s (`HTML_EVERY`), the plots
every `plots_every` seconds (they cost more to draw and to send; they are drawn as soon as there is a step; the app
redraws one plot per periodic frame, in turn, and all of them on a `forced` frame), and every `Selection` (a voting
round, a search's choice) reaches the page in turn
even when several land between two polls. Stop is a flag the decoder polls (`should_stop`), so a run ends within
one step even when the stream itself was cancelled; a stream that ends early (the page went away) stops its run.

`TraceView` (a trace, its Fold and a lock) is what the app keeps per finished run or uploaded trace for
scrubbing: `at(frame)` restores the nearest Fold checkpoint instead of re-folding from the start.
Every State handed out is a private copy, so a view may render it while another thread folds on.
Plain Python: no gradio, no torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import queue
import threading
import time
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass

from decoding.fold import Fold, State
from decoding.trace import Selection, Trace

# seconds between streamed updates: ~12/s for HTML; the plots every 2 s (a plotly redraw of three figures costs the
# browser several times what the canvas does: python -m viz.bench_browser)
HTML_EVERY, PLOTS_EVERY = 0.08, 2.0
POLL = 0.02  # seconds between looks at the growing trace
MAX_LIVE = 256  # live runs remembered (for Stop), over all sessions and tabs
MAX_VIEWS = 256  # finished runs / uploaded traces kept for scrubbing, over all sessions and tabs
MAX_VIEW_BYTES = 200 * 2**20  # ... and their traces' JSON bytes at most (a 50 MB upload holds ~0.5 GB in memory)
STOP_WAIT = 30.0  # seconds Stop waits for the decoder to finish its current step


class TraceView:
    """A trace (possibly still growing) folded for display: `latest()`, `at(frame)`, `frames`; thread-safe."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self.fold = Fold(trace)
        self.lock = threading.Lock()

    @property
    def meta(self):
        return self.trace.meta

    @property
    def frames(self) -> int:
        with self.lock:
            return self.fold.frames

    def latest(self) -> State:
        """A copy of the state after every event appended so far."""
        with self.lock:
            return self.fold.latest().copy()

    def at(self, frame: int | None) -> State:
        """A copy of the state after `frame` steps (None or past the end: everything)."""
        with self.lock:
            state = self.fold.at(frame)
            return state.copy() if state is self.fold.head else state

    def after_events(self, n: int) -> State:
        """A copy of the state with exactly the first `n` events applied (a Selection shown in turn)."""
        with self.lock:
            self.fold.latest()
            starts, events = self.fold.frame_starts, self.trace.events
            f = bisect_right(starts, n) - 1  # the last frame whose state holds at most n events
            state = self.fold.at(f) if f >= 0 else State()
            if state is self.fold.head:
                state = state.copy()
            if state.events > n:  # cannot happen with a consistent Fold; fold from scratch rather than show wrong
                state = State()
            while state.events < min(n, len(events)):
                state.apply(events[state.events])
            state.frame = bisect_left(starts, n)  # the frames begun within those events
            return state


@dataclass
class _Raised:
    """An exception of the decoder's thread, handed to the thread that consumes its events (slow motion)."""

    error: Exception


class LiveRun:
    """One run: a thread feeds the decoder's events into `trace`; `stop` is the flag the decoder polls.

    `events(should_stop)` must return the decoder's event iterator; it is called in the worker thread, so a
    decoder that checks its inputs before its first event reports those errors here too. After `done`:
    `error` holds "Type: message" when the decoder raised, `input_error` is True when that was a ValueError
    before any event (a bad prompt or setting the decoder refused: shown as the user's mistake, not a crash)."""

    def __init__(self, trace: Trace, events: Callable[[Callable[[], bool]], Iterable], pace: float = 0.0):
        self.trace = trace
        # slow motion (a classroom watching the zoo, whose runs take a second): each new step is shown `pace`
        # seconds after the previous one; `paused` sums the holds
        self.pace, self.paused = max(0.0, float(pace)), 0.0
        self.view = TraceView(trace)
        self.stop, self.done = threading.Event(), threading.Event()
        self.error: str | None = None
        self.input_error = False
        # the view options in force (a clicked chip's position, the sample the plots describe): the app's stream
        # renders each frame with them, and an option changed during the run takes effect at the next frame
        self.options: dict = {}
        self.redraw = threading.Event()  # set when the options change: the stream redraws the plots at once
        # Once the final views are drawn (`final_options`), a change is no longer the stream's to draw. The lock
        # makes "set the options" and "take them for the final views" one or the other, never both half-way: a
        # chip clicked as the run ended was lost (the stream drew the end with the old options).
        self._options_lock = threading.Lock()
        self._final_taken = False
        self.thread = threading.Thread(target=self._run, args=(events,), daemon=True, name="decoding-lens-run")
        self.thread.start()

    def _run(self, events: Callable[[Callable[[], bool]], Iterable]) -> None:
        try:
            for event in self._paced(events(self.stop.is_set)):
                self.trace.add(event)
        except Exception as e:
            self.input_error = isinstance(e, ValueError) and not self.trace.events
            self.error = str(e) if self.input_error else f"{type(e).__name__}: {e}"
        finally:
            self.done.set()

    def _paced(self, events: Iterable) -> Iterator:
        """The decoder's events, in slow motion when `pace` > 0: the decoder runs at full speed in its own thread into
        a queue, and each new step is let out `pace` seconds after the previous one. The decoder never waits, so
        every time it measures (RunEnd.seconds, HARP's plain vs HARP seconds) is its own."""
        if not self.pace:
            yield from events
            return
        released: queue.SimpleQueue = queue.SimpleQueue()
        end = object()

        def decode() -> None:
            try:
                for event in events:
                    released.put(event)
                released.put(end)
            except Exception as e:  # raised where the events are consumed, as without slow motion
                released.put(_Raised(e))

        threading.Thread(target=decode, daemon=True, name="decoding-lens-decoder").start()
        step, due = None, 0.0
        while (event := released.get()) is not end:
            if isinstance(event, _Raised):
                raise event.error
            at = getattr(event, "step", None)
            if isinstance(at, int) and at != step:
                if step is not None:
                    t0 = time.monotonic()
                    self.stop.wait(max(0.0, due - t0))  # Stop cuts a hold short
                    self.paused += time.monotonic() - t0
                step, due = at, time.monotonic() + self.pace
            yield event

    def set_options(self, options: dict) -> bool:
        """Hand the page's view options to the stream; False when its final views were already taken (the caller
        draws them itself)."""
        with self._options_lock:
            if self._final_taken:
                return False
            self.options = dict(options)
            self.redraw.set()
            return True

    def final_options(self) -> dict:
        """The options for the run's final views; later changes go to `set_options`' caller."""
        with self._options_lock:
            self._final_taken = True
            return dict(self.options)

    def request_stop(self, wait: float = STOP_WAIT) -> bool:
        """Set the flag and wait (at most `wait` s) for the decoder to end its step; True when it has ended."""
        self.stop.set()
        return self.done.wait(wait)

    @property
    def ended(self):
        """The trace's RunEnd, or None while running (or when the decoder failed before writing one)."""
        events = self.trace.events
        return events[-1] if events and events[-1].kind == "end" else None


class Runs:
    """The live runs, keyed (e.g. by (session, method)): starting a run stops the previous run of its key only."""

    def __init__(self, limit: int = MAX_LIVE):
        self.limit = limit
        self.runs: dict[Hashable, LiveRun] = {}
        self.lock = threading.Lock()

    def start(self, key: Hashable, run: LiveRun) -> LiveRun:
        with self.lock:
            previous = self.runs.pop(key, None)
            self.runs[key] = run
            while len(self.runs) > self.limit:  # forget finished runs first, then the oldest (stopping it)
                old = next((k for k, r in self.runs.items() if r.done.is_set()), next(iter(self.runs)))
                self.runs.pop(old).stop.set()
        if previous is not None:
            previous.stop.set()  # a new Run in the same tab stops the old one
        return run

    def get(self, key: Hashable) -> LiveRun | None:
        with self.lock:
            return self.runs.get(key)

    def drop_session(self, session: Hashable) -> int:
        """Forget (and stop) every run whose key is (session, ...): the page that started them has closed."""
        with self.lock:
            keys = [k for k in self.runs if isinstance(k, tuple) and k and k[0] == session]
            dropped = [self.runs.pop(k) for k in keys]
        for run in dropped:
            run.stop.set()
        return len(dropped)


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc's malloc_trim), so a big replay's memory
    does not stay in the process after its page closed."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Views:
    """TraceViews kept server-side for scrubbing (an uploaded trace, a finished run), keyed (session, slot); the
    page's gr.State holds only the key, so nothing big is copied or kept by Gradio's session state. Bounded by
    count and by weight (the trace's JSON bytes): the least recently used views go first, and `drop_session`
    frees a closed page's views at once."""

    def __init__(self, limit: int = MAX_VIEWS, max_weight: int = MAX_VIEW_BYTES):
        self.limit, self.max_weight = limit, max_weight
        self.views: OrderedDict[tuple, tuple[TraceView, int]] = OrderedDict()
        self.lock = threading.Lock()

    def put(self, session: Hashable, slot: Hashable, view: TraceView, weight: int = 0) -> tuple:
        key = (session, slot)
        with self.lock:
            self.views.pop(key, None)
            self.views[key] = (view, max(0, int(weight)))
            total = sum(w for _, w in self.views.values())
            while len(self.views) > 1 and (len(self.views) > self.limit or total > self.max_weight):
                _, (_, w) = self.views.popitem(last=False)
                total -= w
        return key

    def get(self, key: object) -> TraceView | None:
        with self.lock:
            if not isinstance(key, tuple) or key not in self.views:
                return None
            self.views.move_to_end(key)
            return self.views[key][0]

    def drop(self, key: object) -> None:
        with self.lock:
            if isinstance(key, tuple):
                self.views.pop(key, None)

    def drop_session(self, session: Hashable) -> int:
        with self.lock:
            keys = [k for k in self.views if k[0] == session]
            for k in keys:
                del self.views[k]
        return len(keys)

    @property
    def weight(self) -> int:
        with self.lock:
            return sum(w for _, w in self.views.values())


@dataclass
class Frame:
    """What the page should show now: `state` (a private copy), whether to redraw the plots, and whether this
    is the run's last frame (then: the summary, the scrubber, the trace file)."""

    state: State
    plots: bool
    final: bool = False
    forced: bool = False  # the plots must all be redrawn now (the first step, a Selection, a clicked chip)


def stream(run: LiveRun, *, html_every: float = HTML_EVERY, plots_every: float = PLOTS_EVERY,
           poll: float = POLL) -> Iterator[Frame]:
    """Frames of a live run until it ends, then one final frame. The plots are redrawn on every frame until one
    has a step (then every `plots_every` seconds);
    a Selection forces a plot redraw (a new round changes the agreement grid), and so does `run.redraw` (the page's
    view options changed: a chip was clicked); selections that landed
    between two looks are each shown, `html_every` apart, before the latest state.

    If the consumer stops iterating before the run is done (the page went away, the event was cancelled),
    the run is stopped too."""
    view, events = run.view, run.trace.events
    last_html = last_plots = 0.0
    scanned = 0  # events looked at for selections
    shown = 0  # events in the latest state shown: a selection among them has reached the page
    plotted = False

    def new_selections() -> list[int]:
        """Event counts just after each Selection appended since the last call and not shown yet."""
        nonlocal scanned
        n = len(events)
        found = [i + 1 for i in range(scanned, n) if isinstance(events[i], Selection) and i + 1 > shown]
        scanned = n
        return found

    def in_turn(cuts: list[int]) -> Iterator[Frame]:
        for n in cuts:
            yield Frame(view.after_events(n), plots=True, forced=True)
            time.sleep(html_every)

    try:
        while not run.done.wait(poll):
            now = time.monotonic()
            if not events or (now - last_html < html_every and scanned == len(events) and not run.redraw.is_set()):
                continue
            cuts = new_selections()
            if now - last_html < html_every and not cuts:
                continue
            yield from in_turn(cuts[:-1])  # each round reaches the page; the last one is in the latest state
            state = view.latest()
            # every plot on each frame until one has a step: drawing step 0's plots only once measured a longer
            # first gap at batch 8 (0.53-0.91 s vs 0.41-0.45 s, python -m viz.bench_browser, same box and hour)
            forced = bool(cuts) or not plotted or run.redraw.is_set()
            send_plots = forced or now - last_plots >= plots_every
            run.redraw.clear()
            last_html = time.monotonic()
            if send_plots:  # plots drawn before the first step are empty: the first step's are drawn at once
                last_plots, plotted = last_html, state.frame > 0
            shown = state.events
            yield Frame(state, plots=send_plots, forced=forced)
    finally:
        if not run.done.is_set():
            run.stop.set()
    yield from in_turn(new_selections()[:-1])  # a fast run can end between two looks: replay its rounds
    yield Frame(view.latest(), plots=True, final=True)
