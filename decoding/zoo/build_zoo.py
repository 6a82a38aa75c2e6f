"""Build the whole zoo on one GPU: train the three models side by side, score their checkpoints,
ship the checkpoint that leaves room for test-time methods.

    python -m decoding.zoo.build_zoo --out examples/models

Selection rule for a generator (the issue's targets, measured by quick_eval on held-out problems):
the checkpoint with the highest single-sample accuracy among those with single-sample accuracy in
[0.40, 0.85], pass@8 >= 0.85 and majority@5 beating a single sample by >= 5 points on level 6; if none
qualifies, the one in the band with the highest pass@8; else the one whose accuracy is closest to 0.65.
The PRM ships its checkpoint with the highest step AUROC (ties: the earliest).

What shipped: tiny-dllm (step 5500) and tiny-ar (step 700) came out of this script; tiny-prm was then
retrained alone with the dense next-token loss (`--lm-weight 1.0`, now in PLAN) and its step-7000
checkpoint chosen by the same rule (see its model card and docs/prm-build.log).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

# name: (LR-schedule steps, wall-clock guard in minutes, checkpoint every, extra arguments). On one H100
# the three train side by side; the guard keeps the whole build inside one 10-minute job.
PLAN = {
    "tiny-dllm": (8000, 6.0, 500, []),
    "tiny-ar": (1500, 3.0, 100, []),
    "tiny-prm": (12000, 6.0, 1000, ["--lm-weight", "1.0"]),
}


def choose(results: list[dict]) -> dict:
    def lift(r):
        return r["maj5_by_level"]["6"] - r["single_by_level"]["6"]

    band = [r for r in results if 0.40 <= r["single"] <= 0.85]
    good = [r for r in band if r["pass@8"] >= 0.85 and lift(r) >= 0.05]
    if good:
        return max(good, key=lambda r: r["single"])
    if band:
        return max(band, key=lambda r: r["pass@8"])
    return min(results, key=lambda r: abs(r["single"] - 0.65))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("examples/models"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/zoo-build"))
    ap.add_argument("--n-eval", type=int, default=200)
    a = ap.parse_args()
    procs = {}
    for name, (steps, minutes, every, extra) in PLAN.items():
        cmd = [
            sys.executable,
            "-m",
            "decoding.zoo.train",
            name,
            "--steps",
            str(steps),
            "--out",
            str(a.work / name),
            "--pool-size",
            "300000",
            "--save-every",
            str(every),
            "--log-every",
            "500",
            "--max-minutes",
            str(minutes),
        ]
        cmd[4:4] = extra  # right after the name: the recorded command keeps them (it is cut at --save-every)
        procs[name] = (subprocess.Popen(cmd), " ".join(cmd[1:]))
    for p, _ in procs.values():
        p.wait()
    evals = {}
    for name in PLAN:
        dirs = [*sorted(a.work.glob(f"{name}-ckpt*"), key=lambda d: int(d.name.split("ckpt")[1])), a.work / name]
        evals[name] = subprocess.Popen(
            [sys.executable, "-m", "decoding.zoo.quick_eval", *map(str, dirs), "--n", str(a.n_eval)],
            stdout=subprocess.PIPE,
            text=True,
        )
    summary = {}
    for name, p in evals.items():
        results = [json.loads(line) for line in p.stdout if line.startswith("{")]
        p.wait()
        for r in results:
            print(json.dumps(r), flush=True)
        chosen = max(results, key=lambda r: r["step_auroc"]) if name == "tiny-prm" else choose(results)
        src = Path(chosen["path"])
        dst = a.out / name
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
        meta = json.loads((dst / "training.json").read_text())
        # The LR schedule spans the whole run: the checkpoint is reproduced by the same command + --stop-at.
        meta["command"] = "python " + procs[name][1].split(" --save-every")[0] + f" --stop-at {meta['steps']}"
        meta["checkpoint_step"] = meta["steps"]
        meta["quick_eval"] = chosen
        (dst / "training.json").write_text(json.dumps(meta, indent=2))
        summary[name] = {"steps": meta["steps"], **{k: v for k, v in chosen.items() if k != "path"}}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
