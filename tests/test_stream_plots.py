"""The live stream's plot schedule (app._stream): a periodic refresh redraws one plot in turn, so the browser
never redraws every plot at once mid-run (that held the canvas back ~0.5 s at batch 8: viz/bench_browser.py),
yet each plot keeps following the run; the finished run's answer goes out before its final plots."""

from __future__ import annotations

import itertools
import json
import time

from decoding import live, methods, models
from decoding.tasks import TASKS
from decoding.trace import Meta, Trace


def slowed(events, pause: float):
    for event in events:
        time.sleep(pause)  # a run long enough for several periodic plot refreshes
        yield event


def test_periodic_refresh_redraws_one_plot_at_a_time(monkeypatch):
    import app

    monkeypatch.setattr(live, "PLOTS_EVERY", 0.3)  # one plot every 0.1 s: several rounds in a short run
    tab = app._tab(methods.get("diffusion"))
    adapter, task = models.load("tiny-dllm", device="cpu"), TASKS["zoo"]
    params = tab.method.params(gen_length=16, steps=16, block_length=16)
    trace = Trace(meta=Meta(method="diffusion", model="tiny-dllm", params=params.model_dump()), events=[])
    run = live.LiveRun(trace, lambda stop: slowed(tab.method.decode(
        adapter, task.format_prompt("12+7-5*3=?"), params, task=task, should_stop=stop), 0.04))
    options = {o.name: o.default for o in tab.options}
    run.options = dict(options)
    plots = [i for i, p in enumerate(tab.panels) if p.kind == "plot"]
    canvas = next(i for i, p in enumerate(tab.panels) if p.name == "canvas")
    yields = list(app._stream(tab, run, options))

    changed = [sum(a[i] is not b[i] for i in plots) for a, b in itertools.pairwise(yields)]
    # every plot at once only until the first step has been drawn (step 0's plots are empty), then one at a time
    rotating = changed.index(1)
    assert all(c <= 1 for c in changed[rotating:-1]), changed
    assert sum(c == 1 for c in changed[:-1]) >= 2 * len(plots), changed  # each plot follows the run
    assert yields[-2][canvas] == yields[-1][canvas] and changed[-1] == len(plots)  # answer first, plots after


def topk_title(outputs: list, tab) -> str:
    index = next(i for i, p in enumerate(tab.panels) if p.name == "topk")
    shown = outputs[index]  # a Figure (scrubbed, final) or its payload sent once (mid-run)
    return json.loads(shown.plot if hasattr(shown, "plot") else shown.to_json())["layout"]["title"]["text"]


def ended_run(tab, options: dict) -> live.LiveRun:
    """A short run of the session "test-session", decoded to its end; the stream has not drawn that end yet."""
    import app

    adapter, task = models.load("tiny-dllm", device="cpu"), TASKS["zoo"]
    params = tab.method.params(gen_length=8, steps=4, block_length=8)
    trace = Trace(meta=Meta(method="diffusion", model="tiny-dllm", params=params.model_dump()), events=[])
    run = live.LiveRun(trace, lambda stop: tab.method.decode(
        adapter, task.format_prompt("1+2=?"), params, task=task, should_stop=stop))
    run.options = dict(options)
    app.RUNS.start(("test-session", tab.name), run)
    assert run.done.wait(60)
    return run


def test_a_chip_clicked_as_the_run_ends_is_drawn_either_way():
    """A chip clicked while the run ends: before the stream takes the final options, the stream's final views
    show it; after, the click's own handler draws it. It was lost once (CI: the final views used the old ones)."""
    import app

    tab = app._tab(methods.get("diffusion"))
    options = {o.name: o.default for o in tab.options}
    chosen = {**options, "position": 3}

    run = ended_run(tab, options)  # clicked before the stream draws the end
    answer = app.scrub_tab(tab, run.view, app.LIVE, chosen, "test-session")
    assert all(isinstance(a, dict) and a.get("__type__") == "update" for a in answer)  # left to the stream
    assert "position 3 of" in topk_title(list(app._stream(tab, run, options))[-1], tab)

    run = ended_run(tab, options)  # clicked after
    assert "position 3 of" not in topk_title(list(app._stream(tab, run, options))[-1], tab)
    answer = app.scrub_tab(tab, run.view, app.LIVE, chosen, "test-session")
    assert "position 3 of" in topk_title(answer, tab)  # drawn by the click's handler


def test_a_chip_event_checks_its_raw_inputs():
    """The chip event skips Gradio's preprocessing (it refused LIVE once the finished run's slider went out), so
    its handler checks the raw values itself: the step slider's, and each option through its own component."""
    import gradio as gr
    import pytest

    import app

    assert [app.step_or_live(v) for v in (-1, 0, 3.0, 2.5, -2, True, "3", None)] == [-1, 0, 3, None, None, None,
                                                                                      None, None]
    components = {"position": gr.Number(-1, precision=0), "rank": gr.Dropdown(["last", "min"], value="last")}
    assert app.checked_inputs(components, {"position": 4.0, "rank": "min"}) == {"position": 4, "rank": "min"}
    with pytest.raises(gr.Error):
        app.checked_inputs(components, {"position": 1, "rank": "<img src=x>"})


def test_slow_motion_holds_each_step_and_changes_nothing_else():
    """Slow motion (`LiveRun(pace=)`): each new step is let out `pace` seconds after the previous one, the trace's
    tokens are those of a full-speed run, the decoder never waits for the holds (its seconds are its own), and Stop
    ends a hold."""
    from decoding.diffusion import DiffusionParams, decode
    from decoding.trace import RunEnd, Tokens

    adapter, task = models.load("tiny-dllm", "cpu"), TASKS["zoo"]

    def start(pace: float, length: int = 16) -> live.LiveRun:
        params = DiffusionParams(gen_length=length, steps=length // 2, block_length=length)
        trace = Trace(Meta(model="tiny-dllm", method="diffusion"))
        return live.LiveRun(trace, lambda stop: decode(adapter, task.format_prompt("13-2=?"), params, task=task,
                                                        should_stop=stop), pace=pace)

    fast = start(0.0)
    assert fast.done.wait(60) and fast.paused == 0.0
    slow, t0 = start(0.1), time.monotonic()
    assert slow.done.wait(60)
    wall = time.monotonic() - t0
    steps = sorted({e.step for e in slow.trace.events if isinstance(e, Tokens)})
    assert wall >= 0.1 * (len(steps) - 1) and slow.paused > 0  # each step shown >= pace after the one before
    assert [e for e in slow.trace.events if isinstance(e, Tokens)] == [e for e in fast.trace.events
                                                                      if isinstance(e, Tokens)]
    assert slow.trace.events[-1].seconds < 0.1 * (len(steps) - 1) / 2  # 8 tiny passes, not the 0.7 s of holds
    held, t0 = start(30.0, length=64), time.monotonic()  # a hold of 30 s per step, 32 steps
    held.request_stop()
    assert held.done.wait(10) and time.monotonic() - t0 < 10
    assert isinstance(held.trace.events[-1], RunEnd) and held.trace.events[-1].stopped


def test_the_slow_motion_slider_gives_a_pace():
    import app

    assert app.slow_motion_pace(4) == 0.25 and app.slow_motion_pace(20.0) == 0.05
    assert {app.slow_motion_pace(v) for v in (0, -1, 21, None, "5", True, float("nan"))} == {0.0}  # full speed
