"""Evaluate the shipped zoo the way the app runs it: public loader, inspectable engine, held-out problems.

    python -m decoding.zoo.eval [--n 60] [--models tiny-dllm tiny-ar tiny-prm] [--samples 8]

quick_eval (the training-side yardstick) batches many problems through its own decoding loop; this script
checks what a user actually gets: `decoding.models.load(name)`, the dLLM through the registry's `diffusion`
method (low_confidence, 40 steps, blocks of 16, gen_length 80: the app's default; each sample's text read from
its `Node` event), answers read by the zoo task (strings), the AR model through HF `generate`, the PRM read
through `adapter.logits` at each step delimiter. It prints a markdown table and writes examples/zoo_eval.json,
the single source of truth for the model cards and tests/test_zoo.py.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from decoding import methods, task
from decoding.diffusion import DiffusionParams
from decoding.models import ZOO_NAMES, Adapter, load
from decoding.tasks import TASKS
from decoding.trace import Node
from decoding.voting import majority
from decoding.zoo.quick_eval import TEMPERATURE, auroc
from decoding.zoo.train import corrupt

OUT_PATH = Path(__file__).resolve().parents[2] / "examples" / "zoo_eval.json"
SEED = 0
TASK = TASKS["zoo"]  # reads answers as strings; compared with str(problem.answer)
# The app's default dLLM path (the engine's defaults spelled out, so a change there shows up here).
ENGINE = {"strategy": "low_confidence", "steps": 40, "block_length": 16, "gen_length": 80}
# The targets (build_zoo's selection rule uses the same numbers).
SINGLE_BAND = (0.40, 0.85)
PASS8_MIN = 0.85
LEVEL6_LIFT_MIN = 0.05
AUROC_MIN = 0.90


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)  # progress on stderr: stdout is the table


def heldout_sample(n: int, seed: int = SEED) -> list[task.Problem]:
    """`n` held-out problems spread evenly over the levels (level order, then interleaved), seeded."""
    rng = random.Random(seed)
    by_level = {lv: [p for p in task.load_heldout() if p.level == lv] for lv in task.LEVELS}
    picks = {
        lv: rng.sample(ps, n // len(task.LEVELS) + (i < n % len(task.LEVELS)))
        for i, (lv, ps) in enumerate(by_level.items())
    }
    # Interleaved, so any prefix is still spread over the levels.
    return [picks[lv][j] for j in range(max(map(len, picks.values()))) for lv in task.LEVELS if j < len(picks[lv])]


# ---------------------------------------------------------------- generators


def dllm_texts(adapter: Adapter, prompt: str, temperature: float, samples: int, seed: int = SEED) -> list[str]:
    """One batched run of the registry's diffusion method (row i seeded seed + i); each row's text from the
    last Node event of that row."""
    params = DiffusionParams(**ENGINE, temperature=temperature, batch=samples)
    texts: dict[int, str] = {}
    for e in methods.get("diffusion").decode(adapter, prompt, params, task=TASK, seed=seed):
        if isinstance(e, Node) and e.seq is not None:
            texts[e.seq] = e.text or ""
    return [texts[i] for i in range(samples)]


def _until_eos(adapter: Adapter, ids: list[int]) -> str:
    for i, t in enumerate(ids):
        if t in adapter.eos_ids:
            return adapter.decode(ids[:i])
    return adapter.decode(ids)


@torch.no_grad()
def ar_texts(adapter: Adapter, prompt: str, temperature: float, samples: int, seed: int = SEED) -> list[str]:
    """HF generate, the samples batched as one prompt repeated (no padding needed)."""
    ids = torch.tensor([adapter.encode_prompt(prompt)] * samples, device=adapter.device)
    torch.manual_seed(seed)
    sample = temperature > 0
    out = adapter.model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        do_sample=sample,
        temperature=temperature if sample else None,
        top_k=None,
        top_p=None,
        max_new_tokens=adapter.settings.get("max_new_tokens", ENGINE["gen_length"]),
        pad_token_id=adapter.tokenizer.pad_token_id,
        eos_token_id=adapter.eos_ids,
    )
    return [_until_eos(adapter, row) for row in out[:, ids.shape[1] :].tolist()]


GENERATE = {"masked_diffusion": dllm_texts, "causal": ar_texts}


def run_generator(adapter: Adapter, probs: list[task.Problem], samples: int) -> tuple[dict, list[list[str]]]:
    """Greedy + `samples` samples at T=1 per problem; returns the metrics and the sampled texts."""
    generate = GENERATE[adapter.kind]
    greedy, sampled, t0 = [], [], time.perf_counter()
    for i, p in enumerate(probs):
        prompt = TASK.format_prompt(p.question)
        greedy.append(TASK.extract_answer(generate(adapter, prompt, 0.0, 1)[0]))
        sampled.append(generate(adapter, prompt, TEMPERATURE, samples))
        if (i + 1) % 20 == 0:
            _log(f"  {adapter.spec}: {i + 1}/{len(probs)} problems, {time.perf_counter() - t0:.0f}s")
    seconds = time.perf_counter() - t0
    answers = [[TASK.extract_answer(t) for t in row] for row in sampled]
    metrics = generator_metrics(probs, greedy, answers)
    metrics |= {"wall_seconds": round(seconds, 1), "seconds_per_problem": round(seconds / len(probs), 3)}
    return metrics, sampled


def generator_metrics(probs: list[task.Problem], greedy: list[str | None], answers: list[list[str | None]]) -> dict:
    """quick_eval.generator_metrics' keys (greedy, single, maj@5, pass@8, per level) plus maj@8; the vote is
    the app's (`voting.majority`: most common answer, ties to the first seen). Answers are the zoo task's
    strings, compared with str(problem.answer)."""
    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 4)

    rows = []
    for p, g, a in zip(probs, greedy, answers):
        expected = str(p.answer)
        rows.append(
            {
                "level": p.level,
                "greedy": g == expected,
                "single": sum(x == expected for x in a) / len(a),
                "maj@5": majority(a[:5]) == expected,
                "maj@8": majority(a) == expected,
                "pass@8": expected in a,
            }
        )
    out = {k: mean([r[k] for r in rows]) for k in ("greedy", "single", "maj@5", "maj@8", "pass@8")}
    for key, name in (("single", "single_by_level"), ("maj@5", "maj5_by_level")):
        out[name] = {
            str(lv): mean([r[key] for r in rows if r["level"] == lv])
            for lv in task.LEVELS
            if any(r["level"] == lv for r in rows)
        }
    return out


# ---------------------------------------------------------------- PRM


@torch.no_grad()
def prm_scores(adapter: Adapter, chains: list[tuple[task.Problem, str]], batch: int = 64) -> list[list[float]]:
    """P(good) / (P(good) + P(bad)) after every step's delimiter, read through `adapter.logits` (left-padded
    batches): the same readout as quick_eval.prm_step_scores, via the public adapter."""
    tok, tag = adapter.tokenizer, adapter.settings["step_tag"]
    good, bad = (tok.convert_tokens_to_ids(adapter.settings[k]) for k in ("good_token", "bad_token"))
    rows, where = [], []
    for p, completion in chains:
        ids = adapter.encode_prompt(p.prompt)
        positions = []
        for step in task.split_steps(completion):
            ids = ids + tok.encode(step + tag, add_special_tokens=False)
            positions.append(len(ids) - 1)  # the delimiter ending this step: its next-token logits score it
        rows.append(ids)
        where.append(positions)
    scores: list[list[float]] = []
    for lo in range(0, len(rows), batch):
        chunk = rows[lo : lo + batch]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), tok.pad_token_id)
        attn = torch.zeros(len(chunk), width, dtype=torch.long)
        for i, r in enumerate(chunk):
            ids[i, width - len(r) :], attn[i, width - len(r) :] = torch.tensor(r), 1
        pair = adapter.logits(ids, attn)[..., [good, bad]].softmax(-1)[..., 0].cpu()
        for i, r in enumerate(chunk):
            shift = width - len(r)
            scores.append([round(pair[i, shift + pos].item(), 6) for pos in where[lo + i]])
    return scores


def synthetic_chains(probs: list[task.Problem], seed: int = 7) -> list[tuple[task.Problem, str]]:
    """quick_eval's PRM set: each reference solution plus one with an injected error (train.corrupt)."""
    rng = random.Random(seed)
    return [(p, c) for p in probs for c in (p.solution, corrupt(rng, p))]


def prm_auroc(adapter: Adapter, chains: list[tuple[task.Problem, str]]) -> dict:
    """Step AUROC against the exact labels of `task.step_labels`."""
    scores, labels = [], []
    for (p, completion), s in zip(chains, prm_scores(adapter, chains)):
        scores += s
        labels += task.step_labels(p, completion)
    n_good = sum(labels)
    value = auroc(scores, labels) if 0 < n_good < len(labels) else None
    return {
        "step_auroc": None if value is None else round(value, 4),
        "n_chains": len(chains),
        "n_steps": len(labels),
        "n_good_steps": n_good,
    }


# ---------------------------------------------------------------- report


def targets(results: dict) -> dict:
    """The issue's targets, per model: value and pass/fail."""
    out = {}
    for name, r in results.items():
        if "single" in r:
            lift = r["maj5_by_level"]["6"] - r["single_by_level"]["6"] if "6" in r["single_by_level"] else None
            out[name] = {
                "single_in_[0.40,0.85]": {"value": r["single"], "met": SINGLE_BAND[0] <= r["single"] <= SINGLE_BAND[1]},
                "pass@8>=0.85": {"value": r["pass@8"], "met": r["pass@8"] >= PASS8_MIN},
                "level6_maj5_minus_single>=0.05": {
                    "value": None if lift is None else round(lift, 4),
                    "met": lift is not None and lift >= LEVEL6_LIFT_MIN - 1e-9,
                },
            }
        elif r.get("synthetic", {}).get("step_auroc") is not None:
            value = r["synthetic"]["step_auroc"]
            out[name] = {"step_auroc_synthetic>=0.90": {"value": value, "met": value >= AUROC_MIN}}
    return out


def table(results: dict) -> str:
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}%"

    lines = [
        "| model | greedy | single (T=1) | maj@5 | maj@8 | pass@8 | L6 single | L6 maj@5 | s/problem |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        if "single" in r:
            l6s, l6m = r["single_by_level"].get("6"), r["maj5_by_level"].get("6")
            lines.append(
                f"| {name} | {pct(r['greedy'])} | {pct(r['single'])} | {pct(r['maj@5'])} | {pct(r['maj@8'])} "
                f"| {pct(r['pass@8'])} | {pct(l6s)} | {pct(l6m)} | {r['seconds_per_problem']:.2f} |"
            )
    prm = [(n, r) for n, r in results.items() if "synthetic" in r]
    if prm:
        lines += [
            "",
            "| model | step AUROC, synthetic chains (steps) | step AUROC, real tiny-ar samples (steps) | s |",
            "| --- | --- | --- | --- |",
        ]
        for name, r in prm:
            real = r.get("real_tiny_ar")
            real_cell = f"{real['step_auroc']} ({real['n_steps']}, {real['n_good_steps']} good)" if real else "–"
            lines.append(
                f"| {name} | {r['synthetic']['step_auroc']} ({r['synthetic']['n_steps']}) | {real_cell} "
                f"| {r['wall_seconds']} |"
            )
    return "\n".join(lines)


def evaluate(models: list[str], n: int, samples: int, seed: int = SEED) -> dict:
    probs = heldout_sample(n, seed)
    results: dict[str, dict] = {}
    ar_samples: list[list[str]] | None = None
    for name in models:
        adapter = load(name, "cpu")
        if adapter.kind == "prm":
            continue
        _log(f"{name}: {len(probs)} problems x (greedy + {samples} samples)")
        results[name], sampled = run_generator(adapter, probs, samples)
        if name == "tiny-ar":
            ar_samples = sampled
    for name in models:
        adapter = load(name, "cpu")
        if adapter.kind != "prm":
            continue
        t0 = time.perf_counter()
        results[name] = {"synthetic": prm_auroc(adapter, synthetic_chains(probs))}
        if ar_samples is None:  # the PRM alone: draw the real chains it is scored on
            ar = load("tiny-ar", "cpu")
            ar_samples = [ar_texts(ar, TASK.format_prompt(p.question), TEMPERATURE, samples) for p in probs]
        real = [(p, t) for p, row in zip(probs, ar_samples) for t in row if task.split_steps(t)]
        results[name]["real_tiny_ar"] = prm_auroc(adapter, real)
        results[name]["wall_seconds"] = round(time.perf_counter() - t0, 1)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=60, help="held-out problems, spread evenly over the 6 levels")
    ap.add_argument("--models", nargs="+", default=list(ZOO_NAMES), choices=ZOO_NAMES)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=OUT_PATH)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    results = evaluate(a.models, a.n, a.samples, a.seed)
    report = {
        "command": "python -m decoding.zoo.eval " + " ".join(sys.argv[1:]),
        "n": a.n,
        "samples": a.samples,
        "seed": a.seed,
        "temperature": TEMPERATURE,
        "engine": ENGINE,
        "device": "cpu",
        "threads": a.threads,
        "torch": torch.__version__,
        "wall_seconds": round(time.perf_counter() - t0, 1),
        "models": results,
        "targets": targets(results),
    }
    print(table(results))
    for name, checks in report["targets"].items():
        print(f"{name}: " + ", ".join(f"{k} {'✓' if c['met'] else '✗'} ({c['value']})" for k, c in checks.items()))
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {a.out} ({report['wall_seconds']}s)")


if __name__ == "__main__":
    main()
