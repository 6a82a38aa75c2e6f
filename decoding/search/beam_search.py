"""PRM beam search, as search-and-learn's `sal/search/beam_search.py` runs it (one prompt, N beams, width M).

Each iteration:
1. the active beams are tiled back to N: `(active * (N // len(active) + 1))[:N]` (copies, so a kept beam gets
   M children);
2. every beam generates ONE step (stop at the delimiter, kept in the text; the last iteration has no stop string);
3. the PRM scores every new prefix (one batched call);
4. beams that ended (EOS, the length limit, an empty step) are completed and leave the pool;
5. exact duplicates are dropped (filter_duplicates, on in the reference's beam recipe);
6. the top N/M by aggregated score are kept (ties: the later beam, as a stable argsort's tail), in their order.
It stops when no beam is active or after `iterations`. The outputs are the first N completed beams (the
reference's `sort_completed=False`), tiled to N when fewer completed; the answer is picked by `final`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

from decoding.search.beam import Beam, Tree


def top_k(scores: list[float], k: int) -> list[int]:
    """Indices of the k highest scores, returned in index order; ties go to the later index (stable argsort)."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return sorted(order[-k:]) if k > 0 else []


def tile(beams: list[Beam], n: int) -> list[Beam]:
    """The reference's `(active * repeats)[:n]`, each a copy."""
    if not beams:
        return []
    repeats = n // len(beams) + 1
    return [Beam(**vars(b)) for b in (beams * repeats)[:n]]


def run(tree: Tree, should_stop: Callable[[], bool] | None = None) -> Generator:
    p = tree.params
    n, keep = p.n, p.n // p.width
    how = p.aggregation
    yield from tree.start()
    active, completed = [Beam() for _ in range(n)], []
    reason, stopped = f"{p.iterations} iterations", False
    for it in range(p.iterations):
        if should_stop is not None and should_stop():
            stopped, reason = True, "stopped"
            break
        active = tile(active, n)
        parents = [b.node for b in active]
        children = tree.expand(active, final=it == p.iterations - 1)
        tree.score(children)
        status: dict[int, str] = {}
        live = []
        for c in children:
            if c.stop is not None:
                completed.append(c)
                status[c.node] = "finished"
            else:
                live.append(c)
        if p.filter_duplicates:
            seen: dict[str, Beam] = {}
            for c in live:
                if c.text in seen:
                    status[c.node] = "duplicate"
                else:
                    seen[c.text] = c
            live = list(seen.values())
        kept = [live[i] for i in top_k([c.score(how) for c in live], keep)]
        for c in live:
            status[c.node] = "kept" if c in kept else "pruned"
        yield from tree.nodes(children, parents, [status[c.node] for c in children])
        best = max(completed, key=lambda b: b.score(how), default=None)
        yield tree.selection(children, tree.answer(best) if best is not None else None)
        active = kept
        if not active:
            reason = "all beams finished"
            break
    outputs = tile(completed[:n], n) if completed else tile(active, n)
    if not completed and outputs:
        reason += "; no beam finished: the active beams stand in"
    yield from tree.finish(outputs, p.final, stopped, reason)
