"""Configuration of the perception pipeline and node: the single source of truth.

Every field of :class:`PerceptionConfig` is one ROS parameter of ``perception_node`` with the
same name, type, default, description and range (``lotus2_ros.ros.params`` declares them from
this class), and ``config/perception.yaml`` mirrors the defaults (a test keeps them equal).
Fields marked ``read_only`` (model, device, dtype, inputs) cannot change while the node runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config_fields import ConfigError, param_field as _f, read_only_names, replace_validated, validate_fields
from ..model.engine import DTYPES, MAX_SHARPEN_STEPS
from ..model.weights import TASKS


@dataclass(frozen=True)
class PerceptionConfig:
    """Parameters of the perception pipeline (one ROS parameter each, same name)."""

    # --- model (fixed for the node's lifetime) --------------------------------------------
    base_model: str = _f("", "FLUX.1-dev folder in diffusers layout", read_only=True)
    weights: str = _f("", "folder with the Lotus-2 files and exported prompt embeddings", read_only=True)
    device: str = _f("cuda", "torch device: cpu, cuda or cuda:N", read_only=True)
    dtype: str = _f("bf16", "model precision", read_only=True, choices=tuple(DTYPES))
    tasks: list = _f(["depth", "normal"], "predictions to make: depth and/or normal", read_only=True)
    process_res: int = _f(1024, "cap on the long edge the model sees (never upscales)", read_only=True,
                          range_=(16, 4096), unit="px")
    sharpen_enabled: bool = _f(True, "load the detail sharpener and refine frames at sharpen_rate_hz",
                               read_only=True)
    # --- inputs ----------------------------------------------------------------------------
    image_transport: str = _f("raw", "subscribe to 'image' (raw) or 'image/compressed'", read_only=True,
                              choices=("raw", "compressed"))
    qos_reliability: str = _f("best_effort", "input QoS reliability (sensor data: best_effort)",
                              read_only=True, choices=("best_effort", "reliable"))
    require_camera_info: bool = _f(True, "drop images until a matching camera_info has arrived; without it "
                                   "only disparity and normals are published", read_only=True)
    rectify: bool = _f(False, "undistort/rectify raw images with camera_info D, K, R, P before the model")
    # --- scheduling --------------------------------------------------------------------------
    sharpen_rate_hz: float = _f(1.0, "rate of refined (sharpened) frames; 0 disables refinement",
                                range_=(0.0, 100.0), unit="Hz")
    sharpen_steps: int = _f(4, "detail-sharpener Euler steps per refined frame", range_=(1, MAX_SHARPEN_STEPS))
    # --- outputs -----------------------------------------------------------------------------
    output_resolution: str = _f("camera", "publish at camera resolution (aligned with camera_info) or at "
                                "processing resolution (with a scaled camera_info)", choices=("camera", "processing"))
    publish_colorized: bool = _f(True, "publish colourised depth and normal images for viewers")
    publish_points: bool = _f(True, "publish the metric point cloud (only when a metric reference exists)")
    min_depth_m: float = _f(0.1, "metric depths below this are invalid (NaN)", range_=(0.0, 1000.0), unit="m")
    max_depth_m: float = _f(100.0, "metric depths beyond this are invalid (NaN)", range_=(0.0, 10000.0), unit="m")
    # --- metric reference ----------------------------------------------------------------------
    metric_source: str = _f("none", "metric reference: none (relative only) or fixed (depth = 1/(s*d + t))",
                            choices=("none", "fixed"))
    fixed_scale: float = _f(1.0, "s of depth_m = 1/(s*d + t) when metric_source is fixed", range_=(0.0, 1e6))
    fixed_shift: float = _f(0.0, "t of depth_m = 1/(s*d + t) when metric_source is fixed", range_=(-1e6, 1e6))
    # --- diagnostics ---------------------------------------------------------------------------
    diagnostics_period_s: float = _f(1.0, "period of /diagnostics messages", range_=(0.1, 60.0), unit="s")

    def __post_init__(self):
        validate_fields(self)
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks must be a non-empty list of distinct values from {TASKS}, got {self.tasks!r}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.min_depth_m >= self.max_depth_m:
            raise ConfigError(f"min_depth_m ({self.min_depth_m}) must be below max_depth_m ({self.max_depth_m})")
        if self.metric_source == "fixed" and not self.fixed_scale > 0:
            raise ConfigError(f"fixed_scale must be > 0 when metric_source is fixed, got {self.fixed_scale}")

    def replace(self, **changes: Any) -> "PerceptionConfig":
        """A validated copy with ``changes`` (raises :class:`ConfigError`)."""
        return replace_validated(self, **changes)

    @property
    def metric_enabled(self) -> bool:
        return self.metric_source != "none"


READ_ONLY = read_only_names(PerceptionConfig)
__all__ = ["ConfigError", "PerceptionConfig", "READ_ONLY"]
