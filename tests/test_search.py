"""Test-time search on the zoo (tiny-ar policy, tiny-prm PRM): the reference's rules, read back from the trace."""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import pairwise

import pytest

from decoding.fold import Fold
from decoding.models import load
from decoding.search import decode
from decoding.search.beam_search import tile, top_k
from decoding.search.config import SearchParams
from decoding.search.expand import expand
from decoding.selection import aggregate, pick, weighted_tally
from decoding.tasks import TASKS
from decoding.trace import Node, RunEnd, Selection, Trace

PROMPT = "7*4+5*3-20=?\n"  # level 4: the zoo policy is unsure at T = 1, so beams differ


@pytest.fixture(scope="module")
def policy(zoo_dir):
    return load(str(zoo_dir / "tiny-ar"))


def run(policy, seed: int = 0, **kw) -> list:
    params = SearchParams(**{"n": 4, "beam_width": 2, "temperature": 1.0, "max_tokens": 24, **kw})
    return list(decode(policy, PROMPT, params, task=TASKS["zoo"], seed=seed))


def iterations(events: list) -> list[list[Node]]:
    """The candidates of each iteration, in order (the nodes between two iteration selections)."""
    out, current = [], []
    for e in events:
        if isinstance(e, Node):
            current.append(e)
        elif isinstance(e, Selection) and e.reason is None:
            out.append(current)
            current = []
    return out


def test_beam_search_keeps_n_over_m_and_tiles_to_n(policy):
    events = run(policy, filter_duplicates=False, n=8, beam_width=4)
    its = iterations(events)
    assert len(its) >= 3
    for it, nxt in pairwise(its):
        assert len(it) == 8  # N beams expand every iteration
        live = [n for n in it if n.status in ("kept", "pruned")]
        kept = [n for n in it if n.status == "kept"]
        assert len(kept) == min(8 // 4, len(live))
        # the next iteration's 8 beams are the kept ones tiled: (kept * repeats)[:8]
        assert len(nxt) == 8
        assert [n.parent for n in nxt] == [k.id for k in (kept * 8)[:8]]
    assert tile([], 4) == [] and top_k([0.2, 0.9, 0.9, 0.1], 2) == [1, 2]


def test_completed_beams_leave_the_pool(policy):
    events = run(policy, filter_duplicates=True, max_tokens=6)  # short steps: some beams stop on "length"
    nodes = {e.id: e for e in events if isinstance(e, Node)}
    finished = {i for i, n in nodes.items() if n.status == "finished"}
    assert finished
    assert not any(n.parent in finished for n in nodes.values())  # nothing grows from a completed beam
    assert all(nodes[i].stop in ("eos", "length", "empty") for i in finished)
    end = events[-1]
    assert isinstance(end, RunEnd) and set(end.summary["outputs"]) <= finished
    dup = [n for n in nodes.values() if n.status == "duplicate"]
    assert not any(n.parent in {d.id for d in dup} for n in nodes.values())


def test_length_stop_is_labelled_length(policy):
    (step,), _ = expand(policy, [policy.encode_prompt(PROMPT)], delimiter="\n", temperature=0, top_p=1, max_tokens=3)
    assert step.stop == "length" and len(step.ids) == 3


def test_dvts_subtrees_never_exchange_candidates(policy):
    events = run(policy, method="dvts", n=8, beam_width=4, max_tokens=12)
    its = iterations(events)
    assert len(its) >= 2
    # iteration 1: subtree j's candidates are rows j*M .. (j+1)*M - 1; later: the children of its kept node
    groups = [[n.id for n in its[0][j * 4:(j + 1) * 4]] for j in range(2)]
    chosen = {}
    for j, group in enumerate(groups):
        picked = [i for i in group if next(n for n in its[0] if n.id == i).status in ("kept", "finished")]
        assert len(picked) == 1
        chosen[j] = picked[0]
    for it in its[1:]:
        by_parent = defaultdict(list)
        for n in it:
            by_parent[n.parent].append(n)
        assert set(by_parent) <= set(chosen.values())  # only a subtree's own kept node has children
        for j, parent in list(chosen.items()):
            if parent not in by_parent:
                continue
            kids = by_parent[parent]
            assert len(kids) == 4
            picked = [n for n in kids if n.status in ("kept", "finished")]
            assert len(picked) == 1
            chosen[j] = picked[0].id
    end = events[-1]
    outputs = end.summary["outputs"]
    assert len(outputs) == 8
    nodes = {e.id: e for e in events if isinstance(e, Node)}
    assert all(len({nodes[i].parent for i in outputs[j * 4:(j + 1) * 4]}) == 1 for j in range(2))
    assert end.summary["completion_tokens"] and min(end.summary["completion_tokens"]) > 0  # not the reference's -1


def test_weighted_best_of_n_sums_scores_by_answer(policy):
    answers, scores = ["5", "7", "7", None], [0.9, 0.5, 0.45, 1.0]
    assert weighted_tally(answers, scores) == pytest.approx({"5": 0.9, "7": 0.95})
    assert pick(answers, scores, "naive") == 3
    assert pick(answers, scores, "weighted") == 1  # "7": 0.95 > 0.9, its best completion
    assert pick(answers, scores, "majority") == 1
    events = run(policy, method="weighted_best_of_n", n=8, max_tokens=60)
    final = [e for e in events if isinstance(e, Selection)][-1]
    sums = weighted_tally(final.answers, final.scores)
    assert events[-1].answer == max(sums, key=sums.get)
    nodes = {e.id: e for e in events if isinstance(e, Node)}
    for node_id, score in zip(final.nodes, final.scores):  # the leaf's score is "last" over its chain of steps
        assert score == pytest.approx(nodes[node_id].score, abs=1e-3)
    majority = run(policy, method="majority", n=8, max_tokens=60)
    assert majority[-1].summary["prm_calls"] == 0
    assert majority[-1].answer == Counter(a for a in final.answers if a).most_common(1)[0][0]


def test_batched_and_one_by_one_give_the_same_tree_at_temperature_0(policy):
    def tree(events: list) -> list:
        return [(n.id, n.parent, n.status, n.text, n.answer, n.stop, n.score) for n in events if isinstance(n, Node)]

    batched = run(policy, temperature=0.0)
    single = run(policy, temperature=0.0, batched=False)
    assert tree(batched) == tree(single)
    assert len(tree(batched)) >= 8
    assert single[-1].nfe > batched[-1].nfe  # one beam at a time costs more passes


def test_same_seed_same_trace(policy):
    def dump(events):
        trace = Trace.new("tiny-ar", "search", {}, 3)
        for e in events:
            trace.add(e.model_copy(update={"seconds": 0.0}) if isinstance(e, RunEnd) else e)
        return trace.to_json()["events"]

    a, b = dump(run(policy, seed=3, method="dvts")), dump(run(policy, seed=3, method="dvts"))
    assert a == b
    assert dump(run(policy, seed=4, method="dvts")) != a  # the seed matters at T = 1


def test_view_reranks_by_aggregation_from_the_trace(policy):
    from viz import search_view

    params = SearchParams(method="best_of_n", n=8, temperature=1.0, max_tokens=40)
    trace = Trace.new("tiny-ar", "search", params.model_dump(), 0, task="zoo", expected="28")
    for e in decode(policy, PROMPT, params, task=TASKS["zoo"], seed=1):
        trace.add(e)
    fold = Fold(trace)
    state = fold.latest()
    for k, how in enumerate(("last", "min", "prod")):
        rank = search_view.ranking(state, trace.meta, how)
        expect = [aggregate(search_view.path_scores(state.nodes, i), how) for i in rank.nodes]
        assert rank.scores == expect and rank.chosen == max(range(8), key=lambda i: (expect[i], -i))
        out = search_view.render(state, trace.meta, rank_by=k)
        assert f"scored by <b>{how}</b>" in out["clusters"]
    assert "tokens generated" in search_view.cost_html(state)
    assert search_view.how_of(7, trace.meta) == "last"  # out of range: the run's own


def test_params_need_n_a_multiple_of_m():
    with pytest.raises(ValueError, match="multiple of M"):
        SearchParams(method="dvts", n=6, beam_width=4)
    assert SearchParams(method="best_of_n", n=6).n == 6  # sampling takes any N
    fixed, notes = SearchParams.adjust({**SearchParams().model_dump(), "n": 6})
    assert fixed["n"] == 8 and "multiple of M" in notes[0]  # the app moves the slider to a value that runs


def test_view_escapes_model_text():
    from decoding.fold import State
    from decoding.trace import Meta
    from viz import search_view

    state = State()
    bad = "<img src=x onerror=alert(1)>"
    state.nodes = {0: Node(id=0, status="kept", text=bad, score=0.9),
                   1: Node(id=1, parent=0, status="finished", text="#1", answer=bad, score=0.4, stop="eos")}
    state.selections = [Selection(round=1, nodes=[1], answers=[bad], scores=[0.4], answer=bad, reason="done")]
    meta = Meta(model="m", method="search", params={"method": "best_of_n"})
    out = search_view.render(state, meta, rank_by=1)
    dumped = out["tree"].to_json() + out["strips"].to_json() + out["clusters"]
    assert bad not in dumped and "&lt;img" in dumped
    assert "scored by <b>min</b>" in out["clusters"]
