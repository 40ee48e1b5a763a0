"""LiDAR projection into the camera, baseline occlusions, disparity sampling (analytic scenes)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lotus2_ros.geometry import (
    LidarProjectionConfig,
    PinholeCamera,
    distort_normalized,
    parallax_occlusion_mask,
    points_to_pixels,
    project_lidar_points,
    sample_disparity,
)
from lotus2_ros.synthetic import (
    DEFAULT_T_CAMERA_LIDAR,
    Box,
    LidarModel,
    Plane,
    Scene,
    Sphere,
    camera_trajectory,
    make_indoor_scene,
    pose_from_xyz_ypr,
    render,
    simulate_lidar,
    transform_points,
)
from lotus2_ros.synthetic.scene import cast_rays

NO_NOISE = dict(range_noise_std_m=0.0, dropout_probability=0.0, outlier_fraction=0.0)
# Half a KITTI camera (1242x375, f = 721.5 px).
CAMERA = PinholeCamera(621, 188, 360.77, 360.77, 310.0, 93.5)


def _T_lidar_above(height_m: float) -> np.ndarray:
    """LiDAR axes level with the camera, ``height_m`` above it (optical y points down)."""
    T = np.array(DEFAULT_T_CAMERA_LIDAR)
    T[:3, 3] = (0.0, -height_m, 0.0)
    return T


def _camera_points(scan, T_camera_lidar: np.ndarray) -> np.ndarray:
    return transform_points(T_camera_lidar, scan.points_m.astype(np.float64))


def _hidden_from_camera(scene, pose, scan, T_camera_lidar: np.ndarray) -> np.ndarray:
    """Ground truth: a LiDAR point is hidden when the camera ray towards it hits something first."""
    world = transform_points(pose @ T_camera_lidar, scan.points_m.astype(np.float64))
    t, _ = cast_rays(scene, pose[:3, 3], (world - pose[:3, 3]).T)
    return t < 1.0 - 1e-4


def _on_one_flat_face(scene, frame, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Points whose bilinear 2x2 pixel footprint shows one face of a plane or a box."""
    c0 = np.clip(np.floor(u).astype(int), 0, frame.depth_m.shape[1] - 2)
    r0 = np.clip(np.floor(v).astype(int), 0, frame.depth_m.shape[0] - 2)
    index, normals = frame.primitive_index, frame.normals
    flat = np.array([not isinstance(p, Sphere) for p in scene.primitives])[index[r0, c0]]
    for dr, dc in ((0, 1), (1, 0), (1, 1)):
        flat &= index[r0 + dr, c0 + dc] == index[r0, c0]
        flat &= np.abs(normals[r0 + dr, c0 + dc] - normals[r0, c0]).max(axis=1) < 1e-4
    return flat


def _bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    c0 = np.clip(np.floor(u).astype(int), 0, image.shape[1] - 2)
    r0 = np.clip(np.floor(v).astype(int), 0, image.shape[0] - 2)
    fu, fv = u - c0, v - r0
    top = image[r0, c0] * (1 - fu) + image[r0, c0 + 1] * fu
    bottom = image[r0 + 1, c0] * (1 - fu) + image[r0 + 1, c0 + 1] * fu
    return top * (1 - fv) + bottom * fv


@pytest.fixture(scope="module")
def indoor():
    """An indoor frame with a noise-free 16-beam LiDAR scan (default mount, 0.2 m above)."""
    scene = make_indoor_scene(0)
    pose = camera_trajectory(scene, 1)[0]
    lidar = LidarModel(num_beams=16, **NO_NOISE)
    return scene, pose, render(scene, CAMERA, pose), simulate_lidar(scene, lidar, pose, 0), lidar


def test_noise_free_lidar_depth_equals_the_rendered_depth_on_flat_surfaces(indoor):
    scene, pose, frame, scan, lidar = indoor
    projection = project_lidar_points(scan.points_m, lidar.T_camera_lidar, CAMERA, rectified=True)
    assert projection.z_m.size > 1000
    hidden = _hidden_from_camera(scene, pose, scan, lidar.T_camera_lidar)[projection.indices]
    assert hidden.sum() <= 0.02 * hidden.size  # the occlusion tests below cover these
    u, v, z = (a.astype(np.float64) for a in (projection.u_px, projection.v_px, projection.z_m))
    # Where the 2x2 neighbourhood lies on one flat face, inverse depth is affine in the pixel
    # coordinates, so its bilinear interpolation is exact.
    flat = _on_one_flat_face(scene, frame, u, v) & ~hidden
    assert flat.mean() > 0.8
    inverse_rendered = _bilinear(1.0 / frame.depth_m.astype(np.float64), u, v)
    np.testing.assert_allclose(1.0 / z[flat], inverse_rendered[flat], rtol=2e-5)
    # Projection agrees with the camera model and keeps the window and the image.
    cam_points = _camera_points(scan, lidar.T_camera_lidar)[projection.indices]
    u_ref, v_ref, z_ref = points_to_pixels(cam_points, CAMERA)
    np.testing.assert_allclose(u, u_ref, atol=2e-3)
    np.testing.assert_allclose(v, v_ref, atol=2e-3)
    np.testing.assert_allclose(z, z_ref, rtol=1e-5)
    assert CAMERA.contains_px(u, v).all()
    assert projection.num_points == scan.points_m.shape[0]


def test_P_and_K_paths_agree_for_an_undistorted_camera(indoor):
    _, _, _, scan, lidar = indoor
    rectified = project_lidar_points(scan.points_m, lidar.T_camera_lidar, CAMERA, rectified=True)
    raw = project_lidar_points(scan.points_m, lidar.T_camera_lidar, CAMERA, rectified=False)
    explicit_P = project_lidar_points(
        scan.points_m,
        lidar.T_camera_lidar,
        CAMERA,
        rectified=True,
        P=CAMERA.P.reshape(-1),
        R=np.eye(3).reshape(-1),
    )
    for other in (raw, explicit_P):
        np.testing.assert_array_equal(other.indices, rectified.indices)
        np.testing.assert_allclose(other.u_px, rectified.u_px, atol=1e-4)
        np.testing.assert_allclose(other.v_px, rectified.v_px, atol=1e-4)
        np.testing.assert_allclose(other.z_m, rectified.z_m, rtol=1e-6)


def test_rectified_projection_applies_R_then_the_full_P_with_its_stereo_baseline():
    rng = np.random.default_rng(1)
    points = np.stack(
        [rng.uniform(-3, 3, 500), rng.uniform(-1, 1, 500), rng.uniform(2, 20, 500)], axis=1
    )
    # A right camera of a stereo pair: Tx = -fx·B places it B to the right of the frame the
    # cloud is given in (the camera_info's frame_id), as image_geometry projects it.
    P = np.array([[300.0, 0.0, 310.0, -300.0 * 0.12], [0.0, 300.0, 95.0, 0.0], [0, 0, 1.0, 0]])
    angle = math.radians(2.0)
    R = np.array(
        [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]]
    )
    config = LidarProjectionConfig(occlusion_filter=False, min_range_m=0.1)
    projection = project_lidar_points(
        points, np.eye(4), CAMERA, rectified=True, P=P, R=R, config=config
    )
    homogeneous = np.hstack([points @ R.T, np.ones((500, 1))]) @ P.T  # [u v w]' = P [R p; 1]
    u_ref = homogeneous[:, 0] / homogeneous[:, 2]
    v_ref = homogeneous[:, 1] / homogeneous[:, 2]
    inside = CAMERA.contains_px(u_ref, v_ref)
    np.testing.assert_array_equal(projection.indices, np.flatnonzero(inside))
    np.testing.assert_allclose(projection.u_px, u_ref[inside], atol=1e-3)
    np.testing.assert_allclose(projection.v_px, v_ref[inside], atol=1e-3)
    np.testing.assert_allclose(projection.z_m, homogeneous[inside, 2], rtol=1e-6)


def test_a_distorted_camera_projects_consistently_with_distort_normalized_and_the_render():
    camera = PinholeCamera(160, 96, 90.0, 90.0, 79.0, 48.5, D=(-0.25, 0.06, 0.001, -0.0008, 0.0))
    scene = make_indoor_scene(0)
    pose = camera_trajectory(scene, 1)[0]
    lidar = LidarModel(num_beams=16, **NO_NOISE)
    scan = simulate_lidar(scene, lidar, pose, 0)
    projection = project_lidar_points(scan.points_m, lidar.T_camera_lidar, camera, rectified=False)
    assert projection.z_m.size > 200
    p = _camera_points(scan, lidar.T_camera_lidar)[projection.indices]
    xd, yd = distort_normalized(p[:, 0] / p[:, 2], p[:, 1] / p[:, 2], camera.D)
    np.testing.assert_allclose(projection.u_px, camera.fx * xd + camera.cx, atol=2e-3)
    np.testing.assert_allclose(projection.v_px, camera.fy * yd + camera.cy, atol=2e-3)
    # Every point of the raw image that the camera sees is kept (none lost at the border).
    u_all, v_all, z_all = points_to_pixels(
        _camera_points(scan, lidar.T_camera_lidar), camera, apply_distortion=True
    )
    expected = camera.contains_px(u_all, v_all) & (z_all >= 0.3)
    unoccluded = project_lidar_points(
        scan.points_m,
        lidar.T_camera_lidar,
        camera,
        rectified=False,
        config=LidarProjectionConfig(occlusion_filter=False),
    )
    np.testing.assert_array_equal(unoccluded.indices, np.flatnonzero(expected))
    # The raw (distorted) render agrees: inverse depth interpolated over one flat face.
    frame = render(scene, camera, pose)
    hidden = _hidden_from_camera(scene, pose, scan, lidar.T_camera_lidar)[projection.indices]
    u, v = projection.u_px.astype(np.float64), projection.v_px.astype(np.float64)
    flat = _on_one_flat_face(scene, frame, u, v) & ~hidden
    assert flat.mean() > 0.7
    inverse_rendered = _bilinear(1.0 / frame.depth_m.astype(np.float64), u, v)
    np.testing.assert_allclose(1.0 / projection.z_m[flat], inverse_rendered[flat], rtol=2e-3)


def test_points_behind_outside_the_window_or_the_image_and_non_finite_rows_are_dropped():
    camera = PinholeCamera.from_fov(100, 80, hfov_deg=90.0)
    points = np.array(
        [
            [0.0, 0.0, 5.0],  # kept: on the optical axis
            [0.0, 0.0, -5.0],  # behind the camera
            [0.0, 0.0, 0.2],  # nearer than min_range_m
            [0.0, 0.0, 50.0],  # beyond max_range_m
            [10.0, 0.0, 5.0],  # right of the image
            [np.nan, 0.0, 5.0],
            [0.0, np.inf, 5.0],
            [1.0, -1.0, 4.0],  # kept
        ]
    )
    config = LidarProjectionConfig(min_range_m=0.5, max_range_m=40.0, occlusion_filter=False)
    for dtype in (np.float64, np.float32):
        projection = project_lidar_points(
            points.astype(dtype), np.eye(4), camera, rectified=True, config=config
        )
        np.testing.assert_array_equal(projection.indices, [0, 7])
        np.testing.assert_allclose(projection.z_m, [5.0, 4.0])
        np.testing.assert_allclose(projection.u_px, [49.5, 49.5 + 50.0 / 4.0], atol=1e-4)
        np.testing.assert_allclose(projection.v_px, [39.5, 39.5 - 50.0 / 4.0], atol=1e-4)
    organised = project_lidar_points(
        points.reshape(2, 4, 3), np.eye(4), camera, rectified=True, config=config
    )
    np.testing.assert_array_equal(organised.indices, [0, 7])
    empty = project_lidar_points(np.zeros((0, 3)), np.eye(4), camera, rectified=True)
    assert empty.indices.size == 0 and empty.num_points == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(points_lidar=np.zeros((4, 2))), "points_lidar"),
        (dict(T_camera_lidar=np.eye(3)), "T_camera_lidar"),
        (dict(T_camera_lidar=np.diag([1.0, 1.0, -1.0, 1.0])), "rotation"),
        (dict(P=np.eye(3)), "P must"),
        (dict(rectified=False, P=np.zeros((3, 4))), "P and R apply only"),
    ],
)
def test_invalid_inputs_raise_errors_that_name_the_argument(kwargs, match):
    arguments = dict(
        points_lidar=np.ones((4, 3)), T_camera_lidar=np.eye(4), camera=CAMERA, rectified=True
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        project_lidar_points(**arguments)


# ------------------------------------------------------------------------------------------
# Occlusions from the camera-LiDAR baseline
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def box_before_wall():
    """A box 2 m ahead of a wall 6 m ahead; the LiDAR is 0.3 m above the camera.

    The LiDAR looks over the box onto the wall where the camera sees the box.
    """
    scene = Scene(
        "box-before-wall",
        0,
        (
            Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
            Plane((6.0, 0.0, 0.0), (-1.0, 0.0, 0.0)),
            Box((2.0, 0.0, 0.5), (0.3, 0.6, 0.5)),
        ),
    )
    camera = PinholeCamera.from_fov(480, 240, hfov_deg=90.0)
    pose = pose_from_xyz_ypr((0.0, 0.0, 1.2), 0.0, 0.0)
    T_camera_lidar = _T_lidar_above(0.3)
    lidar = LidarModel(num_beams=16, T_camera_lidar=T_camera_lidar, **NO_NOISE)
    scan = simulate_lidar(scene, lidar, pose, 0)
    hidden = _hidden_from_camera(scene, pose, scan, T_camera_lidar)
    return scene, camera, pose, scan, T_camera_lidar, hidden


def test_wall_points_hidden_behind_a_box_are_removed_and_would_be_kept_without_the_test(
    box_before_wall,
):
    scene, camera, pose, scan, T_camera_lidar, hidden = box_before_wall
    plain = project_lidar_points(
        scan.points_m,
        T_camera_lidar,
        camera,
        rectified=True,
        config=LidarProjectionConfig(occlusion_filter=False),
    )
    handled = project_lidar_points(scan.points_m, T_camera_lidar, camera, rectified=True)
    hidden_in_view = plain.indices[hidden[plain.indices]]
    assert hidden_in_view.size > 150  # without the test they are all there
    kept_hidden = handled.indices[hidden[handled.indices]]
    assert kept_hidden.size <= 0.05 * hidden_in_view.size
    visible = set(plain.indices[~hidden[plain.indices]].tolist())
    lost = visible - set(handled.indices.tolist())
    assert len(lost) <= 0.01 * len(visible)
    assert handled.num_occluded == plain.indices.size - handled.indices.size
    # The few hidden points left sit at the box's outline, where the depth-edge test of the
    # sampling removes them: none survives into the fit.
    frame = render(scene, camera, pose)
    disparity = 1.0 / frame.depth_m
    samples = sample_disparity(disparity, handled)
    assert not hidden[samples.indices].any()
    assert samples.indices.size >= 0.9 * (handled.indices.size - kept_hidden.size)
    plain_samples = sample_disparity(disparity, plain)
    assert hidden[plain_samples.indices].sum() > 100  # the edge test alone is not enough


def test_a_gross_short_range_outlier_does_not_erase_the_points_behind_it(box_before_wall):
    scene, camera, pose, scan, T_camera_lidar, hidden = box_before_wall
    points = scan.points_m.copy()
    plain = project_lidar_points(points, T_camera_lidar, camera, rectified=True)
    # Shorten one floor return more than 3 m ahead to 1 m along its beam: seen from the camera
    # it jumps above the returns of higher rings in its epipolar plane.
    floor = plain.indices[(plain.z_m > 3.0) & (plain.v_px > 150)]
    victim = floor[floor.size // 2]
    points[victim] *= 1.0 / np.linalg.norm(points[victim])
    confirmed = project_lidar_points(points, T_camera_lidar, camera, rectified=True)
    unconfirmed = project_lidar_points(
        points,
        T_camera_lidar,
        camera,
        rectified=True,
        config=LidarProjectionConfig(confirm_occluders=False),
    )
    lost_confirmed = set(plain.indices.tolist()) - set(confirmed.indices.tolist()) - {victim}
    lost_unconfirmed = set(plain.indices.tolist()) - set(unconfirmed.indices.tolist()) - {victim}
    assert len(lost_unconfirmed) >= 10
    assert len(lost_confirmed) == 0


def test_the_occlusion_mask_is_empty_without_a_baseline():
    rng = np.random.default_rng(0)
    points = rng.uniform(1.0, 10.0, (100, 3))
    assert not parallax_occlusion_mask(points, np.zeros(3)).any()
    assert parallax_occlusion_mask(points, np.array([0.0, -0.3, 0.0])).shape == (100,)


# ------------------------------------------------------------------------------------------
# Sampling the prediction
# ------------------------------------------------------------------------------------------
def _grid_projection(camera: PinholeCamera, step: int = 3):
    """Points at sub-pixel positions over the image, 4 m in front of the camera."""
    vv, uu = np.mgrid[2 : camera.height_px - 2 : step, 2 : camera.width_px - 2 : step]
    u = uu.ravel() + 0.3
    v = vv.ravel() + 0.7
    x = (u - camera.cx) / camera.fx * 4.0
    y = (v - camera.cy) / camera.fy * 4.0
    points = np.stack([x, y, np.full(u.size, 4.0)], axis=1)
    config = LidarProjectionConfig(occlusion_filter=False)
    return project_lidar_points(points, np.eye(4), camera, rectified=True, config=config)


def test_bilinear_sampling_is_exact_for_an_affine_disparity():
    camera = PinholeCamera.from_fov(200, 120, hfov_deg=80.0)
    projection = _grid_projection(camera)
    vv, uu = np.mgrid[0:120, 0:200].astype(np.float32)
    disparity = 0.2 + 0.002 * uu + 0.003 * vv  # a plane
    samples = sample_disparity(disparity, projection)
    assert samples.num_edge_rejected == 0
    expected = 0.2 + 0.002 * projection.u_px + 0.003 * projection.v_px
    # OpenCV's bilinear weights have 1/32-pixel steps.
    np.testing.assert_allclose(samples.disparity, expected, atol=0.005 / 32)
    nearest = sample_disparity(
        disparity, projection, LidarProjectionConfig(interpolation="nearest")
    )
    rows, cols = projection.nearest_pixels()
    np.testing.assert_array_equal(nearest.disparity, disparity[rows, cols])


def test_points_next_to_a_depth_edge_are_rejected_and_the_others_kept():
    camera = PinholeCamera.from_fov(200, 120, hfov_deg=80.0)
    projection = _grid_projection(camera, step=1)
    disparity = np.full((120, 200), 0.1, dtype=np.float32)
    disparity[:, 100:] = 0.5  # a step between columns 99 and 100
    disparity[60, 150] = np.nan
    config = LidarProjectionConfig(edge_window_px=2, max_samples=0)
    samples = sample_disparity(disparity, projection, config)
    rows, cols = projection.nearest_pixels()
    # The 5x5 window of pixel columns 98..101 straddles the step between columns 99 and 100.
    straddling = np.flatnonzero((cols >= 98) & (cols <= 101))
    assert not np.isin(straddling, samples.indices).any()
    far = np.flatnonzero(
        ((cols <= 96) | (cols >= 103)) & ((np.abs(rows - 60) > 3) | (np.abs(cols - 150) > 3))
    )
    assert np.isin(far, samples.indices).all()
    assert np.all(np.isfinite(samples.disparity))
    np.testing.assert_array_equal(
        samples.disparity,
        np.where(projection.u_px[samples.indices] < 99.5, 0.1, 0.5).astype(np.float32),
    )
    assert samples.z_m.size == samples.indices.size == samples.disparity.size


def test_a_dense_scan_is_evenly_subsampled_to_max_samples():
    camera = PinholeCamera.from_fov(200, 120, hfov_deg=80.0)
    projection = _grid_projection(camera, step=1)
    disparity = np.full((120, 200), 0.3, dtype=np.float32)
    samples = sample_disparity(disparity, projection, LidarProjectionConfig(max_samples=1000))
    assert samples.indices.size == 1000 and samples.num_edge_rejected == 0
    steps = np.diff(samples.indices)
    assert steps.min() >= projection.indices.size // 1000 - 1
    assert steps.max() <= projection.indices.size // 1000 + 1
