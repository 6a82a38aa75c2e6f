"""A closed page frees what it held at once (app.close_session, Gradio's unload): its replayed / finished traces
and its runs (stopped), and nothing of another page's."""

from __future__ import annotations

import time
import types

from decoding import live
from decoding.trace import Meta, RunStart, Trace


def endless(should_stop):
    """A decoder that runs until it is told to stop."""
    yield RunStart(method="toy", prompt="p", prompt_ids=[1], rows=1, length=1)
    while not should_stop():
        time.sleep(0.01)


def test_close_session_frees_that_page_only():
    import app

    def page(session: str) -> tuple[live.LiveRun, tuple]:
        trace = Trace(meta=Meta(method="toy", model="m"), events=[])
        run = app.RUNS.start((session, "toy"), live.LiveRun(trace, endless))
        key = app.VIEWS.put(session, "replay", live.TraceView(trace), weight=1000)
        return run, key

    closing, staying = page("closing-page"), page("other-page")
    app.close_session(types.SimpleNamespace(session_hash="closing-page"))

    assert closing[0].done.wait(5) and closing[0].stop.is_set()  # its run was stopped and ended
    assert app.RUNS.get(("closing-page", "toy")) is None and app.VIEWS.get(closing[1]) is None
    assert not staying[0].stop.is_set() and app.RUNS.get(("other-page", "toy")) is staying[0]
    assert app.VIEWS.get(staying[1]) is not None
    app.close_session(types.SimpleNamespace(session_hash="other-page"))
    assert staying[0].done.wait(5)
