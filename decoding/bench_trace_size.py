"""`python -m decoding.bench trace_size`: how many bytes a saved trace takes, per method, on the zoo dLLM.

Each run goes through the method registry with the zoo task, is recorded into a `Trace` and measured as
`len(Trace.dumps())` in UTF-8 bytes (what `Trace.save` writes). The "before" column is the version-1 trace
(full `step` snapshots) of the same run, measured before the v2 event vocabulary landed.
Prints a markdown table and writes examples/bench/trace_size.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from decoding.bench import write_json

OUT_PATH = Path(__file__).resolve().parent.parent / "examples" / "bench" / "trace_size.json"
PROMPT = "12+7-5*3=?"
LEVEL6 = "56-29-26+83*6-88-8=?"

# (label, method, prompt, --set style parameters, seed or None for the method's default, v1 bytes)
RUNS = [
    ("diffusion (gen 80, steps 80, block 16, batch 8, T 0.6)", "diffusion", PROMPT,
     {"gen_length": 80, "steps": 80, "block_length": 16, "batch": 8, "temperature": 0.6}, 0, 3_057_101),
    ("majority@5 (steps 80)", "voting", PROMPT, {"method": "majority", "k": 5, "steps": 80}, None, 1_918_654),
    ("dVoting K=5", "voting", PROMPT, {"method": "dvoting", "k": 5}, None, 24_870),
    ("dVoting K=5, level 6, tau 0.1", "voting", LEVEL6, {"method": "dvoting", "k": 5, "tau": 0.1}, None, 111_116),
]


def measure(adapter, model: str, method_name: str, question: str, values: dict, seed: int | None) -> dict:
    from decoding import methods
    from decoding.tasks import TASKS
    from decoding.trace import RunEnd, Trace

    task = TASKS["zoo"]
    method = methods.get(method_name)
    params = method.params(**values)
    extra = {} if seed is None else {"seed": seed}
    trace = Trace.new(model=model, method=method_name, params=params.model_dump(mode="json"),
                      seed=seed if seed is not None else 0, task=task.name, expected=task.expected_answer(question))
    for event in method.decode(adapter, task.format_prompt(question), params, task=task, **extra):
        trace.add(event)
    end = next(e for e in reversed(trace.events) if isinstance(e, RunEnd))
    return {"bytes": len(trace.dumps().encode()), "events": len(trace.events), "nfe": end.nfe, "answer": end.answer,
            "expected": trace.meta.expected}


def table(rows: list[dict]) -> str:
    lines = ["| run | before (v1) bytes | now bytes | now / before | events | forward passes | answer |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['before']:,} | {r['bytes']:,} | {r['bytes'] / r['before']:.3f} | "
                     f"{r['events']} | {r['nfe']} | {r['answer']} (expected {r['expected']}) |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-dllm", help="zoo name or local path")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=OUT_PATH)


def main(args: argparse.Namespace) -> list[dict]:
    from decoding.models import load

    torch.set_num_threads(args.threads)
    adapter = load(args.model, "cpu")
    rows = []
    for label, method_name, question, values, seed, before in RUNS:
        row = {"run": label, "method": method_name, "prompt": question, "params": values, "before": before,
               **measure(adapter, args.model, method_name, question, values, seed)}
        print(f"{label}: {row['bytes']:,} B (before {before:,} B)", flush=True)
        rows.append(row)
    print()
    print(table(rows))
    write_json(args.out, {"command": "python -m decoding.bench trace_size", "model": args.model, "device": "cpu",
                          "torch": torch.__version__, "rows": rows})
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    main(parser.parse_args())
