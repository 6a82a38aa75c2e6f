"""`python -m decoding.bench voting [--n N] [--level L]`: single sample vs majority@K vs dVoting on the held-out set.

For each method: accuracy, forward passes per problem (summed over samples, finished rows not counted),
wall time per problem, overall and per level. Prints a markdown table and writes
`examples/bench/voting.json`: [{method, accuracy, nfe, seconds, n, by_level: {level: {...}}}, ...], the
points of the app's accuracy-vs-forward-passes figure. Every method runs through the registry's `voting`
entry (its `method` parameter picks majority@K or dVoting); samples are seeded 42, 43, ... as the reference.

Baselines as in the paper: the single sample and majority@K decode with the fixed low-confidence
schedule, one token per forward pass (steps = gen_length); the single sample is greedy, majority@K samples
at the voting temperature. dVoting decodes adaptively (entropy threshold τ).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decoding import task
from decoding.bench import Method, load_model, pick_problems, registry_method, report, run_method
from decoding.parallel import state

OUT_PATH = Path(__file__).resolve().parent.parent / "examples" / "bench" / "voting.json"


def settings(params) -> dict:
    """The compared methods' VotingParams: the baselines on the fixed schedule, one token per pass."""
    fixed = params.gen_length
    return {
        "single": params.replace(method="majority", k=1, temperature=0.0, steps=fixed),
        f"majority@{params.k}": params.replace(method="majority", steps=fixed),
        "dvoting": params.replace(method="dvoting", batched=False),
        "dvoting_batched": params.replace(method="dvoting", batched=True),
    }


def methods(params) -> dict[str, Method]:
    return {name: registry_method("voting", p) for name, p in settings(params).items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-dllm", help="zoo name, local path or hub id")
    parser.add_argument("--n", type=int, default=6, help="problems, spread over the levels (CPU: ~1 min each)")
    parser.add_argument("--level", type=int, choices=task.LEVELS, help="only this level")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--tau", type=float, default=0.3)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--methods", default="", help="comma-separated subset of the methods")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for tiny models)")
    parser.add_argument("--out", type=Path, default=OUT_PATH)


def main(args: argparse.Namespace) -> list[dict]:
    from decoding.voting import VotingParams

    adapter, gen_length = load_model(args)
    params = VotingParams(k=args.k, tau=args.tau, temperature=args.temperature, gen_length=gen_length,
                          block_length=16 if gen_length % 16 == 0 else gen_length)
    problems = pick_problems(args.n, level=args.level)
    chosen = {m.strip() for m in args.methods.split(",") if m.strip()}
    results = []
    for name, p in settings(params).items():
        if chosen and name not in chosen:
            continue
        result = {"method": name, "model": args.model, "params": p.model_dump(),
                  **run_method(adapter, registry_method("voting", p), problems)}
        if state().is_main_process:
            print(f"{name}: {result['accuracy']:.1%} @ {result['nfe']:.1f} passes, {result['seconds']:.3f} s, "
                  f"{result['problems_per_second']:.3f} problems/s ({state().num_processes} proc)", flush=True)
        results.append(result)
    report(results, args.out)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main(parser.parse_args())
