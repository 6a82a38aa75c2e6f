"""The benchmarks' shared pieces on the v2 spine, and the engine's fast top-k / entropy they rely on."""

from __future__ import annotations

import pytest
import torch

from decoding import bench, bench_trace_size, bench_voting
from decoding.diffusion import DiffusionParams, entropy_of, topk_last
from decoding.voting import VotingParams


@pytest.mark.parametrize("vocab", [25, 600, 1024, 5000])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_topk_last_matches_torch_topk(vocab: int, k: int) -> None:
    g = torch.Generator().manual_seed(vocab + k)
    full = torch.randn(2, 9, vocab, generator=g)
    tied = torch.randint(0, 4, (2, 9, vocab), generator=g).float()  # many exact ties
    for x in (full, full[:, 3:], tied, tied[:, 3:]):  # contiguous and a strided answer slice
        values, ids = topk_last(x, k)
        assert torch.equal(values, x.topk(k, dim=-1).values)
        assert torch.equal(x.gather(-1, ids), values)  # the ids point at those values
        assert ids.shape == (*x.shape[:-1], k)


def test_entropy_of_matches_the_logsumexp_formula() -> None:
    logits = torch.randn(2, 7, 3000, generator=torch.Generator().manual_seed(0)) * 3
    probs = torch.softmax(logits, -1)
    reference = torch.logsumexp(logits, -1) - (probs * logits).sum(-1)
    assert torch.allclose(entropy_of(logits, probs), reference, atol=1e-4)
    assert torch.allclose(entropy_of(logits, probs, exact=True), reference, atol=1e-4)


def test_voting_bench_settings_go_through_the_registry_params() -> None:
    base = VotingParams(k=5, tau=0.3, temperature=0.6, gen_length=80, block_length=16)
    s = bench_voting.settings(base)
    assert s["single"].method == "majority" and s["single"].k == 1 and s["single"].temperature == 0
    assert s["single"].steps == 80 and s["majority@5"].steps == 80 and s["majority@5"].k == 5
    assert s["dvoting"].method == "dvoting" and not s["dvoting"].batched and s["dvoting_batched"].batched
    assert set(bench_voting.methods(base)) == set(s)


def test_run_method_scores_string_answers(zoo_dir) -> None:
    from decoding.models import load

    adapter = load(str(zoo_dir / "tiny-dllm"), "cpu")
    problems = bench.pick_problems(2, seed=0, level=1)
    params = DiffusionParams(gen_length=80, block_length=16, steps=80, strategy="threshold")
    result = bench.run_method(adapter, bench.registry_method("diffusion", params, seed=0), problems)
    assert result["n"] == 2 and 0 <= result["accuracy"] <= 1 and 1 <= result["nfe"] <= 80
    assert set(result["by_level"]) == {"1"}


def test_trace_size_measures_the_saved_bytes(zoo_dir) -> None:
    from decoding.models import load

    adapter = load(str(zoo_dir / "tiny-dllm"), "cpu")
    row = bench_trace_size.measure(adapter, "tiny-dllm", "voting", bench_trace_size.PROMPT,
                                   {"method": "majority", "k": 2, "gen_length": 16, "steps": 4}, None)
    assert row["bytes"] > 1000 and row["nfe"] == 2 * 4 and row["expected"] == "42"
