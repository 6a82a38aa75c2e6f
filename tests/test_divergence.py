"""The divergence debugger (issue 14): each cause label on hand-built traces, the first split of autoregressive and
diffusion traces, replay by seed of a batched dVoting sample, and forks that leave the prefix unchanged."""

from __future__ import annotations

import json

import pytest

from decoding.cli import main
from decoding.divergence import _settings, _Walk, diverge, pair
from decoding.fold import Fold
from decoding.trace import Node, RunStart, Tokens, Trace, Vocab

M = 9  # mask id of the hand-built diffusion traces
TEXT = {1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}


def _trace(method: str, seqs: dict[int, list[tuple[int, list[tuple]]]], *, temperature: float = 1.0,
           seed: int = 0, prompt: tuple[int, ...] = (7, 8), length: int = 3, noise: float | None = None) -> Trace:
    """seqs[seq] = passes, each (step, [(pos, token, top)]) with top = [(id, p), ...] best first; a pass proposes and
    commits those positions. Diffusion traces have a mask id; autoregressive ones do not."""
    t = Trace.new("hand", method, {"temperature": temperature}, seed)
    t.add(RunStart(method=method, prompt="q", prompt_ids=list(prompt), rows=len(seqs), length=length,
                   mask_id=M if method == "diffusion" else None))
    t.add(Vocab(ids=sorted(TEXT), texts=[TEXT[i] for i in sorted(TEXT)]))
    for seq, passes in seqs.items():
        for step, picks in passes:
            pos, ids = [p for p, _, _ in picks], [tok for _, tok, _ in picks]
            conf = [dict(top).get(tok, 0.01) for _, tok, top in picks]
            t.add(Tokens(seq=seq, step=step, action="propose", pos=pos, ids=ids, conf=conf, entropy=[0.5] * len(pos),
                         top_ids=[[i for i, _ in top] for _, _, top in picks],
                         top_p=[[p for _, p in top] for _, _, top in picks]))
            t.add(Tokens(seq=seq, step=step, action="commit", pos=pos, ids=ids,
                         noise=[noise] * len(pos) if noise is not None else None))
        t.add(Node(id=seq, seq=seq, text="", answer=None))
    return t


SURE = [(1, 0.99), (2, 0.005)]


def _pair(split_a: tuple, split_b: tuple, extra_b: list | None = None, **kw) -> Trace:
    """Two samples (seqs 0, 1): both commit position 0 = 'a' at pass 1, then position 1 at pass 2 as given
    (pos, token, top), then position 2 = 'e' at pass 3. extra_b: more commits of sample 1 at pass 1."""
    return _trace("diffusion", {
        0: [(1, [(0, 1, SURE)]), (2, [split_a]), (3, [(2, 5, [(5, 0.9), (1, 0.05)])])],
        1: [(4, [(0, 1, SURE), *(extra_b or [])]), (5, [split_b]), *([] if extra_b else
                                                                     [(6, [(2, 5, [(5, 0.9), (1, 0.05)])])])],
    }, **kw)


CASES = {
    # B's noise picked 'c' (p 0.2, rank 2) where its argmax was 'b'; other seeds, same context.
    "sampling": lambda: _pair((1, 2, [(2, 0.7), (3, 0.2)]), (1, 3, [(2, 0.7), (3, 0.2)])),
    # both took their argmax, which differ by a hair.
    "near-tie": lambda: _pair((1, 2, [(2, 0.46), (3, 0.44)]), (1, 3, [(3, 0.46), (2, 0.44)])),
    # both took their argmax; the distributions differ by far.
    "numerics": lambda: _pair((1, 2, [(2, 0.8), (3, 0.1)]), (1, 3, [(3, 0.7), (2, 0.2)])),
    # B had committed position 2 before it decided position 1 (same distribution as the sampling case).
    "different context": lambda: _pair((1, 2, [(2, 0.7), (3, 0.2)]), (1, 3, [(2, 0.7), (3, 0.2)]),
                                       extra_b=[(2, 5, [(5, 0.9), (1, 0.05)])]),
}


@pytest.mark.parametrize("cause", list(CASES))
def test_each_cause_fires_on_its_case_and_only_there(cause: str) -> None:
    trace = CASES[cause]()
    d = diverge(trace, 0, trace, 1)
    assert (d.position, d.pass_no, d.cause) == (1, 2, cause), d.text()
    assert d.evidence and f"cause: {cause}" in d.text()
    assert [t for _, t, _ in d.a.top][:1] and d.a.pick.token == 2 and d.b.pick.token == 3
    if cause == "different context":
        assert d.b.only == [2] and d.a.only == [] and "had committed" in d.text()
    if cause == "sampling":
        assert d.b.rank == 2 and d.b.argmax == 2 and d.b.margin == 0.5
        assert "no draw recorded" in d.text()


def test_sampling_shows_the_recorded_draw() -> None:
    trace = _pair((1, 2, [(2, 0.7), (3, 0.2)]), (1, 3, [(2, 0.7), (3, 0.2)]), noise=2.5)
    d = diverge(trace, 0, trace, 1)
    assert d.cause == "sampling" and d.b.pick.noise == 2.5
    assert "Gumbel draw at 'c' was g = +2.50 (a draw this large: 7.9%)" in d.text()
    assert "by 1.25 (log-probability gap / T)" in d.text()  # ln(0.7 / 0.2) at T = 1


def test_same_noise_is_not_sampling() -> None:
    """The same seed, pass and temperature draw the same noise: a different token there means different logits."""
    base = CASES["sampling"]()
    a = _trace("diffusion", {0: [(1, [(0, 1, SURE)]), (2, [(1, 2, [(2, 0.7), (3, 0.2)])])]}, seed=5)
    b = _trace("diffusion", {0: [(1, [(0, 1, SURE)]), (2, [(1, 3, [(2, 0.6), (3, 0.35)])])]}, seed=5)
    d = diverge(a, 0, b, 0)
    assert d.same_noise and d.cause == "numerics" and "non-argmax" in " ".join(d.notes)
    assert "the same draw chose differently" in " ".join(d.evidence)
    assert diverge(base, 0, base, 1).same_noise is False  # seeds 0 + 0 and 0 + 1


def test_identical_sequences_have_no_split() -> None:
    trace = _trace("diffusion", {0: [(1, [(0, 1, SURE)])], 1: [(2, [(0, 1, SURE)])]})
    d = diverge(trace, 0, trace, 1)
    assert d.identical and d.cause == "identical" and "no split" in d.text()


def test_autoregressive_split_is_the_first_differing_position() -> None:
    def seq(tokens):
        return [(i + 1, [(i, tok, [(tok, 0.6), (5 if tok != 5 else 4, 0.3)])]) for i, tok in enumerate(tokens)]

    a = _trace("autoregressive", {0: seq([1, 2, 3, 4, 1])}, length=5)
    b = _trace("autoregressive", {0: seq([1, 2, 4, 4, 2])}, length=5)
    d = diverge(a, 0, b, 0)
    assert d.mode == "autoregressive" and (d.position, d.pass_no) == (2, 3)
    assert [s.pos for s in d.splits] == [2, 4] and d.cause == "numerics"  # same prefix, both argmax, margin 0.3


def test_diffusion_split_is_the_earliest_pass_not_the_leftmost_position() -> None:
    top = [(1, 0.45), (3, 0.44)]
    trace = _trace("diffusion", {
        0: [(1, [(2, 1, top)]), (2, [(0, 1, top)])],
        1: [(3, [(2, 3, [(3, 0.45), (1, 0.44)])]), (4, [(0, 3, [(3, 0.45), (1, 0.44)])])],
    })
    d = diverge(trace, 0, trace, 1)
    assert (d.position, d.pass_no) == (2, 1) and sorted(s.pos for s in d.splits) == [0, 2]
    assert {s.pos: s.pass_no for s in d.splits} == {0: 2, 2: 1} and d.cause == "near-tie"


def test_cli_prints_the_split_and_its_cause(tmp_path, capsys) -> None:
    path = CASES["sampling"]().save(tmp_path / "t.json")
    assert main(["diff", str(path)]) == 0
    out = capsys.readouterr().out
    assert "split: position 1, pass 2" in out and "cause: sampling" in out and "'c' (p=0.200, rank 2)" in out
    assert main(["diff", str(path), str(path), "--seq-a", "0", "--seq-b", "7"]) == 2
    assert "sequence 7 committed no tokens" in capsys.readouterr().err


# ---------------------------------------------------------------- with the zoo models


def _vote(dllm: str, k: int = 3) -> Trace:
    from decoding import voting
    from decoding.models import load
    from decoding.tasks import TASKS

    adapter, task = load(dllm), TASKS["zoo"]
    params = voting.VotingParams(k=k, batched=True, gen_length=32, temperature=1.0)
    trace = Trace.new(dllm, "voting", params.model_dump(mode="json"), 42, task="zoo", **adapter.numerics())
    for e in voting.decode(adapter, task.format_prompt("15+15+90-78*2*6-81=?"), params, task=task, seed=42):
        trace.add(e)
    return trace


def test_replay_by_seed_reproduces_a_batched_dvoting_sample(dllm) -> None:
    """Batched dVoting decodes samples 0-1 together and 2 from their agreement; each re-run alone from its seed
    (seed + sample) commits the same tokens at the same passes."""
    from decoding.models import load
    from decoding.replay import fork, replay_sample

    adapter, trace = load(dllm), _vote(dllm)
    later = [e.seq for e in trace.events if isinstance(e, Tokens) and e.action == "keep"]
    for seq in (1, *later[:1]):
        replayed, d = replay_sample(adapter, trace, seq)
        assert d.identical, d.text()
        assert _Walk(Fold(trace).latest(), seq).timeline == _Walk(Fold(replayed).latest(), seq).timeline  # same passes
    # A diffusion fork: force the last position of sample 1 to another token, same seed; the token holds.
    tokens = diverge(trace, 1, trace, 1).a.tokens
    other = next(t for t in (adapter.eos_ids[0], *range(5, 40)) if t != tokens[-1] and t != adapter.mask_id)
    _, d = fork(adapter, trace, 1, len(tokens) - 1, other)
    assert d.b.tokens[-1] == other and any(s.pos == len(tokens) - 1 for s in d.splits)


def _commits_by_pass(trace: Trace, seq: int) -> list[list[tuple[int, int]]]:
    """The sequence's commits, one list of (position, token) per own pass."""
    passes: dict[int, list[tuple[int, int]]] = {}
    for e in trace.events:
        if isinstance(e, Tokens) and e.seq == seq and e.action != "keep":
            passes.setdefault(e.step, []).extend(zip(e.pos, e.ids) if e.action == "commit" else [])
    return [passes[s] for s in sorted(passes)]


def test_a_diffusion_fork_keeps_the_passes_before_it(dllm) -> None:
    """A fork at a position forces its token from the pass that had committed it: every earlier pass commits what it
    did, that pass commits the forced token, and the noise stays aligned (the same draws, so a fork to the token the
    sample took anyway reproduces it)."""
    from decoding.models import load
    from decoding.replay import commit_pass, fork

    adapter, trace = load(dllm), _vote(dllm)
    before = _commits_by_pass(trace, 0)
    at = len(before) // 2  # a pass in the middle (0-based), and a position it committed
    assert at >= 1 and before[at], [len(b) for b in before]
    pos = before[at][0][0]
    assert commit_pass(trace, 0, pos) == at + 1
    top = Fold(trace).latest().seqs[0].top[pos][0]
    other = next(t for t in top if t != dict(before[at])[pos])
    forked, d = fork(adapter, trace, 0, pos, other)
    after = _commits_by_pass(forked, 0)
    assert after[:at] == before[:at]  # the passes before it as they were
    assert dict(after[at])[pos] == other and d.b.tokens[pos] == other
    same, d_same = fork(adapter, trace, 0, pos, dict(before[at])[pos])  # forcing what it took: nothing changes
    assert d_same.identical and _commits_by_pass(same, 0) == before


def main_text(a: Trace, b: Trace, tmp_path, capsys) -> str:
    """What `python -m decoding diff a b --seq-b 1` prints."""
    assert main(["diff", str(a.save(tmp_path / "a.json")), str(b.save(tmp_path / "b.json")), "--seq-b", "1"]) == 0
    return capsys.readouterr().out


def test_a_split_between_precisions_names_both(tmp_path, capsys) -> None:
    """Traces say where their logits were computed (meta.device, meta.dtype); a same-context split between two
    precisions names both in its evidence, and the CLI's report in its header. The same precision: not said."""
    a, b = CASES["numerics"](), CASES["numerics"]()
    a.meta = a.meta.model_copy(update={"device": "cpu", "dtype": "float32"})
    b.meta = b.meta.model_copy(update={"device": "cuda (NVIDIA H100 80GB HBM3)", "dtype": "bfloat16"})
    d = diverge(a, 0, b, 1)
    assert d.cause == "numerics"
    assert "A in float32 on cpu, B in bfloat16 on cuda (NVIDIA H100 80GB HBM3)" in " ".join(d.evidence)
    assert "not only by a hair" in " ".join(d.evidence)  # both took their argmax (a draw on an edge: above)
    assert "precisions" not in " ".join(diverge(a, 0, a, 1).evidence)
    assert ["dtype", "float32", "bfloat16"] in _settings(a.meta, b.meta)  # two uploads: "Settings that differ"
    b.meta = b.meta.model_copy(update={"device": "cuda\x1b[2J (NVIDIA H100 80GB HBM3)"})  # a terminal escape
    assert "\x1b" not in main_text(a, b, tmp_path, capsys)
    b.meta = b.meta.model_copy(update={"device": "cuda (NVIDIA H100 80GB HBM3)"})
    paired = pair(a, b)  # the Replay tab's two files (A seq 0, B seq 0, A seq 1, B seq 1): each keeps where it ran
    assert "A in float32 on cpu, B in bfloat16 on cuda" in " ".join(diverge(paired, 0, paired, 3).evidence)
    out = main_text(a, b, tmp_path, capsys).splitlines()
    assert out[0].endswith(", float32 on cpu)") and out[1].endswith(", bfloat16 on cuda (NVIDIA H100 80GB HBM3))")


def test_cli_replays_a_sample_in_another_precision(dllm, tmp_path, capsys) -> None:
    """`python -m decoding replay`: one sample of a saved batched vote decoded again alone in bfloat16; it prints
    what `replay_sample` finds with a bfloat16 model, and its saved trace says where it ran."""
    import torch

    from decoding.models import load
    from decoding.replay import replay_sample

    trace = _vote(dllm)
    path = trace.save(tmp_path / "vote.json")
    assert Trace.load(path).meta.dtype == "float32" and Trace.load(path).meta.device == "cpu"
    argv = ["replay", str(path), "--seq", "1", "--dtype", "bfloat16", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "again.json")]) == 0
    out = capsys.readouterr().out
    _, d = replay_sample(load(dllm, "cpu", dtype=torch.bfloat16), trace, 1)
    assert out.startswith(d.text()) and "float32 on cpu" in out and "bfloat16 on cpu" in out, out
    assert Trace.load(tmp_path / "again.json").meta.dtype == "bfloat16"
    assert main(["replay", str(path), "--seq", "7"]) == 2
    assert "no sequence 7" in capsys.readouterr().err


def test_bench_numerics_counts_each_replay(dllm, tmp_path, capsys) -> None:
    """`python -m decoding.bench numerics`: every sample of each vote replayed alone per precision, counted once;
    on the CPU in float32, batched against alone reproduces every sample (test above, and the engine's rows)."""
    from decoding.bench import cli

    out = tmp_path / "numerics.json"
    cli(["numerics", "--model", dllm, "--n", "1", "--k", "2", "--gen-length", "32", "--dtypes", "float32,bfloat16",
         "--out", str(out)])
    result = json.loads(out.read_text())
    rows = {r["dtype"]: r for r in result["rows"]}
    assert rows["float32"]["samples"] == rows["bfloat16"]["samples"] >= 2
    assert rows["float32"]["identical"] == rows["float32"]["samples"]
    for row in rows.values():
        assert row["identical"] + sum(row["causes"].values()) == row["samples"]
    assert "| bfloat16 |" in capsys.readouterr().out


def test_the_recorded_noise_is_the_engines_gumbel_draw(dllm) -> None:
    """At temperature > 0 each commit carries g = -log(-log U) of the chosen token, U being the row's first draw
    (generator seeded seed + row, one [L, V] float64 draw per pass): re-drawn here, it matches."""
    import math

    import torch

    from decoding.diffusion import DiffusionParams, denoise
    from decoding.models import load

    adapter = load(dllm)
    params = DiffusionParams(gen_length=16, steps=8, block_length=16, temperature=1.0)
    events = list(denoise(adapter, "13-2=?\n", params, seed=7))
    first = next(e for e in events if isinstance(e, Tokens) and e.action == "commit")
    assert first.noise is not None and len(first.noise) == len(first.pos)
    u = torch.rand((16, adapter.model.config.vocab_size), dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    for p, t, g in zip(first.pos, first.ids, first.noise):
        assert g == pytest.approx(-math.log(-math.log(float(u[p, t]))), abs=1e-3)
    greedy = list(denoise(adapter, "13-2=?\n", params.model_copy(update={"temperature": 0.0}), seed=7))
    assert all(e.noise is None for e in greedy if isinstance(e, Tokens))


def test_autoregressive_fork_leaves_the_prefix_unchanged(zoo_dir) -> None:
    """Sampling at temperature 1: the fork re-decodes the prefix from the same seed, so positions before p come out
    unchanged; p holds the forced token; the diff's split is p."""
    from decoding import autoregressive as ar
    from decoding.models import load
    from decoding.replay import fork
    from decoding.tasks import TASKS

    adapter = load(str(zoo_dir / "tiny-ar"))
    task = TASKS["zoo"]
    params = ar.ARParams(max_new_tokens=12, temperature=1.0)
    trace = Trace.new("tiny-ar", "autoregressive", params.model_dump(mode="json"), 3, task="zoo")
    for e in ar.decode(adapter, task.format_prompt("19*2-1+17=?"), params, task=task, seed=3):
        trace.add(e)
    original = diverge(trace, 0, trace, 0).a.tokens
    p = 4
    token = next(t for t in range(5, 40) if t != original[p])
    _, d = fork(adapter, trace, 0, p, token)
    assert d.b.tokens[:p] == original[:p] and d.b.tokens[p] == token
    assert d.position == p and d.cause == "forced"


def test_the_view_renders_hostile_strings_as_text() -> None:
    """Token texts and answers from an uploaded trace are escaped in every panel (only our tags and attributes)."""
    from test_escaping import PAYLOADS, check_html

    from viz import divergence_view

    evil = "".join(PAYLOADS[:6])
    TEXT[3] = evil
    try:
        trace = CASES["sampling"]()
    finally:
        TEXT[3] = "c"
    trace.add(Node(id=1, seq=1, text=evil, answer=evil))
    for frame in (0, 2, None):
        panels = divergence_view.render(Fold(trace).at(frame), trace.meta, sample_a=1, sample_b=2)
        texts = {name: check_html(value) for name, value in panels.items() if value}
        if frame is None:
            assert evil.replace("\n", "⏎") in texts["split"] and evil in texts["cause"]
            assert "sampling" in texts["cause"] and evil in texts["topk"]


def test_the_tab_fork_shows_an_answer_only_once_finished_and_is_deterministic(dllm) -> None:
    """The divergence tab's decoder (a vote, then a fork): every frame before the fork's node says it is still
    decoding (a live frame once read 'New answer #None … 52 other position(s) changed', issue 14), the last one
    gives the fork's own answer; a second run in the same process commits the same tokens with the same noise."""

    from decoding.live import TraceView
    from decoding.models import load
    from decoding.replay import DivergenceParams, decode_divergence
    from decoding.tasks import TASKS
    from viz.divergence_view import answer_text, fork_html

    adapter, task = load(dllm), TASKS["zoo"]
    params = DivergenceParams(k=3, fork_sample=1, fork_position=47, fork_rank=1)  # the README example's fork

    def run() -> Trace:
        trace = Trace.new(dllm, "divergence", params.model_dump(mode="json"), 42, task="zoo")
        for e in decode_divergence(adapter, task.format_prompt("15+15+90-78*2*6-81=?"), params, task=task, seed=42):
            trace.add(e)
        return trace

    trace = run()
    fork = trace.events[-1].summary["fork"]
    from conftest import ZOO_DIR

    assert fork["answer"] == "423" or dllm != str(ZOO_DIR / "tiny-dllm"), fork  # measured on the shipped zoo
    view = TraceView(trace)
    panels = [fork_html(view.after_events(n), trace.meta) for n in range(1, len(trace.events) + 1)]
    node_at = next(i for i, e in enumerate(trace.events) if isinstance(e, Node) and e.seq == 99)
    live = [p for p in panels[:node_at] if p]
    assert live and all("Still decoding" in p and "New answer" not in p for p in live)
    assert all(f"New answer <b>{answer_text(fork['answer'])}</b>" in p for p in panels[node_at:]), panels[-1]
    assert "The vote:" in panels[-1] and "in sample 1's place" in panels[-1]  # the tally with the fork's answer
    again = run()
    assert [e for e in again.events if isinstance(e, Tokens)] == [e for e in trace.events if isinstance(e, Tokens)]
    # alternative 0 forces nothing: the tab's replay of a batched sample alone, by its seed, reproduces it
    params = params.model_copy(update={"fork_sample": 2, "fork_rank": 0, "batched": True})
    trace = run()
    replayed = fork_html(TraceView(trace).latest(), trace.meta)
    assert "Replay of sample 2 alone" in replayed and "reproduces it token for token" in replayed, replayed


def test_a_forked_answer_can_change_the_vote() -> None:
    """recount: the tally before and after one sample's answer is replaced (ties first seen, None takes no part)."""
    from decoding.divergence import recount

    answers, nodes = ["5", "7", "7", None], [0, 1, 2, 3]
    assert recount(answers, nodes, 1, "5") == ([("7", 2), ("5", 1)], [("5", 2), ("7", 1)])  # the winner flips
    assert recount(answers, nodes, 3, "7")[1] == [("7", 3), ("5", 1)]  # a sample with no answer now votes
    assert recount(answers, nodes, 0, None)[1] == [("7", 2)]


def test_a_greedy_speculative_trace_replays_and_forks(zoo_dir) -> None:
    """Greedy speculative output is plain greedy decoding's: its sequence 0 replays identically, and a fork at p keeps
    the positions before p and holds the forced token at p."""
    from decoding import speculative
    from decoding.models import load
    from decoding.replay import fork, replay_sample
    from decoding.tasks import TASKS

    adapter, task = load(str(zoo_dir / "tiny-ar")), TASKS["zoo"]
    params = speculative.SpeculativeParams(max_new_tokens=16)
    trace = Trace.new("tiny-ar", "speculative", params.model_dump(mode="json"), 0, task="zoo")
    for e in speculative.decode(adapter, task.format_prompt("19*2-1+17=?"), params, task=task):
        trace.add(e)
    _, d = replay_sample(adapter, trace, 0)
    assert d.identical, d.text()
    original, p = d.a.tokens, 5
    token = next(t for t in range(5, 40) if t != original[p])
    _, d = fork(adapter, trace, 0, p, token)
    assert d.b.tokens[:p] == original[:p] and d.b.tokens[p] == token and d.cause == "forced"
    with pytest.raises(ValueError, match="greedy speculative"):
        replay_sample(adapter, trace, 1)  # a draft sequence is not an output
