"""majority@N, Best-of-N and weighted Best-of-N (search-and-learn's `sal/search/best_of_n.py` + `utils/score.py`).

N completions sampled in one batch to EOS (or the token limit), split into steps at the delimiter; the PRM scores
every step of every completion in one call (majority@N skips the PRM: it needs no scores). The pick:
- majority@N: the most common answer (first seen on ties);
- Best-of-N: the highest aggregated score (first on ties, np.argmax);
- weighted Best-of-N: the answer whose completions have the largest summed score.
Each completion is drawn as a chain of step nodes, so its per-step scores read off the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from decoding.search.beam import Beam, Tree

RULES = {"best_of_n": "naive", "weighted_best_of_n": "weighted", "majority": "majority"}


def chain(tree: Tree, leaf: Beam) -> tuple[list[Beam], list[int | None]]:
    """A whole completion as one node per step (leaf last, it holds the tokens) and each node's parent."""
    beams, parents, parent = [], [], None
    for k in range(len(leaf.steps)):
        if k == len(leaf.steps) - 1:
            node = leaf
        else:
            node = Beam(steps=leaf.steps[:k + 1], scores=leaf.scores[:k + 1], node=tree._new_id())
        beams.append(node)
        parents.append(parent)
        parent = node.node
    return beams, parents


def run(tree: Tree, should_stop: Callable[[], bool] | None = None) -> Generator:
    p = tree.params
    yield from tree.start()
    if should_stop is not None and should_stop():
        yield from tree.finish([], RULES[p.method], True, "stopped")
        return
    leaves = tree.expand([Beam() for _ in range(p.n)], final=True)
    for leaf in leaves:  # the whole completion, split into steps
        pieces = leaf.text.split(tree.delimiter)
        # a completion ending on the delimiter (a length stop) has no step after it
        leaf.steps = pieces[:-1] if len(pieces) > 1 and pieces[-1] == "" else pieces
    if p.method != "majority":
        tree.score(leaves)
    beams, parents, status = [], [], []
    for leaf in leaves:
        steps, ups = chain(tree, leaf)
        beams += steps
        parents += ups
        status += ["kept"] * (len(steps) - 1) + ["finished"]
    yield from tree.nodes(beams, parents, status)
    yield from tree.finish(leaves, RULES[p.method], False, f"{p.n} samples")
