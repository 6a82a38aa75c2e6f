"""The synthetic task: seeded generation, exact solutions and labels, answer extraction, the held-out split."""

from __future__ import annotations

import random

import pytest

from decoding import task
from decoding.zoo.train import sample_problems


def test_generator_is_seeded():
    a = task.problems(seed=3, n=60)
    assert a == task.problems(seed=3, n=60)
    assert a != task.problems(seed=4, n=60)
    rng1, rng2 = random.Random(11), random.Random(11)
    assert [task.make_problem(rng1, 4) for _ in range(20)] == [task.make_problem(rng2, 4) for _ in range(20)]


@pytest.mark.parametrize("level", task.LEVELS)
def test_level_is_the_number_of_steps_and_values_stay_in_range(level: int):
    rng = random.Random(level)
    for _ in range(300):
        p = task.make_problem(rng, level)
        assert p.level == level and len(p.steps) == level
        value, ops = task.parse_question(p.question)
        assert len(ops) == level
        assert 0 <= value <= task.MAX_VALUE
        for step in p.steps:
            numbers = [
                int(x) for x in step.replace("=", " ").replace("+", " ").replace("-", " ").replace("*", " ").split()
            ]
            assert all(0 <= x <= task.MAX_VALUE for x in numbers), step
        assert 0 <= p.answer <= task.MAX_VALUE


def test_bad_level_is_refused():
    with pytest.raises(ValueError):
        task.make_problem(random.Random(0), 7)


def test_solutions_verify():
    for p in task.problems(seed=5, n=300):
        assert task.solve(p.question) == p
        assert task.is_correct(p, p.solution)
        labels = task.step_labels(p, p.solution)
        assert len(labels) == p.level + 1 and all(labels)  # every step plus the answer line
    assert task.solve("12+7=") is None and task.parse_question("twelve") is None


def test_solution_format():
    p = task.solve("12+7-5*3=?")
    assert p.prompt == "12+7-5*3=?\n"
    assert p.solution == "12+7=19\n19-5=14\n14*3=42\n#42"
    assert p.level == 3 and p.answer == 42


def test_an_injected_error_flips_the_labels_from_that_step_on():
    p = task.solve("12+7-5*3=?")
    lines = p.solution.split("\n")
    for k in range(len(lines)):
        wrong = list(lines)
        wrong[k] = wrong[k] + "1"  # a wrong result (or answer) at step k only
        assert task.step_labels(p, "\n".join(wrong)) == [i < k for i in range(len(lines))]
    # A right step after a wrong one stays bad: the prefix cannot be rescued.
    assert task.step_labels(p, "12+7=20\n19-5=14\n14*3=42\n#42") == [False] * 4
    # A missing step makes the answer line bad even when its value is right.
    assert task.step_labels(p, "12+7=19\n19-5=14\n#42") == [True, True, False]


def test_extract_answer_edge_cases():
    assert task.extract_answer("12+7=19\n19") is None  # no marker
    assert task.extract_answer("") is None
    assert task.extract_answer("#") is None
    assert task.extract_answer("#12\n#34") == 34  # several markers: the last one
    assert task.extract_answer("#-5") == -5  # negative
    assert task.extract_answer("1+1=2\n#2[EOS]") == 2


def test_heldout_file():
    held = task.load_heldout()
    assert len(held) >= 500
    assert {p.level for p in held} == set(task.LEVELS)
    assert len({p.question for p in held}) == len(held)
    assert all(task.solve(p.question) == p for p in held)


def test_training_never_sees_a_heldout_question():
    held = task.heldout_questions()
    seen: set[str] = set()
    for seed in range(4):
        seen |= {p.question for p in sample_problems(random.Random(seed), 1000, held)}
    assert not seen & held
    # The exclusion is what keeps them apart: the generator does produce held-out questions on its own
    # (low levels have few distinct questions), so this test would catch a dropped `exclude`.
    rng = random.Random(0)
    assert any(task.make_problem(rng, 1).question in held for _ in range(5000))
