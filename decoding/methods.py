"""The method registry: one entry per method; the app's tabs, the CLI and the benchmarks are built from it.

    register(Method(name="diffusion", title="Diffusion", params=DiffusionParams, decode=decode_diffusion,
                    views="viz.diffusion_view", kinds=("masked_diffusion", "native_diffusion"), intro=...))

A decoder has one signature:

    decode(adapter, prompt, params, *, task, seed, should_stop) -> Iterator[event]

(`prompt` already formatted by the task; `task.extract_answer` reads answers; `should_stop()` is polled
every step; the events start with RunStart and end with RunEnd). `views` names the view module in viz/
(imported only by the app, so the CLI never loads plotly): it exposes `PANELS`, `render(state, meta, **options)`
and `progress(state, meta)` (docs/CONTRACTS.md). Adding a method = one decoder file, one view file, one
`register` call here (or in a module named by DECODING_LENS_METHODS, e.g. a test's toy method).
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from decoding.params import Params


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    params: type[Params]
    decode: Callable[..., Iterator]
    views: str  # module path of its view family (viz/...)
    kinds: tuple[str, ...]  # adapter kinds it runs on
    intro: str = ""  # Markdown above the tab's controls
    about: str = ""  # how it works and where it deviates from the paper (the About box)
    # Example problems for its tab: dicts with at least "question" (optional "label": what it shows, "why": the
    # measured reason, "level"). Empty: the entries of examples/prompts.json tagged with this method's name, else
    # the untagged ones (`examples()`).
    examples: tuple[dict, ...] = ()
    look_for: str = ""  # one line under the intro: what to look for in the first example's run
    # Two traces -> one trace of this method (the Replay tab's second file shows the pair in its views); ValueError
    # / TraceError with a message for people when they cannot be compared. None: the method takes no pairs.
    pair: Callable | None = None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get(name: str) -> Method:
    load_plugins()
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def all_methods() -> dict[str, Method]:
    load_plugins()
    return METHODS


_PLUGINS_LOADED: set[str] = set()


def load_plugins() -> None:
    """The built-in methods, then the modules named in DECODING_LENS_METHODS (comma-separated) register theirs."""
    import decoding.builtin_methods  # noqa: F401 -- registers diffusion and voting

    for module in filter(None, (m.strip() for m in os.environ.get("DECODING_LENS_METHODS", "").split(","))):
        if module not in _PLUGINS_LOADED:
            importlib.import_module(module)
            _PLUGINS_LOADED.add(module)


EXAMPLES_PATH = Path(__file__).resolve().parent.parent / "examples" / "prompts.json"


def load_examples(path: Path = EXAMPLES_PATH) -> list[dict]:
    """examples/prompts.json (written by `python -m decoding.pick_examples`): a list of problems, each with
    "question" and optionally "methods" (the tabs it is chosen for), "label", "why", "level"."""
    return json.loads(path.read_text())


def examples(method: Method, path: Path = EXAMPLES_PATH) -> list[dict]:
    """A tab's examples: the method's own (`Method.examples`, else the entries of prompts.json chosen for it), then
    the untagged ones (the level ladder), so a tab added later still gets the general problems."""
    rows = load_examples(path)
    mine = [dict(e) for e in method.examples] or [e for e in rows if method.name in e.get("methods", ())]
    return mine + [e for e in rows if not e.get("methods")]


def default_seed(decode: Callable) -> int:
    """The seed a decoder uses when none is given (its `seed=` default), else 0: what a first click runs."""
    seed = inspect.signature(decode).parameters.get("seed")
    return seed.default if seed is not None and isinstance(seed.default, int) else 0
