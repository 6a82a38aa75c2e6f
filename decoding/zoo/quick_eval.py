"""Fast batched accuracy of zoo checkpoints, used to choose which checkpoint to ship.

This is the training-side yardstick (many problems in one batch, no events); the app and
`python -m decoding.zoo.eval` use the inspectable engine and the public loader instead.

    python -m decoding.zoo.quick_eval examples/models/tiny-dllm-ckpt* --n 300
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import torch

from decoding import task
from decoding.tasks import TASKS
from decoding.zoo.train import GEN_LENGTH, Encoder, corrupt

TEMPERATURE = 1.0  # sampled accuracy is measured at T = 1: the model's own distribution
TASK = TASKS["zoo"]  # reads answers as strings, compared with str(problem.answer)


def _left_pad(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    attn = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        attn[i, width - len(r) :] = 1
    return ids.to(device), attn.to(device)


@torch.no_grad()
def dllm_generate(model, tok, prompts: list[str], temperature: float, seed: int, steps: int = 40,
                  block: int = 16) -> list[str]:
    """LLaDA low-confidence remasking, semi-autoregressive blocks, for a batch of prompts."""
    device = next(model.parameters()).device
    enc = Encoder(tok)
    rows = [[tok.bos_token_id] + enc(p) + [tok.mask_token_id] * GEN_LENGTH for p in prompts]
    x, attn = _left_pad(rows, tok.pad_token_id, device)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    gen = torch.Generator(device=device).manual_seed(seed)
    start = x.shape[1] - GEN_LENGTH
    n_blocks, per_block = GEN_LENGTH // block, steps // (GEN_LENGTH // block)
    for b in range(n_blocks):
        _lo, hi = start + b * block, start + (b + 1) * block
        counts = [block // per_block + (1 if i < block % per_block else 0) for i in range(per_block)]
        for k in counts:
            logits = model(input_ids=x, attention_mask=attn, position_ids=pos).logits.float()
            logits[..., tok.mask_token_id] = -torch.inf
            if temperature > 0:
                u = torch.rand(logits.shape, device=device, generator=gen).clamp_min(1e-20)
                x0 = (logits / temperature - torch.log(-torch.log(u))).argmax(-1)
            else:
                x0 = logits.argmax(-1)
            conf = torch.softmax(logits, -1).gather(-1, x0[..., None])[..., 0]
            masked = x == tok.mask_token_id
            conf = torch.where(masked, conf, -torch.inf)
            conf[:, hi:] = -torch.inf
            top = conf.topk(k, dim=1).indices
            commit = torch.zeros_like(masked).scatter_(1, top, True) & masked
            x = torch.where(commit, x0, x)
    return [tok.decode(r[start:][r[start:] != tok.eos_token_id].tolist()) for r in x.cpu()]


@torch.no_grad()
def ar_generate(model, tok, prompts: list[str], temperature: float, seed: int) -> list[str]:
    device = next(model.parameters()).device
    enc = Encoder(tok)
    ids, attn = _left_pad([[tok.bos_token_id, *enc(p)] for p in prompts], tok.pad_token_id, device)
    torch.manual_seed(seed)
    out = model.generate(input_ids=ids, attention_mask=attn, max_new_tokens=GEN_LENGTH, do_sample=temperature > 0,
                         temperature=temperature if temperature > 0 else None, top_k=None, top_p=None,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)


def generator_metrics(generate, model, tok, probs: list[task.Problem], n_samples: int = 8) -> dict:
    prompts = [p.prompt for p in probs]
    greedy = generate(model, tok, prompts, 0.0, 0)
    samples = [generate(model, tok, prompts, TEMPERATURE, 1 + s) for s in range(n_samples)]
    answers = [[TASK.extract_answer(samples[s][i]) for s in range(n_samples)] for i in range(len(probs))]
    by_level: dict[int, list[tuple[bool, bool]]] = {}
    rows = []
    for i, p in enumerate(probs):
        expected = str(p.answer)
        single = sum(a == expected for a in answers[i]) / n_samples
        votes = Counter(a for a in answers[i][:5] if a is not None)
        maj5 = bool(votes) and votes.most_common(1)[0][0] == expected
        rows.append((TASK.extract_answer(greedy[i]) == expected, single, maj5, expected in answers[i]))
        by_level.setdefault(p.level, []).append((single, maj5))
    def mean(xs: list[float]) -> float:
        return round(sum(xs) / len(xs), 4)

    return {
        "greedy": mean([r[0] for r in rows]),
        "single": mean([r[1] for r in rows]),
        "maj@5": mean([r[2] for r in rows]),
        "pass@8": mean([r[3] for r in rows]),
        "single_by_level": {lv: mean([s for s, _ in v]) for lv, v in sorted(by_level.items())},
        "maj5_by_level": {lv: mean([m for _, m in v]) for lv, v in sorted(by_level.items())},
    }


def auroc(scores: list[float], labels: list[bool]) -> float:
    """Probability that a random good step outscores a random bad one (ties count half)."""
    pairs = sorted(zip(scores, labels))
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2
        rank_sum += avg_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@torch.no_grad()
def prm_step_scores(model, tok, prompt: str, completion: str) -> list[float]:
    """P([GOOD]) / (P([GOOD]) + P([BAD])) read after every step's delimiter."""
    device = next(model.parameters()).device
    enc = Encoder(tok)
    steps = task.split_steps(completion)
    text = prompt + "".join(s + task.STEP_DELIMITER for s in steps)
    ids = torch.tensor([[tok.bos_token_id, *enc(text)]], device=device)
    logits = model(input_ids=ids).logits[0].float()
    good, bad = tok.convert_tokens_to_ids("[GOOD]"), tok.convert_tokens_to_ids("[BAD]")
    scores, pos = [], len(prompt)
    for s in steps:
        pos += len(s) + 1
        pair = logits[pos, [good, bad]].softmax(-1)
        scores.append(pair[0].item())
    return scores


def prm_metrics(model, tok, probs: list[task.Problem]) -> dict:
    rng = random.Random(7)
    scores, labels = [], []
    for p in probs:
        for completion in (p.solution, corrupt(rng, p)):
            scores += prm_step_scores(model, tok, p.prompt, completion)
            labels += task.step_labels(p, completion)
    out = {"step_auroc": round(auroc(scores, labels), 4), "n_steps": len(labels)}
    policy_dir = task.HELDOUT_PATH.parent / "models" / "tiny-ar"
    if policy_dir.is_dir():  # also on the errors a real policy makes (4 samples per problem, T = 1)
        from transformers import AutoModelForCausalLM

        device = next(model.parameters()).device
        policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).to(device).eval()
        scores, labels = [], []
        for s in range(4):
            for p, completion in zip(probs, ar_generate(policy, tok, [p.prompt for p in probs], 1.0, 100 + s)):
                scores += prm_step_scores(model, tok, p.prompt, completion)
                labels += task.step_labels(p, completion)
        if 0 < sum(labels) < len(labels):
            out["policy_auroc"] = round(auroc(scores, labels), 4)
    return out


def evaluate_dir(path: Path, n: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(path)
    held = task.load_heldout()
    probs = [held[i] for i in random.Random(0).sample(range(len(held)), min(n, len(held)))]
    name = json.loads((path / "training.json").read_text())["name"]
    if name == "tiny-dllm":
        model = AutoModelForMaskedLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        return {"path": str(path), **generator_metrics(dllm_generate, model, tok, probs)}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
    if name == "tiny-ar":
        return {"path": str(path), **generator_metrics(ar_generate, model, tok, probs)}
    return {"path": str(path), **prm_metrics(model, tok, probs)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--n", type=int, default=300)
    a = ap.parse_args()
    for p in a.paths:
        print(json.dumps(evaluate_dir(p, a.n)), flush=True)


if __name__ == "__main__":
    main()
