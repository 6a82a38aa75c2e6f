"""Typed decoding events and the Trace: a versioned, validated JSON record of one run.

Decoders yield these events; the app appends them to a Trace; viz draws a Trace (or one event).
Everything here is plain Python (no torch): a saved trace replays with no model loaded.

Token text is untrusted (it comes from a tokenizer or an uploaded file): views must escape it.
"""

from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

FORMAT = "decoding-lens-trace"
VERSION = 1
MAX_TRACE_BYTES = 50 * 1024 * 1024


class TraceError(ValueError):
    """A trace file that cannot be loaded; the message says why, in words a user can act on."""


@dataclass
class Event:
    kind: ClassVar[str] = "event"

    def to_json(self) -> dict:
        return {"kind": self.kind, **asdict(self)}


@dataclass
class RunStart(Event):
    """First event of every run: what was asked, in the model's own tokens."""

    kind: ClassVar[str] = "start"
    method: str  # "diffusion", "voting", ...
    prompt: str
    prompt_tokens: list[str]
    gen_length: int
    batch: int  # rows decoded side by side (samples)
    mask_token: str = "[MASK]"


@dataclass
class DiffusionStep(Event):
    """One denoising forward pass over `rows` canvases. Per-position lists are [row][position] over
    the generated region only. `confidence` and `entropy` describe the model's prediction at this
    step (for committed positions: the token they were committed with, at commit time)."""

    kind: ClassVar[str] = "step"
    step: int  # 1-based forward pass within this decode
    block: int  # semi-autoregressive block being filled (0-based)
    rows: list[int]  # which samples these rows are (voting decodes samples in groups)
    tokens: list[list[str]]  # display text; masked positions hold the model's current guess
    token_ids: list[list[int]]
    masked: list[list[bool]]  # still masked after this step
    committed: list[list[int]]  # positions committed at this step, per row
    confidence: list[list[float]]
    entropy: list[list[float]]  # nats
    topk: list[list[list[list]]]  # [row][position][k] -> [token_text, prob]
    nfe: int  # forward passes so far in this run (one batched pass counts once)


@dataclass
class DecodeDone(Event):
    """End of one decode: the final text of each row and its cost."""

    kind: ClassVar[str] = "done"
    rows: list[int]
    texts: list[str]
    answers: list[int | None]
    nfe: int
    seconds: float
    row_nfe: list[int] = field(default_factory=list)  # forward passes each row paid for (finished rows stop)


@dataclass
class VotingRound(Event):
    """dVoting / majority voting after a sample (or a batch of samples) finished.

    `grid[s][p]` for every finished sample s and position p: "kept" (carried over from agreement),
    "agree" (decoded, agrees with all samples), or "disagree"; while another sample follows, one last
    row (len(samples) rows + 1) is its start: "kept" or "remasked" (for the next sample)."""

    kind: ClassVar[str] = "round"
    round: int
    samples: list[int]  # samples finished so far
    texts: list[str]
    answers: list[int | None]
    grid: list[list[str]]
    tally: list[list]  # [[answer, votes], ...] most common first (ties: first seen)
    nfe_per_sample: list[int]
    nfe_total: int
    stop_reason: str | None = None  # set on the last round: "majority", "all_agree", "max_samples"
    final_answer: int | None = None


@dataclass
class RunEnd(Event):
    """Last event of every run: the summary (cost always counted)."""

    kind: ClassVar[str] = "end"
    nfe: int
    seconds: float
    answer: int | None = None
    stopped: bool = False  # True when the user pressed Stop
    summary: dict = field(default_factory=dict)


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (RunStart, DiffusionStep, DecodeDone, VotingRound, RunEnd)
}


def event_from_json(data: Any) -> Event:
    if not isinstance(data, dict):
        raise TraceError(f"an event must be a JSON object, got {type(data).__name__}")
    cls = EVENT_TYPES.get(data.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise TraceError(f"unknown event kind {str(data.get('kind'))[:40]!r}")
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is f.default_factory is _MISSING}
    missing = required - data.keys()
    if missing:
        raise TraceError(f"{cls.kind} event is missing {sorted(missing)}")
    kwargs = {k: v for k, v in data.items() if k in names}
    for f in fields(cls):
        if f.name in kwargs:
            _check_type(cls.kind, f.name, f.type, kwargs[f.name])
    return cls(**kwargs)


_MISSING = fields(RunStart)[0].default  # dataclasses.MISSING without importing the private name


def _check_type(kind: str, name: str, annotation: str, value: Any) -> None:
    """Shallow type check from the annotation string: enough to reject hostile or corrupt files."""
    base = annotation.split("[")[0].split("|")[0].strip()
    ok = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "bool": lambda v: isinstance(v, bool),
        "list": lambda v: isinstance(v, list),
        "dict": lambda v: isinstance(v, dict),
    }.get(base, lambda v: True)
    if value is None and "None" in annotation:
        return
    if not ok(value):
        raise TraceError(f"{kind} event field {name!r} should be {annotation}, got {type(value).__name__}")


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "gradio", "plotly"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


@dataclass
class Trace:
    """meta: model id, method, every parameter, seed, library versions. events: in order."""

    meta: dict
    events: list[Event] = field(default_factory=list)

    @classmethod
    def new(cls, model: str, method: str, params: dict, seed: int) -> Trace:
        return cls({"model": model, "method": method, "params": params, "seed": seed, "versions": library_versions()})

    def add(self, event: Event) -> Event:
        self.events.append(event)
        return event

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind]

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "meta": self.meta, "events": [e.to_json() for e in self.events]}

    def dumps(self) -> str:
        return json.dumps(self.to_json(), separators=(",", ":"))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.dumps())
        return path

    @classmethod
    def from_json(cls, data: Any) -> Trace:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TraceError("not a Decoding Lens trace (the 'format' field is missing or wrong)")
        if data.get("version") != VERSION:
            raise TraceError(f"trace version {str(data.get('version'))[:20]!r} is not supported (this app reads {VERSION})")
        meta, events = data.get("meta"), data.get("events")
        if not isinstance(meta, dict) or not isinstance(events, list):
            raise TraceError("a trace needs a 'meta' object and an 'events' list")
        return cls(meta, [event_from_json(e) for e in events])

    @classmethod
    def loads(cls, text: str | bytes) -> Trace:
        if len(text) > MAX_TRACE_BYTES:
            raise TraceError(f"trace is larger than {MAX_TRACE_BYTES // 2**20} MB")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TraceError(f"the file is not valid JSON ({e.__class__.__name__} at position {getattr(e, 'pos', '?')})") from None
        return cls.from_json(data)

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        path = Path(path)
        if not path.is_file():
            raise TraceError(f"no trace file at {path}")
        if path.stat().st_size > MAX_TRACE_BYTES:
            raise TraceError(f"trace is larger than {MAX_TRACE_BYTES // 2**20} MB")
        return cls.loads(path.read_bytes())
