"""The typed config every method's parameters derive from (pydantic), with UI hints the app reads.

    class MyParams(Params):
        k: int = ui(5, "K (samples at most)", 1, 9)

A field's `ui(...)` hint (label, bounds, step, `advanced`) lets the app build the method's controls and the
CLI parse `--set k=7`, with no per-method wiring. Validation errors are pydantic `ValidationError`s (a
`ValueError`); `describe_error` turns one into a line a user can act on.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


def ui(default: Any, label: str, minimum: float | None = None, maximum: float | None = None, step: float | None = None,
       advanced: bool = False, help: str | None = None) -> Any:
    """A field with the hints the app builds its control from (bounds are enforced by the method's checks)."""
    hints = {"label": label, "minimum": minimum, "maximum": maximum, "step": step, "advanced": advanced}
    return Field(default, description=help or label, json_schema_extra={"ui": {k: v for k, v in hints.items()
                                                                              if v is not None}})


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
