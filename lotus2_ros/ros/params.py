"""ROS parameters declared one-to-one from a frozen config dataclass (name, type, default, range)."""

from __future__ import annotations

import array
import dataclasses
import difflib
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..config_fields import ConfigError, field_default


def descriptor(f: dataclasses.Field) -> ParameterDescriptor:
    """A ParameterDescriptor carrying the field's description, choices, unit and numeric range."""
    meta = f.metadata
    text = meta["description"] + (f" [{meta['unit']}]" if meta["unit"] else "")
    d = ParameterDescriptor(name=f.name, description=text, read_only=bool(meta["read_only"]),
                            # YAML and the command line write 2 for 2.0: let rclpy accept an integer for
                            # a double; the config dataclass converts it and checks every value.
                            dynamic_typing=isinstance(f.default, float))
    if meta["choices"]:
        d.additional_constraints = "one of: " + ", ".join(map(str, meta["choices"]))
    if meta["range"]:
        lo, hi = meta["range"]
        if isinstance(f.default, int) and not isinstance(f.default, bool):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        elif isinstance(f.default, float):
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return d


def declare_config(node: Node, config_cls) -> Any:
    """Declare one parameter per field of ``config_cls`` and build a validated instance from them.

    Values come from overrides (``--ros-args -p`` / YAML) or the dataclass defaults. Raises
    :class:`~lotus2_ros.perception.config.ConfigError` naming the bad parameter.
    """
    values = {}
    for f in dataclasses.fields(config_cls):
        default = field_default(f)
        # An empty list carries no element type: declare it as the string array it is (its value
        # stays None until set, which means "empty" here).
        initial = Parameter.Type.STRING_ARRAY if isinstance(default, list) and not default else default
        try:
            param = node.declare_parameter(f.name, initial, descriptor(f))
        except Exception as err:  # rclpy raises its own type errors for a mistyped override
            raise ConfigError(f"parameter {f.name!r}: {err}") from err
        value = param.value
        if value is None and isinstance(default, list):
            value = []
        values[f.name] = plain_value(value)
    return config_cls(**values)


def plain_value(value: Any) -> Any:
    """A parameter value as the config dataclass takes it: arrays as lists of Python scalars.

    rclpy hands double and integer arrays over as ``array.array`` (set at run time) or lists
    (from overrides); both become lists.
    """
    if isinstance(value, (list, tuple, array.array)):
        return [v.item() if hasattr(v, "item") else v for v in value]
    return value


#: Parameters rclpy or the ROS tooling set on any node; never reported as unknown.
FOREIGN_PREFIXES = ("qos_overrides.",)


def check_overrides(node: Node) -> None:
    """Refuse parameter overrides that name no declared parameter (``sharpen_rate:=5``).

    rclpy silently ignores an override for a parameter the node never declares, so a misspelled
    name would leave the default in force without a word.

    Raises:
        ConfigError: Naming every unknown parameter and the nearest declared names.
    """
    overrides = getattr(node, "_parameter_overrides", {}) or {}
    unknown = sorted(n for n in overrides if not node.has_parameter(n) and not n.startswith(FOREIGN_PREFIXES))
    if not unknown:
        return
    declared = sorted(node._parameters) if hasattr(node, "_parameters") else []
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, declared, n=2, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
    raise ConfigError(f"unknown parameter(s) {', '.join(hints)}; see config/perception.yaml for the parameters "
                      "of this node")


def on_set_parameters(node: Node, get_config, set_config, read_only: frozenset[str]):
    """A set-parameters callback: validate the change on a copy; reject read-only ones with a reason."""

    names = None

    def callback(params: list[Parameter]) -> SetParametersResult:
        nonlocal names
        if names is None:
            names = {f.name for f in dataclasses.fields(get_config())}
        changes = {}
        for p in params:
            if p.name not in names:  # rclpy's own (use_sim_time, ...): not the configuration's business
                continue
            if p.name in read_only:
                return SetParametersResult(successful=False, reason=f"{p.name} cannot change at run time")
            changes[p.name] = plain_value(p.value)
        if not changes:
            return SetParametersResult(successful=True)
        try:
            new = get_config().replace(**changes)
        except (ConfigError, TypeError) as err:
            return SetParametersResult(successful=False, reason=str(err))
        set_config(new)
        return SetParametersResult(successful=True)

    return callback
