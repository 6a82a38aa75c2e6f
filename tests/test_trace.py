"""The trace schema (pydantic, version 2): what it rejects and how it says so, version-1 traces, the published
JSON Schema, the incremental fold, and byte-identical traces for the same seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from decoding.diffusion import DiffusionParams, denoise
from decoding.fold import CHECKPOINT_EVERY, Fold
from decoding.models import load
from decoding.tasks import TASKS
from decoding.trace import RunEnd, RunStart, Tokens, Trace, TraceError, Vocab, json_schema

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def small_trace() -> dict:
    trace = Trace.new("m", "diffusion", {"steps": 2}, 0)
    trace.add(RunStart(method="diffusion", prompt="1+1=?", prompt_ids=[1, 2], rows=1, length=3, mask_id=9))
    trace.add(Vocab(ids=[1, 2, 3], texts=["1", "+", "2"]))
    trace.add(Tokens(seq=0, step=1, action="propose", pos=[0, 1, 2], ids=[3, 3, 1], conf=[0.9, 0.5, 0.2],
                     entropy=[0.1, 0.7, 1.5], top_ids=[[3], [3], [1]], top_p=[[0.9], [0.5], [0.2]]))
    trace.add(Tokens(seq=0, step=1, action="commit", pos=[0], ids=[3]))
    trace.add(RunEnd(nfe=1, seconds=0.1, answer="2"))
    return trace.to_json()


def reject(data: dict) -> str:
    with pytest.raises(TraceError) as err:
        Trace.from_json(json.loads(json.dumps(data, allow_nan=True)))
    return str(err.value)


def test_valid_trace_round_trips() -> None:
    data = small_trace()
    trace = Trace.from_json(data)
    assert Trace.loads(trace.dumps()).dumps() == trace.dumps()
    assert isinstance(trace.events[2], Tokens) and trace.events[2].conf == [0.9, 0.5, 0.2]


def test_wrong_type_is_rejected_naming_the_field() -> None:
    data = small_trace()
    data["events"][2]["step"] = "one"
    assert reject(data).startswith("events[2] (tokens): field 'step'")
    data = small_trace()
    data["events"][2]["top_p"][1] = ["high"]
    assert "events[2] (tokens): field 'top_p[1][0]'" in reject(data)


def test_nan_and_infinity_are_rejected_naming_the_field() -> None:
    for value in (math.nan, math.inf):
        data = small_trace()
        data["events"][2]["entropy"][1] = value
        message = reject(data)
        assert "field 'entropy[1]'" in message and "finite" in message
    data = small_trace()
    data["events"][-1]["summary"] = {"x": [1.0, math.nan]}
    assert "summary" in reject(data)


def test_unknown_kind_and_unknown_field_are_rejected() -> None:
    data = small_trace()
    data["events"][1] = {"kind": "teleport", "to": 3}
    message = reject(data)
    assert "events[1]" in message and "unknown event kind 'teleport'" in message
    data = small_trace()
    data["events"][3]["colour"] = "red"
    assert "field 'colour'" in reject(data)
    data = small_trace()
    data["events"][2]["action"] = "explode"
    assert "field 'action'" in reject(data)


def test_parallel_lists_must_match() -> None:
    data = small_trace()
    data["events"][2]["conf"] = [0.9]
    assert "field 'conf'" in reject(data)


def test_not_a_trace_and_bad_json() -> None:
    with pytest.raises(TraceError, match="not a Decoding Lens trace"):
        Trace.from_json({"events": []})
    with pytest.raises(TraceError, match="version '7' is not supported"):
        Trace.from_json({"format": "decoding-lens-trace", "version": 7})
    with pytest.raises(TraceError, match="not valid JSON"):
        Trace.loads("{nope")


@pytest.mark.parametrize("name", ["data_v1_diffusion.json", "data_v1_dvoting.json"])
def test_version_1_trace_loads_and_folds(name: str) -> None:
    v1 = json.loads((DATA / name).read_text())
    trace = Trace.load(DATA / name)
    v1_steps = [e for e in v1["events"] if e["kind"] == "step"]
    fold = Fold(trace)
    assert fold.frames == len(v1_steps)
    for f, snap in enumerate(v1_steps, start=1):  # every snapshot is reproduced by the fold at its frame
        state = fold.at(f)
        for a, sample in enumerate(snap["rows"]):
            seq = state.seqs[sample]
            assert [t is None for t in seq.ids] == snap["masked"][a]
            shown = [state.text(t if t is not None else g) for t, g in zip(seq.ids, seq.guess)]
            assert shown == snap["tokens"][a]
    end = fold.latest().end
    assert end is not None and end.answer == (None if v1["events"][-1]["answer"] is None
                                              else str(v1["events"][-1]["answer"]))
    if "dvoting" in name:
        assert fold.latest().selection.agreement


def test_malformed_version_1_trace_gets_a_message() -> None:
    data = json.loads((DATA / "data_v1_diffusion.json").read_text())
    del data["events"][1]["tokens"]
    with pytest.raises(TraceError, match=r"events\[1\] \(step\): malformed version-1 event"):
        Trace.from_json(data)


def test_published_json_schema_is_current() -> None:
    published = json.loads((ROOT / "docs" / "trace.schema.json").read_text())
    assert published == json_schema(), "regenerate with: python -m decoding schema > docs/trace.schema.json"


@pytest.fixture(scope="module")
def dllm(zoo_dir):
    return load(str(zoo_dir / "tiny-dllm"))


def record(adapter, seed: int) -> str:
    params = DiffusionParams(gen_length=32, steps=16, block_length=8, temperature=0.8, batch=3)
    trace = Trace.new("tiny-dllm", "diffusion", params.model_dump(), seed, task="zoo")
    trace.meta.versions = {}
    for e in denoise(adapter, "12+7-5=?\n", params, seed, task=TASKS["zoo"]):
        trace.add(e.model_copy(update={"seconds": 0.0}) if isinstance(e, RunEnd) else e)
    return trace.dumps()


def test_same_seed_gives_a_byte_identical_trace(dllm) -> None:
    a, b, c = record(dllm, 3), record(dllm, 3), record(dllm, 4)
    assert a == b and a != c


def test_fold_scrubs_like_a_fresh_fold(dllm) -> None:
    trace = Trace.loads(record(dllm, 5))
    fold = Fold(trace)
    n = fold.frames
    assert n > CHECKPOINT_EVERY  # the test crosses checkpoints
    for frame in (0, 1, CHECKPOINT_EVERY - 1, CHECKPOINT_EVERY, CHECKPOINT_EVERY + 3, n - 1, n):
        got = fold.at(frame)
        fresh = Fold(Trace(trace.meta, trace.events[:fold.frame_starts[frame]] if frame < n else trace.events))
        want = fresh.latest()
        assert {k: s.ids for k, s in got.seqs.items()} == {k: s.ids for k, s in want.seqs.items()}, frame
        assert {k: s.history for k, s in got.seqs.items()} == {k: s.history for k, s in want.seqs.items()}
        assert got.step == want.step
    # scrubbing back and forth leaves the live head untouched
    assert fold.at(2).step == 2 and fold.latest().end is not None and fold.at(None).step == n


def test_fold_follows_a_growing_trace(dllm) -> None:
    trace = Trace.loads(record(dllm, 6))
    growing = Trace(trace.meta, [])
    fold = Fold(growing)
    for e in trace.events:
        growing.add(e)
        fold.latest()
    assert fold.frames == Fold(trace).frames
    assert {k: s.ids for k, s in fold.latest().seqs.items()} == {k: s.ids for k, s in Fold(trace).latest().seqs.items()}


def test_work_limits_refuse_before_folding(monkeypatch) -> None:
    """A file under the byte limit can still ask for too much work: the limits name which and by how much, on
    both load paths (pydantic's JSON parser for version 2, the parsed dict otherwise)."""
    from decoding import trace as trace_module

    data = small_trace()
    data["events"][2:2] = [{"kind": "tokens", "seq": s, "step": 1, "action": "commit", "pos": [0], "ids": [3]}
                           for s in range(1, 6)]
    monkeypatch.setattr(trace_module, "MAX_SEQUENCES", 3)
    with pytest.raises(TraceError, match=r"6 sequences \(this app replays at most 3\)"):
        Trace.loads(json.dumps(data))
    with pytest.raises(TraceError, match=r"6 sequences"):
        Trace.from_json(data)
    monkeypatch.setattr(trace_module, "MAX_EVENTS", 4)
    with pytest.raises(TraceError, match="more than 4 events"):
        Trace.loads(json.dumps(data))


def test_fold_keeps_each_value_with_its_position_when_some_are_out_of_range() -> None:
    """A proposal naming positions outside [0, MAX_POSITIONS) (a hostile trace) drops those positions and their
    values together: the heatmap row's entropies stay aligned with its positions."""
    from decoding.fold import MAX_POSITIONS

    trace = Trace(meta={"model": "tiny-dllm", "method": "diffusion"}, events=[
        RunStart(method="diffusion", prompt="p", prompt_ids=[1], length=4, rows=1),
        Tokens(seq=0, step=1, action="propose", pos=[-1, 2, MAX_POSITIONS, 0], ids=[5, 6, 7, 8],
               conf=[0.1, 0.2, 0.3, 0.4], entropy=[1.0, 2.0, 3.0, 4.0],
               top_ids=[[5], [6], [7], [8]], top_p=[[0.1], [0.2], [0.3], [0.4]]),
    ])
    seq = Fold(trace).latest().seqs[0]
    assert seq.history == [(1, [2, 0], [2.0, 4.0], [])]
    assert seq.confs == [[0.2, 0.4]]
    assert (seq.guess[2], seq.conf[2], seq.entropy[2], seq.top[2]) == (6, 0.2, 2.0, ([6], [0.2]))
    assert (seq.guess[0], seq.entropy[0]) == (8, 4.0)
