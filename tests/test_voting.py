"""Majority voting and dVoting: each rule on hand-built canvases and answers, the loop on a scripted
engine, and batched vs reference-order dVoting on the zoo model at temperature 0."""

from __future__ import annotations

import pytest

from decoding import voting
from decoding.diffusion import Decoded
from decoding.tasks import TASKS
from decoding.trace import Node, RunEnd, RunStart, Selection, Tokens, Vocab
from decoding.voting import (
    VotingParams,
    agreement_grid,
    consensus,
    first_stop,
    keep_mask,
    majority,
    n_fresh,
    start_canvas,
    stop_reason,
    tally,
)

M = 99  # mask id of the hand-built canvases


# ---------------------------------------------------------------- agreement and remasking


def test_unanimous_keeps_only_positions_all_samples_share() -> None:
    previous = [
        [1, 2, 3, 4, 5, 6, 7, 8],
        [1, 2, 9, 4, 5, 6, 7, 8],
        [1, 2, 3, 4, 0, 6, 7, 8],
    ]
    # 8 positions: the last quarter (6, 7) is remasked even though every sample agrees there.
    assert keep_mask(previous) == [True, True, False, True, False, True, False, False]
    assert start_canvas(previous, M) == [1, 2, M, 4, M, 6, M, M]


def test_lower_threshold_keeps_the_majority_token() -> None:
    previous = [
        [1, 2, 3, 4, 5, 6, 7, 8],
        [1, 2, 9, 4, 5, 6, 7, 8],
        [1, 2, 3, 4, 0, 6, 7, 8],
    ]
    # 2 of 3 agree at positions 2 and 4: kept at 0.6, not at 0.7.
    assert start_canvas(previous, M, agreement=0.6) == [1, 2, 3, 4, 5, 6, M, M]
    assert start_canvas(previous, M, agreement=0.7) == [1, 2, M, 4, M, 6, M, M]


def test_token_tie_goes_to_smallest_id_like_the_reference() -> None:
    tokens, shares = consensus([[5, 1], [3, 1], [5, 2], [3, 2]])
    assert tokens == [3, 1] and shares == [0.5, 0.5]
    assert start_canvas([[5, 1, 0, 0], [3, 1, 0, 0]], M, agreement=0.5) == [3, 1, 0, M]


@pytest.mark.parametrize("gen_length, remasked", [(4, 1), (7, 1), (8, 2), (80, 20), (3, 0)])
def test_last_quarter_is_always_remasked(gen_length: int, remasked: int) -> None:
    same = [list(range(gen_length))] * 3
    keep = keep_mask(same)
    assert keep == [True] * (gen_length - remasked) + [False] * remasked


def test_grid_marks_kept_agree_disagree() -> None:
    canvases = [[1, 2, 3], [1, 2, 4], [1, 5, 3]]
    starts = [[M, M, M], [M, M, M], [1, M, M]]
    assert agreement_grid(canvases, starts, M) == [
        ["agree", "disagree", "disagree"],
        ["agree", "disagree", "disagree"],
        ["kept", "disagree", "disagree"],
    ]
    # At 0.6, a sample holding the majority token agrees; the odd one out disagrees.
    assert agreement_grid(canvases, starts, M, agreement=0.6)[1] == ["agree", "agree", "disagree"]


# ---------------------------------------------------------------- votes and stopping


def test_tally_ties_go_to_the_first_answer_seen() -> None:
    assert tally(["8", "7", None, "7", "8"]) == [("8", 2), ("7", 2)]
    assert majority(["8", "7", None, "7", "8"]) == "8"
    assert majority([None, "7", "3", "3"]) == "3"
    assert majority([None, None]) is None


def test_stop_when_top_answer_has_more_than_half_of_k() -> None:
    assert stop_reason([7, 8, 7, 7], k=5) == "majority"
    assert stop_reason([7, 8, 7, 8], k=5) is None
    assert stop_reason([7, 7, 8, 7], k=7) is None  # 3 votes is not more than 7 // 2
    assert stop_reason([7, 7, 8, 7, 7], k=7) == "majority"


def test_stop_when_all_answers_agree() -> None:
    assert stop_reason([7, 7], k=5) == "all_agree"
    assert stop_reason([7, None, 7], k=5) == "all_agree"  # answerless samples do not vote (reference)
    assert stop_reason([7, 8], k=5) is None
    assert stop_reason([7, None], k=5) is None  # one vote: fewer than K // 2
    assert stop_reason([7], k=5) is None  # checked only once two samples exist
    assert stop_reason([None, None], k=5) is None


def test_first_stop_checks_in_reference_order() -> None:
    assert first_stop([7, 7, 8], k=5) == "all_agree"  # stops after sample 2: sample 3 is extra
    assert first_stop([7, 8, 8], k=5) is None
    assert first_stop([7, 8, 8, 8], k=5, after=4) == "majority"
    assert first_stop([7, 8, 9, 6, 5], k=5, after=4) == "max_samples"
    assert [n_fresh(k) for k in (1, 2, 3, 4, 5, 6)] == [1, 2, 2, 3, 3, 4]


def test_params_validation() -> None:
    # the reference's defaults, but temperature 1.0 (0.6 in the paper): see voting.ABOUT, measured by pick_examples
    assert VotingParams() == VotingParams(method="dvoting", k=5, tau=0.3, agreement=1.0, temperature=1.0,
                                          block_length=16, gen_length=80, batched=False, steps=0)
    for bad in ({"k": 0}, {"tau": 0}, {"agreement": 0}, {"agreement": 1.5}, {"temperature": -1},
                {"gen_length": 80, "block_length": 32}, {"method": "hex"}, {"steps": -1}):
        with pytest.raises(ValueError):
            VotingParams(**bad)


# ---------------------------------------------------------------- the loop, on a scripted engine

GEN = 8


class FakeAdapter:
    mask_id = M

    def encode_prompt(self, text: str) -> list[int]:
        return [0] * len(text)

    def token_text(self, ids: list[int]) -> list[str]:
        return [str(i) for i in ids]


def scripted_engine(monkeypatch, answers: list[int | None], canvases: list[list[int]] | None = None) -> list[dict]:
    """Replace the engine: sample r decodes to canvases[r] (masked positions only) and text '#answers[r]'.
    Returns the calls it received."""
    canvases = canvases or [[r] * GEN for r in range(len(answers))]
    calls: list[dict] = []

    def denoise(adapter, prompt, params, seed, *, task, init_canvas, should_stop, rows, run_events, first_step,
                recorder):
        assert run_events is False
        calls.append({"rows": list(rows), "init": [list(c) for c in init_canvas], "seed": seed,
                      "strategy": params.strategy, "first_step": first_step})
        final = [[canvases[r][p] if t == M else t for p, t in enumerate(c)] for r, c in zip(rows, init_canvas)]
        for r, c in zip(rows, final):
            yield Tokens(seq=r, step=first_step + 1, action="commit", pos=list(range(GEN)), ids=c)
        texts = ["" if answers[r] is None else f"1+1=2\n#{answers[r]}" for r in rows]
        found = [task.extract_answer(t) for t in texts]
        row_nfe = [sum(t == M for t in c) for c in init_canvas]
        for r, t, a, n in zip(rows, texts, found, row_nfe):
            yield Node(id=r, seq=r, step=first_step + 1, text=t, answer=a, nfe=n)
        return Decoded(canvas=final, texts=texts, answers=found, row_nfe=row_nfe, steps=first_step + 1, stopped=False)

    monkeypatch.setattr(voting, "denoise", denoise)
    return calls


def run(generator) -> tuple[list, list[Selection], RunEnd]:
    events = list(generator)
    assert isinstance(events[0], RunStart) and isinstance(events[-1], RunEnd)
    return events, [e for e in events if isinstance(e, Selection)], events[-1]


ZOO = TASKS["zoo"]


PARAMS = VotingParams(gen_length=GEN, block_length=4)


def test_first_half_plus_one_start_fully_masked_then_from_agreement(monkeypatch) -> None:
    canvases = [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 0],
                [9, 9, 9, 9, 9, 9, 9, 9], [9, 9, 9, 9, 9, 9, 9, 9]]
    calls = scripted_engine(monkeypatch, [1, 2, 3, 4, 5], canvases)
    _, rounds, end = run(voting.dvoting(FakeAdapter(), "q", PARAMS, task=ZOO))
    assert [c["rows"] for c in calls] == [[0], [1], [2], [3], [4]]
    assert [c["first_step"] for c in calls] == [0, 1, 2, 3, 4]  # steps count across samples
    assert all(c["init"] == [[M] * GEN] for c in calls[:3])  # ⌊5/2⌋+1 = 3 fresh samples
    assert calls[3]["init"] == [[1, 2, 3, M, 5, 6, M, M]]  # agreement of samples 0-2, last quarter remasked
    assert calls[4]["init"] == [[1, 2, 3, M, 5, 6, M, M]]  # sample 3 copied the kept tokens: same start
    assert all(c["seed"] == 42 and c["strategy"] == "entropy_threshold" for c in calls)  # engine adds the row
    assert [r.reason for r in rounds] == [None] * 4 + ["max_samples"]
    assert rounds[2].agreement[-1] == "kkkrkkrr"  # where sample 4 starts: kept / remasked
    assert rounds[3].agreement[3] == "kkkdkkdd"
    assert len(rounds[-1].agreement) == 5  # no next sample: no start row
    assert end.summary["nfe_per_sample"] == [8, 8, 8, 3, 3] and end.nfe == 30 == rounds[-1].nfe
    assert end.answer == "1" and rounds[-1].answer == "1"  # five-way tie: the first answer seen


def test_stops_when_two_samples_agree(monkeypatch) -> None:
    calls = scripted_engine(monkeypatch, [7, 7, 8, 8, 8])
    _, rounds, end = run(voting.dvoting(FakeAdapter(), "q", PARAMS, task=ZOO))
    assert len(calls) == 2 and rounds[-1].reason == "all_agree" and end.answer == "7"
    assert rounds[-1].tally == [("7", 2)] and end.summary["stop_reason"] == "all_agree"


def test_stops_on_a_strict_majority(monkeypatch) -> None:
    calls = scripted_engine(monkeypatch, [7, 8, 7, 7, 9])
    _, rounds, end = run(voting.dvoting(FakeAdapter(), "q", PARAMS, task=ZOO))
    assert len(calls) == 4 and rounds[-1].reason == "majority" and end.answer == "7"
    assert rounds[-1].tally == [("7", 3), ("8", 1)]


@pytest.mark.parametrize("answers, calls_rows, reason, final", [
    ([1, 2, 3, 4, 5], [[0, 1, 2], [3, 4]], "max_samples", 1),
    ([7, 7, 8, 9, 9], [[0, 1, 2]], "all_agree", 7),  # the reference stops after sample 2: same answer
    ([7, 8, 8, 8, 9], [[0, 1, 2], [3, 4]], "majority", 8),  # stops after sample 4; sample 5 was paid for
])
def test_batched_runs_two_batches_and_stops_where_the_reference_does(monkeypatch, answers, calls_rows, reason,
                                                                     final) -> None:
    calls = scripted_engine(monkeypatch, answers)
    _, rounds, end = run(voting.dvoting(FakeAdapter(), "q", VotingParams(gen_length=GEN, block_length=4,
                                                                         batched=True), task=ZOO))
    assert [c["rows"] for c in calls] == calls_rows
    assert calls[0]["init"] == [[M] * GEN] * 3
    if len(calls) > 1:
        assert calls[1]["init"] == [start_canvas([[0] * GEN, [1] * GEN, [2] * GEN], M)] * 2
    assert rounds[-1].reason == reason and end.answer == str(final)
    reference_calls = scripted_engine(monkeypatch, answers)
    _, ref_rounds, ref_end = run(voting.dvoting(FakeAdapter(), "q", PARAMS, task=ZOO))
    assert ref_end.answer == end.answer and ref_rounds[-1].reason == reason
    assert ref_end.nfe <= end.nfe and len(reference_calls) <= len(answers)


def test_majority_vote_is_one_batch(monkeypatch) -> None:
    calls = scripted_engine(monkeypatch, [4, 5, 5, 4, None])
    _, rounds, end = run(voting.decode(FakeAdapter(), "q", PARAMS.replace(method="majority", steps=GEN), task=ZOO))
    assert [c["rows"] for c in calls] == [[0, 1, 2, 3, 4]] and calls[0]["strategy"] == "low_confidence"
    assert len(rounds) == 1 and rounds[0].tally == [("4", 2), ("5", 2)] and end.answer == "4"
    assert rounds[0].reason == "max_samples" and end.nfe == 5 * GEN


def test_stop_button_ends_the_run(monkeypatch) -> None:
    scripted_engine(monkeypatch, [1, 2, 3, 4, 5])
    presses = iter([False, False, True])
    _, rounds, end = run(voting.dvoting(FakeAdapter(), "q", PARAMS, task=ZOO, should_stop=lambda: next(presses)))
    assert end.stopped and len(rounds) == 2 and end.nfe == 2 * GEN


def test_a_stopped_decode_still_counts_its_passes(monkeypatch) -> None:
    def denoise(adapter, prompt, params, seed, *, task, init_canvas, should_stop, rows, run_events, first_step,
                recorder):
        half = [[7] * (GEN // 2) + [M] * (GEN // 2) for _ in rows]  # stopped halfway: masks left
        yield Tokens(seq=rows[0], step=first_step + 1, action="commit", pos=[0], ids=[7])
        return Decoded(canvas=half, texts=[""] * len(rows), answers=[None] * len(rows), row_nfe=[3] * len(rows),
                       steps=first_step + 3, stopped=True)

    monkeypatch.setattr(voting, "denoise", denoise)
    _, rounds, end = run(voting.dvoting(FakeAdapter(), "q", PARAMS.replace(batched=True), task=ZOO))
    assert end.stopped and rounds == [] and end.nfe == 9 and end.answer is None


# ---------------------------------------------------------------- the zoo model


def test_batched_and_reference_order_agree_at_temperature_zero(zoo_dir) -> None:
    from decoding.models import load

    adapter = load(str(zoo_dir / "tiny-dllm"))
    params = VotingParams(k=3, temperature=0.0, gen_length=16, block_length=8)
    prompt = "12+7-5*3=?\n"
    events, rounds, end = run(voting.dvoting(adapter, prompt, params, task=ZOO))
    b_events, b_rounds, b_end = run(voting.dvoting(adapter, prompt, params.replace(batched=True), task=ZOO))
    assert b_end.answer == end.answer and b_rounds[-1].reason == rounds[-1].reason
    n = len(rounds[-1].nodes)  # the reference may stop before the batch's last sample
    texts = {e.id: e.text for e in events if isinstance(e, Node)}
    b_texts = {e.id: e.text for e in b_events if isinstance(e, Node)}
    assert [b_texts[i] for i in range(n)] == [texts[i] for i in range(n)]
    assert b_end.summary["nfe_per_sample"][:n] == end.summary["nfe_per_sample"]
    # Each sample's deltas carry its sample index; steps count up across the whole run.
    deltas = [e for e in events if isinstance(e, Tokens)]
    assert {e.seq for e in deltas} <= {0, 1, 2}
    steps = [e.step for e in deltas]
    assert steps == sorted(steps) and max(steps) == end.nfe
    assert sum(isinstance(e, Node) for e in events) == len(rounds)
    named = [i for e in events if isinstance(e, Vocab) for i in e.ids]
    assert len(named) == len(set(named))  # each token id is named once per trace, across samples
