"""One level of the held-out set, every problem of it: single sample vs majority@5 vs pass@8.

    python -m decoding.zoo.eval_level tiny-dllm --level 6

The issue's "on the hardest level, majority@5 beats a single sample" is a property of that level's 100
problems; `decoding.zoo.eval` samples 20-50 of them, too few to read a 5-point difference from.
Same generation path and metrics as `decoding.zoo.eval` (greedy + 8 samples at T = 1).
"""

from __future__ import annotations

import argparse
import json

import torch

from decoding import task
from decoding.models import load
from decoding.zoo.eval import run_generator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", choices=["tiny-dllm", "tiny-ar"])
    ap.add_argument("--level", type=int, default=6, choices=task.LEVELS)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    probs = [p for p in task.load_heldout() if p.level == a.level]
    metrics, _ = run_generator(load(a.model, "cpu"), probs, a.samples)
    keys = ("greedy", "single", "maj@5", "pass@8", "seconds_per_problem")
    print(json.dumps({"model": a.model, "level": a.level, "n": len(probs), **{k: metrics[k] for k in keys}}))


if __name__ == "__main__":
    main()
