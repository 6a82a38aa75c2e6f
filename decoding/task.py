"""The synthetic reasoning task: multi-step arithmetic chains in the GSM8K mould.

A problem is a chain applied left to right, e.g. ``12+7-5*3=?``. Its solution writes one step per line
and ends with the answer marker::

    12+7=19
    19-5=14
    14*3=42
    #42

The level is the number of steps (1-6); operands grow with the level, so even a well-trained tiny
model stays imperfect on the hard levels. Every value stays in [0, 999].
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

STEP_DELIMITER = "\n"
ANSWER_MARKER = "#"
LEVELS = tuple(range(1, 7))
MAX_VALUE = 999
# Largest operand per level: operands grow with the number of steps.
MAX_OPERAND = {1: 20, 2: 20, 3: 30, 4: 40, 5: 60, 6: 99}
HELDOUT_PATH = Path(__file__).resolve().parent.parent / "examples" / "heldout.jsonl"

_ANSWER_RE = re.compile(re.escape(ANSWER_MARKER) + r"(-?\d+)")
_QUESTION_RE = re.compile(r"^(\d+)((?:[+\-*]\d+)+)=\?$")
_OP_RE = re.compile(r"([+\-*])(\d+)")
_STEP_RE = re.compile(r"^(-?\d+)([+\-*])(-?\d+)=(-?\d+)$")


@dataclass(frozen=True)
class Problem:
    question: str  # "12+7-5*3=?"
    steps: tuple[str, ...]  # ("12+7=19", "19-5=14", "14*3=42")
    answer: int
    level: int

    @property
    def prompt(self) -> str:
        """What a model is conditioned on."""
        return self.question + STEP_DELIMITER

    @property
    def solution(self) -> str:
        """The reference completion: steps, then the answer line."""
        return STEP_DELIMITER.join(self.steps) + STEP_DELIMITER + ANSWER_MARKER + str(self.answer)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Problem:
        return cls(data["question"], tuple(data["steps"]), int(data["answer"]), int(data["level"]))


def _apply(value: int, op: str, operand: int) -> int:
    return value + operand if op == "+" else value - operand if op == "-" else value * operand


def make_problem(rng: random.Random, level: int) -> Problem:
    """One problem of `level` steps; every intermediate value stays in [0, MAX_VALUE]."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level}")
    hi = MAX_OPERAND[level]
    value = rng.randint(1, hi)
    question, steps = str(value), []
    for _ in range(level):
        choices = []
        if value + 1 <= MAX_VALUE:
            choices.append(("+", rng.randint(1, min(hi, MAX_VALUE - value))))
        if value >= 1:
            choices.append(("-", rng.randint(1, min(hi, value))))
        if level >= 3 and 2 * value <= MAX_VALUE:
            choices.append(("*", rng.randint(2, min(3 + level // 2, MAX_VALUE // max(value, 1)))))
        op, operand = rng.choice(choices)
        new = _apply(value, op, operand)
        question += f"{op}{operand}"
        steps.append(f"{value}{op}{operand}={new}")
        value = new
    return Problem(question + "=?", tuple(steps), value, level)


def parse_question(question: str) -> tuple[int, list[tuple[str, int]]] | None:
    """'12+7-5*3=?' -> (12, [('+', 7), ('-', 5), ('*', 3)]); None if it is not a chain."""
    m = _QUESTION_RE.match(question.strip())
    if not m:
        return None
    return int(m.group(1)), [(op, int(n)) for op, n in _OP_RE.findall(m.group(2))]


def solve(question: str) -> Problem | None:
    """The reference solution of any well-formed chain question (level = number of steps)."""
    parsed = parse_question(question)
    if parsed is None:
        return None
    value, ops = parsed
    steps = []
    for op, operand in ops:
        new = _apply(value, op, operand)
        steps.append(f"{value}{op}{operand}={new}")
        value = new
    return Problem(question.strip(), tuple(steps), value, len(ops))


def extract_answer(text: str) -> int | None:
    """The last '#<int>' in a completion, or None when there is no answer line."""
    found = _ANSWER_RE.findall(text)
    return int(found[-1]) if found else None


def is_correct(problem: Problem, completion: str) -> bool:
    return extract_answer(completion) == problem.answer


def split_steps(completion: str) -> list[str]:
    """A completion's non-empty lines, the answer line included (the PRM scores each)."""
    return [line for line in completion.split(STEP_DELIMITER) if line.strip()]


def step_labels(problem: Problem, completion: str) -> list[bool]:
    """Per-step process labels, computed exactly: step k is good iff steps 1..k are all correct.

    A step is correct when it applies the question's k-th operation to the correct previous value and
    gets the right result; the answer line is correct when it states the correct final value after
    correct steps. Once a step is wrong every later step is labelled bad (a wrong prefix cannot be
    rescued), as in Math-Shepherd's "can this prefix reach the right answer" labels.
    """
    parsed = parse_question(problem.question)
    assert parsed is not None
    value, ops = parsed
    labels, ok = [], True
    for k, line in enumerate(split_steps(completion)):
        if line.startswith(ANSWER_MARKER):
            ok = ok and k == len(ops) and line == f"{ANSWER_MARKER}{problem.answer}"
        else:
            m = _STEP_RE.match(line)
            if not (ok and m and k < len(ops)):
                ok = False
            else:
                op, operand = ops[k]
                expected = _apply(value, op, operand)
                ok = (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4))) == (
                    value,
                    op,
                    operand,
                    expected,
                )
                value = expected
        labels.append(ok)
    return labels


def problems(seed: int, n: int, levels: tuple[int, ...] = LEVELS, exclude: set[str] | None = None) -> list[Problem]:
    """`n` seeded problems spread evenly over `levels`, skipping questions in `exclude`."""
    rng = random.Random(seed)
    out: list[Problem] = []
    while len(out) < n:
        p = make_problem(rng, levels[len(out) % len(levels)])
        if exclude is None or p.question not in exclude:
            out.append(p)
    return out


def load_heldout(path: Path = HELDOUT_PATH) -> list[Problem]:
    with open(path) as f:
        return [Problem.from_json(json.loads(line)) for line in f if line.strip()]


def heldout_questions(path: Path = HELDOUT_PATH) -> set[str]:
    return {p.question for p in load_heldout(path)}


def write_heldout(path: Path = HELDOUT_PATH, n_per_level: int = 100, seed: int = 20260) -> None:
    """The fixed held-out set: distinct questions, `n_per_level` per level; training excludes them."""
    rng, seen, rows = random.Random(seed), set(), []
    for level in LEVELS:
        count = 0
        while count < n_per_level:
            p = make_problem(rng, level)
            if p.question not in seen:
                seen.add(p.question)
                rows.append(p)
                count += 1
    with open(path, "w") as f:
        for p in rows:
            f.write(json.dumps(p.to_json()) + "\n")


if __name__ == "__main__":
    write_heldout()
    print(f"wrote {HELDOUT_PATH}")
