"""Tests for the pinhole camera model and depth <-> point conversions."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lotus2_ros.geometry import (
    PinholeCamera,
    depth_to_points,
    distort_normalized,
    points_to_pixels,
    undistort_normalized,
)

D_BARREL = (-0.28, 0.07, 0.0008, -0.0005, -0.01)


def _camera() -> PinholeCamera:
    return PinholeCamera(640, 480, fx=525.0, fy=520.0, cx=318.3, cy=241.7)


def test_K_round_trips_through_from_K() -> None:
    camera = _camera()
    K = camera.K
    assert K.dtype == np.float64 and K.shape == (3, 3)
    np.testing.assert_array_equal(K, [[525.0, 0.0, 318.3], [0.0, 520.0, 241.7], [0.0, 0.0, 1.0]])
    assert PinholeCamera.from_K(K, 640, 480) == camera


def test_from_K_accepts_the_flat_ros_layout_and_distortion() -> None:
    camera = PinholeCamera.from_K(_camera().K.reshape(-1).tolist(), 640, 480, D=D_BARREL)
    assert camera.K[0, 2] == 318.3
    assert camera.D == D_BARREL
    assert camera.has_distortion
    np.testing.assert_array_equal(camera.P[:, :3], camera.K)
    np.testing.assert_array_equal(camera.P[:, 3], 0.0)


def test_four_distortion_coefficients_are_padded_with_zero_k3() -> None:
    camera = PinholeCamera(64, 48, 50.0, 50.0, 31.5, 23.5, D=(0.1, 0.01, 0.0, 0.0))
    assert camera.D == (0.1, 0.01, 0.0, 0.0, 0.0)


def test_from_fov_centres_the_principal_point_and_spans_the_image_edges() -> None:
    camera = PinholeCamera.from_fov(640, 480, hfov_deg=90.0)
    assert (camera.cx, camera.cy) == (319.5, 239.5)
    assert camera.fx == pytest.approx(320.0) and camera.fy == camera.fx
    assert camera.hfov_deg == pytest.approx(90.0)
    # The left edge of the first pixel (u = -0.5) is 45 degrees off axis.
    x_left = (-0.5 - camera.cx) / camera.fx
    assert math.degrees(math.atan(-x_left)) == pytest.approx(45.0)


def test_pixel_rays_have_unit_z_and_pass_through_pixel_centres() -> None:
    camera = _camera()
    rays = camera.pixel_rays()
    assert rays.shape == (480, 640, 3) and rays.dtype == np.float32
    np.testing.assert_array_equal(rays[..., 2], 1.0)
    u, v, z = points_to_pixels(rays, camera)
    uu, vv = np.meshgrid(np.arange(640), np.arange(480))
    np.testing.assert_allclose(u, uu, atol=2e-4)
    np.testing.assert_allclose(v, vv, atol=2e-4)
    np.testing.assert_array_equal(z, 1.0)


def test_depth_to_points_scales_rays_by_depth_and_marks_invalid_depth_nan() -> None:
    camera = PinholeCamera(4, 3, fx=2.0, fy=4.0, cx=1.5, cy=1.0)
    depth = np.full((3, 4), 2.0, dtype=np.float32)
    depth[0, 0], depth[0, 1], depth[0, 2], depth[0, 3] = np.nan, 0.0, -1.0, np.inf
    points = depth_to_points(depth, camera)
    assert points.shape == (3, 4, 3) and points.dtype == np.float32
    assert np.all(np.isnan(points[0]))
    # Pixel (u=3, v=2): x = (3 - 1.5) / 2 * 2, y = (2 - 1) / 4 * 2, z = 2.
    np.testing.assert_allclose(points[2, 3], [1.5, 0.5, 2.0])
    np.testing.assert_allclose(points[1, 0], [-1.5, 0.0, 2.0])


def test_depth_to_points_round_trips_through_points_to_pixels() -> None:
    camera = _camera()
    depth = np.random.default_rng(0).uniform(0.5, 20.0, (480, 640)).astype(np.float32)
    points = depth_to_points(depth, camera)
    u, v, z = points_to_pixels(points, camera)
    uu, vv = np.meshgrid(np.arange(640), np.arange(480))
    np.testing.assert_allclose(u, uu, atol=1e-3)
    np.testing.assert_allclose(v, vv, atol=1e-3)
    np.testing.assert_allclose(z, depth, rtol=1e-6)


def test_points_behind_the_camera_project_to_nan() -> None:
    u, v, z = points_to_pixels(np.array([[0.1, 0.2, -1.0], [0.0, 0.0, 0.0]]), _camera())
    assert np.all(np.isnan(u)) and np.all(np.isnan(v))
    np.testing.assert_array_equal(z, [-1.0, 0.0])


def test_scaled_intrinsics_project_a_point_to_the_corresponding_pixel() -> None:
    camera = _camera()
    small = camera.scaled(320, 160)
    assert (small.width_px, small.height_px) == (320, 160)
    assert small.fx == pytest.approx(262.5) and small.fy == pytest.approx(520.0 / 3.0)
    point = np.array([0.7, -0.4, 3.0])
    u, v, _ = points_to_pixels(point, camera)
    u_small, v_small, _ = points_to_pixels(point, small)
    # Half-pixel convention: pixel edges map to pixel edges, so u' + 0.5 = (u + 0.5) * s.
    assert u_small + 0.5 == pytest.approx((u + 0.5) * 0.5)
    assert v_small + 0.5 == pytest.approx((v + 0.5) / 3.0)
    # The image border stays the image border.
    corner = np.array([(-0.5 - camera.cx) / camera.fx, (-0.5 - camera.cy) / camera.fy, 1.0])
    u_c, v_c, _ = points_to_pixels(corner, small)
    assert (u_c, v_c) == pytest.approx((-0.5, -0.5))


def test_scaled_intrinsics_agree_with_cv2_resize_of_a_rendered_pattern() -> None:
    # A bright dot rendered at the projection of one 3-D point, once at full and once at half
    # resolution: cv2.resize of the full image puts its centroid where the scaled camera
    # projects the point.
    camera = PinholeCamera(200, 100, fx=150.0, fy=150.0, cx=101.3, cy=48.2)
    small = camera.scaled(100, 50)
    u, v, _ = points_to_pixels(np.array([0.2, -0.1, 2.0]), camera)
    uu, vv = np.meshgrid(np.arange(200), np.arange(100))
    image = np.exp(-((uu - u) ** 2 + (vv - v) ** 2) / (2 * 3.0**2)).astype(np.float32)
    resized = cv2.resize(image, (100, 50), interpolation=cv2.INTER_AREA)
    us, vs = np.meshgrid(np.arange(100), np.arange(50))
    centroid = (np.sum(resized * us) / resized.sum(), np.sum(resized * vs) / resized.sum())
    u_small, v_small, _ = points_to_pixels(np.array([0.2, -0.1, 2.0]), small)
    assert centroid == pytest.approx((float(u_small), float(v_small)), abs=0.02)


def test_cropped_intrinsics_shift_the_principal_point() -> None:
    camera = _camera()
    crop = camera.cropped(100, 50, 200, 300)
    assert (crop.width_px, crop.height_px, crop.fx, crop.fy) == (200, 300, 525.0, 520.0)
    point = np.array([-0.3, 0.2, 2.5])
    u, v, _ = points_to_pixels(point, camera)
    u_crop, v_crop, _ = points_to_pixels(point, crop)
    assert (u_crop, v_crop) == pytest.approx((u - 100.0, v - 50.0))


def test_contains_px_uses_pixel_edges() -> None:
    camera = PinholeCamera(4, 3, 2.0, 2.0, 1.5, 1.0)
    u = np.array([-0.5, -0.51, 3.49, 3.5, np.nan, 1.0])
    v = np.array([0.0, 0.0, 2.49, 0.0, 0.0, -0.5])
    np.testing.assert_array_equal(camera.contains_px(u, v), [True, False, True, False, False, True])


def test_distortion_matches_opencv_and_undistortion_inverts_it() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.6, 0.6, 500)
    y = rng.uniform(-0.45, 0.45, 500)
    xd, yd = distort_normalized(x, y, D_BARREL)
    projected, _ = cv2.projectPoints(
        np.stack([x, y, np.ones_like(x)], axis=1),
        np.zeros(3),
        np.zeros(3),
        np.eye(3),
        np.asarray(D_BARREL),
    )
    np.testing.assert_allclose(projected[:, 0, 0], xd, atol=1e-9)
    np.testing.assert_allclose(projected[:, 0, 1], yd, atol=1e-9)
    xu, yu = undistort_normalized(xd, yd, D_BARREL)
    np.testing.assert_allclose(xu, x, atol=1e-7)
    np.testing.assert_allclose(yu, y, atol=1e-7)


def test_distorted_pixel_rays_reproject_to_their_pixels_with_distortion() -> None:
    camera = PinholeCamera(160, 120, 120.0, 120.0, 79.5, 59.5, D=D_BARREL)
    rays = camera.pixel_rays()
    u, v, _ = points_to_pixels(rays, camera, apply_distortion=True)
    uu, vv = np.meshgrid(np.arange(160), np.arange(120))
    np.testing.assert_allclose(u, uu, atol=1e-3)
    np.testing.assert_allclose(v, vv, atol=1e-3)
    # Without distortion the corner rays land elsewhere: barrel distortion was removed.
    u_plain, _, _ = points_to_pixels(rays, camera)
    assert abs(u_plain[0, 0] - 0.0) > 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width_px": 0}, "width_px must be a positive int, got 0"),
        ({"height_px": 2.5}, "height_px must be a positive int, got 2.5"),
        ({"fx": -1.0}, "fx must be a positive finite number, got -1.0"),
        ({"fy": float("nan")}, "fy must be a positive finite number"),
        ({"cx": float("inf")}, "cx must be a finite number"),
        ({"D": (0.1, 0.2, 0.3)}, r"D must hold 0, 4 or 5 .* got \[0.1, 0.2, 0.3\]"),
    ],
)
def test_invalid_intrinsics_raise_errors_naming_the_argument(kwargs: dict, message: str) -> None:
    arguments = {"width_px": 64, "height_px": 48, "fx": 50.0, "fy": 50.0, "cx": 31.5, "cy": 23.5}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        PinholeCamera(**arguments)


def test_invalid_arguments_to_constructors_and_conversions_raise_value_errors() -> None:
    camera = _camera()
    with pytest.raises(ValueError, match=r"K must have shape \(3, 3\) or \(9,\), got \(2, 3\)"):
        PinholeCamera.from_K(np.zeros((2, 3)), 640, 480)
    with pytest.raises(ValueError, match="K must have no skew"):
        PinholeCamera.from_K([[500.0, 2.0, 320.0], [0.0, 500.0, 240.0], [0, 0, 1]], 640, 480)
    with pytest.raises(ValueError, match="last row must be"):
        PinholeCamera.from_K([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0, 0, 2]], 640, 480)
    with pytest.raises(ValueError, match=r"hfov_deg must be in \(0, 180\), got 180"):
        PinholeCamera.from_fov(640, 480, 180)
    with pytest.raises(ValueError, match="new_width_px must be a positive int, got -320"):
        camera.scaled(-320, 240)
    with pytest.raises(ValueError, match="leaves the 640x480 image"):
        camera.cropped(600, 0, 100, 10)
    with pytest.raises(ValueError, match="x0_px must be a non-negative int, got -1"):
        camera.cropped(-1, 0, 10, 10)
    with pytest.raises(
        ValueError, match=r"depth_m must have shape .* \(480, 640\) .* got \(48, 64\)"
    ):
        depth_to_points(np.ones((48, 64), np.float32), camera)
    with pytest.raises(
        ValueError, match="depth_m must be a float array in metres, got dtype uint16"
    ):
        depth_to_points(np.ones((480, 640), np.uint16), camera)
    with pytest.raises(ValueError, match=r"points must have shape \(\.\.\., 3\), got \(5, 2\)"):
        points_to_pixels(np.zeros((5, 2)), camera)


def test_camera_is_hashable_and_compares_by_value() -> None:
    assert _camera() == _camera()
    assert len({_camera(), _camera(), _camera().scaled(320, 240)}) == 2
