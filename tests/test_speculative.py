"""Self-speculative decoding on the zoo's MTP heads (decoding/speculative.py) and its views."""

from __future__ import annotations

import pytest
import torch

from decoding import task
from decoding.fold import Fold
from decoding.models import ZOO_DIR, Adapter, load
from decoding.mtp import mtp_logits
from decoding.record import Recorder
from decoding.speculative import (
    Round,
    SpeculativeParams,
    decode,
    forward,
    greedy_accept,
    new_caches,
    round_events,
    run,
    speculate,
    typical_accept,
)
from decoding.tasks import TASKS
from decoding.trace import RunEnd, Tokens, Trace
from viz import speculative_view as view

TASK = TASKS["zoo"]


@pytest.fixture(scope="module")
def ar(zoo_dir) -> Adapter:
    return load(str(zoo_dir / "tiny-ar"), "cpu")


def prompts(n: int) -> list[str]:
    """n held-out questions, one per level from level 2 up (short answers, so the test stays fast)."""
    by_level = {p.level: p for p in task.load_heldout()[::-1]}
    return [TASK.format_prompt(by_level[lv].question) for lv in sorted(by_level)[1:n + 1]]


@pytest.fixture(scope="module")
def plain(ar: Adapter) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, model.generate() greedy ids) for a few held-out prompts."""
    out = []
    for prompt in prompts(4):
        ids = ar.encode_prompt(prompt)
        out.append((ids, ar.model.generate(torch.tensor([ids]), max_new_tokens=48, do_sample=False)[0, len(ids):].tolist()))
    return out


@pytest.mark.parametrize("draft_length", [1, 2, 3])
def test_greedy_equals_generate(ar: Adapter, plain, draft_length: int, zoo_dir) -> None:
    params = SpeculativeParams(draft_length=draft_length, max_new_tokens=48)
    fewer = 0
    for ids, expected in plain:
        res = run(ar, ids, params)
        assert res.ids == expected
        fewer += res.passes < len(expected)
    if zoo_dir == ZOO_DIR:  # the trained heads' drafts are taken (a 2-step test zoo's may never be)
        assert fewer


def test_greedy_accept_hand_built() -> None:
    logits = torch.full((4, 6), -5.0)
    for i, t in enumerate([1, 2, 3, 4]):  # head 1 wants 1, 2, 3 at the draft positions, then 4
        logits[i, t] = 5.0
    assert greedy_accept(torch.tensor([1, 2, 3]), logits) == 3  # all accepted (the bonus is then 4)
    assert greedy_accept(torch.tensor([1, 5, 3]), logits) == 1  # first mismatch at k=2: the later match is not taken
    assert greedy_accept(torch.tensor([0, 2, 3]), logits) == 0
    assert greedy_accept(torch.tensor([], dtype=torch.long), logits[:1]) == 0


def test_typical_accept_hand_built() -> None:
    sure = torch.tensor([0.97, 0.01, 0.01, 0.01])  # low entropy: threshold min(0.09, 0.3·e^-H) ≈ 0.09
    flat = torch.full((4,), 0.25)  # H = ln 4: threshold min(0.09, 0.3/4 = 0.075): 0.25 passes
    probs = torch.stack([sure, flat, sure])
    assert typical_accept(torch.tensor([0, 3]), probs) == 2
    assert typical_accept(torch.tensor([1, 3]), probs) == 0  # p = 0.01 < 0.09
    assert typical_accept(torch.tensor([0, 3]), probs, epsilon=0.3, alpha=1.0) == 1  # 0.25 is not > min(0.3, 1/4)
    assert typical_accept(torch.tensor([0, 3]), probs, epsilon=0.2, alpha=1.0) == 2


def test_round_events_and_view_accounting() -> None:
    """A hand-built pass: draft [5, 6, 7] at positions 4..6, two accepted, the third rejected, bonus 9 at 6; next
    draft [1, 2]. The events say so, and the view reads the same verdicts back from the folded trace."""
    v = 10
    probs = torch.softmax(torch.arange(v, dtype=torch.float), -1)
    prev = Round(step=1, start=0, draft=[], accepted=0, written=[3, 3, 3, 3], bonus=3, bonus_logits=probs.log(),
                 next_draft=[5, 6, 7], draft_logits=probs.log().repeat(3, 1), done=False)
    rd = Round(step=2, start=4, draft=[5, 6, 7], accepted=2, written=[5, 6, 9], bonus=9, bonus_logits=probs.log(),
               next_draft=[1, 2], draft_logits=probs.log().repeat(3, 1), done=False)
    rec = Recorder(lambda ids: [f"t{i}" for i in ids])
    events = round_events(prev, rec, 3) + round_events(rd, rec, 3)
    deltas = [(e.seq, e.action, e.pos, e.ids) for e in events if isinstance(e, Tokens) and e.step == 2]
    assert deltas == [(1, "accept", [4, 5], [5, 6]), (1, "reject", [6], [7]), (0, "accept", [4, 5], [5, 6]),
                      (0, "propose", [6], [9]), (0, "commit", [6], [9]), (2, "propose", [7, 8], [1, 2])]
    trace = Trace.new("hand", "speculative", {}, 0)
    for e in events:
        trace.add(e)
    state = Fold(trace).latest()
    passes = view.passes(state)
    assert [(p.step, p.written, p.accepted, p.rejected, p.bonus) for p in passes] == [
        (1, [0], [], [], 0), (2, [4, 5, 6], [4, 5], [6], 6)]  # (pass 1 hand-built with one commit only)
    assert view.pending_draft(state) == [7, 8]
    assert view.by_position(passes) == ([1, 1, 0], [1, 1, 1])


def test_cache_after_rejection_matches_fresh_pass(ar: Adapter) -> None:
    """Feed a draft of wrong tokens, crop them away, continue: every head's logits and the trunk's K/V equal a
    fresh pass over the committed tokens."""
    heads, model = ar.mtp_heads, ar.model
    ids = ar.encode_prompt(prompts(1)[0])
    caches = new_caches(heads)
    first = forward(model, heads, torch.tensor([ids]), caches, heads.n_future)
    bonus = int(first[0, -1].argmax())
    wrong = [(bonus + 1 + i) % 20 + 7 for i in range(3)]
    forward(model, heads, torch.tensor([[bonus, *wrong]]), caches, heads.n_future)
    caches.crop(len(wrong))  # all three rejected: the cache keeps prompt + bonus
    assert caches.length == len(ids) + 1 and all(c.get_seq_length() == len(ids) + 1 for c in caches.heads)
    nxt = int(forward(model, heads, torch.tensor([[bonus]]), new_caches(heads), 1)[0, -1].argmax())  # any token
    cached = forward(model, heads, torch.tensor([[nxt]]), caches, heads.n_future)[:, -1]
    with torch.no_grad():
        fresh = mtp_logits(model, heads, torch.tensor([[*ids, bonus, nxt]]))[:, 0, -1].float()
    torch.testing.assert_close(cached, fresh, atol=1e-4, rtol=1e-4)
    ref = new_caches(heads)
    forward(model, heads, torch.tensor([[*ids, bonus, nxt]]), ref, heads.n_future)
    for layer, ref_layer in zip(caches.trunk.layers, ref.trunk.layers):
        torch.testing.assert_close(layer.keys, ref_layer.keys, atol=1e-4, rtol=1e-4)
    for head, ref_head in zip(caches.heads, ref.heads):
        torch.testing.assert_close(head.values, ref_head.values, atol=1e-4, rtol=1e-4)


def test_same_seed_same_trace_sampling(ar: Adapter) -> None:
    params = SpeculativeParams(draft_length=3, max_new_tokens=30, temperature=1.0)
    prompt = prompts(3)[-1]

    def events(seed: int) -> list:
        out = list(decode(ar, prompt, params, task=TASK, seed=seed))
        return [e for e in out if not isinstance(e, RunEnd)] + [out[-1].summary]

    first = events(3)
    assert first == events(3)
    assert first[-1]["exact"] is False
    assert any(e.action == "accept" for e in first if isinstance(e, Tokens))


def test_decode_trace_is_valid_and_counts(ar: Adapter) -> None:
    params = SpeculativeParams(draft_length=3, max_new_tokens=64)
    trace = Trace.new("tiny-ar", "speculative", params.model_dump(), 0)
    for e in decode(ar, prompts(2)[-1], params, task=TASK):
        trace.add(e)
    trace = Trace.loads(trace.dumps())  # validates every event
    end = trace.events[-1]
    state = Fold(trace).latest()
    passes = view.passes(state)
    assert end.nfe == len(passes) == state.step
    assert end.summary["tokens"] == sum(len(p.written) for p in passes)
    assert end.summary["passes_saved"] == end.summary["tokens"] - end.nfe > 0
    assert list(view.by_position(passes)) == [end.summary["accepted_by_pos"], end.summary["drafted_by_pos"]]
    out = view.render(state, trace.meta)
    assert "sp-acc" in out["output"] and "sp-bonus" in out["output"]
    assert "passes saved" in view.progress(state, trace.meta)


def test_clear_errors(ar: Adapter) -> None:
    plain = Adapter(ar.spec, "causal", ar.model, ar.tokenizer, ar.device, ar.settings, None, ar.eos_ids,
                    ar.max_length, mtp_heads=None)
    with pytest.raises(ValueError, match="no multi-token-prediction heads"):
        next(decode(plain, "1+1=?\n", SpeculativeParams()))
    with pytest.raises(ValueError, match="draft_length 4 needs 5 heads"):
        next(speculate(ar, [2, 8], SpeculativeParams(draft_length=4)))


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def test_colours_contrast_and_escaping() -> None:
    for bg in (view.ACCEPTED_BG, view.REJECTED_BG, view.BONUS_BG):
        hi, lo = sorted([_luminance(bg), _luminance(view.TEXT)], reverse=True)
        assert (hi + 0.05) / (lo + 0.05) >= 4.5, bg
    assert len({view.ACCEPTED_BG, view.REJECTED_BG, view.BONUS_BG}) == 3
    probs = torch.softmax(torch.arange(4, dtype=torch.float), -1)
    rd = Round(step=1, start=0, draft=[], accepted=0, written=[1], bonus=1, bonus_logits=probs.log(), next_draft=[2],
               draft_logits=probs.log()[None], done=False)
    trace = Trace.new("hand", "speculative", {}, 0)
    for e in round_events(rd, Recorder(lambda ids: ["<script>x</script>"] * len(ids)), 2):
        trace.add(e)
    out = view.render(Fold(trace).latest(), trace.meta, plots=False)
    assert "<script>x" not in out["output"] + out["rounds"] and "&lt;script&gt;" in out["output"]
