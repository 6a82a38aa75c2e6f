"""Diverse verifier tree search, as search-and-learn's `sal/search/diverse_verifier_tree_search.py` runs it.

N/M independent subtrees. Each iteration, every live subtree expands M candidates of ONE step from its current
beam (all subtrees in one batch), the PRM scores them (one call), and each subtree greedily keeps its own best
(aggregated score; first on ties, np.argmax). A subtree is pruned when its kept step ended on EOS or the length
limit, is empty, or writes the final answer (zoo: `#<int>`; otherwise `boxed{`). Subtrees never see each other's
candidates. At the end each subtree yields the M candidates of its last expansion (N outputs), and the answer is
picked by `final` (the reference: the highest score). Unlike the reference, completion tokens are counted (it
reports -1) and the tree is stored (its "TODO: construct and store the tree").
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from decoding.search.beam import Beam, Tree


def best(scores: list[float]) -> int:
    """np.argmax: the first highest."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


def run(tree: Tree, should_stop: Callable[[], bool] | None = None) -> Generator:
    p = tree.params
    m = p.width
    how = p.aggregation
    yield from tree.start()
    subtrees = [Beam() for _ in range(p.n // m)]
    pruned = [False] * len(subtrees)
    candidates: list[list[Beam]] = [[] for _ in subtrees]  # each subtree's last expansion
    reason, stopped = f"{p.iterations} iterations", False
    for it in range(p.iterations):
        live = [i for i, done in enumerate(pruned) if not done]
        if not live:
            reason = "every subtree pruned"
            break
        if should_stop is not None and should_stop():
            stopped, reason = True, "stopped"
            break
        rows = [Beam(**vars(subtrees[i])) for i in live for _ in range(m)]
        parents = [b.node for b in rows]
        children = tree.expand(rows, final=it == p.iterations - 1)
        tree.score(children)
        status = []
        for j, i in enumerate(live):
            mine = children[j * m:(j + 1) * m]  # this subtree's candidates only
            k = best([c.score(how) for c in mine])
            chosen = mine[k]
            candidates[i], subtrees[i] = mine, chosen
            if chosen.stop is None and tree.has_answer(chosen):
                chosen.stop = "answer"
            pruned[i] = chosen.stop is not None
            status += ["finished" if pruned[i] and c is chosen else "kept" if c is chosen else "pruned" for c in mine]
        yield from tree.nodes(children, parents, status)
        done = [subtrees[i] for i in range(len(subtrees)) if pruned[i]]
        top = max(done, key=lambda b: b.score(how), default=None)
        yield tree.selection(children, tree.answer(top) if top is not None else None)
    outputs = [c for group in candidates for c in group]
    yield from tree.finish(outputs, p.final, stopped, reason)
