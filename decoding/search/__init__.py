"""Test-time search with a process reward model (HF "Scaling test-time compute"; github huggingface/search-and-learn).

Methods (the `method` parameter): majority@N, Best-of-N, weighted Best-of-N (`best_of_n.py`), PRM beam search
(`beam_search.py`) and DVTS (`dvts.py`), each faithful to the reference's `sal/search/`. Steps are the text
between delimiters (the zoo: lines; hub models: blank lines, as the reference). The PRM (`decoding/prm.py`) is a
parameter: the zoo's tiny-prm by default; the RLHFlow, Math-Shepherd and Qwen2.5-Math-PRM read-outs are built in.

Where this differs from the reference:
- every beam of an iteration expands in ONE batched, KV-cached pass per token (`expand.py`); the reference sends
  beams to vLLM one by one (`batched=False` does that here: same tree at temperature 0, more passes);
- a length stop is labelled "length", not "EOS" (it still completes the beam, as in the reference);
- DVTS counts its completion tokens (the reference reports -1) and stores its tree (the reference's TODO);
- an empty step is one with only whitespace besides the delimiter (the reference: an empty string, which with
  vLLM only happens at an immediate EOS);
- N < M runs with M = N (one kept beam), so budgets N = 1, 2 still search;
- lookahead (k greedy roll-out steps) is not implemented; the reference's beam search computes it but does not
  score it, its DVTS does;
- re-ranking by another aggregation in the view uses the trace's per-step scores (3 decimals), exact for a
  causal PRM, whose step scores do not depend on later steps.
Cost: generated tokens (every row, pruned ones included), policy forward passes (a batched pass counts once), PRM
calls and PRM forward passes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator
from pathlib import Path

from decoding.prm import PRM
from decoding.search import beam_search, best_of_n, dvts
from decoding.search.beam import Tree
from decoding.search.config import SearchParams

__all__ = ["EXAMPLES", "INTRO", "LOOK_FOR", "SearchParams", "decode", "load_prm"]

INTRO = """**Test-time search** spends more compute at inference: sample N solutions and let a *process reward
model* (PRM) score every step. **Best-of-N** keeps the highest-scored solution, **weighted BoN** the answer with
the largest summed score; **beam search** keeps the N/M best partial solutions after each step and grows M
children from each; **DVTS** runs N/M independent greedy subtrees. Watch the tree grow step by step: green =
kept, grey = pruned, blue square = finished, hollow = duplicate; the chosen answer's path is drawn thick
(orange). Scrub by iteration; "Rank by" re-ranks the finished run (last / min / prod) without rerunning it."""

LOOK_FOR = ("Look for the grey pruned branches and the hollow duplicates: the PRM's scores decide which partial "
            "solutions grow; switch 'Rank by' to see whether another aggregation would have chosen another answer.")
# The tab's examples, measured with tiny-ar + tiny-prm, beam search at the defaults (N = 4, M = 4, T = 0.8), seed 0.
EXAMPLES = (
    {"question": "56-29-26+83*6-88-8=?", "label": "search picks a wrong answer", "level": 6,
     "why": "answer 488, expected 408; 3 pruned and 15 duplicate nodes, 60 forward passes"},
    {"question": "12*3*2*5+29=?", "label": "many duplicates", "level": 5,
     "why": "answer 389 (correct); 12 of 20 expanded nodes are duplicates of a kept one"},
    {"question": "30+30*3-13=?", "label": "an easy one", "level": 3,
     "why": "answer 167 (correct) in 34 forward passes"},
)

STRATEGIES: dict[str, Callable[..., Generator]] = {
    "beam_search": beam_search.run,
    "dvts": dvts.run,
    "best_of_n": best_of_n.run,
    "weighted_best_of_n": best_of_n.run,
    "majority": best_of_n.run,
}


def load_prm(spec: str, device) -> PRM:
    """The PRM adapter (decoding.models.load caches it by (spec, device)), on the policy's device."""
    from decoding import models
    from decoding.allowlist import ZOO_ENV, allowed_models, resolve_for_app

    spec = resolve_for_app(spec, allowed_models())
    zoo = os.environ.get(ZOO_ENV, "").strip()
    if spec in models.ZOO_NAMES and zoo and (Path(zoo) / spec / "config.json").is_file():
        spec = str(Path(zoo) / spec)  # the app's zoo folder (DECODING_LENS_ZOO) holds the zoo PRM too
    adapter = models.load(spec, device=device)
    if adapter.kind != "prm":
        raise ValueError(f"{spec} is a {adapter.kind} model, not a process reward model")
    return PRM(adapter)


def decode(adapter, prompt: str, params: SearchParams, *, task=None, seed: int = 42,
           should_stop: Callable[[], bool] | None = None) -> Generator:
    """The registry's decoder: the strategy named by params.method, recorded as a tree."""
    prm = load_prm(params.prm, adapter.device)
    tree = Tree(adapter, prm, prompt, params, task, seed)
    return (yield from STRATEGIES[params.method](tree, should_stop))
