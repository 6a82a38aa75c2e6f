"""Tasks: prompt formatting, answer extraction (zoo and GSM8K / MATH) and judging, all with string answers."""

from __future__ import annotations

import pytest

from decoding.tasks import TASKS, last_boxed, normalize, task_for

ZOO, MATH = TASKS["zoo"], TASKS["math"]


def test_zoo_task_formats_extracts_and_judges() -> None:
    assert ZOO.format_prompt(" 12+7-5*3=? ") == "12+7-5*3=?\n"
    assert ZOO.format_prompt("hello") == "hello"  # not a chain: left as typed
    assert ZOO.expected_answer("12+7-5*3=?") == "42" and ZOO.expected_answer("hello") is None
    assert ZOO.extract_answer("12+7=19\n19-5=14\n14*3=42\n#42") == "42"
    assert ZOO.extract_answer("no answer line") is None
    assert ZOO.is_correct("42", "42") is True and ZOO.is_correct("41", "42") is False
    assert ZOO.is_correct(None, "42") is False and ZOO.is_correct("42", None) is None


@pytest.mark.parametrize("text, answer", [
    ("so the total is \\boxed{72}.", "72"),
    ("\\boxed{1} then \\boxed{\\frac{3}{4}}", "3/4"),
    ("nested \\boxed{\\text{5}} braces", "5"),
    ("She has 3 apples, then 4 more: 7 apples.", "7"),
    ("The answer is $1,250.00", "1250"),
    ("-3.50 degrees", "-7/2"),
    ("nothing numeric", None),
])
def test_math_answers_like_dvoting_reference(text: str, answer: str | None) -> None:
    assert MATH.extract_answer(text) == answer


def test_normalisation_compares_numbers_not_spellings() -> None:
    assert normalize("1,000") == normalize("1000.0") == normalize("$1000") == "1000"
    assert normalize("\\frac{1}{2}") == normalize("0.5") == "1/2"
    assert MATH.is_correct("0.50", "1/2") is True
    assert normalize("x+1") == "x+1"  # not a number: compared as written
    assert normalize("1e999999999") == "1e999999999"  # no huge integers from a hostile answer
    assert last_boxed("\\boxed{unclosed") is None


def test_task_for_picks_the_zoo_task_for_zoo_models() -> None:
    assert task_for("tiny-dllm") is ZOO and task_for("/x/examples/models/tiny-ar/") is ZOO
    assert task_for("GSAI-ML/LLaDA-8B-Instruct") is MATH
