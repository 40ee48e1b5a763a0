"""sensor_msgs/CameraInfo ⇄ CameraCalibration, for rclpy and rosbags messages alike."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.io.camera_info import (
    build_camera_info,
    camera_info_to_calibration,
    check_image_matches,
)
from lotus2_ros.io.errors import MessageError
from lotus2_ros.io.stamps import build_header, header_stamp_ns

CAMERA = PinholeCamera(640, 480, 525.0, 520.0, 319.5, 239.5, (0.1, -0.05, 0.001, 0.002, 0.01))


@pytest.fixture
def header(types):
    return build_header(types, 42_000_000_007, "camera_optical_frame")


def camera_info(types, header, **changes):
    """A CameraInfo of CAMERA with some fields replaced (k/d/r/p as plain lists)."""
    fields = dict(
        height=480,
        width=640,
        distortion_model="plumb_bob",
        d=list(CAMERA.D),
        k=CAMERA.K.reshape(-1).tolist(),
        r=np.eye(3).reshape(-1).tolist(),
        p=CAMERA.P.reshape(-1).tolist(),
        binning_x=0,
        binning_y=0,
        roi=(0, 0, 0, 0, False),
    )
    fields.update(changes)
    x, y, w, h, rect = fields.pop("roi")
    roi = types.RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h, do_rectify=rect)
    for name in ("d", "k", "r", "p"):
        fields[name] = types.pack_float64(fields[name])
    return types.CameraInfo(header=header, roi=roi, **fields)


def test_a_plumb_bob_camera_info_reads_into_the_pinhole_camera(types, header):
    calib = camera_info_to_calibration(camera_info(types, header))
    assert calib.camera == CAMERA
    assert (calib.width_px, calib.height_px) == (640, 480)
    np.testing.assert_array_equal(calib.R, np.eye(3))
    np.testing.assert_array_equal(calib.P, CAMERA.P)
    assert calib.distortion_model == "plumb_bob"
    assert (calib.binning_x, calib.binning_y, calib.roi) == (1, 1, None)


def test_build_camera_info_round_trips_the_calibration(types, header):
    calib = CameraCalibration(CAMERA, r=np.eye(3), p=CAMERA.P)
    msg = build_camera_info(types, header, calib)
    assert header_stamp_ns(msg.header) == 42_000_000_007 and msg.header.frame_id == "camera_optical_frame"
    assert (msg.width, msg.height, msg.distortion_model) == (640, 480, "plumb_bob")
    np.testing.assert_array_equal(np.asarray(msg.k), CAMERA.K.reshape(-1))
    np.testing.assert_array_equal(np.asarray(msg.d), CAMERA.D)
    assert camera_info_to_calibration(msg) == calib


def test_a_bare_camera_is_published_with_identity_r_and_p_equal_to_k(types, header):
    camera = PinholeCamera(64, 48, 50.0, 50.0, 31.5, 23.5)
    msg = build_camera_info(types, header, camera)
    np.testing.assert_array_equal(np.asarray(msg.r), np.eye(3).reshape(-1))
    np.testing.assert_array_equal(np.asarray(msg.p), camera.P.reshape(-1))
    assert camera_info_to_calibration(msg).camera == camera


def test_equal_messages_give_equal_hashable_calibrations(types, header):
    a = camera_info_to_calibration(camera_info(types, header))
    b = camera_info_to_calibration(camera_info(types, header))
    c = camera_info_to_calibration(camera_info(types, header, d=[0.0] * 5))
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert len({a, b, c}) == 2


def test_all_zero_r_and_p_mean_identity_and_k(types, header):
    calib = camera_info_to_calibration(camera_info(types, header, r=[0.0] * 9, p=[0.0] * 12))
    np.testing.assert_array_equal(calib.R, np.eye(3))
    np.testing.assert_array_equal(calib.P, CAMERA.P)


def test_the_rectified_camera_comes_from_p(types, header):
    p = [500.0, 0.0, 320.0, 0.0, 0.0, 500.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    rect = camera_info_to_calibration(camera_info(types, header, p=p)).rectified_camera
    assert rect == PinholeCamera(640, 480, 500.0, 500.0, 320.0, 240.0)


# ----------------------------------------------------------------------------------------------
# Distortion models
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "d", "expected_D"),
    [
        ("plumb_bob", [0.1, -0.05, 0.001, 0.002, 0.01], (0.1, -0.05, 0.001, 0.002, 0.01)),
        ("plumb_bob", [0.1, -0.05, 0.001, 0.002], (0.1, -0.05, 0.001, 0.002, 0.0)),
        ("plumb_bob", [], (0.0,) * 5),
        ("rational_polynomial", [0.1, -0.05, 0.001, 0.002, 0.01, 0.0, 0.0, 0.0], (0.1, -0.05, 0.001, 0.002, 0.01)),
        ("", [], (0.0,) * 5),
        ("none", [0.0] * 5, (0.0,) * 5),
    ],
)
def test_supported_distortion_models_give_plumb_bob_coefficients(types, header, model, d, expected_D):
    calib = camera_info_to_calibration(camera_info(types, header, distortion_model=model, d=d))
    assert calib.camera.D == expected_D
    assert calib.distortion_model == model


@pytest.mark.parametrize(
    ("model", "d", "expected"),
    [
        ("equidistant", [0.1, 0.0, 0.0, 0.0], "distortion_model 'equidistant' is not supported"),
        ("rational_polynomial", [0.1, 0, 0, 0, 0, 0.3, 0, 0], "rational_polynomial with non-zero k4..k6"),
        ("rational_polynomial", [0.1] * 6, "must hold 8 rational_polynomial coefficients, got 6"),
        ("plumb_bob", [0.1] * 8, "must hold 5 plumb_bob coefficients, got 8"),
        ("", [0.1, 0, 0, 0, 0], r"distortion_model '' \(none\) with non-zero d"),
    ],
)
def test_unsupported_distortion_raises_message_error(types, header, model, d, expected):
    with pytest.raises(MessageError, match=expected):
        camera_info_to_calibration(camera_info(types, header, distortion_model=model, d=d))


def test_a_rational_polynomial_calibration_is_published_with_eight_coefficients(types, header):
    msg = camera_info(types, header, distortion_model="rational_polynomial", d=[0.1, 0.2, 0, 0, 0.3, 0, 0, 0])
    out = build_camera_info(types, header, camera_info_to_calibration(msg))
    assert out.distortion_model == "rational_polynomial"
    np.testing.assert_allclose(np.asarray(out.d), [0.1, 0.2, 0, 0, 0.3, 0, 0, 0])


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (dict(k=[0.0] * 9), "CameraInfo.k is all zeros: the camera is uncalibrated"),
        (
            dict(k=[525.0, 0, 319.5, 0, np.nan, 239.5, 0, 0, 1]),
            r"CameraInfo.k contains NaN or Inf: \[525.0, 0.0, 319.5, 0.0, nan",
        ),
        (dict(d=[0.1, np.inf, 0, 0, 0]), "CameraInfo.d contains NaN or Inf"),
        (dict(p=[np.nan] * 12), "CameraInfo.p contains NaN or Inf"),
        (dict(r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, np.nan]), "CameraInfo.r contains NaN or Inf"),
        (dict(r=[2.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]), r"CameraInfo.r \[2.0, .*\] is not a rotation matrix"),
        (dict(r=[-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]), "is not a rotation matrix"),  # a reflection
        (dict(k=[525.0, 3.0, 319.5, 0, 520.0, 239.5, 0, 0, 1]), "is not a valid pinhole matrix: K must have no skew"),
        (dict(k=[-525.0, 0, 319.5, 0, 520.0, 239.5, 0, 0, 1]), "is not a valid pinhole matrix: fx must be a positive"),
        (dict(width=0), "CameraInfo is empty: width 0, height 480"),
        (dict(height=0), "CameraInfo is empty: width 640, height 0"),
    ],
)
def test_invalid_camera_info_raises_message_error_naming_the_field(types, header, changes, expected):
    with pytest.raises(MessageError, match=expected):
        camera_info_to_calibration(camera_info(types, header, **changes))


def test_an_image_of_the_calibrated_size_matches(types, header):
    check_image_matches(camera_info_to_calibration(camera_info(types, header)), 480, 640)


@pytest.mark.parametrize(("height", "width"), [(720, 1280), (240, 320), (640, 480)])
def test_an_image_of_another_size_does_not_match_even_at_an_integer_scale(types, header, height, width):
    calib = camera_info_to_calibration(camera_info(types, header))
    with pytest.raises(MessageError, match=f"CameraInfo is 640x480 .* but the image is {width}x{height}"):
        check_image_matches(calib, height, width)


# ----------------------------------------------------------------------------------------------
# Resizing, binning, ROI
# ----------------------------------------------------------------------------------------------
def test_a_scaled_calibration_matches_the_resized_camera_and_projects_the_same_rays(types, header):
    p = [500.0, 0.0, 320.0, -25.0, 0.0, 500.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    calib = camera_info_to_calibration(camera_info(types, header, p=p))
    half = calib.scaled(320, 240)
    assert half.camera == CAMERA.scaled(320, 240)
    assert half.rectified_camera == calib.rectified_camera.scaled(320, 240)
    np.testing.assert_allclose(half.P[0, 3], -12.5)  # Tx scales with fx
    msg = build_camera_info(types, header, half)
    assert (msg.width, msg.height) == (320, 240)
    assert camera_info_to_calibration(msg) == half


def test_binning_halves_the_image_with_the_half_pixel_convention(types, header):
    calib = camera_info_to_calibration(camera_info(types, header, binning_x=2, binning_y=2))
    assert (calib.width_px, calib.height_px) == (320, 240)
    assert calib.camera == CAMERA.scaled(320, 240)
    np.testing.assert_allclose(calib.P[:, :3], CAMERA.scaled(320, 240).K)
    assert (calib.binning_x, calib.binning_y) == (2, 2)


def test_an_roi_crops_an_undistorted_camera(types, header):
    msg = camera_info(types, header, d=[0.0] * 5, roi=(100, 50, 320, 240, False))
    calib = camera_info_to_calibration(msg)
    assert (calib.width_px, calib.height_px) == (320, 240)
    assert (calib.camera.cx, calib.camera.cy) == (219.5, 189.5)
    np.testing.assert_allclose(calib.P[:2, 2], [219.5, 189.5])
    assert calib.roi is not None and calib.roi.x_offset == 100
    check_image_matches(calib, 240, 320)


def test_a_full_sensor_roi_is_no_roi(types, header):
    calib = camera_info_to_calibration(camera_info(types, header, roi=(0, 0, 640, 480, False)))
    assert calib.roi is None and calib.camera == CAMERA


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (dict(roi=(100, 50, 320, 240, False)), "CameraInfo.roi .* with distortion d .* is not supported"),
        (dict(d=[0.0] * 5, roi=(400, 0, 320, 240, False)), "CameraInfo.roi .* does not fit the 640x480 calibration"),
    ],
)
def test_unsupported_roi_raises_message_error(types, header, changes, expected):
    with pytest.raises(MessageError, match=expected):
        camera_info_to_calibration(camera_info(types, header, **changes))
