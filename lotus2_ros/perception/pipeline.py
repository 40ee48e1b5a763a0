"""One camera frame in → geometry products out; the code the node, the bag tool and the demo share.

:meth:`PerceptionPipeline.process` runs (rectify) → preprocess → VAE encode → core predictor +
LCM per task → decode → products, and returns the coarse latents so a refinement can follow:
:meth:`PerceptionPipeline.start_refinement` gives a :class:`Refinement` that advances the detail
sharpener **one transformer forward at a time** (``step()``), so a scheduler can interleave it
with core frames and never make a new frame wait for more than one step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterator

import cv2
import numpy as np
import torch

from ..geometry.camera import PinholeCamera
from ..geometry.rectify import Rectifier
from ..geometry.scale_fit import metric_depth_from_disparity
from ..io.camera_info import CameraCalibration
from ..io.visualize import colorize_disparity, colorize_normals
from ..model.engine import Lotus2Engine, StageTimer
from .config import PerceptionConfig
from .metric import MetricFitter, MetricReference, ScaleFitReport

#: Stage names whose time is a network forward (everything else is pipeline overhead).
FORWARD_STAGES = ("encode", "core_", "lcm_", "sharpen_", "decode_")


@dataclass
class Frame:
    """One input image with what is known about it.

    Attributes:
        rgb: ``uint8`` ``[H,W,3]`` RGB.
        stamp_ns: Image stamp, int nanoseconds.
        frame_id: The image's optical frame.
        calibration: Raw camera model from camera_info (None if none has arrived).
        reference: Sparse metric data taken with the frame (LiDAR or a depth image), or None.
    """

    rgb: np.ndarray
    stamp_ns: int
    frame_id: str
    calibration: CameraCalibration | None = None
    reference: MetricReference | None = None


@dataclass
class PerceptionOutput:
    """Products for one frame, aligned with ``camera`` (the output resolution's intrinsics).

    Attributes:
        stamp_ns, frame_id: Copied from the input frame (a refined output keeps its frame's stamp).
        refined: True for detail-sharpener results.
        calibration: Calibration the outputs are aligned with, to publish as their camera_info: the
            input's (raw), the rectified camera's (``rectify``), scaled to the output resolution;
            None without camera_info.
        rgb: ``uint8`` ``[H,W,3]`` the (rectified) input at output resolution (cloud colours).
        disparity: ``float32`` ``[H,W]`` relative disparity in [0,1] (larger = nearer); None if no depth task.
        normals: ``float32`` ``[H,W,3]`` unit normals, ROS optical frame, NaN invalid; None if no normal task.
        depth_m: ``float32`` ``[H,W]`` metric depth in metres, NaN invalid; None without a metric reference.
        points_m: ``float32`` ``[H,W,3]`` metric points in the optical frame, NaN invalid; None unless
            metric depth and a camera exist.
        scale_shift: ``(s, t)`` of ``depth_m = 1/(s·d + t)`` when metric.
        scale_fit: The reference fit of this frame (LiDAR / depth image sources), for ``~/scale_fit``.
        depth_colorized, normals_colorized: ``uint8`` RGB images for viewers (None if disabled).
        timings_ms: Stage wall times; forward stages are listed in :data:`FORWARD_STAGES`.
    """

    stamp_ns: int
    frame_id: str
    refined: bool
    calibration: CameraCalibration | None
    rgb: np.ndarray
    disparity: np.ndarray | None = None
    normals: np.ndarray | None = None
    depth_m: np.ndarray | None = None
    points_m: np.ndarray | None = None
    scale_shift: tuple[float, float] | None = None
    scale_fit: ScaleFitReport | None = None
    depth_colorized: np.ndarray | None = None
    normals_colorized: np.ndarray | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def camera(self) -> PinholeCamera | None:
        """Intrinsics (and distortion, if raw) of the output images."""
        return self.calibration.camera if self.calibration is not None else None

    @property
    def overhead_ms(self) -> float:
        """Time spent outside network forwards."""
        return sum(v for k, v in self.timings_ms.items() if not k.startswith(FORWARD_STAGES))


@dataclass
class _FrameContext:
    """What a refinement needs from its frame's core pass."""

    frame: Frame
    rgb_out: np.ndarray
    calibration_out: CameraCalibration | None
    out_hw: tuple[int, int]
    coarse: dict[str, torch.Tensor]
    wanted: frozenset[str] | None


@lru_cache(maxsize=8)
def _ray_planes(camera: PinholeCamera) -> tuple[np.ndarray, np.ndarray]:
    """The x and y components of ``camera.pixel_rays()`` as contiguous ``[H,W]`` planes (z is 1)."""
    rays = camera.pixel_rays()  # [H,W,3], z = 1
    return np.ascontiguousarray(rays[..., 0]), np.ascontiguousarray(rays[..., 1])


def _points_from_depth(camera: PinholeCamera, depth_m: np.ndarray) -> np.ndarray:
    """``pixel_rays() * depth_m[..., None]``: ``[H,W,3]`` float32 points, NaN where the depth is NaN.

    Products on contiguous planes and one interleaving merge, several times faster than strided
    per-channel writes; z = 1 · depth is the depth itself (exact, NaN included).
    """
    ray_x, ray_y = _ray_planes(camera)
    depth = np.ascontiguousarray(depth_m, dtype=np.float32)
    return cv2.merge([ray_x * depth, ray_y * depth, depth])  # [H,W,3]


class PerceptionPipeline:
    """Runs the engine on frames and builds every product the node publishes."""

    def __init__(self, config: PerceptionConfig, engine: Lotus2Engine,
                 metric: Callable[[Frame, PerceptionOutput], tuple] | None = None):
        """Args:
            config: Pipeline parameters (may be replaced later with :meth:`reconfigure`).
            engine: A loaded engine with at least ``config.tasks``.
            metric: Gives ``((s, t) or None, ScaleFitReport or None)`` for a frame's relative output.
                Default: from ``config.metric_source`` (fixed values, or a :class:`MetricFitter` for
                LiDAR / depth-image references).
        """
        self.engine = engine
        self.config = config
        self.rectifier = Rectifier()
        self._metric = metric
        if metric is None and config.metric_source in ("lidar", "depth_image"):
            self._metric = MetricFitter(config)
        engine.check_request(tuple(config.tasks), config.sharpen_steps if config.sharpen_enabled else 0)

    def reconfigure(self, config: PerceptionConfig) -> None:
        """Use ``config`` from the next frame on; a changed fit setting restarts the metric fitter."""
        fit_fields = ("lidar_min_range_m", "lidar_max_range_m", "lidar_edge_window_px", "fit_min_points",
                      "fit_inlier_threshold", "fit_hold_time_s")
        if isinstance(self._metric, MetricFitter) and any(
                getattr(config, f) != getattr(self.config, f) for f in fit_fields):
            self._metric = MetricFitter(config)
        self.config = config

    # ------------------------------------------------------------------ core pass
    def process(self, frame: Frame, wanted: set[str] | None = None) -> tuple[PerceptionOutput, _FrameContext]:
        """Core predictor (+ LCM) for every task, decoded into products. Runs without autograd.

        Args:
            frame: The input.
            wanted: Output topics (``messages.OUTPUT_TOPICS`` names) someone listens to; products
                only they need (colourised images, the point cloud) are skipped when absent.
                None builds everything.
        """
        cfg, engine = self.config, self.engine
        timer = StageTimer(engine.device)
        rgb, cal = frame.rgb, frame.calibration
        if cal is not None and (cal.height_px, cal.width_px) != rgb.shape[:2]:
            raise ValueError(f"calibration is {cal.width_px}x{cal.height_px} but the image is "
                             f"{rgb.shape[1]}x{rgb.shape[0]}")
        if cal is not None and cfg.rectify:
            with timer("rectify"):
                rgb = self.rectifier.rectify(rgb, cal.camera, cal.R, cal.P)
            cal = CameraCalibration(cal.rectified_camera)
        with torch.inference_mode():
            with timer("preprocess"):
                x = engine.preprocess(rgb)  # [1,3,h,w]
            coarse = engine.coarse_latents(x, tuple(cfg.tasks), timer)
            process_hw = tuple(x.shape[-2:])
            out_hw = rgb.shape[:2] if cfg.output_resolution == "camera" else process_hw
            decoded = engine.finish(coarse, out_hw, timer)
        with timer("products"):
            rgb_out = rgb
            if out_hw != rgb.shape[:2]:
                rgb_out = cv2.resize(rgb, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_AREA)
                cal = cal.scaled(out_hw[1], out_hw[0]) if cal is not None else None
        ctx = _FrameContext(frame, rgb_out, cal, out_hw, coarse, None if wanted is None else frozenset(wanted))
        return self._products(ctx, decoded, refined=False, timer=timer), ctx

    # ------------------------------------------------------------------ refinement
    def start_refinement(self, ctx: _FrameContext, num_steps: int | None = None) -> "Refinement":
        """A stepwise detail-sharpener run on ``ctx``'s coarse latents."""
        steps = self.config.sharpen_steps if num_steps is None else num_steps
        return Refinement(self, ctx, steps)

    # ------------------------------------------------------------------ products
    def _products(self, ctx: _FrameContext, decoded: dict[str, np.ndarray], refined: bool,
                  timer: StageTimer) -> PerceptionOutput:
        cfg = self.config

        def want(topic: str) -> bool:
            return ctx.wanted is None or topic in ctx.wanted

        with timer("products"):
            out = PerceptionOutput(stamp_ns=ctx.frame.stamp_ns, frame_id=ctx.frame.frame_id, refined=refined,
                                   calibration=ctx.calibration_out, rgb=ctx.rgb_out)
            if "depth" in decoded:
                out.disparity = decoded["depth"][0]
            if "normal" in decoded:
                out.normals = decoded["normal"][0]
            if cfg.publish_colorized:
                if out.disparity is not None and want("depth/colorized"):
                    out.depth_colorized = colorize_disparity(out.disparity)
                if out.normals is not None and want("normals/colorized"):
                    out.normals_colorized = colorize_normals(out.normals)
        if out.disparity is not None:
            with timer("metric"):
                st, out.scale_fit = self._scale_shift(ctx.frame, out)
                if st is not None:
                    out.scale_shift = st
                    out.depth_m = metric_depth_from_disparity(out.disparity, *st, cfg.min_depth_m, cfg.max_depth_m)
            if out.depth_m is not None and out.camera is not None and cfg.publish_points and want("points"):
                with timer("points"):
                    out.points_m = _points_from_depth(out.camera, out.depth_m)  # [H,W,3], NaN stays NaN
        out.timings_ms = dict(timer.timings_ms)
        return out

    def _scale_shift(self, frame: Frame, out: PerceptionOutput) -> tuple:
        if self._metric is not None:
            return self._metric(frame, out)
        if self.config.metric_source == "fixed":
            return (self.config.fixed_scale, self.config.fixed_shift), None
        return None, None


class Refinement:
    """The detail sharpener for one frame, advanced one transformer forward per :meth:`step`."""

    def __init__(self, pipeline: PerceptionPipeline, ctx: _FrameContext, num_steps: int):
        self.pipeline = pipeline
        self.ctx = ctx
        self.stamp_ns = ctx.frame.stamp_ns
        self.timer = StageTimer(pipeline.engine.device)
        self.total_steps = num_steps * len(ctx.coarse)
        self.steps_done = 0
        self._latents = dict(ctx.coarse)
        self._steps = self._iterate(num_steps)

    @property
    def done(self) -> bool:
        return self.steps_done >= self.total_steps

    def _iterate(self, num_steps: int) -> Iterator[None]:
        for task in list(self._latents):
            steps = self.pipeline.engine.iter_sharpen(self._latents[task], task, num_steps)
            while True:
                with self.timer(f"sharpen_{task}"):  # a forward stage (FORWARD_STAGES)
                    z = next(steps, None)
                if z is None:
                    break
                self._latents[task] = z
                yield

    def step(self) -> bool:
        """Advance one sharpener step (one transformer forward); True once all steps are done."""
        if not self.done:
            with torch.inference_mode():
                next(self._steps)
            self.steps_done += 1
        return self.done

    def result(self) -> PerceptionOutput:
        """Finish the remaining steps, decode, and build the refined :class:`PerceptionOutput`."""
        while not self.step():
            pass
        with torch.inference_mode():
            decoded = self.pipeline.engine.finish(self._latents, self.ctx.out_hw, self.timer)
        return self.pipeline._products(self.ctx, decoded, refined=True, timer=self.timer)
