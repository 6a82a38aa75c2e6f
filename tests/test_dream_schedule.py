"""Dream's own timestep schedule for its algs (maskgit_plus, topk_margin, entropy, origin) on a Dream model, against
a Dream-style reference loop re-implemented here from Dream's diffusion_generate. CPU, zoo dLLM."""

from __future__ import annotations

import copy

import pytest
import torch

from decoding.diffusion import DiffusionParams, denoise, dream_count
from decoding.models import load
from decoding.trace import Tokens

PROMPT = "12+7-5=?\n"


@pytest.fixture(scope="module")
def dream_like(zoo_dir):
    adapter = copy.copy(load(str(zoo_dir / "tiny-dllm")))
    adapter.settings = {**adapter.settings, "schedule": "dream"}  # as the registry marks Dream
    return adapter


def reference_counts(n_mask: int, steps: int, eps: float = 1e-3) -> list[int]:
    """Dream's diffusion_generate: timesteps linspace(1, eps, steps + 1), int(n * (1 - s / t)), last step all."""
    timesteps = torch.linspace(1, eps, steps + 1)
    out = []
    for i in range(steps):
        t, s = timesteps[i], timesteps[i + 1]
        k = int(n_mask * (1 - s / t)) if i < steps - 1 else n_mask
        out.append(k)
        n_mask -= k
    return out


def counts_by_dream_count(n_mask: int, steps: int) -> list[int]:
    out = []
    for i in range(steps):
        k = int(dream_count(torch.ones(1, n_mask, dtype=torch.bool), i, steps)[0])
        out.append(k)
        n_mask -= k
    return out


def test_hand_built_counts_at_32_and_8_steps():
    assert reference_counts(32, 8) == [3, 4, 4, 4, 4, 4, 4, 5]
    assert counts_by_dream_count(32, 8) == [3, 4, 4, 4, 4, 4, 4, 5]
    for n, steps in [(32, 8), (64, 10), (16, 16), (24, 5), (7, 3)]:
        assert counts_by_dream_count(n, steps) == reference_counts(n, steps)


def commits_per_step(events) -> list[int]:
    per: dict[int, int] = {}
    for e in events:
        if isinstance(e, Tokens) and e.action == "commit":
            per[e.step] = per.get(e.step, 0) + len(e.pos)
    return [per[s] for s in sorted(per)]


@pytest.mark.parametrize("strategy", ["maskgit_plus", "topk_margin", "entropy"])
def test_engine_commits_dream_counts_on_a_dream_model(dream_like, zoo_dir, strategy):
    params = DiffusionParams(strategy=strategy, gen_length=32, block_length=32, steps=8)
    assert commits_per_step(denoise(dream_like, PROMPT, params)) == [3, 4, 4, 4, 4, 4, 4, 5]
    llada_style = load(str(zoo_dir / "tiny-dllm"))  # not a Dream model: LLaDA's linear count stays
    assert commits_per_step(denoise(llada_style, PROMPT, params)) == [4] * 8


def dream_filters(logits: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Dream's top_p_logits then top_k_logits (generation_utils.py), as published."""
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_indices = torch.sort(logits, descending=True)
        remove = torch.cumsum(torch.softmax(sorted_logits, -1), -1) > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = 0
        mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)
    return logits


def reference_dream(model, prompt: torch.Tensor, gen_length: int, steps: int, mask_id: int, alg: str,
                    n_text: int, top_p: float | None = None, top_k: int | None = None):
    """Dream's _sample at temperature 0 (batch 1, no shift: the zoo model is not AR-initialised), [MASK] and the
    padded vocabulary (ids >= n_text) left out as the engine does, Dream's top_p / top_k filters applied.
    Returns the canvas and {pos: step}."""
    x = torch.cat([prompt, torch.full((1, gen_length), mask_id)], 1)
    timesteps = torch.linspace(1, 1e-3, steps + 1)
    commits = {}
    for i in range(steps):
        mask_index = x == mask_id
        logits = model(x).logits.float()
        logits[..., mask_id] = -torch.inf
        logits[..., n_text:] = -torch.inf
        probs = torch.softmax(dream_filters(logits[mask_index], top_p, top_k), -1)
        top, x0 = probs.max(-1)
        if alg == "maskgit_plus":
            confidence = top
        elif alg == "topk_margin":
            two = probs.topk(2, -1).values
            confidence = two[:, 0] - two[:, 1]
        else:
            confidence = (probs * torch.log(probs + 1e-10)).sum(-1)
        n = mask_index.sum()
        k = int(n * (1 - timesteps[i + 1] / timesteps[i])) if i < steps - 1 else int(n)
        full = torch.full(x.shape, -torch.inf)
        full[mask_index] = confidence
        if k > 0:
            idx = torch.topk(full[0], k).indices
            proposal = torch.full(x.shape, mask_id)
            proposal[mask_index] = x0
            x[0, idx] = proposal[0, idx]
            for p in idx.tolist():
                commits[p - prompt.shape[1]] = i + 1
    return x[0, prompt.shape[1]:].tolist(), commits


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("gen_length,steps,top_p,top_k", [(32, 8, None, None), (24, 5, None, None),
                                                          (32, 8, 0.6, None), (32, 8, None, 2), (24, 6, 0.8, 3)])
def test_equals_dream_reference_at_temperature_zero(dream_like, alg, gen_length, steps, top_p, top_k):
    prompt = torch.tensor([dream_like.encode_prompt(PROMPT)])
    with torch.no_grad():
        canvas, commits = reference_dream(dream_like.model, prompt, gen_length, steps, dream_like.mask_id, alg,
                                         dream_like.text_vocab, top_p, top_k)
    params = DiffusionParams(strategy=alg, gen_length=gen_length, block_length=gen_length, steps=steps,
                             sample_top_p=top_p or 1.0, sample_top_k=top_k or 0)
    gen = denoise(dream_like, PROMPT, params)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        decoded = stop.value
    assert decoded.canvas[0] == canvas
    got = {p: e.step for e in events if isinstance(e, Tokens) and e.action == "commit" for p in e.pos}
    assert got == commits


def test_filters_change_the_commit_order_somewhere(dream_like):
    """The filtered cases above are not vacuous: renormalising after top-p / top-k changes Dream's scores."""
    prompt = torch.tensor([dream_like.encode_prompt(PROMPT)])
    with torch.no_grad():
        plain = reference_dream(dream_like.model, prompt, 32, 8, dream_like.mask_id, "topk_margin",
                                dream_like.text_vocab)
        filtered = reference_dream(dream_like.model, prompt, 32, 8, dream_like.mask_id, "topk_margin",
                                   dream_like.text_vocab, None, 2)
    assert plain[1] != filtered[1]


def test_origin_reveals_everything_by_the_last_step(dream_like):
    params = DiffusionParams(strategy="origin", gen_length=32, block_length=32, steps=8, temperature=0.5)
    gen = denoise(dream_like, PROMPT, params, seed=3)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        decoded = stop.value
    assert dream_like.mask_id not in decoded.canvas[0]
    assert sum(commits_per_step(events)) == 32
