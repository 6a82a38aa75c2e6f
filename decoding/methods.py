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
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

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
