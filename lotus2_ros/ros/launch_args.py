"""Launch arguments → node parameters, for ``launch/perception.launch.py`` (ROS-free, testable).

Each node parameter a user sets per robot is a launch argument of the same name. An argument
left empty keeps the parameter file's value (``params_file``, the package's
``config/perception.yaml`` by default); a given one is converted to the parameter's type (from
:class:`~lotus2_ros.perception.config.PerceptionConfig`) and overrides it. Naming a LiDAR topic
(``lidar:=/lidar/points``) or a depth reference topic selects that metric source unless
``metric_source`` is given.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import yaml

from ..config_fields import field_default
from ..perception.config import PerceptionConfig

#: Node parameters the launch file offers as arguments (empty: the parameter file's value).
PARAMETER_ARGUMENTS = (
    "backend", "base_model", "weights", "device", "dtype", "tasks", "process_res", "sharpen_enabled", "sharpen_rate_hz",
    "sharpen_steps", "ensemble_size", "seed", "torch_threads", "host_threads", "image_transport", "qos_reliability", "require_camera_info", "rectify",
    "output_resolution", "publish_colorized", "publish_points", "min_depth_m", "max_depth_m", "metric_source",
    "extrinsic_source", "lidar_extrinsic", "metric_max_offset_ms", "max_image_px",
)
_FIELDS = {f.name: f for f in dataclasses.fields(PerceptionConfig)}


def describe(name: str) -> str:
    """The launch argument's description: the parameter's, plus what empty means."""
    return _FIELDS[name].metadata["description"] + " (empty: the value in params_file)"


def _typed(name: str, text: str) -> Any:
    default = field_default(_FIELDS[name])
    if isinstance(default, str):
        return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(f"launch argument {name}:={text!r} is not a value: {err}") from None
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:  # lists: tasks (strings), lidar_extrinsic (numbers)
        ok = isinstance(value, list)
        if ok and name == "lidar_extrinsic":
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            value = [float(v) for v in value] if ok else value
        elif ok:
            value = [str(v) for v in value]
    if not ok:
        raise ValueError(f"launch argument {name}:={text!r} must be a {type(default).__name__} "
                         f"like {default!r}")
    return value


def parameter_overrides(arguments: dict[str, str], *, lidar: str = "", depth_ref: str = "") -> dict[str, Any]:
    """Typed node parameters from launch argument texts (empty ones are left out).

    Args:
        arguments: ``{name: text}`` for names in :data:`PARAMETER_ARGUMENTS`.
        lidar: The LiDAR topic argument (non-empty selects ``metric_source: lidar``).
        depth_ref: The depth reference topic argument (non-empty selects ``depth_image``).

    Raises:
        ValueError: An argument that does not convert to its parameter's type (names it).
    """
    params = {name: _typed(name, text) for name, text in arguments.items() if name in _FIELDS and text != ""}
    if lidar and depth_ref:
        raise ValueError("give either lidar:= or depth_ref:=, not both")
    if "metric_source" not in params:
        if lidar:
            params["metric_source"] = "lidar"
        elif depth_ref:
            params["metric_source"] = "depth_image"
    return params
