"""`numerics`: does a sample survive being decoded again alone, or in another precision?

For each of `--n` held-out problems (seeded, spread over the levels): one batched dVoting run of `--k` samples,
recorded in the device's default precision (bfloat16 on a GPU, float32 on the CPU). Then every sample is decoded
again, alone, from its recorded seed (`decoding.replay.replay_sample`), once per precision in `--dtypes`. The
same dtype as the run measures batched against alone; another one, the change of precision. Each replay is
compared with its sample (`decoding.divergence`): token for token the same, or where it first splits and the
cause there (near-tie, numerics, ...), and whether its answer changed.

Prints a markdown table and writes examples/bench/numerics.json:
{"device", "reference_dtype", "rows": [{dtype, samples, identical, causes: {cause: n}, answer_changed,
split_passes: [...], reports: [{question, seq, text}] (the first splits' reports)}], "problems", "k"}.
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from pathlib import Path

import torch

REPORTS = 3  # splits kept in full per precision
OUT_PATH = Path(__file__).resolve().parent.parent / "examples" / "bench" / "numerics.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-dllm", help="zoo name, local path or hub id (a masked-diffusion LM)")
    parser.add_argument("--n", type=int, default=12, help="problems, spread over the levels")
    parser.add_argument("--k", type=int, default=5, help="samples per dVoting run (decoded in one batch)")
    parser.add_argument("--gen-length", type=int, default=80)
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated precisions to replay in")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=OUT_PATH)


def record_vote(adapter, question: str, k: int, gen_length: int, seed: int):
    """One batched dVoting run of `question` (the zoo task), as a trace that names where it ran."""
    from decoding import voting
    from decoding.bench import TASK
    from decoding.trace import Trace

    params = voting.VotingParams(k=k, batched=True, gen_length=gen_length)
    trace = Trace.new(adapter.spec, "voting", params.model_dump(mode="json"), seed, task=TASK.name,
                      expected=TASK.expected_answer(question), **adapter.numerics())
    for event in voting.decode(adapter, TASK.format_prompt(question), params, task=TASK, seed=seed):
        trace.add(event)
    return trace


def main(args: argparse.Namespace) -> dict:
    from decoding.bench import pick_problems, write_json
    from decoding.divergence import sequences
    from decoding.fold import Fold
    from decoding.models import load
    from decoding.replay import replay_sample

    torch.set_num_threads(args.threads)
    reference = load(args.model, args.device)
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    replayers = {d: load(args.model, reference.device, dtype=getattr(torch, d)) for d in dtypes}
    tallies = {d: {"dtype": d, "samples": 0, "identical": 0, "causes": Counter(), "answer_changed": 0,
                   "split_passes": [], "reports": []} for d in dtypes}
    problems = pick_problems(args.n, args.seed)
    for problem in problems:
        trace = record_vote(reference, problem.question, args.k, args.gen_length, args.seed)
        for seq in sequences(Fold(trace).latest()):
            for dtype, adapter in replayers.items():
                _, d = replay_sample(adapter, trace, seq)
                row = tallies[dtype]
                row["samples"] += 1
                row["identical"] += d.identical
                if not d.identical:
                    row["causes"][d.cause] += 1
                    row["split_passes"].append(d.pass_no)
                    if len(row["reports"]) < REPORTS:  # the first few in full (`python -m decoding replay`'s text)
                        row["reports"].append({"question": problem.question, "seq": seq, "text": d.text()})
                row["answer_changed"] += d.a.answer != d.b.answer
    numerics = reference.numerics()
    result = {"device": numerics["device"], "reference_dtype": numerics["dtype"], "model": args.model,
              "problems": len(problems), "k": args.k, "gen_length": args.gen_length,
              "rows": [{**row, "causes": dict(row["causes"])} for row in tallies.values()]}
    print(table(result))
    write_json(args.out, result)
    return result


def table(result: dict) -> str:
    lines = [f"{result['model']}: {result['problems']} problems x dVoting k={result['k']} (batched), recorded in "
             f"{result['reference_dtype']} on {result['device']}; each sample decoded again alone", "",
             "| replayed alone in | samples | identical | split: near-tie | split: numerics | split: other | "
             "answer changed | median pass of the split |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        causes = row["causes"]
        other = sum(n for c, n in causes.items() if c not in ("near-tie", "numerics"))
        median = f"{statistics.median(row['split_passes']):g}" if row["split_passes"] else "-"
        lines.append(f"| {row['dtype']} | {row['samples']} | {row['identical']} | {causes.get('near-tie', 0)} | "
                     f"{causes.get('numerics', 0)} | {other} | {row['answer_changed']} | {median} |")
    return "\n".join(lines)
