"""Pick the app's example problems by running the zoo dLLM on the held-out set, and record why each was chosen.

    python -m decoding.pick_examples                      # measure, print the table, write examples/prompts.json
    python -m decoding.pick_examples --per-level 12 --dry-run
    python -m decoding.pick_examples --levels 5,6 --per-level 10 --seed 1 --sweep 0.6,0.8,1.0   # dVoting's T

On the 2-core CPU box the default (10 problems per level, levels 2-6) takes ~2.5 minutes with one torch thread.

Every candidate runs with each tab's DEFAULT parameters and default seed (what a visitor's first click runs):
- diffusion: greedy low-confidence decoding; measured: correct or not, the highest entropy of a token committed
  at some step (a step where the model commits while unsure), the mean entropy over the answer at step 1;
- voting (dVoting): measured: how many samples ran, how many positions a later sample kept, the stop reason,
  whether the first samples disagree, whether the majority is right.

Chosen, per tab, each with a label ("what it shows") and the measured reason:
- diffusion: the problem with the highest-entropy commit that is still answered right; one the model gets wrong;
  a short easy one (the blocks filling left to right);
- voting: first samples that disagree so that later samples keep the agreed positions (the most samples, then the
  most kept positions);
  one where the vote's majority is right although the first sample is wrong (if any); an easy one that stops after
  two agreeing samples;
- the file's untagged entries (no `methods`: the level ladder, one problem per level) are kept as they are: every tab
  lists them after its own, and a tab with no examples of its own gets only them.
The file stays a list of problems (question, prompt, answer, level, solution), plus `methods`, `label`, `why`;
`decoding.methods.examples(method)` reads it for each tab.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from decoding import diffusion, task, voting
from decoding.methods import default_seed
from decoding.models import load
from decoding.tasks import TASKS
from decoding.trace import Node, RunEnd, Selection, Tokens

OUT = Path(__file__).resolve().parent.parent / "examples" / "prompts.json"


def measure_diffusion(adapter, problem: task.Problem) -> dict:
    """One default diffusion run: answer, correctness, the highest entropy of a committed token and its step."""
    zoo = TASKS["zoo"]
    entropy: dict[tuple[int, int], float] = {}  # (step, pos) -> entropy of the proposal at that step
    peak, peak_step, first_mean, answer = 0.0, 0, 0.0, None
    for e in diffusion.decode(adapter, problem.prompt, diffusion.DiffusionParams(), task=zoo,
                              seed=default_seed(diffusion.decode)):
        if isinstance(e, Tokens) and e.action == "propose" and e.entropy is not None:
            entropy.update({(e.step, p): h for p, h in zip(e.pos, e.entropy, strict=True)})
            if e.step == 1:
                first_mean = sum(e.entropy) / len(e.entropy)
        elif isinstance(e, Tokens) and e.action == "commit":
            for p in e.pos:
                if entropy.get((e.step, p), 0.0) > peak:
                    peak, peak_step = entropy[(e.step, p)], e.step
        elif isinstance(e, RunEnd):
            answer = e.answer
    return {"answer": answer, "correct": zoo.is_correct(answer, str(problem.answer)),
            "peak_commit_entropy": round(peak, 3), "peak_step": peak_step, "first_step_mean_entropy": round(first_mean, 3)}


def measure_voting(adapter, problem: task.Problem, params: voting.VotingParams | None = None) -> dict:
    """One default voting run: samples, kept positions (keep deltas), stop reason, answers, majority."""
    zoo = TASKS["zoo"]
    kept, samples, answers, passes, reason, answer = 0, 0, [], [], None, None
    for e in voting.decode(adapter, problem.prompt, params or voting.VotingParams(), task=zoo,
                           seed=default_seed(voting.decode)):
        if isinstance(e, Tokens) and e.action == "keep":
            kept = max(kept, len(e.pos))
        elif isinstance(e, Node) and e.status == "finished":
            samples += 1
            answers.append(e.answer)
            passes.append(e.nfe)
        elif isinstance(e, Selection):
            reason = e.reason or reason
        elif isinstance(e, RunEnd):
            answer = e.answer
    expected = str(problem.answer)
    return {"samples": samples, "kept": kept, "reason": reason, "answers": answers, "passes": passes, "answer": answer,
            "correct": zoo.is_correct(answer, expected),
            "first_correct": zoo.is_correct(answers[0] if answers else None, expected)}


def _entry(problem: task.Problem, method: str, label: str, why: str) -> dict:
    return {"question": problem.question, "prompt": problem.prompt, "answer": problem.answer, "level": problem.level,
            "solution": problem.solution, "methods": [method], "label": label, "why": why}


def choose(rows: list[dict]) -> list[dict]:
    """The examples, from the measured rows ({problem, diffusion, voting}); see the module docstring."""
    out = []
    d_right = [r for r in rows if r["diffusion"]["correct"]]
    if d_right:
        r = max(d_right, key=lambda r: r["diffusion"]["peak_commit_entropy"])
        d = r["diffusion"]
        out.append(_entry(r["problem"], "diffusion", "unsure step",
                          f"default run: a token committed at step {d['peak_step']} with entropy "
                          f"{d['peak_commit_entropy']} nats (the highest of {len(rows)} problems measured); "
                          f"answer #{d['answer']} is right"))
    d_wrong = [r for r in rows if r["diffusion"]["correct"] is False]
    if d_wrong:  # prefer a wrong number (over no answer line), a short problem, then the least sure commit
        r = max(d_wrong, key=lambda r: (r["diffusion"]["answer"] is not None, r["problem"].level <= 4,
                                        r["diffusion"]["peak_commit_entropy"]))
        d = r["diffusion"]
        out.append(_entry(r["problem"], "diffusion", "wrong answer",
                          f"default run answers #{d['answer']}, expected #{r['problem'].answer}; highest commit "
                          f"entropy {d['peak_commit_entropy']} nats at step {d['peak_step']}"))
    easy = [r for r in d_right if r["problem"].level <= 2]
    if easy:
        r = min(easy, key=lambda r: r["diffusion"]["peak_commit_entropy"])
        out.append(_entry(r["problem"], "diffusion", "easy, all sure",
                          f"default run right (#{r['diffusion']['answer']}), highest commit entropy "
                          f"{r['diffusion']['peak_commit_entropy']} nats"))
    keeps = [r for r in rows if r["voting"]["kept"] > 0 and r["voting"]["correct"]] or \
        [r for r in rows if r["voting"]["kept"] > 0]
    if keeps:  # the most samples (every later sample keeps), then the most kept positions
        r = max(keeps, key=lambda r: (r["voting"]["samples"], r["voting"]["kept"]))
        v = r["voting"]
        out.append(_entry(r["problem"], "voting", "samples disagree",
                          f"default dVoting: answers {v['answers']}; sample {n_fresh_default() + 1} kept "
                          f"{v['kept']} positions; forward passes per sample {v['passes']}; stop: {v['reason']}; "
                          f"majority #{v['answer']} "
                          f"({'right' if v['correct'] else 'wrong'})"))
    taken = {e["question"] for e in out if e["methods"] == ["voting"]}
    rescued = [r for r in rows if r["voting"]["correct"] and r["voting"]["first_correct"] is False
               and r["problem"].question not in taken]
    if rescued:
        r = max(rescued, key=lambda r: r["voting"]["kept"])
        v = r["voting"]
        out.append(_entry(r["problem"], "voting", "vote fixes sample 1",
                          f"default dVoting: sample 1 answers #{v['answers'][0]} (wrong), the majority of "
                          f"{v['samples']} samples #{v['answer']} is right; kept {v['kept']} positions"))
    agree = [r for r in rows if r["voting"]["samples"] == 2 and r["voting"]["correct"]]
    if agree:
        r = min(agree, key=lambda r: r["problem"].level)
        out.append(_entry(r["problem"], "voting", "early stop",
                          f"default dVoting: answers {r['voting']['answers']}, stop: {r['voting']['reason']}"))
    return out


def n_fresh_default() -> int:
    return voting.n_fresh(voting.VotingParams().k)


def sweep(adapter, problems: list[task.Problem], temperatures: list[float]) -> None:
    """dVoting's default run at several temperatures: share of problems where a later sample keeps positions,
    majority accuracy, mean samples and forward passes."""
    print(f"{'T':>5} {'keeps':>7} {'right':>7} {'samples':>7}")
    for t in temperatures:
        runs = [measure_voting(adapter, p, voting.VotingParams(temperature=t)) for p in problems]
        n = len(runs)
        print(f"{t:>5.2f} {sum(r['kept'] > 0 for r in runs):>3}/{n:<3} {sum(bool(r['correct']) for r in runs):>3}/{n:<3} "
              f"{sum(r['samples'] for r in runs) / n:>7.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-dllm")
    parser.add_argument("--per-level", type=int, default=8, help="held-out problems measured per level")
    parser.add_argument("--levels", default="2,3,4,5,6")
    parser.add_argument("--seed", type=int, default=0, help="which held-out problems are drawn")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--dry-run", action="store_true", help="print, do not write")
    parser.add_argument("--sweep", default="", metavar="T,T,...",
                        help="instead: dVoting at these temperatures (other params default): how often a later "
                             "sample keeps positions, and the majority's accuracy")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    adapter = load(args.model)
    levels = [int(x) for x in args.levels.split(",")]
    pool = task.load_heldout()
    rng = random.Random(args.seed)
    problems = [p for lv in levels for p in rng.sample([p for p in pool if p.level == lv], args.per_level)]
    if args.sweep:
        sweep(adapter, problems, [float(t) for t in args.sweep.split(",")])
        return
    rows, t0 = [], time.perf_counter()
    print(f"{'level':>5} {'question':<26} {'diff':>4} {'peak H':>6} {'H@1':>5} | {'n':>2} {'kept':>4} "
          f"{'stop':<10} {'vote':>4} answers")
    for p in problems:
        d, v = measure_diffusion(adapter, p), measure_voting(adapter, p)
        rows.append({"problem": p, "diffusion": d, "voting": v})
        print(f"{p.level:>5} {p.question:<26} {'ok' if d['correct'] else 'x':>4} {d['peak_commit_entropy']:>6.3f} "
              f"{d['first_step_mean_entropy']:>5.2f} | {v['samples']:>2} {v['kept']:>4} {v['reason'] or '-':<10} "
              f"{'ok' if v['correct'] else 'x':>4} {v['answers']}", flush=True)
    for lv in levels:
        at = [r for r in rows if r["problem"].level == lv]
        print(f"level {lv}: diffusion right {sum(bool(r['diffusion']['correct']) for r in at)}/{len(at)}, "
              f"dVoting reaches a keep {sum(r['voting']['kept'] > 0 for r in at)}/{len(at)}, "
              f"mean H@1 {sum(r['diffusion']['first_step_mean_entropy'] for r in at) / max(len(at), 1):.2f}")
    chosen = choose(rows)
    print(f"\n{len(rows)} problems in {time.perf_counter() - t0:.0f}s; chosen:")
    for e in chosen:
        print(f"  [{e['methods'][0]}] {e['question']}: {e['label']} -- {e['why']}")
    general = [e for e in json.loads(args.out.read_text()) if not e.get("methods")] if args.out.is_file() else []
    if not args.dry_run:
        args.out.write_text(json.dumps(chosen + general, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
