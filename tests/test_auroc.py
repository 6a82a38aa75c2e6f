"""The PRM evaluation's AUROC helper, against counting the pairs by hand (ties count half)."""

from __future__ import annotations

import random

import pytest

from decoding.zoo.quick_eval import auroc


def pairwise(scores: list[float], labels: list[bool]) -> float:
    good = [s for s, lab in zip(scores, labels) if lab]
    bad = [s for s, lab in zip(scores, labels) if not lab]
    wins = sum(1.0 if g > b else 0.5 if g == b else 0.0 for g in good for b in bad)
    return wins / (len(good) * len(bad))


def test_perfect_reversed_and_all_tied() -> None:
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0
    assert auroc([0.5] * 6, [True, False] * 3) == 0.5  # every pair tied: half each


def test_ties_across_classes_count_half() -> None:
    # good {0.7, 0.5}, bad {0.5, 0.2}: pairs (0.7>0.5) 1, (0.7>0.2) 1, (0.5=0.5) 0.5, (0.5>0.2) 1 -> 3.5 / 4
    assert auroc([0.7, 0.5, 0.5, 0.2], [True, True, False, False]) == pytest.approx(0.875)


@pytest.mark.parametrize("seed", range(20))
def test_equals_pair_counting_on_random_tied_scores(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(2, 40)
    scores = [rng.choice([0.0, 0.25, 0.5, 0.75, 1.0]) for _ in range(n)]  # few values: many ties
    labels = [rng.random() < 0.5 for _ in range(n)]
    labels[0], labels[1] = True, False  # both classes present
    assert auroc(scores, labels) == pytest.approx(pairwise(scores, labels))
