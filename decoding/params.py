"""The typed config every method's parameters derive from (pydantic), with UI hints the app reads.

    class MyParams(Params):
        k: int = ui(5, "K (samples at most)", 1, 9)

A field's `ui(...)` hint (label, bounds, step, `advanced`, `help`) lets the app build the method's controls and
the CLI parse `--set k=7`, with no per-method wiring. Validation errors are pydantic `ValidationError`s (a
`ValueError`); `describe_error` turns one into a line a user can act on.

Valid values often depend on the other values and on the model (steps must divide evenly over the blocks, the
answer must fit in the model's context). A Params class says so in `limits(values, context)`: per numeric
field, the range / grid / choices that run, and why. The app sets its sliders from it and, through `adjust`,
brings a typed or dragged value to the nearest one that runs with a note saying so; `check_context` (called by
`check(adapter, prompt)`, which the app and the CLI run before decoding) refuses what cannot run, for every
method alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


def ui(default: Any, label: str, minimum: float | None = None, maximum: float | None = None, step: float | None = None,
       advanced: bool = False, help: str | None = None) -> Any:
    """A field with the hints the app builds its control from: the control's range (`Params.limits` derives the
    values that run), and `help`, one plain line shown under the control."""
    hints = {"label": label, "minimum": minimum, "maximum": maximum, "step": step, "advanced": advanced, "help": help}
    return Field(default, description=help or label, json_schema_extra={"ui": {k: v for k, v in hints.items()
                                                                              if v is not None}})


@dataclass(frozen=True)
class Context:
    """What only the model and the prompt can tell: the model's context in tokens and the formatted prompt's
    length (None: no model loaded yet)."""

    max_length: int | None = None
    prompt_tokens: int = 0

    @property
    def room(self) -> int | None:
        """Tokens left for the answer."""
        return None if self.max_length is None else self.max_length - self.prompt_tokens

    @classmethod
    def of(cls, adapter: Any, prompt: str | None = None) -> Context:
        n = len(adapter.encode_prompt(prompt)) if prompt else 0
        return cls(int(adapter.max_length), n)


@dataclass(frozen=True)
class Limit:
    """The values of a numeric field that run: [minimum, maximum], on the grid minimum + k * step when step is
    set, or one of `choices`. `soft`: only the control's range (the ui hint), which the CLI may exceed; a hard
    limit is a rule (`check_context` refuses a value outside it). `why` completes "…, the most that runs ..."."""

    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[float, ...] | None = None
    whole: bool = False  # an int field
    soft: bool = True
    why: str = ""

    def allows(self, value: float) -> bool:
        return self.nearest(value) == value

    def nearest(self, value: float) -> float:
        """The closest value that runs (halves round up, as a slider shows them)."""
        if self.whole:
            value = math.floor(value + 0.5)
        if self.choices:
            return min(self.choices, key=lambda c: (abs(c - value), -c))
        if self.minimum is not None and value < self.minimum:
            value = self.minimum
        if self.maximum is not None and value > self.maximum:
            value = self.maximum
        if self.step and self.minimum is not None:
            k = math.floor((value - self.minimum) / self.step + 0.5)
            value = self.minimum + k * self.step
            if self.maximum is not None and value > self.maximum:
                value -= self.step
        return int(value) if self.whole else value

    def explain(self, value: float) -> str:
        """Why `value` does not run: "above 80, the most that runs (answer length 80)"."""
        if self.whole and value != math.floor(value):
            rounded = math.floor(value + 0.5)
            rest = "" if self.allows(rounded) else f", and {_num(rounded)} is {self._outside(rounded)}"
            return f"not a whole number{rest}"
        return self._outside(value)

    def _outside(self, value: float) -> str:
        why = f" ({self.why})" if self.why else ""
        runs = "this control offers" if self.soft else "that runs"
        if self.minimum is not None and value < self.minimum:
            return f"below {_num(self.minimum)}, the least {runs}{why}"
        if self.maximum is not None and value > self.maximum:
            return f"above {_num(self.maximum)}, the most {runs}{why}"
        if self.choices:
            shown = ", ".join(_num(c) for c in self.choices[:12]) + (", …" if len(self.choices) > 12 else "")
            return f"not one of {shown}{why}"
        if self.step:
            return f"not a multiple of {_num(self.step)}{why}"
        return "out of range"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def short_label(label: str) -> str:
    """"Steps (forward passes, fixed schedules)" -> "Steps"."""
    return label.split(" (")[0].split(":")[0].strip() or label


class Params(BaseModel):
    """Frozen, strict about unknown names; `replace` re-validates (model_copy would not)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def replace(self, **changes: Any) -> Params:
        return type(self)(**{**self.model_dump(), **changes})

    @classmethod
    def controls(cls) -> list[tuple[str, Any, dict]]:
        """(name, default, ui hints) per field, in declaration order."""
        out = []
        for name, field in cls.model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            out.append((name, field.default, dict(extra.get("ui", {"label": name}))))
        return out

    @classmethod
    def limits(cls, values: Mapping[str, Any], context: Context | None = None) -> dict[str, Limit]:  # noqa: ARG003
        """Per numeric field, the values that run given the other `values` and the model's `context`. Here: the
        controls' ranges (soft). A subclass tightens them with its rules (and calls this first)."""
        out = {}
        for name, _, hints in cls.controls():
            annotation = cls.model_fields[name].annotation
            if annotation in (int, float):
                out[name] = Limit(hints.get("minimum"), hints.get("maximum"), whole=annotation is int)
        return out

    @classmethod
    def adjust(cls, values: Mapping[str, Any], context: Context | None = None) -> tuple[dict[str, Any], list[str]]:
        """`values` brought to the nearest values that run, and one note per value changed ("Steps: 1000000 is
        above 80, the most that runs (answer length 80); set to 80."). Fields are fixed in declaration order and
        the limits re-derived after each change, so a new answer length re-bounds the steps."""
        values, notes = dict(values), []
        labels = {name: short_label(str(hints.get("label", name))) for name, _, hints in cls.controls()}
        for _ in range(3):  # a change can re-bound a field already passed (answer length -> steps): go again
            changed = False
            for name in cls.model_fields:
                limit = cls.limits(values, context).get(name)
                raw = values.get(name)
                if limit is None or name not in values:
                    continue
                if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
                    new = cls.model_fields[name].default
                    notes.append(f"{labels[name]}: {raw!r} is not a number; set back to {_num(new)}.")
                else:
                    new = limit.nearest(raw)
                    if new != raw or (limit.whole and not float(raw).is_integer()):
                        notes.append(f"{labels[name]}: {_num(raw)} is {limit.explain(raw)}; set to {_num(new)}.")
                changed |= new != raw or type(new) is not type(raw)
                values[name] = new
            if not changed:
                break
        return values, notes

    def check_context(self, context: Context) -> None:
        """ValueError naming every value a hard limit refuses (the rules, not the controls' ranges)."""
        values = self.model_dump()
        limits = type(self).limits(values, context)
        bad = [f"{name} = {_num(values[name])} is {limit.explain(values[name])}" for name, limit in limits.items()
               if not limit.soft and not limit.allows(values[name])]
        if bad:
            raise ValueError("; ".join(bad))

    def check(self, adapter: Any, prompt: str) -> None:
        """What only the model and the prompt can tell (the app and the CLI call it before decoding)."""
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        self.check_context(Context.of(adapter, prompt))

    @classmethod
    def from_strings(cls, pairs: list[str]) -> Params:
        """From CLI `key=value` strings; pydantic converts the types ("7" -> 7, "true" -> True)."""
        values: dict[str, str] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"--set wants key=value, got {pair!r}")
            if key.strip() not in cls.model_fields:
                raise ValueError(f"unknown parameter {key.strip()!r}; {cls.__name__} has: {', '.join(cls.model_fields)}")
            values[key.strip()] = value.strip()
        return cls.model_validate(values, strict=False)


def describe_error(error: Exception) -> str:
    """One line per problem: "steps: steps must be in [1, gen_length=80], got 0"."""
    if not isinstance(error, ValidationError):
        return str(error)
    parts = []
    for err in error.errors():
        field = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{field}: {msg}" if field else msg)
    return "; ".join(parts)
