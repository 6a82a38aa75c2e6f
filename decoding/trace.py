"""The trace: one event vocabulary for every method, validated with pydantic, saved as versioned JSON.

A run is a list of events (a pydantic discriminated union on `kind`):

- `start`     what was asked: method, prompt (text and ids), rows side by side, positions per row;
- `vocab`     the display text of token ids the trace has not named yet (each id is named once);
- `tokens`    a token delta: one sequence, one step, the positions touched, their ids, and an `action`:
              `propose` (the model's current guess: diffusion predictions, speculative drafts),
              `commit` (fixed in the output), `keep` (carried over without decoding, e.g. dVoting's agreed
              tokens), `accept` / `reject` (a draft's verdict), `remask` (a committed token taken back);
              with the model's confidence, entropy (nats) and top-k there where a view needs them;
- `node`      a sample, beam or subtree: id, parent, sequence, text, answer, score, status;
- `selection` a method's choice among nodes: tally or scores, the answer, the reason (set when final);
- `end`       the summary: answer, cost (forward passes, seconds), stopped or not.

`step` is the run-wide forward-pass index (1-based; one batched pass is one step; 0 = before any pass), so
a trace scrubs by step across samples decoded one after another. A trace grows with the work done: a
diffusion step records what that pass predicted at the positions still masked, not the whole canvas.
Floats are rounded to the precision the views show (`PRECISION`). Plain Python + pydantic: a saved trace
replays with no model. Every string in a trace is untrusted: views escape it.

Version-1 traces (full `step` snapshots) are converted on load (`decoding.trace_v1`).
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError, field_validator

FORMAT = "decoding-lens-trace"
VERSION = 2
MAX_TRACE_BYTES = 50 * 1024 * 1024
# How much replaying a file may cost, checked on the parsed JSON before validation (`check_work`): an upload
# that passes the byte limit can still ask for more work than its size suggests (millions of one-position
# events, thousands of sequences each folded and checkpointed at every 8th step).
MAX_EVENTS = 500_000
MAX_ENTRIES = 8_000_000  # per-position entries: Tokens positions + top-k alternatives at them + Vocab ids
MAX_SEQUENCES = 1024  # distinct Tokens.seq
MAX_FOLD_SLOTS = 20_000_000  # what folding keeps: (checkpoints + 1) x (sequences x positions x 5 + history + ...)
PRECISION = 3  # decimals kept for probabilities and entropies (the views print 3)

ACTIONS = ("propose", "commit", "keep", "accept", "reject", "remask")
Action = Literal["propose", "commit", "keep", "accept", "reject", "remask"]
NODE_STATUS = ("active", "kept", "pruned", "finished", "duplicate")


class TraceError(ValueError):
    """A trace that cannot be loaded; the message says why, naming the field, in words a user can act on."""


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class RunStart(_Event):
    """First event of every run."""

    kind: Literal["start"] = "start"
    method: str
    prompt: str
    prompt_ids: list[int]
    rows: int = Field(ge=0)  # sequences decoded side by side at most (samples, beams)
    length: int = Field(ge=0)  # positions per sequence (diffusion: the answer length; autoregressive: max new)
    mask_id: int | None = None


class Vocab(_Event):
    """Display text of token ids, each id named once per trace, before the first event that uses it."""

    kind: Literal["vocab"] = "vocab"
    ids: list[int]
    texts: list[str]

    @field_validator("texts")
    @classmethod
    def _same_length(cls, texts: list[str], info) -> list[str]:
        if len(texts) != len(info.data.get("ids", [])):
            raise ValueError("must have one text per id")
        return texts


class Tokens(_Event):
    """A token delta. Lists are parallel to `pos`; `top_ids` / `top_p` are [position][k]."""

    kind: Literal["tokens"] = "tokens"
    seq: int  # sample / beam / row id
    step: int = Field(ge=0)
    action: Action
    pos: list[int]
    ids: list[int]
    conf: list[float] | None = None  # probability of `ids` under the model
    entropy: list[float] | None = None  # nats
    top_ids: list[list[int]] | None = None
    top_p: list[list[float]] | None = None
    block: int | None = None  # semi-autoregressive block being decoded
    # `commit` of a sampled token (diffusion engine, temperature > 0): the Gumbel draw g = -log(-log U) that the
    # Gumbel-max choice added to the token's logit / temperature at this step (the divergence debugger's evidence)
    noise: list[float] | None = None

    @field_validator("ids", "conf", "entropy", "top_ids", "top_p", "noise")
    @classmethod
    def _parallel(cls, values: list | None, info) -> list | None:
        if values is not None and len(values) != len(info.data.get("pos", [])):
            raise ValueError("must have one entry per position in 'pos'")
        return values


class Node(_Event):
    """A sample, beam or subtree, as of `step`."""

    kind: Literal["node"] = "node"
    id: int
    parent: int | None = None
    seq: int | None = None  # the token sequence (Tokens.seq) that holds its text
    step: int = Field(0, ge=0)
    status: Literal["active", "kept", "pruned", "finished", "duplicate"] = "finished"
    text: str | None = None
    answer: str | None = None
    score: float | None = None
    nfe: int | None = None  # forward passes this node paid for
    stop: str | None = None  # why a finished node ended (search: eos / length / empty / answer)


class Selection(_Event):
    """A method's choice among nodes after a round. `agreement` (voting): one string per finished sample,
    one letter per position: k = kept (not re-decoded), a = agrees, d = disagrees; a last extra row, while
    another sample follows, is where it starts: k = kept, r = remasked."""

    kind: Literal["selection"] = "selection"
    round: int = Field(ge=0)
    nodes: list[int]  # the candidates, in order
    answers: list[str | None]  # each candidate's answer
    tally: list[tuple[str, int]] = []  # (answer, votes), most common first
    scores: list[float] | None = None
    answer: str | None = None  # the choice so far
    reason: str | None = None  # set on the final round: why the method stopped
    nfe: int = Field(0, ge=0)  # forward passes so far
    agreement: list[str] | None = None

    @field_validator("agreement")
    @classmethod
    def _letters(cls, rows: list[str] | None) -> list[str] | None:
        if rows is not None and any(set(r) - set("kadr") for r in rows):
            raise ValueError("agreement rows may only hold the letters k, a, d, r")
        return rows


class RunEnd(_Event):
    """Last event of every run: the answer and the cost (always counted)."""

    kind: Literal["end"] = "end"
    nfe: int = Field(ge=0)  # forward passes (a batched pass counts once; CFG counts two)
    seconds: float = Field(ge=0)
    answer: str | None = None
    stopped: bool = False  # the user pressed Stop
    summary: dict[str, JsonValue] = {}

    @field_validator("summary")
    @classmethod
    def _finite(cls, summary: dict) -> dict:
        _check_finite(summary, "summary")
        return summary


Event = Annotated[RunStart | Vocab | Tokens | Node | Selection | RunEnd, Field(discriminator="kind")]
EVENT_TYPES = (RunStart, Vocab, Tokens, Node, Selection, RunEnd)


class Meta(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str
    method: str
    params: dict[str, JsonValue] = {}
    seed: int = 0
    task: str | None = None  # the task that formatted the prompt and judges the answer
    expected: str | None = None  # the expected answer, when the task knows it
    versions: dict[str, str] = {}
    # where the logits were computed: outputs that differ across GPUs or precisions are the divergence
    # debugger's *numerics* cause (decoding/divergence.py names these when two runs differ in them)
    device: str | None = None  # "cpu", "cuda (NVIDIA H100 80GB HBM3)"
    dtype: str | None = None  # the model's parameters: "float32", "bfloat16"

    @field_validator("params")
    @classmethod
    def _finite(cls, params: dict) -> dict:
        _check_finite(params, "params")
        return params


class _TraceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["decoding-lens-trace"]
    version: Literal[2]
    meta: Meta
    events: list[Event]


_FILE = TypeAdapter(_TraceFile)
_EVENT = TypeAdapter(Event)


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} holds a non-finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def r(x: float) -> float:
    """A float at the trace's precision."""
    return round(float(x), PRECISION)


def library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "gradio", "plotly", "pydantic"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[pkg] = md.version(pkg)
    return out


def _message(error: ValidationError) -> str:
    """The first validation error as one readable line naming the field, e.g.
    "events[3] (tokens): field 'conf[1]': Input should be a finite number"."""
    err = error.errors()[0]
    loc = list(err["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "events" and isinstance(loc[1], int):
        where = f"events[{loc[1]}]"
        loc = loc[2:]
        if loc and isinstance(loc[0], str) and loc[0] in {"start", "vocab", "tokens", "node", "selection", "end"}:
            where += f" ({loc[0]})"
            loc = loc[1:]
        where += ": "
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    msg = str(err["msg"])
    if err["type"] == "union_tag_invalid":
        tag = str((err.get("ctx") or {}).get("tag", "?"))[:40]
        msg = f"unknown event kind {tag!r} (expected one of start, vocab, tokens, node, selection, end)"
        field = "kind"
    elif err["type"] == "union_tag_not_found":
        field, msg = "kind", "missing: every event needs a 'kind'"
    return f"{where}field {field!r}: {msg}" if field else f"{where}{msg}"


class Trace:
    """meta (model, method, params, seed, task, library versions) and the events, in order."""

    def __init__(self, meta: Meta | dict, events: list | None = None):
        self.meta = meta if isinstance(meta, Meta) else Meta(**meta)
        self.events: list = list(events or [])

    @classmethod
    def new(cls, model: str, method: str, params: dict, seed: int, task: str | None = None,
            expected: str | None = None, device: str | None = None, dtype: str | None = None) -> Trace:
        return cls(Meta(model=model, method=method, params=params, seed=seed, task=task, expected=expected,
                        versions=library_versions(), device=device, dtype=dtype))

    def add(self, event):
        self.events.append(event)
        return event

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "meta": self.meta.model_dump(),
                "events": [e.model_dump(exclude_defaults=True) | {"kind": e.kind} for e in self.events]}

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
        if data.get("version") == 1:
            from decoding.trace_v1 import convert

            if isinstance(data.get("events"), list) and len(data["events"]) > MAX_EVENTS:
                check_work(data.get("events"))  # (says how many events; a v1 trace converts to at least as many)
            data = convert(data)
        elif data.get("version") != VERSION:
            raise TraceError(f"trace version {str(data.get('version'))[:20]!r} is not supported (this app reads 1 "
                             f"and {VERSION})")
        check_work(data.get("events"))
        try:
            parsed = _FILE.validate_python(data)
        except ValidationError as e:
            raise TraceError(_message(e)) from None
        return cls(parsed.meta, parsed.events)

    @classmethod
    def loads(cls, text: str | bytes) -> Trace:
        """Size first, then a byte scan for the number of events, then (a version-2 trace) pydantic's own JSON
        parser validating as it parses, then the work limits before anything is folded. Anything else (a
        version-1 trace, broken JSON, not a trace) goes through json.loads for its conversion or message."""
        if len(text) > MAX_TRACE_BYTES:
            raise TraceError(f"trace is larger than {MAX_TRACE_BYTES // 2**20} MB")
        raw = text.encode() if isinstance(text, str) else text
        if raw.count(b'"kind"') > MAX_EVENTS:  # an upper bound on the events, before any parsing
            raise TraceError(f"the trace is too large to replay: more than {MAX_EVENTS:,} events")
        try:
            parsed = _FILE.validate_json(raw)
        except ValidationError as e:
            if not any(err["type"] == "json_invalid" or err["loc"][:1] in (("format",), ("version",))
                       for err in e.errors()):
                raise TraceError(_message(e)) from None
        else:
            check_work(parsed.events)
            return cls(parsed.meta, parsed.events)
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TraceError(f"the file is not valid JSON ({e.__class__.__name__} at position {getattr(e, 'pos', '?')})") from None
        except RecursionError:
            raise TraceError("the file nests too deeply to be a trace") from None
        del text  # the raw text is not kept while the parsed JSON is validated (one copy fewer at the peak)
        return cls.from_json(data)

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        path = Path(path)
        if not path.is_file():
            raise TraceError("no trace file there")
        if path.stat().st_size > MAX_TRACE_BYTES:
            raise TraceError(f"trace is larger than {MAX_TRACE_BYTES // 2**20} MB")
        return cls.loads(path.read_bytes())


def _get(e: Any, key: str) -> Any:
    return e.get(key) if isinstance(e, dict) else getattr(e, key, None)


def check_work(events: Any) -> None:
    """Refuse, before it is folded, a trace that would cost too much to replay: too many events, too many
    per-position entries, too many sequences, or more fold state than MAX_FOLD_SLOTS (the Fold keeps a copy of
    every sequence's columns, its heatmap rows, the vocabulary, nodes and selections at every CHECKPOINT_EVERY-th
    step). `events`: parsed JSON objects (before validation) or validated events; one cheap pass, malformed
    parts skipped (validation names them). TraceError says which limit and by how much."""
    from decoding.fold import CHECKPOINT_EVERY, MAX_POSITIONS  # (fold imports this module)

    if not isinstance(events, list):
        return
    if len(events) > MAX_EVENTS:
        raise TraceError(f"the trace is too large to replay: {len(events):,} events (this app replays at most "
                         f"{MAX_EVENTS:,})")
    entries = frames = rows = other = length = 0
    seqs: set[int] = set()
    last = None
    for e in events:
        kind = _get(e, "kind")
        if kind == "tokens":
            pos, step, seq = _get(e, "pos"), _get(e, "step"), _get(e, "seq")
            if isinstance(pos, list):
                entries += len(pos)
                if pos:
                    length = max(length, min(_max_int(pos) + 1, MAX_POSITIONS))
            top = _get(e, "top_ids")
            if isinstance(top, list):
                entries += sum(len(t) for t in top if isinstance(t, list))
            if isinstance(seq, int) and not isinstance(seq, bool):
                seqs.add(seq)
            if isinstance(step, int) and step > 0 and step != last and _get(e, "action") != "keep":
                frames, last = frames + 1, step
            if _get(e, "action") == "propose":
                rows += 1
        elif kind == "vocab":
            ids = _get(e, "ids")
            if isinstance(ids, list):
                entries += len(ids)
                other += len(ids)
        elif kind == "start":
            n = _get(e, "length")
            if isinstance(n, int):
                length = max(length, min(n, MAX_POSITIONS))
        else:
            other += 1
    if entries > MAX_ENTRIES:
        raise TraceError(f"the trace is too large to replay: {entries:,} per-position entries (positions, top-k "
                         f"alternatives, vocabulary ids; this app replays at most {MAX_ENTRIES:,})")
    if len(seqs) > MAX_SEQUENCES:
        raise TraceError(f"the trace is too large to replay: {len(seqs):,} sequences (this app replays at most "
                         f"{MAX_SEQUENCES:,})")
    slots = (frames // CHECKPOINT_EVERY + 2) * (len(seqs) * length * 5 + rows + other)
    if slots > MAX_FOLD_SLOTS:
        raise TraceError(f"the trace is too large to replay: {frames:,} steps x {len(seqs):,} sequences x {length:,} "
                         f"positions would take about {slots:,} slots of scrubbing state (this app allows "
                         f"{MAX_FOLD_SLOTS:,})")


def _max_int(values: list) -> int:
    try:
        return int(max(values))
    except (TypeError, ValueError, OverflowError):
        return 0


def event_from_json(data: Any):
    """One event from its JSON object (TraceError naming the field when it is invalid)."""
    try:
        return _EVENT.validate_python(data)
    except ValidationError as e:
        raise TraceError(_message(e)) from None


def json_schema() -> dict:
    """The JSON Schema of a version-2 trace file (published as docs/trace.schema.json)."""
    return _FILE.json_schema()
