"""How test-time search turns PRM scores into a choice: pure rules (no torch), shared by the search decoder
and its view (which re-ranks a finished trace under another aggregation without rerunning it).

- `aggregate(scores, how)`: a solution's per-step scores to one number, search-and-learn's `aggregate_scores`:
  "last" (its default), "min" or "prod";
- `pick(answers, scores, rule)`: "naive" (Best-of-N: the highest score), "weighted" (weighted Best-of-N: the
  answer with the largest summed score) or "majority" (the most common answer).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

AGGREGATIONS: tuple[str, ...] = ("last", "min", "prod")
RULES: tuple[str, ...] = ("naive", "weighted", "majority")


def aggregate(scores: Sequence[float], how: str = "last") -> float:
    """One number per solution: the last step's score, the weakest step's, or the product (0.0 for no steps)."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; choose one of {', '.join(AGGREGATIONS)}")
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    return float(min(scores)) if how == "min" else float(math.prod(scores))


def weighted_tally(answers: Sequence[str | None], scores: Sequence[float]) -> dict[str, float]:
    """Summed score per answer (weighted Best-of-N), answers in first-seen order; None takes no part."""
    out: dict[str, float] = {}
    for a, s in zip(answers, scores, strict=True):
        if a is not None:
            out[a] = out.get(a, 0.0) + float(s)
    return out


def _argmax(scores: Sequence[float], among: Sequence[int]) -> int:
    """np.argmax over `among`: the first highest."""
    return max(among, key=lambda i: (scores[i], -i))


def pick(answers: Sequence[str | None], scores: Sequence[float], rule: str) -> int | None:
    """The index of the chosen completion (None for none). "naive": the highest score, first on ties.
    "weighted" / "majority": the answer with the largest summed score / the most votes (first seen on ties), then
    its best-scored completion. Completions without an answer do not vote (all without: the highest score)."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {', '.join(RULES)}")
    if not answers:
        return None
    every = range(len(answers))
    valid = [i for i in every if answers[i] is not None]
    if rule == "naive" or not valid:
        return _argmax(scores, every)
    weight = weighted_tally(answers, scores) if rule == "weighted" else \
        {a: float(c) for a, c in Counter(answers[i] for i in valid).items()}
    order = {a: k for k, a in enumerate(dict.fromkeys(answers[i] for i in valid))}
    best = max(weight, key=lambda a: (weight[a], -order[a]))
    return _argmax(scores, [i for i in valid if answers[i] == best])
