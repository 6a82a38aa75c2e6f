"""Models split across GPUs: `python -m decoding.bench split` (needs 2 or more GPUs).

1. **Same trace.** Every decoder (diffusion, voting, HARP's autoregressive loop, speculative, search) runs on a
   zoo model loaded on one GPU and on the same model split over the GPUs by accelerate
   (`decoding.models.load(device_map="balanced")`), with the same seed, and the two traces are compared: token
   ids, answers and every other non-float field must be equal; floats (probabilities, entropies, scores) may
   differ by at most `--atol`. Both sides run in bf16 (the loader's GPU dtype) with the same kernels on the same
   kind of GPU, so we expect them equal; the table prints the largest float difference seen.
2. **Per-step time.** A random model of LLaDA-8B's shape (`decoding.bench_overhead`'s bidirectional stand-in,
   bf16) decodes 256 tokens through the engine on one GPU, then dispatched over the GPUs by accelerate
   (`infer_auto_device_map` on balanced memory, `dispatch_model`): ms per step, median of `--repeats`.

Prints two markdown tables and writes examples/bench/split-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from decoding.bench import write_json

OUT_DIR = Path(__file__).resolve().parent.parent / "examples" / "bench"
# (method, model, params overrides, question): the registry's decoders with their defaults, on zoo questions.
CASES = [
    ("diffusion", "tiny-dllm", {}, "12+7-5*3=?"),
    ("voting", "tiny-dllm", {}, "19*2-1+17=?"),
    ("harp", "tiny-ar", {"theta": 0.5}, "63-49-6+49-25-11*5=?"),
    ("speculative", "tiny-ar", {}, "26-19+16-15=?"),
    ("search", "tiny-ar", {"method": "beam_search", "n": 8}, "12+7-5*3=?"),
    ("search", "tiny-ar", {"method": "best_of_n", "n": 8}, "4+5-1+28*5=?"),
]
def ignored(key: str) -> bool:
    return key.endswith("seconds")  # wall times (`seconds`, HARP's `harp_seconds`...): expected to differ


def compare(a, b, path: str = "") -> tuple[list[str], float]:
    """(differences other than floats within tolerance, largest float difference) between two JSON values."""
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return [], abs(float(a) - float(b))
        return [f"{path}: {a!r} != {b!r}"], 0.0
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"], 0.0
        return _merge(compare(a[k], b[k], f"{path}.{k}") for k in a if not ignored(k))
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"], 0.0
        return _merge(compare(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    return ([] if a == b else [f"{path}: {a!r} != {b!r}"]), 0.0


def _merge(parts) -> tuple[list[str], float]:
    diffs, worst = [], 0.0
    for d, w in parts:
        diffs += d
        worst = max(worst, w)
    return diffs, worst


def run_events(adapter, method: str, overrides: dict, question: str) -> list[dict]:
    from decoding import methods
    from decoding.tasks import TASKS

    entry = methods.get(method)
    params = entry.params(**overrides)
    task = TASKS["zoo"]
    return [e.model_dump(mode="json") for e in entry.decode(adapter, task.format_prompt(question), params, task=task)]


def same_trace(atol: float, device: str = "cuda:0", device_map: str | dict = "balanced", cases=CASES,
               log=print) -> list[dict]:
    """Each case on `device` alone and under `device_map`: one row per case (the CPU test uses {"": "cpu"})."""
    from decoding import (
        builtin_methods,  # noqa: F401 -- registers the methods
        models,
    )

    rows = []
    for method, model, overrides, question in cases:
        single = models.load(model, device=device)
        split = models.load(model, device=device, device_map=device_map)
        placed = sorted({str(d) for d in getattr(split.model, "hf_device_map", {"": split.device}).values()})
        t0 = time.perf_counter()
        try:
            a, b = run_events(single, method, overrides, question), run_events(split, method, overrides, question)
            diffs, worst = compare(a, b)
            error = None
        except Exception as e:  # one broken decoder must not hide the others' results
            a, diffs, worst, error = [], [], 0.0, f"{type(e).__name__}: {e}"
        row = {"method": method, "model": model, "params": overrides, "question": question, "devices": placed,
               "events": len(a), "differences": len(diffs), "first_differences": diffs[:5],
               "max_float_diff": worst, "equal": error is None and not diffs and worst <= atol, "error": error,
               "seconds": round(time.perf_counter() - t0, 2)}
        log(json.dumps(row))
        rows.append(row)
    return rows


def step_time(repeats: int, log=print) -> list[dict]:
    """ms per step of the LLaDA-8B-shaped stand-in on cuda:0 alone, then dispatched over every GPU."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    from decoding.bench_overhead import GPU_SHAPE, build_adapter, prompt_text, time_engine

    shape, steps = GPU_SHAPE, GPU_SHAPE.gen
    adapter = build_adapter(shape, torch.device("cuda:0"))
    n_params = sum(p.numel() for p in adapter.model.parameters())
    rows = []
    for layout in ("one GPU", f"split over {torch.cuda.device_count()} GPUs"):
        if layout != "one GPU":
            no_split = adapter.model._no_split_modules
            memory = get_balanced_memory(adapter.model, no_split_module_classes=no_split, dtype=torch.bfloat16)
            device_map = infer_auto_device_map(adapter.model, max_memory=memory, no_split_module_classes=no_split)
            dispatch_model(adapter.model, device_map=device_map)
            log(f"device map: {sorted(set(map(str, device_map.values())))}")
        for batch in (1, 8):
            time_engine(adapter, prompt_text(shape), batch, shape, 8)  # warm-up
            runs = [time_engine(adapter, prompt_text(shape), batch, shape, steps) for _ in range(repeats)]
            ms = statistics.median(r[0] for r in runs) * 1000 / steps
            row = {"layout": layout, "batch": batch, "params_b": round(n_params / 1e9, 2), "steps": steps,
                   "gen_length": shape.gen, "ms_per_step": round(ms, 2), "same_tokens_as_first_run": None}
            row["canvas"] = runs[0][1]
            log(json.dumps({k: v for k, v in row.items() if k != "canvas"}))
            rows.append(row)
    for row in rows:  # the split run must decode the same tokens as the single-GPU run at the same batch
        first = next(r for r in rows if r["batch"] == row["batch"])
        row["same_tokens_as_first_run"] = row["canvas"] == first["canvas"]
    for row in rows:
        del row["canvas"]
    return rows


def tables(same: list[dict], steps: list[dict], device: str) -> str:
    lines = [f"Device: {device}", "", "| method | model | params | split over | events | equal | max float diff |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in same:
        equal = "yes" if r["equal"] else f"**no** ({r['error'] or r['differences']} differences)"
        lines.append(f"| {r['method']} | {r['model']} | {r['params'] or 'defaults'} | {', '.join(r['devices'])} | "
                     f"{r['events']} | {equal} | {r['max_float_diff']:.2e} |")
    lines += ["", "| layout | batch | params | ms / step | same tokens |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['layout']} | {r['batch']} | {r['params_b']}B | {r['ms_per_step']} | {r['same_tokens_as_first_run']} |"
              for r in steps]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--atol", type=float, default=1e-3, help="largest float difference counted as equal")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true", help="only the same-trace check")


def main(args: argparse.Namespace) -> dict:
    if torch.cuda.device_count() < 2:
        raise SystemExit(f"split needs 2 or more GPUs; this machine has {torch.cuda.device_count()}")
    device = f"{torch.cuda.device_count()} × {torch.cuda.get_device_name(0)}"
    same = same_trace(args.atol)
    steps = [] if args.skip_speed else step_time(args.repeats)
    print(tables(same, steps, device))
    result = {"device": device, "same_trace": same, "step_time": steps}
    slug = torch.cuda.get_device_name(0).split()[1].lower() if " " in torch.cuda.get_device_name(0) else "gpu"
    write_json(OUT_DIR / f"split-{slug}x{torch.cuda.device_count()}.json", result)
    return result
