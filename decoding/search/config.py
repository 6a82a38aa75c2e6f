"""The one typed config of the test-time search tab (search-and-learn's `sal/config.py`, the parts that matter)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from decoding.params import Context, Limit, Params, ui

METHODS = ("beam_search", "dvts", "best_of_n", "weighted_best_of_n", "majority")
FINALS = ("naive", "weighted", "majority")


class SearchParams(Params):
    method: Literal["beam_search", "dvts", "best_of_n", "weighted_best_of_n", "majority"] = ui(
        "beam_search", "Method")
    n: int = ui(4, "N (beams / samples: the budget)", 1, 64, 1)
    beam_width: int = ui(4, "M (beam width: each kept beam gets M children)", 1, 16, 1)
    temperature: float = ui(0.8, "Temperature", 0, 2, 0.05)
    aggregation: Literal["last", "min", "prod"] = ui("last", "PRM aggregation over steps (ranks beams)")
    prm: Literal["tiny-prm", "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data", "Qwen/Qwen2.5-Math-PRM-7B"] = ui(
        "tiny-prm", "PRM (process reward model; the hub ones need a GPU and their weights)", advanced=True)
    top_p: float = ui(1.0, "top-p", 0.05, 1, 0.05, advanced=True)
    iterations: int = ui(40, "Iterations at most (steps per beam)", 1, 100, 1, advanced=True)
    max_tokens: int = ui(80, "Max new tokens per generate call (a step; Best-of-N: the whole answer)", 1, 2048, 1,
                         advanced=True)
    filter_duplicates: bool = ui(True, "Beam search: drop exact duplicate beams (the beam recipe's setting)",
                                 advanced=True)
    final: Literal["naive", "weighted", "majority"] = ui(
        "naive", "Beam search / DVTS: final pick (naive = highest score, as the reference's pred)", advanced=True)
    delimiter: Literal["auto", "line", "blank_line"] = ui(
        "auto", "Step delimiter (auto: a line for the zoo, a blank line otherwise)", advanced=True)
    batched: bool = ui(True, "Expand all beams in one batch (off: one beam at a time, as the reference)",
                       advanced=True)

    @classmethod
    def limits(cls, values, context: Context | None = None) -> dict[str, Limit]:
        """Beam search and DVTS: N below M, or a multiple of M (N/M subtrees / kept beams)."""
        out = super().limits(values, context)
        m = int(values.get("beam_width") or 1)
        if values.get("method") in ("beam_search", "dvts") and m > 1 and "n" in out:
            top = int(out["n"].maximum or 64)
            choices = tuple(sorted({*range(1, m), *range(m, top + 1, m)}))
            out["n"] = Limit(choices=choices, whole=True, soft=False, why=f"N below M or a multiple of M = {m}")
        return out

    @model_validator(mode="after")
    def _check(self) -> SearchParams:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1 or self.beam_width < 1 or self.iterations < 1 or self.max_tokens < 1:
            raise ValueError("n, beam_width, iterations and max_tokens must be positive")
        if self.method in ("beam_search", "dvts") and self.n % self.width:
            raise ValueError(f"{self.method} needs N to be a multiple of M (N={self.n}, M={self.beam_width})")
        return self

    @property
    def width(self) -> int:
        """M as used: min(M, N), so N = 1 or 2 still searches (one kept beam)."""
        return min(self.beam_width, self.n)

    def step_delimiter(self, task_name: str | None) -> str:
        if self.delimiter == "line" or (self.delimiter == "auto" and task_name == "zoo"):
            return "\n"
        return "\n\n"
