"""Which models the app runs: one policy, used by app.py for its model picker and for every run.

The app runs only what is on its list: the zoo names, the registry's hub ids, the zoo folders under
DECODING_LENS_ZOO, and what the operator adds (DECODING_LENS_MODELS, comma-separated folders or hub ids, and
`python app.py --allow-model SPEC`). Anything else typed into the model field gets one fixed message
(`NOT_ALLOWED`) that names no path and does not say whether a path exists: no probing of the server's disk.

Python (`decoding.models.load`) and the CLI (`python -m decoding run`) do not go through this list: they load
local folders and print what is wrong with them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from decoding import models

ENV = "DECODING_LENS_MODELS"
ZOO_ENV = "DECODING_LENS_ZOO"
NOT_ALLOWED = ("this app runs only the models in its Model list: pick one there. (Other models and local folders "
               "run from Python or with `python -m decoding run`; the app's operator can add them to the list.)")

# An absolute path inside a message (/home/..., C:\...), not the `/` of a hub id or a URL.
_PATH = re.compile(r"(?<![\w.:/\\-])(?:/|~/|[A-Za-z]:\\)[^\s'\"`,;()\[\]{}]*")


class ModelNotAllowed(models.ModelLoadError):
    """A model field's text that is not on the app's list."""

    def __init__(self) -> None:
        super().__init__(NOT_ALLOWED)


def allowed_models(extra: Iterable[str] = ()) -> list[str]:
    """The app's list, in picker order: the DECODING_LENS_ZOO folders (when set), the zoo names, the registry's
    hub ids, DECODING_LENS_MODELS, then `extra` (the app's --allow-model). Duplicates and blanks dropped."""
    zoo = os.environ.get(ZOO_ENV, "").strip()
    specs = [str(Path(zoo) / name) for name in models.ZOO_NAMES] if zoo else []
    specs += [*models.ZOO_NAMES, *models.REGISTRY]
    specs += os.environ.get(ENV, "").split(",")
    specs += list(extra)
    out: list[str] = []
    for spec in (s.strip() for s in specs):
        if spec and spec not in out:
            out.append(spec)
    return out


def resolve_for_app(spec: object, allowed: Iterable[str]) -> str:
    """The spec to load for what the model field sent, or ModelNotAllowed. Only an exact entry of the list
    (surrounding spaces aside) passes: the file system is never looked at, so the answer for `/etc`,
    `/no/such/model` and `../` is the same."""
    text = spec.strip() if isinstance(spec, str) else ""
    if text and text in set(allowed):
        return text
    raise ModelNotAllowed()


def enable(allowed: Iterable[str]) -> None:
    """Let models.load fetch the listed hub ids the registry does not know (without their own code: only
    models.allow_remote_code grants that)."""
    for spec in allowed:
        if spec not in models.ZOO_NAMES and spec not in models.REGISTRY and not models._looks_like_path(spec) \
                and spec.count("/") == 1:
            models.allow_hub_id(spec)


def public_message(message: str) -> str:
    """A load error of a listed model, fit for the page: absolute paths (cache folders, the zoo folder) become
    `…`."""
    return _PATH.sub("…", message)
