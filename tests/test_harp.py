"""HARP on the zoo's causal model: the rule as the reference states it (entropy in bits, strict >, a mask over
every position with no rescaling, raw-logit mixing), the cache-off decoder equal to a cache-free batch-1
implementation of the rule, cached = cache-free, seeded replay, θ above every entropy = plain greedy; and the
view reading the trace."""

from __future__ import annotations

import math

import pytest
import torch
from test_autoregressive import run

from decoding import autoregressive as ar
from decoding import harp
from decoding.fold import Fold
from decoding.models import load
from decoding.tasks import TASKS
from decoding.trace import RunEnd, Tokens, Trace, Vocab
from viz import harp_view

TASK = TASKS["zoo"]
FLIPS = "63-49-6+49-25-11*5=?"  # hesitates at answer position 6 and the mix flips the token (seed 3)
N = 12  # tokens per run: the point at 6 and a few more keep the tests fast


@pytest.fixture(scope="module")
def adapter(zoo_dir):
    return load(str(zoo_dir / "tiny-ar"))


def ids_of(adapter, question: str) -> list[int]:
    return adapter.encode_prompt(TASK.format_prompt(question))


def harp_run(adapter, question: str, seed: int = 3, **params):
    p = harp.HarpParams(max_new_tokens=N, compare=False, **params)
    return run(harp.harp_generate(adapter, [ids_of(adapter, question)], p, seed=seed))


@torch.no_grad()
def cache_free_harp(adapter, prompt: list[int], theta: float, delta: float, beta: float, seed: int,
                    n: int = N) -> tuple[list[int], list[int], list[torch.Tensor]]:
    """romsto/HARP's harp.py + autoregressive_generate, batch 1, no cache, greedy, written out; the mask drawn
    from the decoder's seeded generator. Returns (tokens, hesitation positions, mixed logits there)."""
    model, embed = adapter.model, adapter.model.get_input_embeddings()
    gen = harp.mask_generator(seed, 0, adapter.device)
    ids = torch.tensor([prompt])
    tokens, hesitated, mixed = [], [], []
    for t in range(n):
        e = embed(ids)
        logits = model(inputs_embeds=e, use_cache=False).logits[0, -1].float()
        p = torch.softmax(logits, -1)
        if -(p * torch.log2(p + 1e-15)).sum() > theta:
            mask = torch.rand(e.shape, generator=gen) > delta
            reframed = model(inputs_embeds=e * mask, use_cache=False).logits[0, -1].float()
            logits = beta * logits + (1 - beta) * reframed
            hesitated.append(t)
            mixed.append(logits)
        x = int(logits.argmax())
        tokens.append(x)
        if x in adapter.eos_ids:
            break
        ids = torch.cat([ids, torch.tensor([[x]])], 1)
    return tokens, hesitated, mixed


def hesitation_points(events, seq: int = harp.REFRAMED) -> list[int]:
    return [e.pos[0] for e in events if isinstance(e, Tokens) and e.seq == seq]


# ---------------------------------------------------------------- the rule


def test_entropy_in_bits_and_strictly_greater() -> None:
    two = torch.full((32,), -torch.inf)
    two[:2] = 0.0  # two equally likely tokens: exactly 1 bit
    assert float(harp.entropy_bits(two)) == 1.0
    assert float(harp.entropy_bits(torch.zeros(32))) == pytest.approx(5.0)  # log2(32), not ln(32) = 3.47
    assert not bool(harp.hesitates(harp.entropy_bits(two), 1.0))  # equal to θ: no hesitation
    assert bool(harp.hesitates(harp.entropy_bits(two), 0.999))


def test_mask_covers_every_position_and_is_not_rescaled(adapter) -> None:
    gens = [harp.mask_generator(0, r, "cpu") for r in range(2)]
    out = harp.drop_out(torch.ones(2, 12, 64), [12, 9], 0.5, gens)
    assert set(out.unique().tolist()) == {0.0, 1.0}  # kept entries unchanged: no 1/(1 - δ)
    assert bool((out[0] == 0).any(-1).all())  # every position of a full row, the prompt's first included
    assert bool((out[1, 3:] == 0).any(-1).all()) and bool((out[1, :3] == 1).all())  # a left-padded row: its tokens
    assert 0.4 < float((out == 0).float().mean()) < 0.6
    # in the decoder: the reframed pass gets the whole sequence's embeddings, entries either kept or zeroed
    seen: list[torch.Tensor] = []
    hook = adapter.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(kw["inputs_embeds"]) if kw.get("inputs_embeds") is not None else None,
        with_kwargs=True)
    try:
        events, _ = harp_run(adapter, FLIPS, delta=0.2)
    finally:
        hook.remove()
    (point,) = hesitation_points(events)[:1]
    prompt = ids_of(adapter, FLIPS)
    full = torch.tensor([prompt + [e.ids[0] for e in events if isinstance(e, Tokens) and e.seq == 0
                                   and e.action == "commit"][:point]])
    assert seen[0].shape[:2] == full.shape  # prompt + every token so far
    with torch.no_grad():
        base = adapter.model.get_input_embeddings()(full)
    ratio = (seen[0] / base)[base != 0]
    assert set(ratio.round(decimals=5).unique().tolist()) <= {0.0, 1.0}
    assert 0.15 < float((ratio == 0).float().mean()) < 0.25  # δ = 0.2 of the entries


def test_logits_mix_raw() -> None:
    v, r = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.0, 3.0, 1.0]])
    assert torch.equal(harp.mix(v, r, 0.25), 0.25 * v + 0.75 * r)
    assert torch.equal(harp.mix(v, r, 1.0), v)


def test_cache_off_equals_a_cache_free_implementation(adapter) -> None:
    for theta in (1.0, 0.05):  # the default: one hesitation; a low θ: many
        events, done = harp_run(adapter, FLIPS, use_cache=False, theta=theta)
        tokens, hesitated, mixed = cache_free_harp(adapter, ids_of(adapter, FLIPS), theta, 0.2, 0.5, seed=3)
        assert done.tokens[0] == tokens
        assert hesitation_points(events) == hesitated and hesitated
        # the recorded mixed distribution is softmax of the raw-logit mix
        recorded = [e for e in events if isinstance(e, Tokens) and e.seq == harp.MIXED]
        for e, logits in zip(recorded, mixed):
            p = torch.softmax(logits, -1)
            assert e.top_p[0][0] == pytest.approx(float(p.max()), abs=1.5e-3)
    assert done.extra["hesitations"] == [len(hesitated)]


def test_cached_and_cache_free_agree(adapter) -> None:
    for theta in (1.0, 0.05):
        e1, cached = harp_run(adapter, FLIPS, theta=theta)
        e2, free = harp_run(adapter, FLIPS, use_cache=False, theta=theta)
        assert cached.tokens == free.tokens and hesitation_points(e1) == hesitation_points(e2)


def test_flip_and_cost_recorded(adapter) -> None:
    events, done = harp_run(adapter, FLIPS)
    (point,) = hesitation_points(events)
    picks = {e.seq: e.ids[0] for e in events if isinstance(e, Tokens) and e.pos == [point] and e.action == "propose"}
    assert picks[harp.VANILLA] != picks[harp.MIXED] == picks[harp.OUT]  # the mix changed the token
    assert done.extra == {"hesitations": [1], "flips": [1]}
    assert done.nfe == len(done.tokens[0]) + 1  # one reframed pass more than plain decoding


def test_theta_above_every_entropy_is_plain_greedy(adapter) -> None:
    prompt = ids_of(adapter, FLIPS)
    # the zoo's vocabulary has 32 ids: no entropy exceeds log2(32) = 5 bits, and 5 is not strictly above 5
    events, done = harp_run(adapter, FLIPS, theta=5.0)
    _, plain = run(ar.generate(adapter, [prompt], ar.generation_config(N)))
    ref = adapter.model.generate(torch.tensor([prompt]), max_new_tokens=N, do_sample=False,
                                 eos_token_id=adapter.eos_ids, pad_token_id=0)[0, len(prompt):].tolist()
    assert done.tokens == plain.tokens and done.tokens[0] == ref[:len(done.tokens[0])]
    assert hesitation_points(events) == [] and done.nfe == plain.nfe


def test_same_seed_same_trace(adapter) -> None:
    def dump(events):
        return [e.model_dump() for e in events if not isinstance(e, RunEnd)]

    a, _ = harp_run(adapter, FLIPS, seed=7, theta=0.3)
    b, _ = harp_run(adapter, FLIPS, seed=7, theta=0.3)
    c, _ = harp_run(adapter, FLIPS, seed=8, theta=0.3)
    assert dump(a) == dump(b)
    assert dump(a) != dump(c)  # another seed, another reframing mask


def test_batched_rows_each_as_alone(adapter) -> None:
    p = harp.HarpParams(max_new_tokens=N, compare=False)
    prompts = [ids_of(adapter, q) for q in ("3+31*5+6+25=?", FLIPS)]
    events, both = run(harp.harp_generate(adapter, prompts, p, seed=3))
    _, second = harp_run(adapter, FLIPS, seed=4)  # row 1 draws its masks as seed + 1
    assert both.tokens[1] == second.tokens[0]
    assert hesitation_points(events, harp.seq_of(1, harp.REFRAMED)) == [6]


# ---------------------------------------------------------------- the registry decoder and the view


def test_decode_compares_with_plain_and_the_view_shows_the_point(adapter) -> None:
    params = harp.HarpParams(max_new_tokens=60)  # the whole answer (56 tokens)
    trace = Trace.new("tiny-ar", "harp", params.model_dump(), 3, task="zoo", expected=TASK.expected_answer(FLIPS))
    for e in harp.decode(adapter, TASK.format_prompt(FLIPS), params, task=TASK):
        trace.add(e)
    end = trace.events[-1]
    assert end.answer == "105" and end.summary["plain_answer"] == "95"  # HARP gets it right, plain does not
    assert end.summary["first_split"] == 6 and end.nfe == end.summary["harp_nfe"] + end.summary["plain_nfe"]
    trace = Trace.loads(trace.dumps())  # what a download replays
    state, meta = Fold(trace).latest(), trace.meta
    view = harp_view.render(state, meta)  # -1: follows the first flip
    assert "flipped" in view["point"] and all(f"dl-harp-{n}" in view["point"] for n in ("vanilla", "reframed", "mixed"))
    assert "first split at position 6" in view["output"] and "105" in view["output"]
    assert "1 hesitation (1 flipped)" in harp_view.progress(state, meta)
    calm = harp_view.render(state, meta, position=0)["point"]
    assert "did not hesitate" in calm and "dl-harp-reframed" not in calm
    strip = view["strip"]
    assert strip.layout.shapes[0].y0 == 1.0  # the θ line
    bars = strip.data[0]
    assert bars.marker.color[6] == harp_view.COLOURS["flip"] and math.isclose(bars.y[6] * math.log(2),
                                                                              state.seqs[0].entropy[6], abs_tol=1e-9)
    assert "passes" in view["cost"] and "× plain" in view["cost"]


def test_view_escapes_token_text(adapter) -> None:
    params = harp.HarpParams(max_new_tokens=N, compare=False)
    trace = Trace.new("tiny-ar", "harp", params.model_dump(), 3)
    for e in harp.decode(adapter, TASK.format_prompt(FLIPS), params, task=TASK):
        if isinstance(e, Vocab):  # a hostile tokenizer's text
            e = Vocab(ids=e.ids, texts=["<img src=x onerror=alert(1)>" for _ in e.ids])
        trace.add(e)
    view = harp_view.render(Fold(trace).latest(), trace.meta)
    for html in (view["output"], view["point"]):
        assert "<img" not in html and "&lt;img" in html


def test_bench_rows(adapter) -> None:
    from decoding import bench_harp
    from decoding.bench import pick_problems

    rows = bench_harp.bench_zoo(adapter, pick_problems(2), bench_harp.settings(16)[:2])
    assert [r["setting"] for r in rows] == ["greedy", "HARP θ=1 (defaults)"] and rows[0]["time_ratio"] == 1.0
    assert all(0 <= r["hesitated_share"] <= 1 and r["n"] == 2 for r in rows) and "| greedy |" in bench_harp.table(rows)
    tiny = bench_harp.build_llama(torch.device("cpu"), hidden=32, layers=1, intermediate=64, heads=2, kv_heads=1,
                                  vocab=300)  # the 8B path's code on a tiny random Llama
    (none, every) = bench_harp.bench_shape(tiny, 8, 6, [0.0, 1.0], repeats=1)
    assert none["hesitated_share"] == 0 and every["hesitated_share"] == 1
