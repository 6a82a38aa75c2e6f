"""Train one model of the tiny zoo on the synthetic task; seeded, CPU or CUDA.

    python -m decoding.zoo.train tiny-dllm --steps 6000 --out examples/models/tiny-dllm
    python -m decoding.zoo.train tiny-ar   --steps 6000
    python -m decoding.zoo.train tiny-prm  --steps 12000 --lm-weight 1.0

Recipes:
- tiny-dllm: ModernBertForMaskedLM with the LLaDA/MDLM objective: t ~ U(0,1) per example, each answer
  position (EOS padding included) masked with probability t, cross-entropy on masked positions
  weighted 1/t, normalised by the answer length.
- tiny-ar: LlamaForCausalLM + 3 extra MTP heads (n = 4); loss = sum of the 4 heads' cross-entropies.
- tiny-prm: LlamaForCausalLM read Math-Shepherd style: at the end of every step ("\\n") the next token
  is [GOOD] or [BAD], labelled exactly by `task.step_labels`; trained on correct chains and chains with
  injected errors. `--lm-weight` adds a next-token loss over the correct chains (never at a tag): the
  shipped PRM uses 1.0, without it the PRM plateaued at step AUROC 0.87.
Training never sees a held-out question. `--save-every` writes checkpoints (for choosing the one whose
accuracy leaves room for test-time methods); the final model goes to `--out`.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, ModernBertConfig, ModernBertForMaskedLM

from decoding import task
from decoding.mtp import MTPHeads, mtp_logits
from decoding.zoo.tokenizer import build_tokenizer

GEN_LENGTH = 80  # answer region of the dLLM: longest solution (68 chars) + EOS padding
MAX_POSITIONS = 128
# What the loader needs to know beyond config.json (written beside the weights as decoding_lens.json).
ADAPTER_SETTINGS = {
    "tiny-dllm": {"kind": "masked_diffusion", "shift_logits": False, "gen_length": GEN_LENGTH, "prompt_format": "bos"},
    "tiny-ar": {"kind": "causal", "prompt_format": "bos", "max_new_tokens": GEN_LENGTH},
    "tiny-prm": {"kind": "prm", "prompt_format": "bos", "good_token": "[GOOD]", "bad_token": "[BAD]", "step_tag": "\n"},
}


def model_config(name: str, tok) -> ModernBertConfig | LlamaConfig:
    ids = {
        "vocab_size": 32,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    if name == "tiny-dllm":
        return ModernBertConfig(
            **ids,
            cls_token_id=tok.bos_token_id,
            sep_token_id=tok.eos_token_id,
            mask_token_id=tok.mask_token_id,
            hidden_size=256,
            num_hidden_layers=6,
            num_attention_heads=4,
            intermediate_size=512,
            max_position_embeddings=MAX_POSITIONS,
            local_attention=2 * MAX_POSITIONS,  # wider than any sequence: every layer is global
            global_attn_every_n_layers=1,
            tie_word_embeddings=True,
        )
    size = {"tiny-ar": (192, 5, 512), "tiny-prm": (192, 5, 512)}[name]
    return LlamaConfig(
        **ids,
        hidden_size=size[0],
        num_hidden_layers=size[1],
        intermediate_size=size[2],
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        attn_implementation="sdpa",
    )


class Encoder:
    """Fast char -> id for training batches (the tokenizer gives the same ids)."""

    def __init__(self, tok):
        self.tok = tok
        self.ids = {c: tok.convert_tokens_to_ids(c) for c in task.STEP_DELIMITER + "0123456789+-*=?#"}

    def __call__(self, text: str) -> list[int]:
        return [self.ids[c] for c in text]


def sample_problems(rng: random.Random, n: int, exclude: set[str]) -> list[task.Problem]:
    out = []
    while len(out) < n:
        p = task.make_problem(rng, rng.choice(task.LEVELS))
        if p.question not in exclude:
            out.append(p)
    return out


def corrupt(rng: random.Random, p: task.Problem) -> str:
    """A solution with one injected error, continued from the wrong value as a model would."""
    parsed = task.parse_question(p.question)
    value, ops = parsed
    k = rng.randrange(len(ops) + 1)  # k == len(ops): wrong final answer line only
    lines, wrong = [], False
    for i, (op, operand) in enumerate(ops):
        if i == k:
            kind = rng.random()
            if kind < 0.5:
                result = task._apply(value, op, operand) + rng.choice([-10, -2, -1, 1, 2, 10])
                lines.append(f"{value}{op}{operand}={max(result, 0)}")
                value, wrong = max(result, 0), True
                continue
            if kind < 0.75:  # a copy error on the operand
                operand = operand + rng.choice([-1, 1]) if operand > 1 else operand + 1
            else:  # a wrong previous value
                value = value + rng.choice([-1, 1, 10]) if value > 1 else value + 1
        result = task._apply(value, op, operand)
        lines.append(f"{value}{op}{operand}={result}")
        value = result
    answer = value + (rng.choice([-1, 1]) if k == len(ops) else 0)
    lines.append(f"{task.ANSWER_MARKER}{answer}")
    del wrong
    return task.STEP_DELIMITER.join(lines)


WIDTH = 112  # every training row: [BOS] + prompt (<= 24) + answer region (80), padded


def _rows_to_tensor(rows: list[list[int]], fill: int) -> torch.Tensor:
    out = torch.full((len(rows), WIDTH), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def dllm_tensors(enc: Encoder, probs: list[task.Problem]) -> tuple[torch.Tensor, ...]:
    """ids = [BOS] prompt solution [EOS]* (answer region GEN_LENGTH), right-padded; answer mask."""
    tok = enc.tok
    rows, answer = [], []
    for p in probs:
        prompt = [tok.bos_token_id, *enc(p.prompt)]
        sol = enc(p.solution)
        rows.append(prompt + sol + [tok.eos_token_id] * (GEN_LENGTH - len(sol)))
        answer.append([0] * len(prompt) + [1] * GEN_LENGTH)
    return _rows_to_tensor(rows, tok.pad_token_id), _rows_to_tensor(answer, 0)


def dllm_loss(model, tok, ids: torch.Tensor, is_answer: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    is_answer = is_answer.bool()
    attn = (ids != tok.pad_token_id).long()
    eps = 1e-3
    t = (1 - eps) * torch.rand(ids.shape[0], 1, device=ids.device, generator=gen) + eps
    masked = is_answer & (torch.rand(ids.shape, device=ids.device, generator=gen) < t)
    noisy = torch.where(masked, tok.mask_token_id, ids)
    logits = model(input_ids=noisy, attention_mask=attn).logits.float()
    ce = F.cross_entropy(logits[masked], ids[masked], reduction="none")
    return (ce / t.expand_as(ids)[masked]).sum() / is_answer.sum()


def ar_tensors(enc: Encoder, probs: list[task.Problem]) -> tuple[torch.Tensor, ...]:
    """ids = [BOS] prompt solution [EOS], right-padded; targets: the solution and EOS, else -100."""
    tok = enc.tok
    rows = [[tok.bos_token_id, *enc(p.prompt + p.solution), tok.eos_token_id] for p in probs]
    targets = [[-100] * (1 + len(p.prompt)) + r[1 + len(p.prompt) :] for p, r in zip(probs, rows)]
    return _rows_to_tensor(rows, tok.pad_token_id), _rows_to_tensor(targets, -100)


def ar_loss(model, heads: MTPHeads, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # Right padding sits after EOS and carries no loss, so the causal mask alone suffices.
    logits = mtp_logits(model, heads, ids).float()
    loss = 0.0
    for k in range(heads.n_future):  # head k+1 predicts the token k+1 ahead
        pred = logits[k, :, : ids.shape[1] - k - 1]
        loss = loss + F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets[:, k + 1 :].reshape(-1))
    return loss


def prm_tensors(enc: Encoder, rng: random.Random, probs: list[task.Problem]) -> tuple[torch.Tensor, ...]:
    """ids = [BOS] prompt step1\\n step2\\n ...; tags: [GOOD]/[BAD] at each step's delimiter, else -100;
    lm: next-token targets over the solution of correct chains only (an optional dense auxiliary loss)."""
    tok = enc.tok
    good, bad = tok.convert_tokens_to_ids("[GOOD]"), tok.convert_tokens_to_ids("[BAD]")
    rows, targets, lm_targets = [], [], []
    for p in probs:
        sol = p.solution if rng.random() < 0.4 else corrupt(rng, p)
        row = [tok.bos_token_id, *enc(p.prompt + sol + task.STEP_DELIMITER)]
        target = [-100] * len(row)
        n_prompt = 1 + len(p.prompt)
        correct = sol == p.solution
        lm = [-100] * (n_prompt - 1) + (row[n_prompt:] if correct else [-100] * (len(row) - n_prompt))
        pos = len(p.prompt)  # index of the prompt's own delimiter (BOS shifts by one)
        for line, ok in zip(task.split_steps(sol), task.step_labels(p, sol)):
            pos += len(line) + 1  # the delimiter that ends this step: its next-token logits score the step
            target[pos] = good if ok else bad
        rows.append(row)
        targets.append(target)
        # A step tag's position is read for [GOOD]/[BAD]: it carries no next-token target.
        lm_targets.append([-100 if t != -100 else x for t, x in zip(target, lm)])
    return _rows_to_tensor(rows, tok.pad_token_id), _rows_to_tensor(targets, -100), _rows_to_tensor(lm_targets, -100)


def prm_loss(model, ids: torch.Tensor, tags: torch.Tensor, lm: torch.Tensor, lm_weight: float = 0.0) -> torch.Tensor:
    logits = model(input_ids=ids).logits.float()
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tags.reshape(-1))
    if lm_weight > 0:  # dense signal: learning to continue correct chains teaches the arithmetic it must check
        loss = loss + lm_weight * F.cross_entropy(logits.reshape(-1, logits.shape[-1]), lm.reshape(-1))
    return loss


def build_pool(name: str, enc: Encoder, rng: random.Random, n: int) -> tuple[torch.Tensor, ...]:
    """All training rows encoded up front, so a step is one index into tensors (the GPU was data-bound)."""
    probs = sample_problems(rng, n, task.heldout_questions())
    if name == "tiny-dllm":
        return dllm_tensors(enc, probs)
    if name == "tiny-ar":
        return ar_tensors(enc, probs)
    return prm_tensors(enc, rng, probs)


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def save(model, tok, heads, directory: Path, meta: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(directory)
    model.float()
    tok.save_pretrained(directory)
    if heads is not None:
        heads.save(directory)
    (directory / "training.json").write_text(json.dumps(meta, indent=2))
    (directory / "decoding_lens.json").write_text(json.dumps(ADAPTER_SETTINGS[meta["name"]], indent=2))


def train(
    name: str,
    steps: int,
    batch: int,
    lr: float,
    warmup: int,
    seed: int,
    device: str,
    out: Path,
    save_every: int = 0,
    log_every: int = 100,
    stop_at: int | None = None,
    max_minutes: float | None = None,
    pool_size: int = 600_000,
    lm_weight: float = 0.0,
) -> Path:
    """Train and save to `out`. `stop_at` ends early on the same schedule (reproduces a checkpoint);
    `max_minutes` is a wall-clock guard whose stopping step is recorded in training.json."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = build_tokenizer()
    enc = Encoder(tok)
    config = model_config(name, tok)
    model = (ModernBertForMaskedLM if name == "tiny-dllm" else LlamaForCausalLM)(config).to(device)
    heads = MTPHeads(config, n_future=4).to(device) if name == "tiny-ar" else None
    params = list(model.parameters()) + (list(heads.parameters()) if heads else [])
    n_params = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    gen = torch.Generator(device=device).manual_seed(seed)
    pool = [t.to(device) for t in build_pool(name, enc, rng, min(pool_size, steps * batch))]
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else torch.autocast("cpu", enabled=False)
    )
    start = time.time()
    print(f"{name}: {n_params / 1e6:.2f}M params on {device}, {steps} steps x batch {batch}", flush=True)
    stop_at = min(stop_at or steps, steps)
    for step in range(stop_at):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, warmup)
        idx = torch.randint(0, pool[0].shape[0], (batch,), device=device, generator=gen)
        rows = [t[idx] for t in pool]
        with autocast:
            if name == "tiny-dllm":
                loss = dllm_loss(model, tok, *rows, gen)
            elif name == "tiny-ar":
                loss = ar_loss(model, heads, *rows)
            else:
                loss = prm_loss(model, *rows, lm_weight=lm_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % log_every == 0 or step == stop_at - 1:
            print(f"{name} step {step} loss {loss.item():.4f} {time.time() - start:.0f}s", flush=True)
        meta = {
            "name": name,
            "lm_weight": lm_weight,
            "seed": seed,
            "steps": step + 1,
            "schedule_steps": steps,
            "batch": batch,
            "lr": lr,
            "warmup": warmup,
            "device": device,
            "params": n_params,
            "train_seconds": round(time.time() - start, 1),
            "torch": torch.__version__,
            "gen_length": GEN_LENGTH,
        }
        if save_every and (step + 1) % save_every == 0 and step + 1 < stop_at:
            save(model, tok, heads, out.parent / f"{out.name}-ckpt{step + 1}", meta)
        if max_minutes and time.time() - start > 60 * max_minutes:
            print(f"{name}: time guard hit at step {step + 1}", flush=True)
            break
    save(model, tok, heads, out, meta)
    print(f"{name}: saved {out} after {time.time() - start:.0f}s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=["tiny-dllm", "tiny-ar", "tiny-prm"])
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--save-every", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--stop-at", type=int, default=None, help="stop at this step of the --steps schedule")
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--pool-size", type=int, default=600_000)
    ap.add_argument("--lm-weight", type=float, default=0.0, help="PRM: weight of the next-token loss on correct chains")
    a = ap.parse_args()
    out = a.out or Path(task.HELDOUT_PATH).parent / "models" / a.name
    train(
        a.name,
        a.steps,
        a.batch,
        a.lr,
        a.warmup,
        a.seed,
        a.device,
        out,
        a.save_every,
        a.log_every,
        a.stop_at,
        a.max_minutes,
        a.pool_size,
        a.lm_weight,
    )


if __name__ == "__main__":
    main()
