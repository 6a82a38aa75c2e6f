"""The engine against the reference samplers, re-implemented here from their published code (LLaDA's
generate.py, dVoting's generate_entropy_adaptive) and run on the zoo dLLM at temperature 0: the same tokens,
committed at the same steps, with the same confidences."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from decoding.diffusion import DiffusionParams, denoise
from decoding.models import load
from decoding.tasks import TASKS
from decoding.trace import Tokens

PROMPTS = ["12+7-5*3=?\n", "13-2=?\n", "56-29-26+83*6-88-8=?\n", "5+5+5+5=?\n"]


@pytest.fixture(scope="module")
def dllm(zoo_dir):
    return load(str(zoo_dir / "tiny-dllm"))


def reference_llada(model, prompt: torch.Tensor, steps: int, gen_length: int, block_length: int, mask_id: int):
    """LLaDA's generate() at temperature 0, low_confidence remasking, returning (canvas, {pos: (step, conf)})."""
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt
    P, n_blocks = prompt.shape[1], gen_length // block_length
    per_block = steps // n_blocks
    commits, step = {}, 0
    for b in range(n_blocks):
        n = int((x[:, P + b * block_length:P + (b + 1) * block_length] == mask_id).sum())
        counts = [n // per_block + (1 if i < n % per_block else 0) for i in range(per_block)]
        for i in range(per_block):
            mask_index = x == mask_id
            logits = model(x).logits.float()
            x0 = torch.argmax(logits, dim=-1)
            p = F.softmax(logits, dim=-1)
            x0_p = torch.gather(p, -1, x0[..., None])[..., 0]
            x0_p[:, P + (b + 1) * block_length:] = -torch.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, -torch.inf)
            step += 1
            _, select = torch.topk(confidence[0], k=counts[i])
            for pos in select.tolist():
                commits[pos - P] = (step, float(confidence[0, pos]))
            x[0, select] = x0[0, select]
    return x[0, P:].tolist(), commits


def reference_dvoting(model, prompt: torch.Tensor, gen_length: int, block_length: int, mask_id: int, tau: float):
    """dVoting's generate_entropy_adaptive at temperature 0 (batch 1): canvas and commit steps."""
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, :prompt.shape[1]] = prompt
    start, commits, step = prompt.shape[1], {}, 0
    while (x[:, start:] == mask_id).any():
        mask_index = x == mask_id
        logits = model(x).logits
        x0 = torch.argmax(logits, dim=-1)
        p = F.softmax(logits.to(torch.float64), dim=-1)
        entropy = -(p * torch.log(p + 1e-12)).sum(-1)
        confidence = torch.where(mask_index, -entropy, -torch.inf)
        step += 1
        guard = True
        for blk in range(gen_length // block_length):
            lo, hi = start + blk * block_length, start + (blk + 1) * block_length
            blk_mask = mask_index[:, lo:hi]
            if not blk_mask.any():
                continue
            if any((x[:, start + b * block_length:start + (b + 1) * block_length] == mask_id).any() for b in range(blk)):
                break
            select = (entropy[:, lo:hi] < tau) & blk_mask
            if not select.any() and guard:
                i = int(torch.argmax(torch.where(blk_mask, confidence[:, lo:hi], -torch.inf)[0]))
                x[:, lo + i] = x0[:, lo + i]
                commits[lo + i - start] = step
                guard = False
                continue
            for i in torch.nonzero(select[0]).flatten().tolist():
                x[:, lo + i] = x0[:, lo + i]
                commits[lo + i - start] = step
            if (x[:, lo:hi] == mask_id).any():
                break
    return x[0, start:].tolist(), commits


def engine(adapter, prompt: str, params: DiffusionParams):
    commits, conf, canvas = {}, {}, [None] * params.gen_length
    for e in denoise(adapter, prompt, params, task=TASKS["zoo"]):
        if isinstance(e, Tokens) and e.action == "propose":
            conf.update({(e.step, p): c for p, c in zip(e.pos, e.conf)})
        if isinstance(e, Tokens) and e.action == "commit":
            commits.update({p: (e.step, conf[(e.step, p)]) for p in e.pos})
            for p, t in zip(e.pos, e.ids):
                canvas[p] = t
    return canvas, commits


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("steps", [40, 80])  # gen/2 (ties between equal confidences matter here) and gen
def test_low_confidence_equals_llada_generate(dllm, prompt: str, steps: int) -> None:
    ids = torch.tensor([dllm.encode_prompt(prompt)])
    with torch.no_grad():
        ref_canvas, ref_commits = reference_llada(dllm.model, ids, steps, 80, 16, dllm.mask_id)
    assert dllm.mask_id not in ref_canvas  # LLaDA may pick [MASK]; the zoo model never does at T = 0
    canvas, commits = engine(dllm, prompt, DiffusionParams(gen_length=80, steps=steps, block_length=16))
    assert canvas == ref_canvas
    assert {p: s for p, (s, _) in commits.items()} == {p: s for p, (s, _) in ref_commits.items()}
    assert all(abs(commits[p][1] - c) <= 6e-4 for p, (_, c) in ref_commits.items())  # traces keep 3 decimals


@pytest.mark.parametrize("prompt", PROMPTS)
def test_entropy_threshold_equals_dvoting_reference(dllm, prompt: str) -> None:
    ids = torch.tensor([dllm.encode_prompt(prompt)])
    for tau in (0.3, 0.01):
        with torch.no_grad():
            ref_canvas, ref_commits = reference_dvoting(dllm.model, ids, 80, 16, dllm.mask_id, tau)
        canvas, commits = engine(dllm, prompt, DiffusionParams(gen_length=80, steps=80, block_length=16,
                                                               strategy="entropy_threshold", entropy_threshold=tau))
        assert canvas == ref_canvas
        assert {p: s for p, (s, _) in commits.items()} == ref_commits
