"""Configuration of the perception pipeline and node: the single source of truth.

Every field of :class:`PerceptionConfig` is one ROS parameter of ``perception_node`` with the
same name, type, default, description and range (``lotus2_ros.ros.params`` declares them from
this class), and ``config/perception.yaml`` mirrors the defaults (a test keeps them equal).
Fields marked ``read_only`` (model, device, dtype, inputs) cannot change while the node runs.
Model-intrinsic settings (``tasks``, ``process_res``, ``sharpen_steps``) default to "the model's
own" (empty / 0), resolved when the model is loaded (:mod:`lotus2_ros.model.spec`). Importing this
module never imports torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config_fields import ConfigError, read_only_names, replace_validated, validate_fields
from ..config_fields import param_field as _f
from ..geometry.transforms import rigid_transform
from ..model.spec import BACKENDS, DTYPE_NAMES, MAX_REFINE_STEPS, TASKS

#: ``process_res`` values with a special meaning.
PROCESS_RES_MODEL_DEFAULT, PROCESS_RES_NO_CAP = 0, -1


@dataclass(frozen=True)
class PerceptionConfig:
    """Parameters of the perception pipeline (one ROS parameter each, same name)."""

    # --- model (fixed for the node's lifetime) --------------------------------------------
    backend: str = _f("lotus2", "model family: lotus2 (FLUX.1-dev + Lotus-2 files, a data-centre GPU) or lotus1 "
                      "(Stable Diffusion 2 Lotus-D/G pipeline folders, a small GPU)", read_only=True,
                      choices=BACKENDS)
    base_model: str = _f("", "lotus2: the FLUX.1-dev folder in diffusers layout (lotus1: empty)", read_only=True)
    weights: str = _f("", "lotus2: the Lotus-2 files + exported prompt embeddings; lotus1: a released pipeline "
                      "folder, or a folder holding one per task", read_only=True)
    device: str = _f("cuda", "torch device: cpu, cuda or cuda:N", read_only=True)
    dtype: str = _f("bf16", "model precision", read_only=True, choices=DTYPE_NAMES)
    tasks: list = _f([], "predictions to make: depth and/or normal (empty: the model's tasks)", read_only=True)
    process_res: int = _f(0, "the long edge the model sees: lotus2 caps it (never upscaling), lotus1 resizes to it "
                          "as the official inference does (0: the model's default, -1: the input size)", read_only=True,
                          range_=(-1, 4096), unit="px")
    sharpen_enabled: bool = _f(True, "allow the refinement (lotus2: load the detail sharpener; lotus1: the Lotus-G "
                               "ensemble) and refine frames at sharpen_rate_hz", read_only=True)
    seed: int = _f(0, "lotus1 Lotus-G: seed of the per-frame noise, drawn as the official pipeline draws it (the "
                   "ensemble uses seed+1, seed+2, ...)", read_only=True, range_=(0, 2**31 - 1))
    torch_threads: int = _f(0, "CPU threads for torch (0: torch's default); 1 helps a small CPU shared with other "
                            "nodes", read_only=True, range_=(0, 256))
    host_threads: int = _f(0, "CPU threads for the per-pixel work around a CPU model (the normals made beside the "
                           "depth products, point clouds; 0: the cores, up to 4; 1: the frame's own thread only)",
                           read_only=True, range_=(0, 64))
    # --- inputs ----------------------------------------------------------------------------
    image_transport: str = _f("raw", "subscribe to 'image' (raw) or 'image/compressed'", read_only=True,
                              choices=("raw", "compressed"))
    qos_reliability: str = _f("best_effort", "input QoS reliability (sensor data: best_effort)",
                              read_only=True, choices=("best_effort", "reliable"))
    require_camera_info: bool = _f(True, "drop images until a matching camera_info has arrived; without it "
                                   "only disparity and normals are published", read_only=True)
    max_image_px: int = _f(16_777_216, "images (raw, compressed, depth reference) with more pixels are refused, "
                           "compressed ones by the size they declare, before decoding", range_=(256, 268_435_456),
                           unit="px")
    rectify: bool = _f(True, "undistort/rectify raw images with camera_info D, K, R, P before the model, so that "
                       "outputs follow the rectified camera P (what depth_image_proc and image_geometry expect); "
                       "false keeps them aligned with the raw distorted image (K, D); images that are rectified "
                       "already (camera_model) are used as they are")
    camera_model: str = _f("auto", "camera model the input images follow: raw (camera_info K and D), rectified (the "
                           "full P after R, e.g. image_rect, whatever D says) or auto (rectified when D is all zero "
                           "and R or P differs from [K|0])", choices=("auto", "raw", "rectified"))
    # --- scheduling --------------------------------------------------------------------------
    sharpen_rate_hz: float = _f(1.0, "rate of refined (sharpened) frames; 0 disables refinement",
                                range_=(0.0, 100.0), unit="Hz")
    sharpen_steps: int = _f(0, "lotus2: detail-sharpener Euler steps per refined frame (0: the model's default)",
                            range_=(0, MAX_REFINE_STEPS))
    ensemble_size: int = _f(0, "lotus1 Lotus-G: seeds per refined frame, the per-frame one included; their mean "
                            "(or median) and standard deviation (~/refined/depth/uncertainty) are the refined "
                            "output (0: the model's default, none; else 2..10)", range_=(0, MAX_REFINE_STEPS))
    ensemble_reduce: str = _f("mean", "lotus1 Lotus-G: how the ensemble's members are combined", choices=("mean", "median"))
    # --- outputs -----------------------------------------------------------------------------
    output_resolution: str = _f("camera", "publish at camera resolution (aligned with camera_info) or at "
                                "processing resolution (with a scaled camera_info)", choices=("camera", "processing"))
    publish_colorized: bool = _f(True, "publish colourised depth and normal images for viewers")
    publish_points: bool = _f(True, "publish the metric point cloud (only when a metric reference exists)")
    min_depth_m: float = _f(0.1, "metric depths below this are invalid (NaN)", range_=(0.0, 1000.0), unit="m")
    max_depth_m: float = _f(100.0, "metric depths beyond this are invalid (NaN)", range_=(0.0, 10000.0), unit="m")
    # --- relative outputs without a metric reference --------------------------------------------
    relative_alignment: str = _f("auto", "keep relative outputs on one scale through a sequence: each frame's "
                                 "prediction is aligned (scale and shift, robustly, in the output's space) to a running "
                                 "reference of the previous frames, reset on a scene change; auto: on when "
                                 "metric_source is none or fixed", choices=("auto", "on", "off"))
    alignment_motion: str = _f("auto", "move the running reference into each new view before the fit, the camera's "
                               "motion estimated from the images (tracked corners, essential matrix with the "
                               "camera_info K; disparity outputs only; costs ~5-15 ms per frame on a CPU); auto: on "
                               "when metric_source is none", choices=("auto", "on", "off"))
    alignment_min_inliers: float = _f(0.5, "scene change: fewer cells of the downsampled prediction than this fraction "
                                      "agree with the running reference (within 5 % of its spread) resets it",
                                      range_=(0.0, 1.0))
    alignment_max_gap_s: float = _f(2.0, "a frame this long after the previous one of its stream resets the running "
                                    "reference", range_=(0.01, 3600.0), unit="s")
    # --- metric reference ----------------------------------------------------------------------
    metric_source: str = _f("none", "metric reference: none (relative only), fixed (depth = 1/(s*d + t) with "
                            "fixed_scale/fixed_shift), lidar ('lidar/points') or depth_image ('depth_ref/image', "
                            "32FC1 m or 16UC1 mm, registered to the camera)", read_only=True,
                            choices=("none", "fixed", "lidar", "depth_image"))
    fixed_scale: float = _f(1.0, "s of depth_m = 1/(s*d + t) when metric_source is fixed", range_=(0.0, 1e6))
    fixed_shift: float = _f(0.0, "t of depth_m = 1/(s*d + t) when metric_source is fixed", range_=(-1e6, 1e6))
    metric_max_offset_ms: float = _f(50.0, "largest |image stamp - reference stamp| to pair them",
                                     range_=(0.0, 10000.0), unit="ms")
    extrinsic_source: str = _f("auto", "LiDAR -> camera transform from TF (tf2_ros, frame ids of the messages), "
                               "from lidar_extrinsic, or auto (TF when tf2_ros is installed)", read_only=True,
                               choices=("auto", "tf", "parameter"))
    lidar_extrinsic: list = _f([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "T_camera_lidar (LiDAR -> camera optical frame): "
                               "x y z qx qy qz qw (7 values, m) or a row-major 4x4 matrix (16 values)")
    lidar_min_range_m: float = _f(0.3, "LiDAR points nearer than this (camera z) are ignored", range_=(0.0, 1000.0),
                                  unit="m")
    lidar_max_range_m: float = _f(120.0, "LiDAR points farther than this (camera z) are ignored",
                                  range_=(0.0, 10000.0), unit="m")
    lidar_edge_window_px: int = _f(2, "reject reference points whose prediction varies strongly within this "
                                   "many pixels (depth edges); 0 turns the test off", range_=(0, 32), unit="px")
    fit_min_points: int = _f(30, "fewer usable reference points give no metric output", range_=(3, 1000000))
    fit_inlier_threshold: float = _f(0.1, "robust-fit inlier threshold, relative depth error", range_=(0.001, 1.0))
    fit_hold_time_s: float = _f(1.0, "metric outputs stop this long after the last valid fit", range_=(0.0, 60.0),
                                unit="s")
    # --- diagnostics ---------------------------------------------------------------------------
    diagnostics_period_s: float = _f(1.0, "period of /diagnostics messages", range_=(0.1, 60.0), unit="s")

    def __post_init__(self):
        validate_fields(self)
        if any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks must be a list of distinct values from {TASKS} (empty: the model's tasks), "
                              f"got {self.tasks!r}")
        if 0 < self.process_res < 16:
            raise ConfigError(f"process_res must be >= 16 (or 0: the model's default, -1: no cap), "
                              f"got {self.process_res}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if self.min_depth_m >= self.max_depth_m:
            raise ConfigError(f"min_depth_m ({self.min_depth_m}) must be below max_depth_m ({self.max_depth_m})")
        if len(self.lidar_extrinsic) not in (7, 16) or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in self.lidar_extrinsic):
            raise ConfigError(f"lidar_extrinsic must hold 7 (x y z qx qy qz qw) or 16 finite numbers, "
                              f"got {self.lidar_extrinsic!r}")
        try:
            rigid_transform(self.lidar_extrinsic)
        except ValueError as err:
            raise ConfigError(f"lidar_extrinsic: {err}") from None
        if self.lidar_min_range_m >= self.lidar_max_range_m:
            raise ConfigError(f"lidar_min_range_m ({self.lidar_min_range_m}) must be below lidar_max_range_m "
                              f"({self.lidar_max_range_m})")
        if self.ensemble_size == 1:
            raise ConfigError("ensemble_size must be 0 (the model's default) or 2..10 (an ensemble of one is the "
                              "per-frame prediction), got 1")
        if self.metric_source == "fixed" and not self.fixed_scale > 0:
            raise ConfigError(f"fixed_scale must be > 0 when metric_source is fixed, got {self.fixed_scale}")

    def replace(self, **changes: Any) -> "PerceptionConfig":
        """A validated copy with ``changes`` (raises :class:`ConfigError`)."""
        return replace_validated(self, **changes)

    @property
    def metric_enabled(self) -> bool:
        return self.metric_source != "none"

    @property
    def T_camera_lidar(self) -> np.ndarray:
        """``lidar_extrinsic`` as a ``[4,4]`` transform (LiDAR → camera optical frame)."""
        return rigid_transform(self.lidar_extrinsic)

    @property
    def input_rectified(self) -> bool | None:
        """Whether the input images are rectified (``camera_model``): None leaves it to the camera_info rule."""
        return {"auto": None, "raw": False, "rectified": True}[self.camera_model]

    @property
    def aligns_relative(self) -> bool:
        """Whether relative outputs are aligned over time (``relative_alignment``, ``auto`` resolved)."""
        if self.relative_alignment == "auto":
            return self.metric_source in ("none", "fixed")
        return self.relative_alignment == "on"

    @property
    def aligns_with_motion(self) -> bool:
        """Whether the aligner moves its reference with the camera's motion (``alignment_motion``, ``auto`` resolved)."""
        if self.alignment_motion == "auto":
            return self.metric_source == "none"
        return self.alignment_motion == "on"

    def model_tasks(self) -> tuple[str, ...] | None:
        """``tasks`` for the model loader: None means the model's own."""
        return tuple(self.tasks) or None

    def model_process_res(self) -> int | None:
        """``process_res`` for the model loader: None means the model's default (see :meth:`no_cap`)."""
        return self.process_res if self.process_res > 0 else None

    @property
    def refine_field(self) -> str:
        """The parameter holding the refinement steps: ``ensemble_size`` (lotus1) or ``sharpen_steps``."""
        return "ensemble_size" if self.backend == "lotus1" else "sharpen_steps"

    @property
    def refine_setting(self) -> int:
        """The configured refinement steps (0: the model's default)."""
        return getattr(self, self.refine_field)

    @property
    def no_cap(self) -> bool:
        return self.process_res == PROCESS_RES_NO_CAP


READ_ONLY = read_only_names(PerceptionConfig)
__all__ = ["ConfigError", "PerceptionConfig", "READ_ONLY"]
