"""Benchmarks: `python -m decoding.bench diffusion|voting|overhead|trace_size [options]`.

Each subcommand is a module with `add_arguments(parser)` and `main(args)`, registered in SUBCOMMANDS.
(`python -m decoding run ...` is the headless runner of one method; this is the benchmark entry.)

`diffusion`: every decoding strategy of the engine, run through the method registry, on a seeded sample of
the held-out set (spread over the levels): accuracy (the zoo task's answer vs the expected one, as strings),
forward passes per problem (the run's `RunEnd.nfe`) and wall time per problem.
Prints a markdown table and writes `examples/bench/diffusion.json`:
[{method, strategy, model, params, accuracy, nfe, seconds, n, by_level: {level: {accuracy, nfe, seconds, n}}}, ...].
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from decoding import task
from decoding.diffusion import DiffusionParams
from decoding.tasks import TASKS
from decoding.trace import RunEnd

TASK = TASKS["zoo"]  # formats the held-out questions and reads the answers (strings)

OUT_PATH = Path(__file__).resolve().parent.parent / "examples" / "bench" / "diffusion.json"

# name -> (help, module exposing add_arguments(parser) and main(args))
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "diffusion": ("decoding strategies of the masked-diffusion engine", "decoding.bench"),
    "voting": ("single sample vs majority voting vs dVoting", "decoding.bench_voting"),
    "overhead": ("engine + recording vs a bare LLaDA loop, ms per step", "decoding.bench_overhead"),
    "trace_size": ("bytes of a trace per method on the zoo dLLM", "decoding.bench_trace_size"),
    "real": ("real LLaDA-8B / Dream-7B code at full size, random bf16 weights: load + ms per step",
             "decoding.bench_real"),
    "search": ("test-time search (BoN, weighted BoN, beam, DVTS) at budgets N: compute-optimal", "decoding.bench_search"),
    "harp": ("greedy vs HARP (θ sweep): accuracy, hesitations, flips, passes, time ratio", "decoding.bench_harp"),
    "speculative": ("MTP self-speculative decoding vs greedy: acceptance, passes, wall time",
                    "decoding.bench_speculative"),
    "numerics": ("each dVoting sample decoded again alone, per precision: identical, or where it splits and why",
                 "decoding.bench_numerics"),
    "split": ("every decoder on a model split over 2+ GPUs: same trace as one GPU; 8B-shaped ms per step",
              "decoding.bench_split"),
}


def methods(gen_length: int, block_length: int) -> dict[str, DiffusionParams]:
    """The compared settings, all greedy (temperature 0) with the same semi-autoregressive blocks."""
    base = DiffusionParams(gen_length=gen_length, block_length=block_length, steps=gen_length)
    half = gen_length // 2
    return {
        f"low_confidence (steps {gen_length})": base,
        f"low_confidence (steps {half})": base.replace(steps=half),
        f"random (steps {half})": base.replace(strategy="random", steps=half),
        f"maskgit_plus (steps {half})": base.replace(strategy="maskgit_plus", steps=half),
        f"topk_margin (steps {half})": base.replace(strategy="topk_margin", steps=half),
        f"entropy (steps {half})": base.replace(strategy="entropy", steps=half),
        "threshold 0.9": base.replace(strategy="threshold", threshold=0.9),
        "threshold 0.7": base.replace(strategy="threshold", threshold=0.7),
        "entropy_threshold 0.3": base.replace(strategy="entropy_threshold", entropy_threshold=0.3),
    }


def pick_problems(n: int, seed: int = 0, level: int | None = None) -> list[task.Problem]:
    """A seeded sample of the held-out set, spread evenly over the levels (or all from `level`)."""
    levels = [level] if level else list(task.LEVELS)
    rng = random.Random(seed)
    pools = {lv: [p for p in task.load_heldout() if p.level == lv] for lv in levels}
    for pool in pools.values():
        rng.shuffle(pool)
    n = min(n, len(levels) * min(len(pool) for pool in pools.values()))
    return sorted((pools[levels[i % len(levels)]][i // len(levels)] for i in range(n)), key=lambda p: p.level)


def _summary(rows: list[tuple[bool, int, float]]) -> dict:
    n = len(rows)
    return {"accuracy": sum(r[0] for r in rows) / n, "nfe": sum(r[1] for r in rows) / n,
            "seconds": sum(r[2] for r in rows) / n, "n": n}


Method = Callable[[object, str], Iterator[object]]  # (adapter, formatted prompt) -> a run's events, ending in RunEnd


def registry_method(name: str, params, seed: int | None = None) -> Method:
    """A registered method's decoder with fixed params, the zoo task and (if given) the seed."""
    from decoding import methods as registry

    decode = registry.get(name).decode
    extra = {} if seed is None else {"seed": seed}
    return lambda adapter, prompt: decode(adapter, prompt, params, task=TASK, **extra)


def run_method(adapter, method: Method, problems: list[task.Problem]) -> dict:
    """Accuracy, forward passes and wall time per problem, overall and by level."""
    from decoding.parallel import map_items

    def one(_index: int, problem: task.Problem) -> list:
        t0 = time.perf_counter()
        end = [e for e in method(adapter, TASK.format_prompt(problem.question)) if isinstance(e, RunEnd)][-1]
        return [(problem.level, bool(TASK.is_correct(end.answer, str(problem.answer))), end.nfe,
                 time.perf_counter() - t0)]

    t0 = time.perf_counter()  # sharded over `accelerate launch` processes, if any (decoding/parallel.py)
    per_level: dict[int, list[tuple[bool, int, float]]] = {}
    for level, *row in map_items(one, problems):
        per_level.setdefault(level, []).append(tuple(row))
    wall = time.perf_counter() - t0
    result = _summary([row for rows in per_level.values() for row in rows])
    result |= {"wall_seconds": round(wall, 3), "problems_per_second": round(len(problems) / wall, 4)}
    result["by_level"] = {str(lv): _summary(rows) for lv, rows in sorted(per_level.items())}
    return result


def report(results: list[dict], out: Path) -> None:
    from decoding.parallel import state

    if not state().is_main_process:  # data-parallel: only the main process prints and writes
        return
    print(table(results))
    write_json(out, results)


def write_json(out: Path, result: object) -> None:
    """A benchmark's record: `out` (its folder made if needed), indented JSON; says where it went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


def table(results: list[dict]) -> str:
    levels = sorted({lv for r in results for lv in r["by_level"]}, key=int)
    head = ["method", "accuracy", "passes / problem", "s / problem", "problems / s", *[f"L{lv} acc" for lv in levels]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = [r["method"], f"{r['accuracy']:.1%}", f"{r['nfe']:.1f}", f"{r['seconds']:.3f}",
                 f"{r['problems_per_second']:.3f}" if "problems_per_second" in r else ""]
        cells += [f"{r['by_level'][lv]['accuracy']:.0%}" if lv in r["by_level"] else "" for lv in levels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-dllm", help="zoo name, local path or hub id")
    parser.add_argument("--n", type=int, default=18, help="problems, spread over the 6 levels (CPU: ~1-3 min)")
    parser.add_argument("--block-length", type=int, default=16)
    parser.add_argument("--methods", default="", help="comma-separated substrings of method names to keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny models)")
    parser.add_argument("--out", type=Path, default=OUT_PATH)


def load_model(args: argparse.Namespace) -> tuple[object, int]:
    """The preamble every benchmark shares: CPU threads, the model, its answer length."""
    from decoding.models import load
    from decoding.parallel import state

    torch.set_num_threads(args.threads)
    # one device per process under `accelerate launch` (cuda:<local rank>); plain runs: the loader's default
    adapter = load(args.model, device=state().device if state().num_processes > 1 else None)
    return adapter, int(adapter.settings.get("gen_length", 80))


def main(args: argparse.Namespace) -> list[dict]:
    from decoding.parallel import state

    adapter, gen_length = load_model(args)
    problems = pick_problems(args.n, args.seed)
    keep = [m.strip() for m in args.methods.split(",") if m.strip()]
    results = []
    for name, params in methods(gen_length, args.block_length).items():
        if keep and not any(k in name for k in keep):
            continue
        method = registry_method("diffusion", params, seed=args.seed)
        result = {"method": name, "strategy": params.strategy, "model": args.model, "params": params.model_dump(),
                  **run_method(adapter, method, problems)}
        if state().is_main_process:
            print(f"{name}: {result['accuracy']:.1%} @ {result['nfe']:.1f} passes, {result['seconds']:.3f} s, "
                  f"{result['problems_per_second']:.3f} problems/s ({state().num_processes} proc)", flush=True)
        results.append(result)
    report(results, args.out)
    return results


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m decoding.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, module) in SUBCOMMANDS.items():
        importlib.import_module(module).add_arguments(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    importlib.import_module(SUBCOMMANDS[args.command][1]).main(args)


if __name__ == "__main__":
    sys.modules.setdefault("decoding.bench", sys.modules[__name__])  # register ourselves: no second import
    cli()
