"""The shared autoregressive decoder on the zoo's causal model (tiny-ar): greedy equals model.generate() token for
token (alone and batched with left padding), each token is recorded (propose + commit, raw-distribution stats),
sampling goes through transformers' warpers and replays by seed, the cache changes nothing."""

from __future__ import annotations

import math

import pytest
import torch

from decoding import autoregressive as ar
from decoding.models import load
from decoding.tasks import TASKS
from decoding.trace import Node, RunEnd, RunStart, Tokens

TASK = TASKS["zoo"]
QUESTIONS = ["3+31*5+6+25=?", "13-2=?", "63-49-6+49-25-11*5=?"]
N = 24  # tokens per row: short runs keep the suite fast


@pytest.fixture(scope="module")
def adapter(zoo_dir):
    return load(str(zoo_dir / "tiny-ar"))


@pytest.fixture(scope="module")
def prompts(adapter) -> list[list[int]]:
    return [adapter.encode_prompt(TASK.format_prompt(q)) for q in QUESTIONS]


def run(gen):
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value


def reference(adapter, ids: list[list[int]], n: int = N) -> list[list[int]]:
    """model.generate() greedy on left-padded rows, cut after each row's first EOS."""
    P = max(map(len, ids))
    x = torch.tensor([[0] * (P - len(p)) + p for p in ids])
    mask = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in ids])
    out = adapter.model.generate(x, attention_mask=mask, max_new_tokens=n, do_sample=False,
                                 eos_token_id=adapter.eos_ids, pad_token_id=0)[:, P:].tolist()
    cut = []
    for row in out:
        end = next((i for i, t in enumerate(row) if t in adapter.eos_ids), None)
        cut.append(row if end is None else row[:end + 1])
    return cut


def test_greedy_equals_generate_alone_and_batched(adapter, prompts) -> None:
    events, done = run(ar.generate(adapter, prompts, ar.generation_config(N), task=TASK))
    assert done.tokens == reference(adapter, prompts)  # batched, left-padded
    for p, tokens in zip(prompts, done.tokens):
        assert reference(adapter, [p]) == [tokens]  # each row alone
    assert done.finished[1] and done.texts[1] == "13-2=11\n#11" and done.answers[1] == "11"
    assert done.nfe == max(len(t) for t in done.tokens)  # one batched pass per step
    assert done.row_nfe == [len(t) for t in done.tokens]  # a finished row stops counting
    nodes = [e for e in events if isinstance(e, Node)]
    assert [n.seq for n in nodes] == [0, 1, 2] and nodes[1].answer == "11"


def test_each_token_recorded_from_the_raw_distribution(adapter, prompts) -> None:
    events, done = run(ar.generate(adapter, prompts[:1], ar.generation_config(N), record_k=3))
    proposals = [e for e in events if isinstance(e, Tokens) and e.action == "propose"]
    commits = [e for e in events if isinstance(e, Tokens) and e.action == "commit"]
    assert [e.pos for e in proposals] == [[t] for t in range(N)] == [e.pos for e in commits]
    assert [e.ids[0] for e in commits] == done.tokens[0]
    assert [e.step for e in commits] == list(range(1, N + 1))
    scores = adapter.model.generate(torch.tensor(prompts[:1]), max_new_tokens=N, do_sample=False, output_scores=True,
                                    return_dict_in_generate=True, eos_token_id=adapter.eos_ids, pad_token_id=0).scores
    for e, s in zip(proposals, scores):
        p = torch.softmax(s[0].float(), -1)
        assert e.entropy[0] == pytest.approx(float(torch.special.entr(p).sum()), abs=1.5e-3)  # nats
        assert e.conf[0] == pytest.approx(float(p.max()), abs=1.5e-3)
        assert e.top_ids[0] == p.topk(3).indices.tolist() or math.isclose(*sorted(p.topk(4).values[2:4].tolist()))


def test_cache_off_gives_the_same_tokens(adapter, prompts) -> None:
    _, cached = run(ar.generate(adapter, prompts, ar.generation_config(N)))
    _, free = run(ar.generate(adapter, prompts, ar.generation_config(N), use_cache=False))
    assert cached.tokens == free.tokens


def test_sampling_through_warpers_replays_by_seed(adapter, prompts) -> None:
    hot = ar.generation_config(N, temperature=1.5)
    assert [type(w).__name__ for w in ar.warpers(hot)] == ["TemperatureLogitsWarper"]
    assert [type(w).__name__ for w in ar.warpers(ar.generation_config(N, 0.7, 5, 0.9))] == [
        "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]
    _, a = run(ar.generate(adapter, [prompts[2]] * 2, hot, seed=5))
    _, b = run(ar.generate(adapter, [prompts[2]] * 2, hot, seed=5))
    _, alone = run(ar.generate(adapter, [prompts[2]], hot, seed=6))
    assert a.tokens == b.tokens
    assert alone.tokens[0] == a.tokens[1]  # row r samples with seed + r, alone or batched
    _, top1 = run(ar.generate(adapter, [prompts[2]], ar.generation_config(N, 1.5, top_k=1), seed=5))
    assert top1.tokens == reference(adapter, [prompts[2]])  # top-k 1 through the warper = greedy


def test_decode_signature_and_context_check(adapter) -> None:
    events = list(ar.decode(adapter, TASK.format_prompt("13-2=?"), ar.ARParams(max_new_tokens=16), task=TASK))
    assert isinstance(events[0], RunStart) and isinstance(events[-1], RunEnd)
    assert events[-1].answer == "11" and events[-1].nfe == 12
    with pytest.raises(ValueError, match="context"):
        list(ar.decode(adapter, "1+1=?\n", ar.ARParams(max_new_tokens=adapter.max_length)))
