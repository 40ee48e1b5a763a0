"""``--config FILE``: the node's parameter file (``config/perception.yaml``) as a :class:`PerceptionConfig`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ..perception.config import ConfigError, PerceptionConfig

#: Sections of a ROS 2 parameter file that apply to the perception node, in order of preference.
NODE_SECTIONS = ("/**", "lotus2_perception", "/lotus2/lotus2_perception", "/lotus2_perception")


def load_perception_config(path: Path | str, **overrides) -> PerceptionConfig:
    """Read a ROS 2 parameter file (or a flat mapping of parameters) into a validated config.

    Accepts ``{/**: {ros__parameters: {...}}}`` as ``config/perception.yaml`` has it, a section
    named after the node (``lotus2_perception``, with or without namespace), or the parameters at
    the top level. ``overrides`` (e.g. from command-line options) replace file values.

    Raises:
        ConfigError: Unreadable file, unknown parameter names or invalid values (named).
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(doc).__name__}")
    params = doc
    sections = {k: v for k, v in doc.items() if isinstance(v, dict) and "ros__parameters" in v}
    if sections:
        name = next((n for n in NODE_SECTIONS if n in sections), None)
        if name is None:
            if len(sections) > 1:
                raise ConfigError(f"config file {path} has sections {sorted(sections)}; none is for the "
                                  f"perception node ({', '.join(NODE_SECTIONS)})")
            name = next(iter(sections))
        params = sections[name]["ros__parameters"] or {}
    known = {f.name for f in dataclasses.fields(PerceptionConfig)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown parameter(s) {unknown}")
    return PerceptionConfig(**{**params, **overrides})
