"""Metric references for the pipeline: a sparse LiDAR cloud or depth image → the scale/shift of a frame.

For every frame with reference data, :class:`MetricFitter` samples the prediction at the
reference points (LiDAR: projected with the camera model the outputs are aligned with, with the
parallax-occlusion and depth-edge tests; depth image: its valid pixels), fits
``1/z ≈ s·d + t`` robustly, and passes the fit through a temporal filter; the frame gets metric
outputs only while the filtered state is valid (after the hold time without a valid fit, they
stop). The fit is in the model's output space: ``1/z ≈ s·d + t`` for disparity models,
``z ≈ s·d + t`` for depth models (Lotus-1 ``v1-0``). Live and refined frames have separate filters, so a refined frame — older than the live
stream — never resets the live state.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry.calibration import CameraCalibration
from ..geometry.camera_model import CameraModel
from ..geometry.lidar_projection import LidarProjection, LidarProjectionConfig, project_lidar_points, sample_disparity
from ..geometry.scale_fit import FitReason, FitResult, ScaleFitConfig, fit_affine, invalid_fit
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
    ``valid``; otherwise this frame's raw fit (NaN if the fit failed). ``reason_code``
    (:class:`~lotus2_ros.geometry.scale_fit.FitReason`) and ``reason`` (the same in words, with
    the figures) say why this frame's own fit was not used; ``valid`` can still be true then,
    while the filtered state of earlier fits holds (``fit_hold_time_s``).
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
    reason_code: int = FitReason.OK

    @property
    def reason_label(self) -> str:
        """``ok``, ``too_few_inliers``, … (:attr:`FitReason.label`)."""
        return FitReason(self.reason_code).label


def fit_reason_counter(report: ScaleFitReport) -> str | None:
    """The diagnostics counter of a frame whose fit was not used (``fits_not_used_<reason>``), else None.

    The node adds one to it per such frame (``/diagnostics``), the bag tool per output set.
    """
    return None if report.reason_code == FitReason.OK else f"fits_not_used_{report.reason_label}"


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
        if ref is None or out.relative is None:
            state = filt.state(out.stamp_ns)  # no data this frame: the state holds until it expires
            return (_st(state), None)
        fit = self._fit(ref, out)
        state = filt.update(fit, out.stamp_ns)
        code, reason = fit.reason_code, fit.reason
        if fit.valid and state.decision == "rejected":
            code = FitReason.REJECTED_BY_FILTER
            reason = (f"rejected by the temporal filter: the fit differs from the filtered state by more than "
                      f"{filt.config.gate:.0%} in depth ({filt.config.reinit_count} agreeing fits in a row "
                      "re-initialise it)")
        report = ScaleFitReport(
            stamp_ns=out.stamp_ns, frame_id=out.frame_id,
            scale=state.scale if state.valid else fit.scale, shift=state.shift if state.valid else fit.shift,
            num_points=fit.num_points, num_inliers=fit.num_inliers, rmse_m=fit.rmse_m, abs_rel=fit.abs_rel,
            valid=state.valid, filtered=state.valid, reason=reason or state.reason, reason_code=int(code),
            fit_space=fit.fit_space)
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
        space, relative = out.relative_kind, out.relative  # fitted in the model's own output space
        if ref.points_lidar_m is not None:
            if out.calibration is None:
                return invalid_fit(FitReason.NO_CAMERA_INFO, "no camera_info: the LiDAR cannot be projected",
                                   fit_space=space)
            projection = self.project(ref, out.calibration)
            if projection.num_in_view == 0:
                p = self.projection_config
                return invalid_fit(FitReason.NO_POINTS_IN_VIEW, (
                    f"no LiDAR point in view: none of {projection.num_points} points lies in the image within "
                    f"{p.min_range_m:g}..{p.max_range_m:g} m (check the extrinsic / TF and frame ids; "
                    "lotus2 lidar-overlay shows where the points land)"), fit_space=space)
            samples = sample_disparity(relative, projection, self.projection_config)
            fit = fit_affine(samples.disparity, samples.z_m, self.fit_config, space)
            if fit.reason_code == FitReason.TOO_FEW_POINTS:
                fit = dataclasses.replace(fit, reason=(
                    f"too few points: {fit.num_points} usable < fit_min_points={self.fit_config.min_points} "
                    f"({projection.num_in_view} in view, {projection.num_occluded} hidden by the camera-LiDAR "
                    f"parallax, {samples.num_edge_rejected} on depth edges or without a prediction)"))
            return fit
        depth = ref.depth_m
        if depth.shape != relative.shape:
            depth = cv2.resize(depth, relative.shape[::-1], interpolation=cv2.INTER_NEAREST)
        valid = np.isfinite(depth) & (depth > 0)
        if not valid.any():
            return invalid_fit(FitReason.NO_POINTS_IN_VIEW, "the depth reference has no valid pixel", fit_space=space)
        return fit_affine(relative[valid], depth[valid], self.fit_config, space)


def _st(state: FilteredScale) -> tuple[float, float] | None:
    if state.valid and math.isfinite(state.scale) and math.isfinite(state.shift):
        return (state.scale, state.shift)
    return None
