"""The parameter rules every tab and the CLI share (decoding/params.py: Limit, Params.limits / adjust /
check_context), the methods' defaults and examples as the registry serves them, and the About text."""

from __future__ import annotations

import html

import pytest

from decoding import methods
from decoding.diffusion import DiffusionParams
from decoding.models import load
from decoding.params import Context, Limit
from decoding.tasks import TASKS
from decoding.voting import VotingParams

ZOO = Context(max_length=128, prompt_tokens=16)  # the zoo dLLM's context, a level-6 prompt


def test_steps_slider_offers_only_steps_that_run() -> None:
    limits = DiffusionParams.limits(DiffusionParams().model_dump(), ZOO)
    steps = limits["steps"]
    offered = [steps.minimum + i * steps.step for i in range(int((steps.maximum - steps.minimum) / steps.step) + 1)]
    runs = [s for s in range(1, 513) if s <= 80 and s % 5 == 0]  # answer 80, block 16: 5 blocks
    assert offered == runs and len(runs) == 16
    for s in offered:  # every offered value validates
        DiffusionParams(steps=int(s))
    # adaptive strategies need no grid
    assert DiffusionParams.limits({**DiffusionParams().model_dump(), "strategy": "threshold"}, ZOO)["steps"].step is None


def test_answer_length_capped_by_the_context() -> None:
    gen = DiffusionParams.limits(DiffusionParams().model_dump(), ZOO)["gen_length"]
    assert gen.maximum == 112 and not gen.soft and "128" in gen.why
    assert DiffusionParams.limits(DiffusionParams().model_dump(), None)["gen_length"].maximum == 512  # no model yet
    with pytest.raises(ValueError, match="gen_length = 120 is above 112"):
        DiffusionParams(gen_length=120, block_length=8, steps=120).check_context(ZOO)
    DiffusionParams(gen_length=112, block_length=16, steps=112).check_context(ZOO)
    assert VotingParams.limits(VotingParams().model_dump(), ZOO)["gen_length"].maximum == 112


@pytest.mark.parametrize(("params", "name", "typed", "expect", "words"), [
    (DiffusionParams, "steps", 10**6, 80, ["1000000", "above 80", "5 blocks"]),
    (DiffusionParams, "steps", 42, 40, ["42", "multiple of 5"]),
    (VotingParams, "k", 1000, 9, ["1000", "above 9"]),
    (VotingParams, "k", 0, 1, ["0 is below 1"]),
    (VotingParams, "k", -3, 1, ["-3 is below 1"]),
    (VotingParams, "k", 2.5, 3, ["2.5 is not a whole number", "set to 3"]),  # as the slider shows it
    (VotingParams, "steps", 7, 5, ["7", "0 = adaptive"]),
    (DiffusionParams, "block_length", 30, 40, ["30", "divide the answer length 80"]),
    (DiffusionParams, "gen_length", 200, 112, ["200", "context is 128 tokens"]),
])
def test_typed_values_are_adjusted_with_a_note(params, name, typed, expect, words) -> None:
    fixed, notes = params.adjust({**params().model_dump(), name: typed}, ZOO)
    assert fixed[name] == expect
    assert len(notes) >= 1 and all(w in notes[0] for w in words), notes  # the note speaks of the typed value
    params(**fixed).check_context(ZOO)  # what it was set to runs


def test_adjust_follows_a_new_answer_length_through_the_other_values() -> None:
    fixed, notes = DiffusionParams.adjust({**DiffusionParams().model_dump(), "gen_length": 200, "block_length": 30,
                                           "steps": 2.5}, ZOO)
    assert (fixed["gen_length"], fixed["block_length"]) == (112, 28)
    assert fixed["steps"] % (112 // 28) == 0 and len(notes) == 4, notes
    DiffusionParams(**fixed).check_context(ZOO)
    assert DiffusionParams.adjust({**DiffusionParams().model_dump(), "steps": None}, ZOO)[0]["steps"] == 40


def test_limit_nearest() -> None:
    assert Limit(1, 80, choices=(1, 2, 4, 5, 8, 10, 16, 20, 40, 80), whole=True).nearest(30) == 40  # ties go up
    assert Limit(0, 80, 5, whole=True).nearest(2) == 0 and Limit(0, 80, 5, whole=True).nearest(79) == 80
    assert Limit(0.01, 2).nearest(0.63) == 0.63  # floats keep their value inside the range


@pytest.fixture(scope="module")
def adapters(zoo_dir) -> dict[str, object]:
    return {"masked_diffusion": load(str(zoo_dir / "tiny-dllm")), "causal": load(str(zoo_dir / "tiny-ar"))}


def test_every_tab_default_runs_on_its_first_example(adapters) -> None:
    """Each registered method: its defaults need no adjusting on the zoo model of its kind, with its first example,
    and its examples carry a label; its tab has an intro and an About text."""
    for method in methods.all_methods().values():
        kind = next((k for k in method.kinds if k in adapters), None)
        if kind is None:
            continue
        examples = methods.examples(method)
        assert examples and all(e.get("question") for e in examples), method.name
        prompt = TASKS["zoo"].format_prompt(examples[0]["question"])
        context = Context.of(adapters[kind], prompt)
        defaults = method.params().model_dump()
        assert method.params.adjust(defaults, context)[1] == [], method.name
        method.params().check(adapters[kind], prompt)
        assert method.intro.strip() and method.about.strip(), method.name


def test_examples_per_method_are_measured() -> None:
    """prompts.json (python -m decoding.pick_examples): the diffusion and voting examples each say what they show
    and why they were chosen; the voting tab's first example is one whose first samples disagree."""
    for name in ("diffusion", "voting"):
        chosen = [e for e in methods.examples(methods.get(name)) if e.get("methods")]
        assert len(chosen) >= 2 and all(e.get("label") and e.get("why") for e in chosen), name
    first = methods.examples(methods.get("voting"))[0]
    assert "kept" in first["why"] and "disagree" in first["label"]
    untagged = [e for e in methods.load_examples() if not e.get("methods")]
    assert untagged, "tabs without examples of their own fall back to the untagged problems"


def test_about_is_for_people() -> None:
    for name in ("diffusion", "voting"):
        about = methods.get(name).about
        assert "for event in" not in about and "STRATEGIES" not in about and "differ" in about
    about = methods.get("diffusion").about
    for strategy in ("low_confidence", "random", "maskgit_plus", "topk_margin", "entropy", "origin", "threshold",
                     "entropy_threshold"):
        assert f"`{strategy}`" in about
    hints = {n: h for n, _, h in DiffusionParams.controls()}
    assert hints["cfg_scale"].get("help") and hints["alg_temp"].get("help")  # shown under the controls


def test_a_tab_without_examples_of_its_own_gets_the_level_ladder() -> None:
    import dataclasses

    newcomer = dataclasses.replace(methods.get("diffusion"), name="newcomer", examples=())
    ladder = [e for e in methods.load_examples() if not e.get("methods")]
    assert methods.examples(newcomer) == ladder
    own = dataclasses.replace(newcomer, examples=({"question": "1+1=?", "label": "mine"},))
    assert methods.examples(own)[0]["label"] == "mine" and methods.examples(own)[1:] == ladder


def test_app_sets_each_slider_to_what_runs(zoo_dir) -> None:
    """app.limits_tab, the handler behind every tab's controls: slider ranges from Params.limits with the model's
    context, and a note for a value it moved."""
    import app

    tab = app._tab(methods.get("diffusion"))
    model = "tiny-dllm" if zoo_dir == app.ROOT / "examples" / "models" else str(zoo_dir / "tiny-dllm")
    app.ALLOWED.append(model)
    values = {**DiffusionParams().model_dump(), "steps": 10**6}
    out = app.limits_tab(tab, model, "13-2=?", values, trigger="steps")
    numeric = dict(zip(app._numeric(tab), out, strict=False))
    assert numeric["steps"]["value"] == 80 and (numeric["steps"]["minimum"], numeric["steps"]["step"]) == (5, 5)
    assert numeric["gen_length"]["maximum"] == 120  # 128 tokens of context, 8 for "[BOS]13-2=?\n"
    assert "value" not in numeric["gen_length"]  # unchanged: a slow answer must not overwrite a newer value
    assert "1000000 is above 80" in out[-1]
    fine = app.limits_tab(tab, model, "13-2=?", DiffusionParams().model_dump(), trigger="steps")
    assert fine[-1] == "" and fine[0]["value"] == 40  # the trigger's value goes back (the browser clamped it)
    assert app._context_fields(tab) == ["gen_length"]  # what a new prompt or model re-bounds


def test_a_method_registered_elsewhere_gets_the_same_checks(zoo_dir) -> None:
    """The toy method (tests/toy_method.py) declares only ui ranges: its typed values get the same notes."""
    import toy_method

    import app

    try:
        tab = app._tab(methods.METHODS["toy"])
        values = {**toy_method.ToyParams().model_dump(), "limit": 0, "steps": 2.5}
        out = app.limits_tab(tab, str(zoo_dir / "tiny-dllm"), "13-2=?", values)
        note = html.unescape(out[-1])  # Markdown-escaped: ":" is "&#58;"
        assert "Steps: 2.5 is not a whole number; set to 3." in note and "characters: 0 is below 1" in note, note
    finally:
        methods.METHODS.pop("toy", None)
