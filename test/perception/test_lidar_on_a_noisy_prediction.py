"""A valid LiDAR sweep whose every point fails the depth-edge test must not break the frame."""

from __future__ import annotations

import numpy as np

from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.geometry.lidar_projection import LidarProjectionConfig, project_lidar_points, sample_disparity
from lotus2_ros.perception.config import PerceptionConfig
from lotus2_ros.perception.metric import MetricFitter, MetricReference
from lotus2_ros.perception.pipeline import Frame, PerceptionOutput

W, H = 160, 120


def noise_case(seed: int = 0):
    """A noise disparity (a random model on a noise image) and 150 points 5 m in front of the camera."""
    rng = np.random.default_rng(seed)
    disparity = rng.random((H, W)).astype(np.float32)
    points = np.c_[rng.uniform(-2, 2, 150), rng.uniform(-1.5, 1.5, 150), np.full(150, 5.0)].astype(np.float32)
    return disparity, points


def test_sampling_gives_no_samples_when_every_point_is_on_a_depth_edge():
    disparity, points = noise_case()
    config = LidarProjectionConfig()  # the default 2-pixel edge window
    projection = project_lidar_points(points, np.eye(4), PinholeCamera.from_fov(W, H, 70.0), rectified=False,
                                      config=config)
    assert projection.z_m.size == 150
    samples = sample_disparity(disparity, projection, config)
    assert samples.disparity.size == 0 and samples.z_m.size == 0 and samples.indices.size == 0
    assert samples.num_edge_rejected == 150


def test_the_metric_fit_of_such_a_frame_is_invalid_with_a_reason_instead_of_an_error():
    disparity, points = noise_case()
    camera = PinholeCamera.from_fov(W, H, 70.0)
    calibration = CameraCalibration(camera)
    config = PerceptionConfig(metric_source="lidar", extrinsic_source="parameter")
    reference = MetricReference(points_lidar_m=points, T_camera_lidar=np.eye(4), stamp_ns=1)
    frame = Frame(rgb=np.zeros((H, W, 3), np.uint8), stamp_ns=1, frame_id="cam", calibration=calibration,
                  reference=reference)
    out = PerceptionOutput(stamp_ns=1, frame_id="cam", refined=False, calibration=calibration,
                           rgb=frame.rgb, disparity=disparity)
    scale_shift, report = MetricFitter(config)(frame, out)
    assert scale_shift is None
    assert report is not None and not report.valid and report.num_points == 0 and report.reason
