"""Metric references for the pipeline: a sparse LiDAR cloud or depth image → the scale/shift of a frame.

For every frame with reference data, :class:`MetricFitter` samples the prediction at the
reference points (LiDAR: projected with the camera model the outputs are aligned with, with the
parallax-occlusion and depth-edge tests; depth image: its valid pixels), fits
``1/z ≈ s·d + t`` robustly, and passes the fit through a temporal filter; the frame gets metric
outputs only while the filtered state is valid (after the hold time without a valid fit, they
stop). Live and refined frames have separate filters, so a refined frame — older than the live
stream — never resets the live state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry.calibration import CameraCalibration
from ..geometry.camera_model import CameraModel
from ..geometry.lidar_projection import LidarProjection, LidarProjectionConfig, project_lidar_points, sample_disparity
from ..geometry.scale_fit import FitResult, ScaleFitConfig, fit_disparity_affine
from ..geometry.temporal_filter import FilteredScale, ScaleFilterConfig, ScaleShiftFilter
from .config import PerceptionConfig


@dataclass(frozen=True)
class MetricReference:
    """Sparse metric data taken with a frame.

    Attributes:
        points_lidar_m: ``[N,3]`` LiDAR points in the LiDAR frame, metres (or None).
        T_camera_lidar: ``[4,4]`` LiDAR → camera optical frame transform (with ``points_lidar_m``).
        depth_m: ``[H,W]`` sparse metric depth image registered to the camera, NaN where empty
            (or None).
        stamp_ns: Stamp of the reference data, int nanoseconds.
    """

    points_lidar_m: np.ndarray | None = None
    T_camera_lidar: np.ndarray | None = None
    depth_m: np.ndarray | None = None
    stamp_ns: int = 0


@dataclass(frozen=True)
class ScaleFitReport:
    """What ``~/scale_fit`` publishes for one frame.

    ``scale``/``shift`` are the values the metric outputs used (the filtered state) when
    ``valid``; otherwise this frame's raw fit (NaN if the fit failed). ``reason`` says why not valid.
    """

    stamp_ns: int
    frame_id: str
    scale: float
    shift: float
    num_points: int
    num_inliers: int
    rmse_m: float
    abs_rel: float
    valid: bool
    filtered: bool
    reason: str
    fit_space: str = "disparity"


class MetricFitter:
    """Turns a frame's reference data and relative prediction into ``(s, t)`` (or None)."""

    def __init__(self, config: PerceptionConfig):
        self.projection_config = LidarProjectionConfig(min_range_m=config.lidar_min_range_m,
                                                       max_range_m=config.lidar_max_range_m,
                                                       edge_window_px=config.lidar_edge_window_px)
        self.fit_config = ScaleFitConfig(min_points=config.fit_min_points,
                                         inlier_threshold=config.fit_inlier_threshold)
        filter_config = ScaleFilterConfig(hold_ns=int(config.fit_hold_time_s * 1e9))
        self.filters = {False: ScaleShiftFilter(filter_config), True: ScaleShiftFilter(filter_config)}

    def __call__(self, frame, out) -> tuple[tuple[float, float] | None, ScaleFitReport | None]:
        """``(scale_shift or None, report or None)`` for a pipeline output ``out`` of ``frame``."""
        ref: MetricReference | None = getattr(frame, "reference", None)
        filt = self.filters[out.refined]
        if ref is None or out.disparity is None:
            state = filt.state(out.stamp_ns)  # no data this frame: the state holds until it expires
            return (_st(state), None)
        fit = self._fit(ref, out)
        state = filt.update(fit, out.stamp_ns)
        report = ScaleFitReport(
            stamp_ns=out.stamp_ns, frame_id=out.frame_id,
            scale=state.scale if state.valid else fit.scale, shift=state.shift if state.valid else fit.shift,
            num_points=fit.num_points, num_inliers=fit.num_inliers, rmse_m=fit.rmse_m, abs_rel=fit.abs_rel,
            valid=state.valid, filtered=state.valid, reason=fit.reason or state.reason)
        return _st(state), report

    def project(self, ref: MetricReference, calibration: CameraCalibration) -> LidarProjection:
        """The LiDAR points of ``ref`` the camera sees, in the image ``calibration`` describes.

        The camera model is the one the outputs are aligned with (the pipeline writes
        ``calibration`` so that the camera_info rule reads it: raw ``K`` + ``D``, or the full ``P``
        after ``R``); the depth window, parallax-occlusion test and view margin are this fitter's.
        ``lotus2 lidar-overlay`` draws exactly these points.
        """
        model = CameraModel.from_calibration(calibration)
        if model.rectified:
            return project_lidar_points(ref.points_lidar_m, ref.T_camera_lidar, model.camera, rectified=True,
                                        P=calibration.P, R=calibration.R, config=self.projection_config)
        return project_lidar_points(ref.points_lidar_m, ref.T_camera_lidar, model.camera, rectified=False,
                                    config=self.projection_config)

    def _fit(self, ref: MetricReference, out) -> FitResult:
        if ref.points_lidar_m is not None:
            if out.calibration is None:
                return fit_disparity_affine(np.zeros(0, np.float32), np.zeros(0, np.float32), self.fit_config)
            projection = self.project(ref, out.calibration)
            samples = sample_disparity(out.disparity, projection, self.projection_config)
            return fit_disparity_affine(samples.disparity, samples.z_m, self.fit_config)
        depth = ref.depth_m
        if depth.shape != out.disparity.shape:
            depth = cv2.resize(depth, out.disparity.shape[::-1], interpolation=cv2.INTER_NEAREST)
        valid = np.isfinite(depth) & (depth > 0)
        return fit_disparity_affine(out.disparity[valid], depth[valid], self.fit_config)


def _st(state: FilteredScale) -> tuple[float, float] | None:
    if state.valid and math.isfinite(state.scale) and math.isfinite(state.shift):
        return (state.scale, state.shift)
    return None
