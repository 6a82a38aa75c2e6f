"""The live stream's plot schedule (app._stream): a periodic refresh redraws one plot in turn, so the browser
never redraws every plot at once mid-run (that held the canvas back ~0.5 s at batch 8: viz/bench_browser.py),
yet each plot keeps following the run; the finished run's answer goes out before its final plots."""

from __future__ import annotations

import itertools
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
    # every plot at once only when the first step lands (the plots of step 0 are empty), then one at a time
    assert sum(c > 1 for c in changed[:-1]) <= 1, changed
    assert sum(c == 1 for c in changed[:-1]) >= 2 * len(plots), changed  # each plot follows the run
    assert yields[-2][canvas] == yields[-1][canvas] and changed[-1] == len(plots)  # answer first, plots after
