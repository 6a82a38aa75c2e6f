"""`python -m decoding.bench search`: test-time search at growing budgets on the held-out set (compute-optimal view).

For each problem and budget N (default 1, 2, 4, 8, 16, 32; add 64 on a GPU) three runs go through the registry's
`search` entry: N samples (scored once by the PRM), beam search and DVTS (M = min(4, N)). Five methods are read
from them: majority@N, Best-of-N and weighted Best-of-N pick among the same N samples (so they share one cost),
beam search and DVTS pick as the reference does (the highest "last" score). Cost per problem: generated tokens
(every row, pruned ones too) and policy forward passes (a batched pass counts once); PRM calls are reported too.
Accuracy and cost are given overall and per zoo level (the difficulty bins), and the compute-optimal method per
(level, budget) is the most accurate one (ties: fewer tokens). Writes examples/bench/search.json, which the tab's
compute-optimal figure draws (viz.search_view.compute_optimal_figure).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from tqdm import tqdm

from decoding.bench import TASK, pick_problems
from decoding.selection import pick
from decoding.trace import RunEnd, Selection

OUT_PATH = Path(__file__).resolve().parent.parent / "examples" / "bench" / "search.json"
RUNS = {"samples": "best_of_n", "beam_search": "beam_search", "dvts": "dvts"}  # run -> SearchParams.method
METHODS = ("majority", "best_of_n", "weighted_best_of_n", "beam_search", "dvts")
SMALL, LARGE = (1, 2, 4), (16, 32, 64)  # budgets of the blog's two findings
HARD, EASY = ("5", "6"), ("1", "2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-ar", help="policy: zoo name, local path or hub id")
    parser.add_argument("--prm", default="tiny-prm")
    parser.add_argument("--n", type=int, default=60, help="problems, spread over the 6 levels (or --levels)")
    parser.add_argument("--levels", default="", help="comma-separated levels to draw the problems from (default all)")
    parser.add_argument("--budgets", default="1,2,4,8,16,32", help="comma-separated N (GPU: add 64)")
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny models)")
    parser.add_argument("--out", type=Path, default=OUT_PATH)


def run_once(adapter, problem, params, seed: int) -> tuple[Selection | None, RunEnd]:
    from decoding.search import decode

    events = list(decode(adapter, TASK.format_prompt(problem.question), params, task=TASK, seed=seed))
    finals = [e for e in events if isinstance(e, Selection) and e.reason is not None]
    return (finals[-1] if finals else None), events[-1]


def judge(problem, final: Selection | None, rule: str) -> bool:
    if final is None:
        return False
    k = pick(final.answers, final.scores or [0.0] * len(final.answers), rule)
    return k is not None and bool(TASK.is_correct(final.answers[k], str(problem.answer)))


def measure(adapter, problem, index: int, budgets: list[int], args, bar) -> list[dict]:
    """One row per (budget, method) of one problem: correct, tokens, passes, prm_calls, seconds."""
    from decoding.search import SearchParams

    rows = []
    for n in budgets:
        width = min(args.beam_width, n)
        for run, method in RUNS.items():
            params = SearchParams(method=method, n=n, beam_width=width, temperature=args.temperature, prm=args.prm)
            final, end = run_once(adapter, problem, params, seed=args.seed + index)
            cost = {"tokens": end.summary["tokens"], "passes": end.nfe, "prm_calls": end.summary["prm_calls"],
                    "seconds": end.seconds}
            picks = {"majority": "majority", "best_of_n": "naive", "weighted_best_of_n": "weighted"} \
                if run == "samples" else {run: "naive"}
            for name, rule in picks.items():
                rows.append({"problem": index, "level": problem.level, "n": n, "method": name,
                             "correct": judge(problem, final, rule),
                             **cost, "prm_calls": 0 if name == "majority" else cost["prm_calls"]})
            bar.update(1)
    return rows


def _mean(rows: list[dict]) -> dict:
    k = len(rows)
    return {"accuracy": sum(r["correct"] for r in rows) / k, "tokens": sum(r["tokens"] for r in rows) / k,
            "passes": sum(r["passes"] for r in rows) / k, "prm_calls": sum(r["prm_calls"] for r in rows) / k,
            "seconds": sum(r["seconds"] for r in rows) / k, "count": k}


def summarise(rows: list[dict]) -> dict:
    """results (per method and budget, overall + by level), best method per (level, budget), the two findings."""
    results = []
    for method in METHODS:
        for n in sorted({r["n"] for r in rows}):
            mine = [r for r in rows if r["method"] == method and r["n"] == n]
            if not mine:
                continue
            levels = sorted({r["level"] for r in mine})
            results.append({"method": method, "n": n, **_mean(mine),
                            "by_level": {str(lv): _mean([r for r in mine if r["level"] == lv]) for lv in levels}})
    best: dict[str, dict[str, str]] = {}
    for n in sorted({r["n"] for r in results}):
        here = [r for r in results if r["n"] == n]
        best.setdefault("all", {})[str(n)] = winners([(r["method"], r["accuracy"], r["tokens"]) for r in here])
        for lv in sorted({lv for r in here for lv in r["by_level"]}, key=int):
            cells = [(r["method"], r["by_level"][lv]["accuracy"], r["by_level"][lv]["tokens"]) for r in here
                     if lv in r["by_level"]]
            best.setdefault(lv, {})[str(n)] = winners(cells)
    return {"results": results, "best": best, "findings": findings(results)}


def winners(cells: list[tuple[str, float, float]], slack: float = 0.05) -> str:
    """The most accurate method(s), and among them the cheapest (tokens within `slack` of the fewest: methods of
    one budget differ by a few tokens, which is no real difference); "a / b" for several, "tie" when all are."""
    top = max(acc for _, acc, _ in cells)
    best = [(m, tokens) for m, acc, tokens in cells if acc == top]
    cheapest = min(tokens for _, tokens in best)
    names = [m for m, tokens in best if tokens <= cheapest * (1 + slack)]
    return "tie" if len(names) == len(cells) > 1 else " / ".join(names)


def _acc(results: list[dict], method: str, levels: tuple[str, ...], budgets: tuple[int, ...]) -> float | None:
    """Mean accuracy of a method over the given levels and budgets (problems weighted equally)."""
    cells = [(r["by_level"][lv]["accuracy"], r["by_level"][lv]["count"]) for r in results
             if r["method"] == method and r["n"] in budgets for lv in levels if lv in r["by_level"]]
    total = sum(c for _, c in cells)
    return sum(a * c for a, c in cells) / total if total else None


def findings(results: list[dict]) -> dict:
    """The blog's two findings, measured: beam search vs Best-of-N at small budgets on hard levels, and at large
    budgets on easy levels (accuracies averaged over those budgets and levels)."""
    out = {}
    for key, levels, budgets in (("small_budgets_hard_levels", HARD, SMALL), ("large_budgets_easy_levels", EASY, LARGE)):
        row = {m: _acc(results, m, levels, budgets) for m in METHODS}
        out[key] = {"levels": list(levels), "budgets": [n for n in budgets if any(r["n"] == n for r in results)],
                    "accuracy": row}
    return out


def table(summary: dict) -> str:
    results = summary["results"]
    levels = sorted({lv for r in results for lv in r["by_level"]}, key=int)
    head = ["method", "N", "accuracy", "tokens / problem", "passes / problem", "PRM calls",
            *[f"L{lv}" for lv in levels]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(results, key=lambda r: (r["n"], METHODS.index(r["method"]))):
        cells = [r["method"], str(r["n"]), f"{r['accuracy']:.1%}", f"{r['tokens']:.0f}", f"{r['passes']:.0f}",
                 f"{r['prm_calls']:.1f}",
                 *[f"{r['by_level'][lv]['accuracy']:.0%}" if lv in r["by_level"] else "" for lv in levels]]
        lines.append("| " + " | ".join(cells) + " |")
    best = summary["best"]
    budgets = sorted({int(n) for row in best.values() for n in row})
    lines += ["", "| best method | " + " | ".join(f"N={n}" for n in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for lv in sorted(best, key=lambda x: (x != "all", x)):
        lines.append(f"| {lv if lv == 'all' else 'L' + lv} | " + " | ".join(best[lv].get(str(n), "") for n in budgets)
                     + " |")
    return "\n".join(lines)


def interleave(problems: list) -> list:
    """Levels in turn (1, 2, ..., 6, 1, 2, ...): a run cut short still covers every level."""
    by_level: dict[int, list] = {}
    for p in problems:
        by_level.setdefault(p.level, []).append(p)
    order = sorted(((k, lv) for lv, group in by_level.items() for k in range(len(group))))
    return [by_level[lv][k] for k, lv in order]


def main(args: argparse.Namespace) -> dict:
    from decoding.models import load
    from decoding.parallel import map_items, state

    torch.set_num_threads(args.threads)
    st = state()  # under `accelerate launch`: one device per process (cuda:<local rank>), problems sharded
    device = args.device or (str(st.device) if st.num_processes > 1 else "cuda" if torch.cuda.is_available() else "cpu")
    adapter = load(args.model, device=device)
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    levels = [int(lv) for lv in args.levels.split(",") if lv.strip()]
    if levels:  # n problems spread over the chosen levels
        per = -(-args.n // len(levels))
        problems = interleave([p for lv in levels for p in pick_problems(per, args.seed, level=lv)])[:args.n]
    else:
        problems = interleave(pick_problems(args.n, args.seed))
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else \
        f"CPU ({os.cpu_count()} cores, {args.threads} torch thread{'s' if args.threads > 1 else ''})"
    meta = {"model": args.model, "prm": args.prm, "problems": 0, "budgets": budgets, "beam_width": args.beam_width,
            "temperature": args.temperature, "seed": args.seed, "device": name, "levels": args.levels,
            "command": f"python -m decoding.bench search --n {args.n} --budgets {args.budgets}"
                       + (f" --levels {args.levels}" if args.levels else "")
                       + (f" --device {args.device}" if args.device else "")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if st.num_processes == 1:
        rows: list[dict] = []
        with tqdm(total=len(problems) * len(budgets) * len(RUNS), desc="search bench", unit="run") as bar:
            for i, problem in enumerate(problems):
                rows += measure(adapter, problem, i, budgets, args, bar)
                # written after every problem: a run cut short (a time limit) keeps what it measured
                meta |= {"problems": i + 1, "seconds": round(time.perf_counter() - t0, 1)}
                summary = {"meta": meta, **summarise(rows), "rows": rows}
                args.out.write_text(json.dumps(summary, indent=1))
    else:  # data-parallel: seeds are per problem (args.seed + index), so rows equal a single-process run's
        quiet = tqdm(disable=True)
        rows = map_items(lambda i, problem: measure(adapter, problem, i, budgets, args, quiet), problems, "search bench")
    wall = time.perf_counter() - t0
    meta |= {"problems": len(problems), "seconds": round(wall, 1), "wall_seconds": round(wall, 3),
             "problems_per_second": round(len(problems) / wall, 4), "processes": st.num_processes}
    summary = {"meta": meta, **summarise(rows), "rows": rows}
    if not st.is_main_process:  # only the main process prints and writes
        return summary
    args.out.write_text(json.dumps(summary, indent=1))
    print(table(summary))
    print(json.dumps(summary["findings"], indent=1))
    print(f"{len(problems)} problems in {wall:.1f} s on {st.num_processes} process(es): "
          f"{len(problems) / wall:.3f} problems/s")
    print(f"wrote {args.out}")
    return summary
