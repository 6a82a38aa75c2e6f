"""Tasks: how a question becomes a prompt, how an answer is read from a completion, and what counts as correct.

Decoders never import a task: the caller passes one in (`task.extract_answer` is all a decoder uses), so the
same decoder serves the zoo's arithmetic chains and a hub model answering a GSM8K / MATH question.
Answers are strings.

- `zoo`:  the synthetic arithmetic task (decoding/task.py): `12+7-5*3=?` becomes the zoo prompt
          `12+7-5*3=?\\n`, the answer is the last `#<int>` line, the expected answer is computed;
- `math`: GSM8K / MATH style, as dVoting's reference reads answers: the last `\\boxed{...}`, else the last
          number in the text; numbers are normalised (thousands separators, `$`, trailing zeros) before
          comparing. No expected answer unless given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from decoding import task as zoo_task


@dataclass(frozen=True)
class Task:
    name: str
    title: str

    def format_prompt(self, question: str) -> str:
        return question

    def extract_answer(self, text: str) -> str | None:
        raise NotImplementedError

    def expected_answer(self, question: str) -> str | None:  # noqa: ARG002 -- tasks that know answers use it
        return None

    def is_correct(self, answer: str | None, expected: str | None) -> bool | None:
        """None when there is nothing to compare with."""
        if expected is None:
            return None
        return answer is not None and normalize(answer) == normalize(expected)


class ZooArithmetic(Task):
    def format_prompt(self, question: str) -> str:
        problem = zoo_task.solve(question.strip())
        return problem.prompt if problem is not None else question

    def extract_answer(self, text: str) -> str | None:
        value = zoo_task.extract_answer(text)
        return None if value is None else str(value)

    def expected_answer(self, question: str) -> str | None:
        problem = zoo_task.solve(question.strip())
        return None if problem is None else str(problem.answer)


_PLAIN_NUMBER = re.compile(r"-?\d{1,60}(?:\.\d{1,60})?(?:/\d{1,60})?|-?\.\d{1,60}")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced), or None."""
    start = text.rfind("\\boxed")
    while start != -1:
        i = text.find("{", start)
        if i != -1 and text[start + len("\\boxed"):i].strip() == "":
            depth = 0
            for j in range(i, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return text[i + 1:j].strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def normalize(answer: str) -> str:
    """Canonical form for comparison: "1,000" = "1000" = "$1000.00" = "1000"; "\\frac{1}{2}" = "1/2" = "0.5"."""
    s = answer.strip().strip("$").replace("\\$", "").replace("\\!", "").replace(",", "").replace(" ", "")
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"^\\?d?frac\{(-?\d+)\}\{(\d+)\}$", r"\1/\2", s.replace("\\dfrac", "\\frac"))
    s = s.rstrip(".")
    if not _PLAIN_NUMBER.fullmatch(s):  # no exponents: "1e999999999" must not become a huge integer
        return s
    try:
        value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return s
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


class MathAnswer(Task):
    def extract_answer(self, text: str) -> str | None:
        boxed = last_boxed(text)
        if boxed is not None:
            return normalize(boxed)
        numbers = _NUMBER.findall(text)
        return normalize(numbers[-1]) if numbers else None


TASKS: dict[str, Task] = {
    "zoo": ZooArithmetic("zoo", "zoo arithmetic chains (answer after #)"),
    "math": MathAnswer("math", "GSM8K / MATH (last \\boxed{}, else the last number)"),
}


def task_for(model_spec: str) -> Task:
    """The zoo task for zoo models (and local folders trained by the zoo recipes), the math task otherwise."""
    from decoding.models import ZOO_NAMES

    name = str(model_spec).rstrip("/").split("/")[-1]
    return TASKS["zoo"] if name in ZOO_NAMES else TASKS["math"]


def get(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
