"""`python -m viz.bench_scrub`: how long scrubbing takes, on a synthetic LLaDA-sized trace (no model).

The trace: 256 steps x 5 samples x 256 positions (one commit per sample per step, predictions with top-3 at
every still-masked position: what a gen-256, steps-256, batch-5 diffusion run records). Measured: building
the trace and its JSON size, the first full fold, then for frames spread over the run: `Fold.at(frame)`
alone and `Fold.at(frame)` + every panel of the diffusion view (canvas HTML, entropy heatmap, top-k, decode
order, each serialised to JSON as Gradio sends it). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from decoding.fold import Fold
from decoding.trace import RunEnd, RunStart, Tokens, Trace, Vocab
from viz import diffusion_view


def synthetic_trace(steps: int = 256, rows: int = 5, length: int = 256, k: int = 3, seed: int = 0) -> Trace:
    rng = random.Random(seed)
    trace = Trace.new("synthetic", "diffusion", {"strategy": "low_confidence", "steps": steps, "gen_length": length},
                      seed)
    trace.add(RunStart(method="diffusion", prompt="1+1=?", prompt_ids=[1, 2], rows=rows, length=length, mask_id=0))
    trace.add(Vocab(ids=list(range(1, 41)), texts=[str(i % 10) if i < 30 else f"[T{i}]" for i in range(1, 41)]))
    orders = [rng.sample(range(length), length) for _ in range(rows)]
    per_step = max(1, length // steps)
    for s in range(1, steps + 1):
        for r in range(rows):
            masked = sorted(orders[r][(s - 1) * per_step:])
            if not masked:
                continue
            ids = [rng.randint(1, 40) for _ in masked]
            trace.add(Tokens(seq=r, step=s, action="propose", pos=masked, ids=ids,
                             conf=[round(rng.random(), 3) for _ in masked],
                             entropy=[round(rng.random() * 3, 3) for _ in masked],
                             top_ids=[[i, (i % 40) + 1, ((i + 1) % 40) + 1][:k] for i in ids],
                             top_p=[[0.6, 0.3, 0.1][:k] for _ in ids]))
            done = orders[r][(s - 1) * per_step:s * per_step]
            trace.add(Tokens(seq=r, step=s, action="commit", pos=done, ids=[ids[masked.index(p)] for p in done]))
    trace.add(RunEnd(nfe=steps, seconds=1.0, answer="2"))
    return trace


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    trace = synthetic_trace(args.steps, args.rows, args.length)
    build = time.perf_counter() - t0
    size = len(trace.dumps())
    t0 = time.perf_counter()
    fold = Fold(trace)
    n = fold.frames
    first = time.perf_counter() - t0
    print(f"trace: {args.steps} steps x {args.rows} samples x {args.length} positions, {len(trace.events)} events, "
          f"{size / 2**20:.1f} MB JSON; built in {build:.2f} s, first full fold {first:.3f} s")
    rows = []
    print("| frame | Fold.at | Fold.at + all diffusion panels (rendered, JSON-serialised) |\n|---|---|---|")
    for frame in (1, n // 4, n // 2, 3 * n // 4 + 3, n - 1):
        at = _time(lambda f=frame: fold.at(f), args.repeats)

        def redraw(f: int = frame) -> None:
            panels = diffusion_view.render(fold.at(f), trace.meta)
            for value in panels.values():
                if hasattr(value, "to_json"):
                    value.to_json()

        full = _time(redraw, args.repeats)
        rows.append({"frame": frame, "at_s": at, "redraw_s": full})
        print(f"| {frame} | {at * 1000:.1f} ms | {full * 1000:.0f} ms |")
    return rows


if __name__ == "__main__":
    main()
