"""Why a frame's fit was not used: the reason code and text on ~/scale_fit, in the export, counted.

The metric stage runs on hand-made outputs (no model): the disparity is an exact affine map of
the true inverse depth of a rendered scene, so every fit is valid unless the case breaks it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lotus2_ros.geometry import FitReason, PinholeCamera
from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.io.msg_types import rosbags_types
from lotus2_ros.perception import PerceptionConfig
from lotus2_ros.perception.export import frame_metadata
from lotus2_ros.perception.messages import build_scale_fit
from lotus2_ros.perception.metric import (
    MetricFitter,
    MetricReference,
    fit_reason_counter,
)
from lotus2_ros.synthetic import (
    DEFAULT_T_CAMERA_LIDAR,
    LidarModel,
    camera_trajectory,
    make_indoor_scene,
    render,
    simulate_lidar,
)

S, T = 2.0, 0.05
T_CL = np.asarray(DEFAULT_T_CAMERA_LIDAR, dtype=float)


@pytest.fixture(scope="module")
def scene():
    camera = PinholeCamera.from_fov(160, 120, 70.0)
    world = make_indoor_scene(seed=1)
    pose = camera_trajectory(world, 1)[0]
    frame = render(world, camera, pose)
    scan = simulate_lidar(world, LidarModel(num_beams=32, range_noise_std_m=0.0, outlier_fraction=0.0,
                                            dropout_probability=0.0), pose, rng=0)
    disparity = ((1.0 / frame.depth_m - T) / S).astype(np.float32)
    return CameraCalibration(camera), disparity, scan.points_m.astype(np.float32)


def fitter(**changes):
    return MetricFitter(PerceptionConfig(device="cpu", dtype="fp32", metric_source="lidar", **changes))


def run(fit, calibration, disparity, points, stamp_ns, T_camera_lidar=T_CL, scale=1.0):
    d = disparity * scale
    out = SimpleNamespace(disparity=d, relative=d, relative_kind="disparity", calibration=calibration, refined=False,
                          stamp_ns=stamp_ns, frame_id="cam")
    frame = SimpleNamespace(reference=MetricReference(points, T_camera_lidar, stamp_ns=stamp_ns))
    return fit(frame, out)


def test_a_consistent_sweep_gives_reason_ok(scene):
    st, report = run(fitter(), *scene, 1)
    assert report.valid and report.reason_code == FitReason.OK and report.reason == ""
    assert st == pytest.approx((S, T), rel=1e-4)
    assert fit_reason_counter(report) is None


def test_a_sweep_behind_the_camera_says_no_point_is_in_view(scene):
    wrong = T_CL.copy()
    wrong[2, 3] = -200.0  # a wrong extrinsic: the LiDAR 200 m behind the camera
    _, report = run(fitter(), *scene, 1, T_camera_lidar=wrong)
    assert not report.valid and report.reason_code == FitReason.NO_POINTS_IN_VIEW
    assert "no LiDAR point in view" in report.reason and "extrinsic" in report.reason
    assert fit_reason_counter(report) == "fits_not_used_no_points_in_view"


def test_too_few_points_says_where_the_points_went(scene):
    calibration, disparity, points = scene
    _, report = run(fitter(fit_min_points=100000), calibration, disparity, points, 1)
    assert report.reason_code == FitReason.TOO_FEW_POINTS
    assert "in view" in report.reason and "parallax" in report.reason and "depth edges" in report.reason


def test_an_unrelated_sweep_has_too_few_inliers(scene):
    calibration, disparity, points = scene
    junk = np.random.default_rng(0).uniform([1, -3, -1], [20, 3, 2], size=(3000, 3)).astype(np.float32)
    _, report = run(fitter(), calibration, disparity, junk, 1)
    assert not report.valid and report.reason_code == FitReason.TOO_FEW_INLIERS


def test_a_single_outlier_frame_is_rejected_by_the_filter_while_the_state_holds(scene):
    fit = fitter()
    run(fit, *scene, 1_000_000_000)
    st, report = run(fit, *scene, 1_100_000_000, scale=1.5)  # the prediction's scale jumps by 50 %
    assert report.valid and report.reason_code == FitReason.REJECTED_BY_FILTER  # earlier state still used
    assert st == pytest.approx((S, T), rel=1e-4) and "temporal filter" in report.reason


def test_the_reason_goes_on_the_wire_and_into_the_export(scene):
    calibration, disparity, points = scene
    _, report = run(fitter(), calibration, disparity, points[:0], 1)
    types = rosbags_types()
    msg = build_scale_fit(types, types.ScaleFit, report)
    raw = types.typestore.serialize_cdr(msg, msg.__msgtype__)
    back = types.typestore.deserialize_cdr(raw, msg.__msgtype__)
    assert back.reason == report.reason_code and back.reason_text == report.reason and not back.valid
    assert back.reason == FitReason.NO_POINTS_IN_VIEW
    out = SimpleNamespace(stamp_ns=1, frame_id="cam", refined=False, refine_steps=0, rgb=np.zeros((2, 2, 3)),
                          process_hw=(2, 2), calibration=None, scale_shift=None, scale_fit=report,
                          relative_kind="disparity", camera_model=None, alignment=None)
    meta = frame_metadata(out)["scale_fit"]
    assert meta["reason"] == report.reason and meta["reason_code"] == 1 and meta["reason_name"] == "no_points_in_view"
