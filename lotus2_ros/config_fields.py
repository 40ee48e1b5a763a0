"""Dataclass fields that double as ROS parameters: description, range, choices, unit, read-only.

A component's configuration is a frozen dataclass whose fields are made with :func:`param_field`;
``lotus2_ros.ros.params`` declares one ROS parameter per field from this metadata, and
:func:`validate_fields` checks an instance (types, choices, ranges) with errors that name the
parameter.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the parameter and the value."""


def param_field(default, description: str, *, read_only: bool = False, choices: tuple | None = None,
                range_: tuple[float, float] | None = None, unit: str = ""):
    """A dataclass field with the metadata a ROS parameter declaration needs."""
    meta = {"description": description, "read_only": read_only, "choices": choices, "range": range_, "unit": unit}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def field_default(f: dataclasses.Field) -> Any:
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def check_value(f: dataclasses.Field, value: Any) -> None:
    """Check one field's type, choices and range; raise :class:`ConfigError` naming it."""
    want = type(field_default(f))
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ConfigError(f"parameter {f.name!r} must be {want.__name__}, got {value!r}")
    if want is float and not math.isfinite(value):
        raise ConfigError(f"parameter {f.name!r} must be finite, got {value!r}")
    choices, range_ = f.metadata["choices"], f.metadata["range"]
    if choices and value not in choices:
        raise ConfigError(f"parameter {f.name!r} must be one of {choices}, got {value!r}")
    if range_ and not range_[0] <= value <= range_[1]:
        raise ConfigError(f"parameter {f.name!r} must be in [{range_[0]}, {range_[1]}], got {value!r}")


def validate_fields(obj: Any) -> None:
    """Coerce ints given for float fields (YAML writes 1 for 1.0) and check every field."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(field_default(f), float) and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(obj, f.name, float(value))
        check_value(f, getattr(obj, f.name))


def replace_validated(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that rejects unknown names with :class:`ConfigError`."""
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = [k for k in changes if k not in names]
    if unknown:
        raise ConfigError(f"unknown parameter(s) {unknown}")
    return dataclasses.replace(obj, **changes)


def read_only_names(cls) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls) if f.metadata["read_only"])


def parameters_markdown(cls) -> str:
    """A Markdown table of a config dataclass's parameters: name, type, default, unit/range, meaning."""
    rows = ["| parameter | type | default | unit / range | description |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        meta, default = f.metadata, field_default(f)
        kind = {bool: "bool", int: "int", float: "double", str: "string"}.get(type(default), "double[] / string[]")
        if isinstance(default, list):
            kind = "string[]" if all(isinstance(v, str) for v in default) else "double[]"
        limits = meta["unit"]
        if meta["range"]:
            limits = (limits + " " if limits else "") + f"{meta['range'][0]} … {meta['range'][1]}"
        if meta["choices"]:
            limits = " / ".join(map(str, meta["choices"]))
        text = meta["description"] + (" (fixed at start-up)" if meta["read_only"] else "")
        shown = str(default).lower() if isinstance(default, bool) else (f'"{default}"' if isinstance(default, str) else default)
        rows.append(f"| `{f.name}` | {kind} | `{shown}` | {limits} | {text} |")
    return "\n".join(rows)
