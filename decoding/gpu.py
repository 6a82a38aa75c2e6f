"""`@gpu`: Hugging Face ZeroGPU's `spaces.GPU` when the `spaces` package is installed (on a Space), else a no-op,
so local runs and CI need no `spaces`. Decorate the app's entry points that run a model (a ZeroGPU Space
attaches a GPU only while such a call runs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

try:  # pragma: no cover - depends on the environment
    import spaces  # type: ignore[import-not-found]
except ImportError:  # local runs, CI: no ZeroGPU
    spaces = None

DURATION_S = 120  # ZeroGPU's budget per call: loading an 8B model and one 256-token decode fit in it


def gpu(fn: F) -> F:
    """spaces.GPU(duration=DURATION_S)(fn) on a Space with `spaces`, else fn unchanged."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=DURATION_S)(fn)
