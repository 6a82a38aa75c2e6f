"""The split-model check's harness (decoding/bench_split.py) on the CPU: the GPU run compares one-GPU and
two-GPU traces with exactly this comparison and this loader path (`models.load(device_map=...)`)."""

from decoding import models
from decoding.bench_split import CASES, compare, same_trace


def test_compare_counts_every_non_float_difference_and_the_largest_float_one():
    a = {"kind": "tokens", "ids": [1, 2], "p": [0.5, 0.25], "seconds": 1.0, "summary": {"plain_seconds": 3.0}}
    assert compare(a, a) == ([], 0.0)
    diffs, worst = compare(a, {**a, "p": [0.5, 0.2], "seconds": 9.0, "summary": {"plain_seconds": 0.1}})
    assert diffs == [] and abs(worst - 0.05) < 1e-12  # wall times are ignored, float gaps measured
    diffs, _ = compare(a, {**a, "ids": [1, 3]})
    assert diffs == [".ids[1]: 2 != 3"]
    assert compare([a], [a, a])[0] == [": length 1 != 2"]
    assert compare({"x": 1}, {"y": 1})[0] == [": keys ['x', 'y']"]


def test_a_model_placed_by_a_device_map_gives_the_same_trace():
    cases = [c for c in CASES if c[0] in ("diffusion", "speculative")]
    rows = same_trace(0.0, device="cpu", device_map={"": "cpu"}, cases=cases, log=lambda _: None)
    assert [r["method"] for r in rows] == ["diffusion", "speculative"]
    for row in rows:
        assert row["error"] is None and row["events"] > 10 and row["equal"], row
    # the device map went through the loader: a second adapter, cached apart from the plain one
    assert models.load("tiny-ar", device="cpu", device_map={"": "cpu"}) is not models.load("tiny-ar", device="cpu")
