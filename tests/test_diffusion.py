"""The masked-diffusion engine (decoding/diffusion.py) and the native DiffusionGemma path, on CPU."""

from __future__ import annotations

import json

import pytest
import torch

from decoding.diffusion import (
    STRATEGIES,
    DiffusionParams,
    StepState,
    denoise,
    schedule_count,
)
from decoding.fold import Fold
from decoding.models import load
from decoding.tasks import TASKS
from decoding.trace import Node, RunEnd, RunStart, Tokens, Trace

PROMPT = "12+7-5=?\n"


@pytest.fixture(scope="module")
def dllm(zoo_dir):
    return load(str(zoo_dir / "tiny-dllm"))


def run(adapter, seed=0, **kw):
    return list(denoise(adapter, PROMPT, DiffusionParams(**kw), seed=seed, task=TASKS["zoo"]))


class Step:
    """One pass as the old snapshot events showed it: per row, the positions committed at this step and the
    masked flags after it (rows in the order of the run's sequences)."""

    def __init__(self, number: int, committed: list[list[int]], masked: list[list[bool]], ids: list[list]):
        self.step, self.committed, self.masked, self.token_ids = number, committed, masked, ids


def steps_of(events) -> list[Step]:
    trace = Trace.new("test", "diffusion", {}, 0)
    for e in events:
        trace.add(e)
    fold = Fold(trace)
    out = []
    for f in range(1, fold.frames + 1):
        state = fold.at(f)
        rows = state.rows()
        committed = [sorted(p for p, s in r.commit_step.items() if s == state.step) for r in rows]
        out.append(Step(state.step, committed, [[t is None for t in r.ids] for r in rows], [list(r.ids) for r in rows]))
    return out


def stable_json(events) -> str:
    """Events as JSON without wall-clock fields (the only thing allowed to differ between equal runs)."""
    out = []
    for e in events:
        d = e.model_dump()
        d.pop("seconds", None)
        out.append(d)
    return json.dumps(out)


def llada_num_transfer_tokens(n_masked: int, steps: int) -> list[int]:
    """Independent re-implementation of LLaDA's get_num_transfer_tokens for one row of one block."""
    base, rem = divmod(n_masked, steps)
    return [base + 1 if i < rem else base for i in range(steps)]


# ---------------------------------------------------------------- determinism, schedule, blocks


def test_same_seed_same_events_different_seed_differs(dllm):
    kw = {"gen_length": 32, "steps": 16, "block_length": 8, "temperature": 0.8, "batch": 2}
    a, b, c = run(dllm, 5, **kw), run(dllm, 5, **kw), run(dllm, 6, **kw)
    assert stable_json(a) == stable_json(b)
    assert stable_json(a) != stable_json(c)
    assert isinstance(a[0], RunStart) and isinstance(a[-2], Node) and isinstance(a[-1], RunEnd)


@pytest.mark.parametrize("gen_length,block_length,steps", [(24, 8, 12), (24, 24, 5), (24, 6, 8), (24, 12, 10),
                                                           (16, 8, 16)])
def test_low_confidence_commits_llada_schedule(dllm, gen_length, block_length, steps):
    events = steps_of(run(dllm, gen_length=gen_length, block_length=block_length, steps=steps,
                          strategy="low_confidence", temperature=0.5))
    expected = []
    for _ in range(gen_length // block_length):
        expected += llada_num_transfer_tokens(block_length, steps // (gen_length // block_length))
    assert [len(e.committed[0]) for e in events] == expected


def test_schedule_count_equals_get_num_transfer_tokens():
    for n, steps in [(16, 5), (7, 7), (3, 8), (32, 3), (10, 4)]:
        left, got = n, []
        for s in range(steps):
            k = int(schedule_count(torch.ones(1, left, dtype=torch.bool), steps - s)[0]) if left else 0
            got.append(k)
            left -= k
        assert got == llada_num_transfer_tokens(n, steps)


@pytest.mark.parametrize("strategy", ["low_confidence", "threshold", "entropy_threshold", "maskgit_plus"])
def test_blocks_fill_left_to_right(dllm, strategy):
    bl = 8
    for e in steps_of(run(dllm, gen_length=32, block_length=bl, steps=16, strategy=strategy, temperature=0.7,
                          batch=2, threshold=0.05, entropy_threshold=3.0)):
        for r, committed in enumerate(e.committed):
            for p in committed:
                # every earlier block is full after this step (a full block may hand over in the same pass)
                assert not any(e.masked[r][: (p // bl) * bl]), (strategy, e.step, p)


# ---------------------------------------------------------------- strategies


def test_threshold_commits_all_confident_and_at_least_one(dllm):
    tau, bl = 0.06, 16
    raw = run(dllm, gen_length=32, block_length=bl, steps=32, strategy="threshold", threshold=tau, temperature=0.0,
              batch=2)
    conf: dict[int, list[dict]] = {}
    for e in raw:
        if isinstance(e, Tokens) and e.action == "propose":
            conf.setdefault(e.step, [{}, {}])[e.seq].update(zip(e.pos, e.conf))
    events = steps_of(raw)
    before = [[True] * 32 for _ in range(2)]
    multi = False
    for e in events:
        for r in range(2):
            if not any(before[r]):
                assert e.committed[r] == []
                continue
            assert len(e.committed[r]) >= 1
            multi |= len(e.committed[r]) > 1
            lo = next(p for p in range(32) if before[r][p]) // bl * bl
            for p in range(lo, lo + bl):
                if before[r][p] and p not in e.committed[r]:
                    # still masked: this step's confidence was below tau (events round to 3 decimals)
                    assert e.masked[r][p] and conf[e.step][r][p] < tau + 1e-3
        before = e.masked
    assert multi, "the threshold never committed more than one token: the test did not exercise it"


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_final_canvas_has_no_masks(dllm, strategy):
    events = run(dllm, gen_length=16, block_length=8, steps=8, strategy=strategy, temperature=0.7, batch=2,
                 threshold=0.5)
    last = steps_of(events)[-1]
    assert not any(any(r) for r in last.masked)
    assert all(None not in r and dllm.mask_id not in r for r in last.token_ids)
    assert events[-1].nfe == len(steps_of(events))


@pytest.mark.parametrize("kw", [{"strategy": "maskgit_plus", "alg_temp": 0.5}, {"strategy": "entropy", "alg_temp": 1.0},
                                {"strategy": "low_confidence", "cfg_scale": 1.0}])
def test_alg_temp_and_cfg_finish(dllm, kw):
    events = run(dllm, gen_length=16, block_length=16, steps=8, temperature=0.5, **kw)
    assert not any(steps_of(events)[-1].masked[0])
    assert events[-1].nfe == len(steps_of(events)) * (2 if kw.get("cfg_scale") else 1)


def _state(entropy: list[float], masked: list[bool], block_length: int, tau: float = 0.3) -> StepState:
    ent = torch.tensor([entropy])
    zeros = torch.zeros_like(ent)
    return StepState(logits=zeros[..., None], probs=zeros[..., None], x0=zeros.long(), confidence=zeros, entropy=ent,
                     masked=torch.tensor([masked]), in_block=torch.ones_like(ent, dtype=torch.bool), k=None,
                     params=DiffusionParams(entropy_threshold=tau), gens=[torch.Generator()],
                     block_length=block_length)


def committed_by_entropy_rule(entropy, masked, block_length=4):
    commit = STRATEGIES["entropy_threshold"](_state(entropy, masked, block_length))
    return commit[0].nonzero()[:, 0].tolist()


def test_entropy_threshold_rule_hand_built():
    T, F = True, False
    # every masked token under 0.3 in the leftmost unfinished block; nothing beyond it (block not full)
    assert committed_by_entropy_rule([0.1, 0.5, 0.2, 0.9, 0.0, 0.0, 0.0, 0.0], [T] * 8) == [0, 2]
    # none qualifies: the single lowest-entropy masked one
    assert committed_by_entropy_rule([0.9, 0.5, 0.7, 0.8, 0.0, 0.0, 0.0, 0.0], [T] * 8) == [1]
    # a finished block is skipped; unmasked positions never count, whatever their entropy
    assert committed_by_entropy_rule([0.0] * 4 + [0.9, 0.1, 0.6, 0.2], [F] * 4 + [T, F, T, T]) == [7]
    # the block becomes full: the same pass goes on into the next block (under-threshold tokens only)
    assert committed_by_entropy_rule([0.0, 0.1, 0.0, 0.0, 0.2, 0.8, 0.1, 0.9, 0.0, 0.0, 0.0, 0.0],
                                     [F, T, F, F, T, T, T, T, T, T, T, T]) == [1, 4, 6]
    # ... into a third block too, where (nothing under the threshold) the fallback, still armed because it has
    # not fired in this pass, commits the lowest-entropy token, as dVoting's reference does
    assert committed_by_entropy_rule([0.1, 0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.5, 0.6, 0.7, 0.8], [T] * 12) \
        == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    # once the fallback has fired it is spent for the pass: a block it fills hands over threshold-only
    assert committed_by_entropy_rule([0.0, 0.0, 0.0, 0.9, 0.5, 0.6, 0.7, 0.8], [F, F, F, T, T, T, T, T]) == [3]
    # the fallback (lowest entropy) fills the block: the pass continues
    assert committed_by_entropy_rule([0.0, 0.0, 0.0, 0.9, 0.1, 0.5, 0.5, 0.5], [F, F, F, T, T, T, T, T]) == [3, 4]


# ---------------------------------------------------------------- canvas, rows, stop, validation


def test_init_canvas_positions_are_kept(dllm):
    L, m = 16, dllm.mask_id
    digit = dllm.encode_prompt("7")[-1]
    init = [[digit if p % 3 == 0 else m for p in range(L)], [m] * L]
    events = list(denoise(dllm, PROMPT, DiffusionParams(gen_length=L, block_length=8, steps=16, temperature=0.5,
                                                        strategy="entropy_threshold"), init_canvas=init))
    kept = [p for p in range(L) if init[0][p] != m]
    keep = [e for e in events if isinstance(e, Tokens) and e.action == "keep"]
    assert len(keep) == 1 and keep[0].seq == 0 and keep[0].pos == kept and keep[0].step == 0
    for e in steps_of(events):
        assert all(e.token_ids[0][p] == digit and not e.masked[0][p] for p in kept)
        assert not set(e.committed[0]) & set(kept)
    assert not any(steps_of(events)[-1].masked[0])


def test_rows_run_events_and_per_row_nfe(dllm):
    L, m = 16, dllm.mask_id
    digit = dllm.encode_prompt("7")[-1]
    init = [[digit] * (L - 1) + [m], [m] * L]  # row 3 needs one pass, row 4 needs several
    gen = denoise(dllm, PROMPT, DiffusionParams(gen_length=L, block_length=8, steps=16, temperature=0.5,
                                                strategy="entropy_threshold", entropy_threshold=0.01),
                  seed=42, init_canvas=init, rows=[3, 4], run_events=False, first_step=7)
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        done = stop.value
    assert not any(isinstance(e, (RunStart, RunEnd)) for e in events)
    nodes = [e for e in events if isinstance(e, Node)]
    assert [n.id for n in nodes] == [3, 4] and [n.nfe for n in nodes] == done.row_nfe
    steps = sorted({e.step for e in events if isinstance(e, Tokens) and e.action != "keep"})
    assert done.row_nfe[0] == 1 and done.row_nfe[1] == len(steps) > 1 and steps[0] == 8 and done.steps == steps[-1]
    assert {e.seq for e in events if isinstance(e, Tokens)} == {3, 4}


def test_should_stop_ends_early(dllm):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 2

    events = list(denoise(dllm, PROMPT, DiffusionParams(gen_length=16, block_length=16, steps=16), should_stop=stop))
    assert len(steps_of(events)) == 2
    assert events[-1].stopped is True and events[-1].nfe == 2
    assert any(steps_of(events)[-1].masked[0])


@pytest.mark.parametrize("kw,prompt,message", [
    ({"steps": 0}, PROMPT, "steps must be in"),
    ({"steps": 81}, PROMPT, "steps must be in"),
    ({"gen_length": 0}, PROMPT, "gen_length must be at least 1"),
    ({"block_length": 0}, PROMPT, "block_length must be in"),
    ({"gen_length": 80, "block_length": 24}, PROMPT, "must be a multiple of block_length"),
    ({"gen_length": 80, "block_length": 16, "steps": 42}, PROMPT, "divide evenly over the 5 blocks"),
    ({"gen_length": 400, "block_length": 16, "steps": 50}, PROMPT, "exceeds the model's context"),
    ({"strategy": "nope"}, PROMPT, "Input should be 'low_confidence'"),
    ({}, "  ", "the prompt is empty"),
    ({"temperature": -1.0}, PROMPT, "must be >= 0"),
])
def test_invalid_params_raise_readable_errors(dllm, kw, prompt, message):
    with pytest.raises(ValueError, match=message):  # pydantic's ValidationError is a ValueError
        list(denoise(dllm, prompt, DiffusionParams(**kw)))


def test_adaptive_strategies_ignore_steps_divisibility(dllm):
    DiffusionParams(gen_length=80, block_length=16, steps=42, strategy="threshold").check(dllm, PROMPT)


# ---------------------------------------------------------------- native DiffusionGemma


@pytest.fixture(scope="module")
def native(tiny_diffusion_gemma_dir):
    return load(str(tiny_diffusion_gemma_dir))


def test_native_diffusion_events_have_the_right_shapes(native):
    C = native.model.config.canvas_length
    params = DiffusionParams(gen_length=2 * C, steps=3, batch=2, top_k=3)
    events = list(denoise(native, PROMPT, params, seed=0))
    assert isinstance(events[0], RunStart) and events[0].length == 2 * C and events[0].rows == 2
    steps = steps_of(events)
    assert 1 <= len(steps) <= 2 * 3
    proposals = [e for e in events if isinstance(e, Tokens) and e.action == "propose"]
    assert {e.seq for e in proposals} == {0, 1}
    for e in proposals:  # each draft proposes every position of its canvas, with top-3 and probabilities
        assert e.block in (0, 1) and e.pos == list(range(e.block * C, (e.block + 1) * C))
        assert all(len(t) == 3 for t in e.top_ids) and all(0 <= c <= 1 for c in e.conf)
    assert all(len(r) == 2 * C for s in steps for r in s.masked)
    assert not any(any(r) for r in steps[-1].masked)  # a finalized canvas is fully committed
    assert sorted({e.step for e in proposals}) == list(range(1, len(steps) + 1))
    nodes = [e for e in events if isinstance(e, Node)]
    assert [n.id for n in nodes] == [0, 1] and all(n.nfe >= 1 for n in nodes)
    again = list(denoise(native, PROMPT, params, seed=0))
    assert stable_json(events) == stable_json(again)


def test_native_diffusion_stops(native):
    C = native.model.config.canvas_length
    n = []
    events = list(denoise(native, PROMPT, DiffusionParams(gen_length=2 * C, steps=4), should_stop=lambda: n.append(1)
                          or len(n) >= 2))
    assert len(steps_of(events)) == 2 and events[-1].stopped is True


def test_native_diffusion_commits_what_the_sampler_accepted(native, monkeypatch):
    """After each draft, the committed tokens are the canvas transformers' EntropyBoundSampler accepted at that step
    (its sampled tokens, not the argmax), watched here independently by wrapping the class's accept_canvas; a token
    the sampler stops accepting is remasked. (A finalized canvas then commits generate()'s output tokens.)"""
    from transformers.models.diffusion_gemma import generation_diffusion_gemma as dg

    seen = []  # per accept_canvas call: (accepted mask, sampled canvas)
    original = dg.EntropyBoundSampler.accept_canvas

    def spy(self, current, denoiser, logits, cur_step):
        out = original(self, current, denoiser, logits, cur_step)
        seen.append((self.accepted_token_mask.clone(), denoiser.clone()))
        return out

    monkeypatch.setattr(dg.EntropyBoundSampler, "accept_canvas", spy)
    C = native.model.config.canvas_length
    events = [e for e in denoise(native, PROMPT, DiffusionParams(gen_length=2 * C, block_length=C, steps=6, batch=2),
                                 seed=1) if isinstance(e, Tokens)]
    # A draft's events for a row: its `propose`, then that row's remask / commit; anything after belongs elsewhere.
    groups, current = [], None
    for e in events:
        if e.action == "propose":
            current = (e, [])
            groups.append(current)
        elif current is not None and e.seq == current[0].seq and e.step == current[0].step:
            current[1].append(e)
        else:
            current = None  # a finalized canvas's commits
    assert len(groups) == 2 * len(seen)
    accepted: dict[int, dict[int, int]] = {0: {}, 1: {}}
    differs_from_argmax = 0
    for n, (propose, deltas) in enumerate(groups):
        mask, sampled = seen[n // 2]
        row, lo = propose.seq, propose.block * C
        for e in deltas:
            for p, t in zip(e.pos, e.ids):
                if e.action == "commit":
                    accepted[row][p] = t
                else:
                    assert e.action == "remask"
                    accepted[row].pop(p, None)
        want = {lo + p: int(sampled[row, p]) for p in range(C) if mask[row, p]}
        assert {p: t for p, t in accepted[row].items() if lo <= p < lo + C} == want, (propose.step, row)
        argmax = dict(zip(propose.pos, propose.ids))
        differs_from_argmax += sum(want[p] != argmax[p] for p in want)
    assert differs_from_argmax > 0  # the sampled tokens are not the argmax draft: the old view drew the wrong ones
