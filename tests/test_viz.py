"""Views from hand-made v2 traces (RunStart / Vocab / Tokens / Node / Selection / RunEnd), folded with
decoding.fold: canvas colours, escaping, scrubbing, plotly figures, voting views, the view-module contract."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import plotly.graph_objects as go
import pytest

from decoding.fold import Fold, State
from decoding.trace import Meta, Node, RunEnd, RunStart, Selection, Tokens, Trace, Vocab
from viz import diffusion_view, voting_view
from viz.heatmap import decode_order, entropy_heatmap, followed_position, topk_figure
from viz.tokens import render_canvas
from viz.voting_view import agreement_grid, bench_figure, load_bench, nfe_meter_html, tally_html

EVIL = "<img src=x onerror=alert(1)>"
PAGE_CSS = (Path(__file__).resolve().parent.parent / "viz" / "page.css").read_text()


def css_rule(cls: str) -> str:
    """The declarations of the page.css rule for `.cls` (chips carry class names; their colours live there)."""
    match = re.search(r"(?m)^\.%s\s*\{([^}]*)\}" % re.escape(cls), PAGE_CSS)
    assert match, f"no rule for .{cls} in viz/page.css"
    return match[1]
FINAL = [*list("1+2=3\n#3"), "[EOS]", "[EOS]"]


class Tok:
    """Token ids for display texts, named in one Vocab event."""

    def __init__(self, *texts: str):
        self.ids: dict[str, int] = {}
        for t in [*texts, "7", EVIL]:
            self.ids.setdefault(t, len(self.ids))

    def __getitem__(self, text: str) -> int:
        return self.ids[text]

    def vocab(self) -> Vocab:
        return Vocab(ids=list(self.ids.values()), texts=list(self.ids))


def add_step(trace: Trace, tok: Tok, step: int, final: list[str], commit_order: list[int], per_step: int,
             seq: int = 0, conf: float = 0.9, first: int = 1, kept: tuple = ()) -> None:
    """A pass of sequence `seq` (its `step - first + 1`-th) proposing every still-masked position (entropy 0.1
    where it commits now, 1.5 elsewhere; top-3: the final token, "7", EVIL), then committing `per_step` more
    positions of commit_order."""
    k = step - first + 1
    before = set(commit_order[: (k - 1) * per_step])
    new = commit_order[(k - 1) * per_step: k * per_step]
    pos = [p for p in range(len(final)) if p not in before and p not in kept]
    trace.add(Tokens(seq=seq, step=step, action="propose", pos=pos, ids=[tok[final[p]] for p in pos],
                     conf=[conf if p in new else 0.5 for p in pos], entropy=[0.1 if p in new else 1.5 for p in pos],
                     top_ids=[[tok[final[p]], tok["7"], tok[EVIL]] for p in pos], top_p=[[0.8, 0.15, 0.05]] * len(pos),
                     block=0))
    if new:
        trace.add(Tokens(seq=seq, step=step, action="commit", pos=list(new), ids=[tok[final[p]] for p in new], block=0))


def diffusion_trace(final: list[str] = FINAL, prompt: str = "1+2=?\n", expected: str | None = "3",
                    answer: str | None = "3", stopped: bool = False, **meta) -> Trace:
    meta = {"model": "hand-made", "method": "diffusion", "expected": expected, "task": "zoo",
            "params": {"steps": 5, "strategy": "low_confidence", "gen_length": len(final)}} | meta
    trace = Trace(Meta(**meta))
    tok = Tok(*final)
    trace.add(RunStart(method=meta["method"], prompt=prompt, prompt_ids=[], rows=1, length=len(final), mask_id=None))
    trace.add(tok.vocab())
    order = list(range(len(final)))[::-1]  # right to left, so decode order is visibly not left-to-right
    for s in range(1, 6):
        add_step(trace, tok, s, final, order, 2)
    trace.add(Node(id=0, seq=0, step=5, status="finished", text="1+2=3\n#3", answer=answer, nfe=5))
    trace.add(RunEnd(nfe=5, seconds=0.1, answer=answer, stopped=stopped))
    return trace


def test_canvas_colours_and_final_answer() -> None:
    trace = diffusion_trace()
    fold = Fold(trace)
    first = render_canvas(fold.at(1), trace.meta)
    assert first.count("dl-mask") == len(FINAL) - 2 and first.count("dl-new") == 2
    assert "#a8e0b5" in css_rule("dl-hi") and first.count("dl-new dl-hi") == 2  # confidence 0.9: green
    assert "style=" not in first and "title=" not in first  # class names only: a live update stays small
    final = render_canvas(fold.latest(), trace.meta)
    assert "dl-mask" not in final and "#3" in final and "⏎" in final
    assert "dl-answer" in final and "answer #3" in final
    assert "✓ correct" in final and "5 forward passes · 0.10s" in final and "10/10 decoded" in final
    assert final.count("answer-correct") == 2 and "answer-wrong" not in final  # the header and the row
    wrong = render_canvas(Fold(diffusion_trace(expected="4")).latest(), diffusion_trace(expected="4").meta)
    assert "✗ (expected #4)" in wrong and wrong.count("answer-wrong") == 2 and "answer-correct" not in wrong
    unchecked = render_canvas(Fold(diffusion_trace(expected=None, task="math")).latest(),
                              diffusion_trace(expected=None, task="math").meta)
    assert unchecked.count("answer-unchecked") == 2 and "✓" not in unchecked and "dl-note" not in unchecked
    # the three verdicts look different: no two share a colour
    colours = [re.search(r"color:\s*(#[0-9a-f]+)", css_rule(c))[1] for c in
               ("answer-correct", "answer-wrong", "answer-unchecked")]
    assert len(set(colours)) == 3


def test_confidence_thresholds() -> None:
    for conf, colour, cls in [(0.1, "#f4a3a3", "dl-lo"), (0.5, "#f8cf8c", "dl-mid"), (0.95, "#a8e0b5", "dl-hi")]:
        assert colour in css_rule(cls)
        trace = Trace(Meta(model="m", method="diffusion"))
        tok = Tok(*"abcd")
        trace.add(RunStart(method="diffusion", prompt="p", prompt_ids=[], rows=1, length=4))
        trace.add(tok.vocab())
        add_step(trace, tok, 1, list("abcd"), [0, 1, 2, 3], 2, conf=conf)
        canvas = render_canvas(Fold(trace).latest(), trace.meta)
        assert canvas.count(f"dl-new {cls}") == 2 and canvas.count("dl-new") == 2


def test_hostile_token_text_is_escaped() -> None:
    trace = diffusion_trace(final=[EVIL, "<b>", '"onmouseover="x', "[EOS]"], prompt=EVIL)
    fold = Fold(trace)
    out = render_canvas(fold.latest(), trace.meta) + render_canvas(fold.at(1), trace.meta)
    assert "<img" not in out and "<b>" not in out and '"onmouseover="' not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in out
    # plotly hover data carries escaped text too
    for state in (fold.latest(), fold.at(1)):
        for fig in (entropy_heatmap(state), decode_order(state), topk_figure(state, 0)):
            assert "<img" not in json.dumps(fig.to_plotly_json(), default=str)


def test_hostile_meta_and_answers_are_escaped_everywhere() -> None:
    """meta.expected / model / method, the prompt, token texts and answers all hold markup: nothing renders raw."""
    trace = diffusion_trace(final=[EVIL, "<script>", EVIL, "[EOS]"], prompt=EVIL, expected=EVIL, answer=EVIL,
                            model=EVIL, method=EVIL, task=EVIL)
    fold = Fold(trace)
    pieces = []
    for state in (fold.at(0), fold.at(2), fold.latest()):
        pieces += [diffusion_view.progress(state, trace.meta), voting_view.progress(state, trace.meta)]
        for view in (diffusion_view, voting_view):
            for value in view.render(state, trace.meta).values():
                pieces.append(json.dumps(value.to_plotly_json(), default=str) if isinstance(value, go.Figure) else value)
    vtrace = voting_trace(answers=[EVIL, EVIL, "4"], expected=EVIL, model=EVIL, method=EVIL)
    vstate = Fold(vtrace).latest()
    pieces += [tally_html(vstate, 5), nfe_meter_html(vstate, 5), render_canvas(vstate, vtrace.meta),
               json.dumps(agreement_grid(vstate).to_plotly_json(), default=str), voting_view.progress(vstate, vtrace.meta)]
    out = "".join(pieces)
    assert "<img" not in out and "<script" not in out
    assert "&lt;img src=x onerror=alert(1)&gt;" in render_canvas(fold.latest(), trace.meta)  # the tooltips too
    assert "final answer #&lt;img" in tally_html(vstate, 5)
    assert "&lt;img" in diffusion_view.progress(fold.latest(), trace.meta)  # "answer **#&lt;img …**"


def test_scrubbing_by_frame() -> None:
    trace = diffusion_trace()
    fold = Fold(trace)
    assert fold.frames == 5
    start = fold.at(0)
    assert start.start is not None and not start.seqs and start.step == 0 and start.end is None
    cut = fold.at(3)
    assert cut.step == 3 and cut.end is None and cut.seqs[0].ids.count(None) == 4
    assert fold.at(5).end is not None and fold.at(99).end is not None
    row = fold.at(2).seqs[0]
    assert row.new == {7, 6} and row.commit_step == {9: 1, 8: 1, 7: 2, 6: 2}
    assert "step 2" in render_canvas(fold.at(2), trace.meta) and "4/10 decoded" in render_canvas(fold.at(2), trace.meta)


def test_figures_from_events() -> None:
    trace = diffusion_trace()
    state = Fold(trace).latest()
    heat = entropy_heatmap(state)
    assert isinstance(heat, go.Figure) and len(heat.data[0].z) == 5
    assert math.isnan(heat.data[0].z[1][9]) and heat.data[0].z[0][9] == pytest.approx(0.1)  # blank once decided
    assert list(heat.data[0].y) == [1, 2, 3, 4, 5] and len(heat.data[1].x) == 10  # a dot per commit
    order = decode_order(state)
    assert list(order.data[0].z[0]) == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    bars = topk_figure(state, 0)
    assert list(bars.data[0].x) == [0.8, 0.15, 0.05]
    assert bars.data[0].marker.color[0] == "#1e8449"  # the token shown is the first alternative
    assert "no diffusion" in json.dumps(entropy_heatmap(State()).to_plotly_json(), default=str)
    assert "no top-k" in json.dumps(topk_figure(state, 99).to_plotly_json(), default=str)


def test_a_long_heatmap_draws_one_pass_in_n_and_every_commit(monkeypatch) -> None:
    """Past MAX_HEATMAP_CELLS the heatmap keeps one pass in `stride` (said in its title) and still marks every
    commit of every pass."""
    from viz import heatmap

    monkeypatch.setattr(heatmap, "MAX_HEATMAP_CELLS", 20)  # 5 passes x 10 positions: one pass in 3
    heat = entropy_heatmap(Fold(diffusion_trace()).latest())
    assert list(heat.data[0].y) == [1, 4] and "one pass in 3" in heat.layout.title.text
    assert len(heat.data[1].x) == 10 and sorted(heat.data[1].y) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def voting_trace(answers: tuple | list = ("3", "3", "4"), expected: str | None = "3", k: int = 5,
                 end: bool = True, **meta) -> Trace:
    """Three samples decoded one after another (run-wide steps 1..3); sample 2 keeps position 0 of sample 1."""
    meta = {"model": "hand-made", "method": "voting", "expected": expected, "task": "zoo",
            "params": {"k": k, "gen_length": 4}} | meta
    trace = Trace(Meta(**meta))
    tok = Tok(*"#34ab")
    trace.add(RunStart(method="voting", prompt="1+2=?\n", prompt_ids=[], rows=3, length=4))
    trace.add(tok.vocab())
    for s in range(3):
        final = list("#3ab") if s < 2 else list("#4ab")
        kept = (0,) if s == 1 else ()
        if kept:
            trace.add(Tokens(seq=1, step=1, action="keep", pos=[0], ids=[tok["#"]]))
        order = [p for p in range(4) if p not in kept]
        add_step(trace, tok, s + 1, final, order, len(order), seq=s, first=s + 1, kept=kept)
        trace.add(Node(id=s, seq=s, step=s + 1, status="finished", text="".join(final), answer=answers[s],
                       nfe=[4, 2, 2][s]))
    tally: dict[str, int] = {}
    for a in answers:
        tally[a] = tally.get(a, 0) + 1
    trace.add(Selection(round=1, nodes=[0, 1, 2], answers=list(answers), tally=sorted(tally.items(), key=lambda x: -x[1]),
                        answer=answers[0], reason="majority", nfe=8, agreement=["adkr", "adkr", "adkr", "kkrr"]))
    if end:
        trace.add(RunEnd(nfe=8, seconds=0.2, answer=answers[0]))
    return trace


def test_voting_views() -> None:
    trace = voting_trace()
    state = Fold(trace).latest()
    grid = agreement_grid(state)
    assert list(grid.data[0].z[0]) == [1, 2, 0, 3]
    assert list(grid.data[0].z[3]) == [0, 0, 3, 3] and grid.data[0].y[3] == "next start (sample 4)"
    assert list(grid.data[0].y[:3]) == ["sample 1", "sample 2", "sample 3"]
    assert {t.name for t in grid.data[1:]} >= {"remasked for the next sample"}
    tally = tally_html(state, k=5, meta=trace.meta)
    assert "answer-correct" in tally and "answer-wrong" not in tally and "final answer #3 ✓" in tally
    assert "answer-wrong" in tally_html(state, 5, voting_trace(expected="4").meta)
    assert "#3" in tally and "final answer #3" in tally and "strict majority" in tally
    assert "(2 of K=5 votes after 3 samples)" in tally
    meter = nfe_meter_html(state, k=5)
    assert "<b>8</b> forward passes" in meter and "majority@5" in meter and "20" in meter and "4 + 2 + 2" in meter
    canvas = render_canvas(state, trace.meta)
    assert canvas.count("dl-row") == 3 and "sample 3" in canvas and "→ #4" in canvas
    assert "dl-new" in canvas and canvas.count("dl-new") == 4  # only the latest sample's commits are new
    out = voting_view.render(state, trace.meta)
    assert out["tally"] == tally and out["meter"] == meter
    assert out["canvas"].replace(" dl-sel", "") == canvas and out["canvas"].count("dl-sel") == 1  # the followed one


def test_voting_before_the_first_round_and_stop_reasons() -> None:
    trace = voting_trace()
    fold = Fold(trace)
    early = fold.at(1)  # sample 1 done, no selection yet
    assert "appears when the first sample is done" in tally_html(early, 5)
    assert nfe_meter_html(early, 5) == "" and "after the first round" in json.dumps(agreement_grid(early).to_plotly_json())
    state = fold.latest()
    for reason, text in [("all_agree", "every sample so far"), ("max_samples", "used all K samples"),
                         ("custom <b>", "custom &lt;b&gt;")]:
        sel = state.selection.model_copy(update={"reason": reason})
        st = state.copy()
        st.selections = [sel]
        assert text in tally_html(st, 5)
    running = state.copy()
    running.selections = [state.selection.model_copy(update={"reason": None})]
    assert "final answer" not in tally_html(running, 5) and "answers so far: #3, #3, #4" in tally_html(running, 5)


def test_bench_figure(tmp_path) -> None:
    path = tmp_path / "voting.json"
    path.write_text(json.dumps([{"method": "single", "accuracy": 0.7, "nfe": 40, "seconds": 1.0},
                                {"method": EVIL, "accuracy": 0.8, "nfe": 90, "seconds": 2.0}]))
    fig = bench_figure(load_bench(path))
    assert len(fig.data) == 2 and fig.data[0].y[0] == pytest.approx(70)
    assert "<img" not in json.dumps(fig.to_plotly_json(), default=str)
    assert load_bench(tmp_path / "missing.json") == [] and len(bench_figure([]).data) == 0


def test_strange_but_valid_trace_does_not_crash() -> None:
    """Positions out of range, unnamed ids, missing confidences, ragged top-k, nodes and selections that name
    nothing the trace holds, a huge length: every view draws something."""
    trace = Trace(Meta(model="m", method="diffusion", params={"k": "x", "steps": -3, "strategy": None}))
    trace.add(RunStart(method="diffusion", prompt="p", prompt_ids=[], rows=2, length=10**9))
    trace.add(Tokens(seq=0, step=1, action="propose", pos=[0, 2, -5, 10**7], ids=[77, 78, 79, 80],
                     top_ids=[[1, 2, 3], [], [4], [5]], top_p=[[0.5], [0.1, 0.2], [], [1.0]]))
    trace.add(Tokens(seq=0, step=1, action="commit", pos=[2, 10**8], ids=[99, 98]))
    trace.add(Tokens(seq=1, step=2, action="remask", pos=[3, -1], ids=[0, 0]))
    trace.add(Tokens(seq=5, step=2, action="keep", pos=[1], ids=[3]))
    trace.add(Node(id=9, seq=None, status="pruned"))
    trace.add(Node(id=0, seq=0, status="finished", answer=None))
    trace.add(Selection(round=0, nodes=[42, 0], answers=[None, "1"], tally=[("1", 1)], answer="1", reason="odd",
                        nfe=0, agreement=["kadr" * 3000, "", "r"]))
    for state in (Fold(trace).at(0), Fold(trace).at(1), Fold(trace).latest()):
        assert "dl-chip" in render_canvas(state, trace.meta) or not state.seqs
        entropy_heatmap(state), decode_order(state), topk_figure(state, 3), topk_figure(state, -1)
        for view in (diffusion_view, voting_view):
            view.render(state, trace.meta)
            assert view.progress(state, trace.meta).startswith("▶ **running**")
    assert "→ no answer line" in render_canvas(Fold(trace).latest(), trace.meta)
    assert "dl-chip" in render_canvas(Fold(trace).latest(), None)


def progress_trace(method: str, params: dict, voting_second_sample: bool = False) -> tuple[Trace, Fold]:
    trace = Trace(Meta(model="m", method=method, params=params))
    trace.add(RunStart(method=method, prompt="1+1=?\n", prompt_ids=[], rows=1, length=2))
    trace.add(Vocab(ids=[1, 2], texts=["2", "x"]))
    for s in (1, 2, 3):  # three passes of sample 1; position 0 committed at the third
        trace.add(Tokens(seq=0, step=s, action="propose", pos=[0, 1], ids=[1, 2], conf=[0.9, 0.1], entropy=[0.1, 1.0]))
    trace.add(Tokens(seq=0, step=3, action="commit", pos=[0], ids=[1]))
    if voting_second_sample:
        trace.add(Tokens(seq=0, step=4, action="propose", pos=[1], ids=[2], conf=[0.9], entropy=[0.1]))
        trace.add(Tokens(seq=0, step=4, action="commit", pos=[1], ids=[2]))
        trace.add(Node(id=0, seq=0, step=4, status="finished", answer="2", nfe=4))
        for s in (5, 6):
            trace.add(Tokens(seq=1, step=s, action="propose", pos=[0, 1], ids=[1, 2], conf=[0.9, 0.1], entropy=[0.1, 1.0]))
    return trace, Fold(trace)


def test_progress_line_shows_the_step_counter() -> None:
    fixed = {"steps": 8, "strategy": "low_confidence", "gen_length": 2}
    trace, fold = progress_trace("diffusion", fixed)
    assert "step 0 / 8" in diffusion_view.progress(fold.at(0), trace.meta)
    line = diffusion_view.progress(fold.latest(), trace.meta)
    assert "step 3 / 8" in line and "1 of 2 tokens decoded" in line and "done" not in line
    assert line.startswith("▶ **running** · ")
    trace, fold = progress_trace("diffusion", {"steps": 8, "strategy": "threshold", "gen_length": 2})
    assert "step 3 (at most 2)" in diffusion_view.progress(fold.latest(), trace.meta)
    trace, fold = progress_trace("voting", {"k": 5, "gen_length": 2})
    voting = voting_view.progress(fold.latest(), trace.meta)
    assert "sample 1 / 5" in voting and "step 3" in voting and "0 samples finished" in voting
    assert voting == "▶ **running** · sample 1 / 5 · step 3 (pass 3 of this sample, at most 2) · 0 samples finished"
    trace, fold = progress_trace("voting", {"k": 5, "gen_length": 2}, voting_second_sample=True)
    voting = voting_view.progress(fold.latest(), trace.meta)
    # the run-wide step (the canvas header, the heatmaps and the scrubber count the same), then the sample's pass
    assert voting == "▶ **running** · sample 2 / 5 · step 6 (pass 2 of this sample, at most 2) · 1 sample finished"


def test_progress_after_the_end_is_the_summary() -> None:
    trace = diffusion_trace()
    line = diffusion_view.progress(Fold(trace).latest(), trace.meta)
    assert line == "✓ done: answer **#3** ✓ · 5 forward passes · 0.10s · 5 steps"
    trace = diffusion_trace(expected="4", stopped=True)
    line = diffusion_view.progress(Fold(trace).latest(), trace.meta)
    assert line.startswith("■ stopped: answer **#3** ✗ (expected #4)")
    assert "stopped by the user — the canvas shows where it got to." in render_canvas(Fold(trace).latest(), trace.meta)
    vtrace = voting_trace()
    assert voting_view.progress(Fold(vtrace).latest(), vtrace.meta).startswith("✓ done: answer **#3** ✓ · 8 forward")


def set_entropy(trace: Trace, step: int, pos: int, value: float) -> None:
    i, e = next((i, e) for i, e in enumerate(trace.events)
                if isinstance(e, Tokens) and e.action == "propose" and e.step == step)
    entropy = list(e.entropy)
    entropy[e.pos.index(pos)] = value
    trace.events[i] = e.model_copy(update={"entropy": entropy})


def test_topk_follows_the_most_uncertain_masked_position() -> None:
    """Position -1 follows the run: the highest-entropy masked position; after the run, the committed position
    whose choice was least sure, special tokens last (not an [EOS] at p = 1)."""
    trace = diffusion_trace()
    set_entropy(trace, 1, 3, 2.5)  # position 3: the most uncertain masked one after step 1
    set_entropy(trace, 1, 9, 2.9)  # [EOS], committed at step 1 even less sure: specials come last
    set_entropy(trace, 4, 4 - 1, 1.2)  # position 3 committed at step 4 (right to left, 2 per step) at 1.2 nats
    fold = Fold(trace)
    step1 = fold.at(1)  # right-to-left order: positions 9 and 8 decided, the rest masked
    assert followed_position(step1.seqs[0]) == 3
    assert "position 3 of sample 1 (followed)" in topk_figure(step1, -1).layout.title.text
    assert "position 3 of sample 1 (followed)" in \
        diffusion_view.render(step1, trace.meta, position=-1)["topk"].layout.title.text
    assert "position 5 of sample 1 (selected)" in \
        diffusion_view.render(step1, trace.meta, position=5)["topk"].layout.title.text
    done = fold.latest()
    assert followed_position(done.seqs[0], done) == 3
    out = diffusion_view.render(done, trace.meta, position=-1)
    assert "position 3 of sample 1 (followed)" in out["topk"].layout.title.text
    assert out["canvas"].count("dl-sel") == 1 and 'dl-sel" data-p="3"' in out["canvas"]


def test_chips_select_a_position_of_a_sample() -> None:
    """Each chip names its position (data-p) and its row its sample (data-s): a click selects them; the selected
    position is outlined, and the position view shows its top-k, its entropy and confidence over the steps and
    its commit step, for the sample picked."""
    trace = voting_trace()
    state = Fold(trace).latest()
    canvas = render_canvas(state, trace.meta, selected=(1, 2))
    assert [int(x) for x in re.findall(r'data-s="(\d+)"', canvas)] == [0, 1, 2]
    assert canvas.count("dl-sel") == 1 and re.search(r'data-s="1".*?class="dl-chip[^"]*dl-sel" data-p="2"', canvas)
    kept = json.dumps(voting_view.render(state, trace.meta, sample=2, position=0)["topk"].to_plotly_json())
    assert "position 0 of sample 2: kept, no top-k recorded" in kept  # carried over: never proposed there
    fig = voting_view.render(state, trace.meta, sample=3, position=1)["topk"]
    assert "position 1 of sample 3 (selected)" in fig.layout.title.text
    assert "committed at step 3" in fig.layout.title.text
    bars, entropy, confidence = fig.data
    assert list(bars.x) == [0.8, 0.15, 0.05] and "&lt;img src=x onerror=alert(1)&gt;" in bars.y  # text, escaped
    assert list(entropy.x) == [3] and list(entropy.y) == [0.1] and list(confidence.y) == [0.9]
    assert [s.x0 for s in fig.layout.shapes] == [3]  # the commit step
    masked = render_canvas(Fold(diffusion_trace()).at(1), None)
    assert "▒" not in masked.split("dl-legend")[0]  # masked chips show the current guess
    assert render_canvas(Fold(diffusion_trace()).at(1), None, show_guesses=False).count(">▒<") == 8


def test_eos_tail_folds_and_stopped_rows_say_so() -> None:
    final = [*"1+2=3\n#3", *["[EOS]"] * 6]
    trace = diffusion_trace(final=final)
    fold = Fold(trace)
    assert "dl-fold" not in render_canvas(fold.at(1), trace.meta)  # 2 EOS committed: too short to fold
    four = render_canvas(fold.at(2), trace.meta)
    assert four.count("dl-fold") == 1 and "EOS × 4" in four
    done = render_canvas(fold.latest(), trace.meta)
    assert "EOS × 6" in done and re.findall(r'<span data-p="(\d+)">EOS', done) == [str(p) for p in range(8, 14)]
    assert done.count('class="dl-chip') == 8 + 1  # eight tokens and the folded tail
    stopped = diffusion_trace(answer=None, stopped=True)
    canvas = render_canvas(Fold(stopped).latest(), stopped.meta)
    assert "■ stopped" in canvas and "dl-stopped" in canvas and "no answer line" not in canvas


def test_prompt_outside_the_task_gets_a_note() -> None:
    """A zoo-task trace with no expected answer: the zoo task knows the answer of every prompt in its format, so
    the prompt is not one; the answer is shown unchecked, with a note."""
    trace = diffusion_trace(expected=None, prompt="🙂🙂=?\n")
    canvas = render_canvas(Fold(trace).latest(), trace.meta)
    assert "dl-note" in canvas and "not one of the zoo model" in canvas and "answer-unchecked" in canvas
    assert "answer-correct" not in canvas
    assert "not checked" in diffusion_view.progress(Fold(trace).latest(), trace.meta)
    assert "dl-note" not in render_canvas(Fold(diffusion_trace()).latest(), diffusion_trace().meta)


def test_view_modules_follow_the_contract() -> None:
    from decoding.diffusion import SCHEDULED

    assert diffusion_view.SCHEDULED == SCHEDULED
    for view, trace in ((diffusion_view, diffusion_trace()), (voting_view, voting_trace())):
        names = [p.name for p in view.PANELS]
        assert len(set(names)) == len(names) and all(p.kind in ("html", "plot") for p in view.PANELS)
        fold = Fold(trace)
        for state in (State(), fold.at(0), fold.at(1), fold.latest()):
            options = {o.name: o.default for o in view.OPTIONS}
            out = view.render(state, trace.meta, **options)
            assert list(out) == names
            for panel in view.PANELS:
                assert isinstance(out[panel.name], str if panel.kind == "html" else go.Figure)
            lean = view.render(state, trace.meta, plots=False)
            assert all(lean[p.name] is None for p in view.PANELS if p.kind == "plot")
            assert isinstance(view.progress(state, trace.meta), str)


def big_trace(samples: int = 5, steps: int = 256, length: int = 256) -> Trace:
    """Voting-shaped: `samples` samples one after another, each `steps` passes over `length` positions (one
    commit per pass), every pass proposing all masked positions with a top-3; Node + Selection per sample."""
    trace = Trace(Meta(model="m", method="voting", params={"k": samples, "gen_length": length}))
    trace.add(RunStart(method="voting", prompt="p", prompt_ids=[], rows=samples, length=length))
    trace.add(Vocab(ids=list(range(10)), texts=[str(i) for i in range(10)]))
    step, answers = 0, []
    for s in range(samples):
        first = step + 1
        for t in range(steps):
            step += 1
            pos = list(range(t, length))
            trace.add(Tokens.model_construct(seq=s, step=step, action="propose", pos=pos, ids=[p % 10 for p in pos],
                                             conf=[0.5] * len(pos), entropy=[(p % 7) / 3 for p in pos],
                                             top_ids=[[p % 10, 1, 2] for p in pos], top_p=[[0.5, 0.3, 0.2]] * len(pos),
                                             block=None, kind="tokens"))
            trace.add(Tokens(seq=s, step=step, action="commit", pos=[t], ids=[t % 10]))
        answers.append(str(s % 2))
        trace.add(Node(id=s, seq=s, step=step, status="finished", answer=answers[-1], nfe=step - first + 1))
        trace.add(Selection(round=s, nodes=list(range(s + 1)), answers=list(answers), tally=[("0", 1)],
                            answer="0", nfe=step, agreement=["a" * length] * (s + 1) + ["k" * length]))
    trace.add(RunEnd(nfe=step, seconds=1.0, answer="0"))
    return trace


def test_large_trace_renders_at_a_middle_frame() -> None:
    """256 steps × 5 samples × 256 positions, scrubbed to the middle (the lead times this separately)."""
    trace = big_trace()
    fold = Fold(trace)
    assert fold.frames == 5 * 256
    state = fold.at(fold.frames // 2)
    out = diffusion_view.render(state, trace.meta) | voting_view.render(state, trace.meta)
    assert out["canvas"].count("dl-row") == 3 and len(out["entropy"].data[0].z) == 256
    assert len(out["grid"].data[0].z) == 3  # two samples finished + the next start
    assert "sample 3 / 5 · step 640 (pass 128 of this sample" in voting_view.progress(state, trace.meta)
