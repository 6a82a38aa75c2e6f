"""Views from hand-made events: canvas colours, escaping, scrubbing, plotly figures, voting views."""

from __future__ import annotations

import json

import plotly.graph_objects as go
import pytest

from decoding.trace import DecodeDone, DiffusionStep, RunEnd, RunStart, Trace, VotingRound
from viz.heatmap import decode_order, entropy_heatmap, topk_figure
from viz.state import fold_rows, state_at, step_count
from viz.tokens import render_canvas
from viz.voting import agreement_grid, bench_figure, load_bench, nfe_meter_html, tally_html

EVIL = "<img src=x onerror=alert(1)>"


def make_step(step: int, final: list[str], commit_order: list[int], per_step: int, rows: list[int] | None = None,
              conf: float = 0.9) -> DiffusionStep:
    """A step where the first `step * per_step` positions of commit_order are decided."""
    rows = rows or [0]
    n = len(final)
    done = set(commit_order[: step * per_step])
    new = commit_order[(step - 1) * per_step: step * per_step]
    one = {
        "tokens": list(final),
        "masked": [p not in done for p in range(n)],
        "committed": list(new),
        "confidence": [conf if p in new else 0.5 for p in range(n)],
        "entropy": [0.1 if p in done else 1.5 for p in range(n)],
        "topk": [[[final[p], 0.8], ["7", 0.15], [EVIL, 0.05]] for p in range(n)],
    }
    return DiffusionStep(
        step=step, block=0, rows=rows, tokens=[one["tokens"]] * len(rows), token_ids=[[0] * n] * len(rows),
        masked=[one["masked"]] * len(rows), committed=[one["committed"]] * len(rows),
        confidence=[one["confidence"]] * len(rows), entropy=[one["entropy"]] * len(rows),
        topk=[one["topk"]] * len(rows), nfe=step,
    )


FINAL = list("1+2=3\n#3") + ["[EOS]", "[EOS]"]


def diffusion_trace(final: list[str] = FINAL) -> Trace:
    trace = Trace.new("hand-made", "diffusion", {"steps": 5}, seed=0)
    trace.add(RunStart("diffusion", "1+2=?\n", ["[BOS]", *"1+2=?\n"], len(final), 1))
    order = list(range(len(final)))[::-1]  # right to left, so decode order is visibly not left-to-right
    for s in range(1, 6):
        trace.add(make_step(s, final, order, 2))
    trace.add(DecodeDone([0], ["1+2=3\n#3"], [3], 5, 0.1))
    trace.add(RunEnd(5, 0.1, answer=3))
    return trace


def test_canvas_colours_and_final_answer() -> None:
    trace = diffusion_trace()
    first = render_canvas(state_at(trace, 1))
    assert first.count("dl-mask") == len(FINAL) - 2 and first.count("dl-new") == 2
    assert "#a8e0b5" in first  # confidence 0.9: green
    final = render_canvas(trace.events)
    assert "dl-mask" not in final and "#3" in final and "⏎" in final
    assert "dl-answer" in final and "answer #3" in final


def test_confidence_thresholds() -> None:
    for conf, colour in [(0.1, "#f4a3a3"), (0.5, "#f8cf8c"), (0.95, "#a8e0b5")]:
        html_ = render_canvas([RunStart("diffusion", "p", [], 4, 1), make_step(1, list("abcd"), [0, 1, 2, 3], 2, conf=conf)])
        assert colour in html_


def test_hostile_token_text_is_escaped() -> None:
    trace = diffusion_trace(final=[EVIL, "<b>", '"onmouseover="x', "[EOS]"])
    trace.events[0].prompt = EVIL
    out = render_canvas(trace.events) + render_canvas(state_at(trace, 1))
    assert "<img" not in out and "<b>" not in out and '"onmouseover="' not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    # plotly hover data carries escaped text too
    for fig in (entropy_heatmap(trace.events), decode_order(trace.events), topk_figure(trace.events, 0)):
        assert "<img" not in json.dumps(fig.to_plotly_json(), default=str)


def test_state_at_cuts_at_steps() -> None:
    trace = diffusion_trace()
    assert step_count(trace) == 5
    assert [e.kind for e in state_at(trace, 0)] == ["start"]
    cut = state_at(trace, 3)
    assert [e.kind for e in cut] == ["start", "step", "step", "step"] and cut[-1].step == 3
    assert state_at(trace, 5) == trace.events and state_at(trace, 99) == trace.events
    rows = fold_rows(state_at(trace, 2))
    assert rows[0].new == {7, 6} and rows[0].commit_step == {9: 1, 8: 1, 7: 2, 6: 2}


def test_figures_from_events() -> None:
    trace = diffusion_trace()
    heat = entropy_heatmap(trace.events)
    assert isinstance(heat, go.Figure) and len(heat.data[0].z) == 5
    assert heat.data[0].z[1][9] is None and heat.data[0].z[0][9] == pytest.approx(0.1)  # blank once decided
    order = decode_order(trace.events)
    assert list(order.data[0].z[0]) == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    bars = topk_figure(trace.events, 0)
    assert list(bars.data[0].x) == [0.8, 0.15, 0.05]
    assert "no diffusion" in json.dumps(entropy_heatmap([]).to_plotly_json(), default=str)


def voting_events() -> list:
    events = [RunStart("voting", "1+2=?\n", [], 4, 3)]
    for s in range(3):
        events.append(make_step(1, list("#3ab") if s < 2 else list("#4ab"), [0, 1, 2, 3], 4, rows=[s]))
    events.append(DecodeDone([0, 1, 2], ["#3", "#3", "#4"], [3, 3, 4], 3, 0.1))
    grid = [["agree", "disagree", "kept", "remasked"]] * 3
    events.append(VotingRound(1, [0, 1, 2], ["#3", "#3", "#4"], [3, 3, 4], grid, [[3, 2], [4, 1]], [4, 2, 2], 8,
                              stop_reason="majority", final_answer=3))
    events.append(RunEnd(8, 0.2, answer=3))
    return events


def test_voting_views() -> None:
    events = voting_events()
    grid = agreement_grid(events)
    assert list(grid.data[0].z[0]) == [1, 2, 0, 3]
    assert {t.name for t in grid.data[1:]} >= {"remasked for the next sample"}
    tally = tally_html(events, k=5)
    assert "#3" in tally and "final answer #3" in tally and "strict majority" in tally
    meter = nfe_meter_html(events, k=5)
    assert "<b>8</b> forward passes" in meter and "majority@5" in meter and "20" in meter
    canvas = render_canvas(events)
    assert canvas.count("dl-row") == 3 and "sample 3" in canvas


def test_bench_figure(tmp_path) -> None:
    path = tmp_path / "voting.json"
    path.write_text(json.dumps([{"method": "single", "accuracy": 0.7, "nfe": 40, "seconds": 1.0},
                                {"method": EVIL, "accuracy": 0.8, "nfe": 90, "seconds": 2.0}]))
    fig = bench_figure(load_bench(path))
    assert len(fig.data) == 2 and fig.data[0].y[0] == pytest.approx(70)
    assert "<img" not in json.dumps(fig.to_plotly_json(), default=str)
    assert load_bench(tmp_path / "missing.json") == [] and len(bench_figure([]).data) == 0


def test_ragged_hostile_trace_does_not_crash() -> None:
    bad = DiffusionStep(step=1, block=0, rows=[0, 1], tokens=[["a"]], token_ids=[], masked=[[True, False, True]],
                        committed=[["x", 5]], confidence=[[]], entropy=[[None]], topk=[[["q"]]], nfe=1)
    events = [RunStart("diffusion", "p", [], 10**9, 1), bad]
    assert "dl-chip" in render_canvas(events)
    entropy_heatmap(events), decode_order(events), topk_figure(events, 3)


def test_progress_line_shows_the_step_counter() -> None:
    from decoding.trace import DiffusionStep, RunStart
    from viz.state import progress_line

    start = RunStart(method="diffusion", prompt="1+1=?\n", prompt_tokens=[], gen_length=2, batch=1)
    step = DiffusionStep(step=3, block=0, rows=[0], tokens=[["2", "x"]], token_ids=[[1, 2]], masked=[[False, True]],
                         committed=[[0]], confidence=[[0.9, 0.1]], entropy=[[0.1, 1.0]], topk=[[[], []]], nfe=3)
    assert "step 0 / 8" in progress_line([start], total_steps=8)
    line = progress_line([start, step], total_steps=8)
    assert "step 3 / 8" in line and "1 of 2 tokens decoded" in line and "done" not in line
    assert "step 3 (at most 2)" in progress_line([start, step], max_steps=2)
    voting = progress_line([start, step], k=5, max_steps=2)
    assert "sample 1 / 5" in voting and "step 3" in voting and "0 samples finished" in voting


def test_topk_follows_the_most_uncertain_masked_position() -> None:
    """Position -1 follows the run: the highest-entropy masked position, then the latest committed one."""
    from viz.heatmap import followed_position
    from viz.state import fold_rows

    trace = diffusion_trace()
    step1 = state_at(trace, 1)  # right-to-left order: positions 9 and 8 decided, the rest masked
    step1[-1].entropy[0][3] = 2.5  # make position 3 the most uncertain masked one
    row = fold_rows(step1)[0]
    assert followed_position(row) == 3
    assert "position 3 (followed)" in topk_figure(step1, -1).layout.title.text
    done = fold_rows(trace.events)[0]
    assert followed_position(done) in (0, 1)  # nothing masked: a position of the last step's commits
