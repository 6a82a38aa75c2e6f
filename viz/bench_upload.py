"""`python -m viz.bench_upload`: replaying a large upload, in-process (no server): a valid synthetic trace
of ~50 MB (viz.bench_scrub.synthetic_trace, 690 steps x 5 samples x 690 positions, top-3 everywhere), then
Trace.load (JSON, work limits, validation), the first fold and the first diffusion view (serialised as Gradio
sends it), scrub moves, and the process RSS before, after loading and after the view is dropped
(decoding.live.release_memory). Prints a markdown table. Not measured here: the server end to end (HTTP upload,
Gradio's queue) and another user's latency during an upload."""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from decoding import live
from decoding.trace import Trace
from viz import diffusion_view
from viz.bench_scrub import synthetic_trace


def _rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20


def _draw(view: live.TraceView, frame: int | None) -> None:
    for value in diffusion_view.render(view.at(frame), view.meta).values():
        if hasattr(value, "to_json"):
            value.to_json()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=690)
    parser.add_argument("--rows", type=int, default=5)
    args = parser.parse_args(argv)
    path = Path(tempfile.mkdtemp()) / "large.json"
    text = synthetic_trace(args.steps, args.rows, args.steps).dumps()
    path.write_text(text)
    size = len(text) / 2**20
    del text
    gc.collect()
    base = _rss_mb()
    t0 = time.perf_counter()
    trace = Trace.load(path)
    t1 = time.perf_counter()
    view = live.TraceView(trace)
    frames = view.frames
    _draw(view, None)
    t2 = time.perf_counter()
    loaded = _rss_mb()
    moves = []
    for frame in (1, frames // 2, frames - 5):
        a = time.perf_counter()
        _draw(view, frame)
        moves.append(time.perf_counter() - a)
    del trace, view
    live.release_memory()
    after = _rss_mb()
    print(f"| trace | load (JSON + limits + validation) | fold + first view | first view total | scrub move "
          f"(max of 3) | RSS before / loaded / after drop |\n|---|---|---|---|---|---|\n"
          f"| {size:.1f} MB, {frames} steps x {args.rows} x {args.steps} | {t1 - t0:.2f} s | {t2 - t1:.2f} s | "
          f"{t2 - t0:.2f} s | {max(moves):.2f} s | {base:.0f} / {loaded:.0f} / {after:.0f} MB |")
    path.unlink()


if __name__ == "__main__":
    main()
