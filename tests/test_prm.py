"""The PRM interface (decoding/prm.py) and the aggregation rules (decoding/selection.py): the zoo PRM through the
public loader, and the RLHFlow / Qwen2.5-Math-PRM read-outs on tiny random-weight models of the real classes."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

from decoding import task
from decoding.models import Adapter, load
from decoding.prm import PRM, readout_of
from decoding.selection import aggregate

# A chat template in the zoo's characters (user turns "7=", assistant turns "8="), shaped like Llama 3's.
CHAT_TEMPLATE = ("{% for m in messages %}[BOS]{{ '7' if m['role'] == 'user' else '8' }}={{ m['content'] }}\n"
                 "{% endfor %}{% if add_generation_prompt %}[BOS]8={% endif %}")


def test_aggregation_last_min_prod():
    scores = [0.9, 0.5, 0.8]
    assert aggregate(scores, "last") == 0.8
    assert aggregate(scores, "min") == 0.5
    assert math.isclose(aggregate(scores, "prod"), 0.9 * 0.5 * 0.8)
    assert aggregate([], "prod") == 0.0
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(scores, "mean")


def test_readout_chosen_from_settings():
    assert readout_of({"good_token": "[GOOD]", "bad_token": "[BAD]", "step_tag": "\n"}) == "tag"  # zoo
    assert readout_of({"good_token": "+", "bad_token": "-", "step_tag": " ки"}) == "tag"  # Math-Shepherd
    assert readout_of({"good_token": "+", "bad_token": "-", "prm_readout": "next_token"}) == "chat"  # RLHFlow
    assert readout_of({"step_tag": "<extra_0>", "prm_readout": "two_class"}) == "two_class"  # Qwen2.5-Math-PRM
    with pytest.raises(ValueError):
        readout_of({})


def test_zoo_prm_batched_matches_single_and_catches_an_error(zoo_dir):
    prm = PRM(load(str(zoo_dir / "tiny-prm")))
    p = task.solve("19*2-1+17=?")
    good = [*p.steps, f"#{p.answer}"]
    bad = [p.steps[0], "38-1=36", "36+17=53", "#53"]
    rows = [good, bad, good[:2]]
    batched = prm.score([p.prompt] * 3, rows)
    assert prm.calls == 1 and prm.passes == 1
    assert [len(s) for s in batched] == [4, 4, 2]
    single = [prm.score([p.prompt], [r])[0] for r in rows]
    for a, b in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-4)
    assert batched[2] == pytest.approx(batched[0][:2], abs=1e-4)  # a causal PRM: a prefix keeps its scores
    assert min(batched[0]) > 0.5 and batched[1][1] < 0.5  # the wrong step is caught
    assert prm.score([p.prompt], [[]]) == [[]]


def _tokenizer(zoo_dir, extra: str | None = None):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(zoo_dir / "tiny-prm")
    tok.chat_template = CHAT_TEMPLATE
    if extra:
        tok.add_special_tokens({"additional_special_tokens": [extra]})
    return tok


def _adapter(model, tok, settings: dict) -> Adapter:
    torch.manual_seed(0)
    return Adapter("tiny-random", "prm", model.eval(), tok, torch.device("cpu"), {"kind": "prm", **settings}, None,
                   [tok.eos_token_id], 256)


def _config(vocab: int, **kw) -> LlamaConfig:
    return LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0, **kw)


def test_rlhflow_chat_readout_reads_before_each_plus(zoo_dir):
    torch.manual_seed(0)
    tok = _tokenizer(zoo_dir)
    adapter = _adapter(LlamaForCausalLM(_config(len(tok))), tok, {"good_token": "+", "bad_token": "-",
                                                                   "prm_readout": "next_token"})
    prm = PRM(adapter)
    assert prm.readout == "chat"
    steps = ["1+2=3", "3*2=6", "#6"]
    (ids, where), = prm.rows(["1+2*2=?"], [steps])
    plus = tok.convert_tokens_to_ids("+")
    assert len(where) == 3 and all(ids[p + 1] == plus for p in where)  # each read predicts an assistant "+"
    text = tok.decode(ids[:where[0] + 1])
    assert text.endswith("8=") and "7=1+2*2=? 1+2=3" in text  # the question and a space, then step 1
    scores = prm.score(["1+2*2=?", "1+2*2=?"], [steps, steps[:1]])
    logits = adapter.logits(torch.tensor([ids]))[0]
    expect = [logits[p, [plus, tok.convert_tokens_to_ids("-")]].softmax(-1)[0].item() for p in where]
    assert scores[0] == pytest.approx(expect, abs=1e-5)  # the padded batch reads what one row reads
    assert scores[1] == pytest.approx(expect[:1], abs=1e-5)


def test_qwen_two_class_readout_at_each_extra_0(zoo_dir):
    torch.manual_seed(0)
    tok = _tokenizer(zoo_dir, "<extra_0>")
    model = LlamaForTokenClassification(_config(len(tok), num_labels=2))
    adapter = _adapter(model, tok, {"step_tag": "<extra_0>", "prm_readout": "two_class"})
    prm = PRM(adapter)
    steps = ["1+2=3", "3*2=6", "#6"]
    (ids, where), = prm.rows(["1+2*2=?"], [steps])
    tag = tok.convert_tokens_to_ids("<extra_0>")
    assert [ids[p] for p in where] == [tag] * 3  # read at the tag itself, as make_step_rewards does
    scores = prm.score(["1+2*2=?"], [steps])[0]
    probs = adapter.logits(torch.tensor([ids]))[0].softmax(-1)[:, 1]
    assert scores == pytest.approx([probs[p].item() for p in where], abs=1e-5)
