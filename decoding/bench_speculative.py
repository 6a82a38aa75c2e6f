"""`python -m decoding.bench speculative`: self-speculative decoding on the MTP heads vs plain greedy decoding.

On a seeded, level-balanced sample of the held-out set (`--limit` problems), for the zoo's `tiny-ar`:
- greedy: `model.generate(do_sample=False)`, the reference output and cost (its forward calls are counted
  with a hook on the model, not assumed);
- the speculative loop with draft length 0 (the same loop, no heads: what the loop itself costs);
- draft lengths 1..3 (heads 2..4).
Per setting: whether the output equals greedy's token for token, accuracy, mean tokens per forward pass,
acceptance at draft position k (accepted / verified at k; draft tokens past the end of the answer count as
rejected), forward passes and wall time per problem and as ratios to greedy. Wall time excludes one warm-up
problem per setting; "wall vs loop" divides by the draft-0 loop, the fair measure of what drafting buys (HF
generate's own per-step overhead differs from this loop's). Prints a markdown table and writes
`examples/bench/speculative.json` ({meta, results}); `python -m decoding.bench_speculative FILE` reprints one.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from decoding.bench import TASK, pick_problems, write_json
from decoding.speculative import Result, SpeculativeParams, run

OUT_PATH = Path(__file__).resolve().parent.parent / "examples" / "bench" / "speculative.json"
GEN = 80


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def greedy(adapter, prompt_ids: list[int], max_new: int) -> tuple[list[int], int]:
    """model.generate() greedy: (new ids, forward calls counted by a hook)."""
    calls = [0]
    hook = adapter.model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        x = torch.tensor([prompt_ids], device=adapter.device)
        out = adapter.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                                     pad_token_id=adapter.tokenizer.pad_token_id)
    finally:
        hook.remove()
    ids = out[0, len(prompt_ids):].tolist()
    pad = adapter.tokenizer.pad_token_id
    while ids and ids[-1] == pad and pad not in adapter.eos_ids:
        ids.pop()
    return ids, calls[0]


def measure(adapter, problems, method, device) -> list[dict]:
    """One row per problem: ids, passes, seconds (after one warm-up run), acceptance counts."""
    method(adapter.encode_prompt(TASK.format_prompt(problems[0].question)))  # warm-up
    rows = []
    for p in problems:
        ids = adapter.encode_prompt(TASK.format_prompt(p.question))
        _sync(device)
        t0 = time.perf_counter()
        out = method(ids)
        _sync(device)
        rows.append({"seconds": time.perf_counter() - t0, **out, "expected": str(p.answer)})
    return rows


def summarise(name: str, rows: list[dict], base: list[dict] | None) -> dict:
    n = len(rows)
    passes = sum(r["passes"] for r in rows)
    tokens = sum(len(r["ids"]) for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    acc_k = [sum(r["accepted_by_pos"][k] for r in rows if len(r["accepted_by_pos"]) > k) for k in range(3)]
    tot_k = [sum(r["drafted_by_pos"][k] for r in rows if len(r["drafted_by_pos"]) > k) for k in range(3)]
    out = {
        "method": name, "n": n, "tokens": tokens / n, "passes": passes / n, "seconds": seconds / n,
        "tokens_per_pass": tokens / passes,
        "accuracy": sum(TASK.is_correct(TASK.extract_answer(r["text"]), r["expected"]) for r in rows) / n,
        "acceptance_by_pos": [a / t if t else None for a, t in zip(acc_k, tot_k)],
        "mean_accepted": sum(acc_k) / max(tot_k[0], 1) if tot_k[0] else None,
    }
    if base is not None:
        out["identical"] = sum(r["ids"] == b["ids"] for r, b in zip(rows, base))
        out["passes_ratio"] = passes / sum(b["passes"] for b in base)
        out["seconds_ratio"] = seconds / sum(b["seconds"] for b in base)
    return out


def table(results: list[dict]) -> str:
    """Markdown; "wall vs loop" divides by the draft-0 row (the same loop without heads) when there is one."""
    loop = next((r["seconds"] for r in results if r["method"].startswith("speculative, draft 0")), None)
    head = ["method", "identical to greedy", "accuracy", "tokens / pass", "accept k=1", "k=2", "k=3",
            "accepted / draft", "passes / problem", "passes vs greedy", "ms / problem", "wall vs greedy",
            "wall vs loop"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        acc = [f"{a:.1%}" if a is not None else "–" for a in r["acceptance_by_pos"]]
        ratio = r.get("passes_ratio", 1)
        cells = [r["method"], f"{r.get('identical', r['n'])}/{r['n']}", f"{r['accuracy']:.1%}",
                 f"{r['tokens_per_pass']:.2f}", *acc,
                 f"{r['mean_accepted']:.2f}" if r.get("mean_accepted") is not None else "–", f"{r['passes']:.1f}",
                 f"{ratio:.3f} ({1 / ratio:.2f}× fewer)", f"{1000 * r['seconds']:.1f}",
                 f"{r.get('seconds_ratio', 1):.3f}", f"{r['seconds'] / loop:.3f}" if loop else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="tiny-ar", help="a causal model with MTP heads (zoo name or folder)")
    parser.add_argument("--limit", type=int, default=60, help="held-out problems, spread over the 6 levels")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--float32", action="store_true", help="run in float32 on cuda too (default: bf16 there)")
    parser.add_argument("--draft-lengths", default="0,1,2,3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=OUT_PATH)


def main(args: argparse.Namespace) -> list[dict]:
    from decoding.models import load

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    adapter = load(args.model, device)
    if args.float32:
        adapter.model.float()
        adapter.mtp_heads.float()
    problems = pick_problems(args.limit, args.seed)
    max_new = int(adapter.settings.get("max_new_tokens", GEN))

    def plain(ids: list[int]) -> dict:
        out, calls = greedy(adapter, ids, max_new)
        return {"ids": out, "passes": calls, "text": adapter.decode(out), "accepted_by_pos": [], "drafted_by_pos": []}

    def speculative(m: int):
        params = SpeculativeParams(draft_length=m, max_new_tokens=max_new)

        def go(ids: list[int]) -> dict:
            res: Result = run(adapter, ids, params)
            return {"ids": res.ids, "passes": res.passes, "text": adapter.decode(res.ids),
                    "accepted_by_pos": res.accepted_by_pos, "drafted_by_pos": res.drafted_by_pos}
        return go

    base = measure(adapter, problems, plain, device)
    results = [summarise("greedy (model.generate)", base, None)]
    print(f"greedy: {results[0]['passes']:.1f} passes, {1000 * results[0]['seconds']:.1f} ms / problem", flush=True)
    for m in (int(x) for x in args.draft_lengths.split(",") if x.strip()):
        name = f"speculative, draft {m}" + (" (loop only, no heads)" if m == 0 else "")
        results.append(summarise(name, measure(adapter, problems, speculative(m), device), base))
        r = results[-1]
        print(f"{name}: identical {r['identical']}/{r['n']}, {r['tokens_per_pass']:.2f} tokens/pass, "
              f"passes x{r['passes_ratio']:.3f}, wall x{r['seconds_ratio']:.3f}", flush=True)
    dtype = str(next(adapter.model.parameters()).dtype).removeprefix("torch.")
    meta = {"model": args.model, "device": str(device), "dtype": dtype, "limit": args.limit, "seed": args.seed,
            "threads": args.threads, "max_new_tokens": max_new, "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    print(f"{meta}\n" + table(results))
    write_json(args.out, {"meta": meta, "results": results})
    return results


if __name__ == "__main__":
    import sys

    for path in sys.argv[1:]:
        data = json.loads(Path(path).read_text())
        print(data["meta"], table(data["results"]), sep="\n")
