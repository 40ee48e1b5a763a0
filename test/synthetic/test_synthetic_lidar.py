"""Simulated spinning LiDAR against analytic ranges and the rendered camera depth."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from lotus2_ros.geometry import PinholeCamera, points_to_pixels
from lotus2_ros.synthetic import (
    DEFAULT_T_CAMERA_LIDAR,
    LidarModel,
    Plane,
    Scene,
    Sphere,
    Texture,
    camera_trajectory,
    make_indoor_scene,
    make_street_scene,
    pose_from_xyz_ypr,
    render,
    simulate_lidar,
    transform_points,
)

SOLID = Texture("solid", (0.5, 0.5, 0.5), grain=0.0)
IDEAL = LidarModel(range_noise_std_m=0.0, dropout_probability=0.0, outlier_fraction=0.0)


def _scene(*primitives) -> Scene:
    return Scene(name="test", seed=0, primitives=tuple(primitives))


def _analytic_range(primitives, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Nearest hit along unit directions, computed independently in float64."""
    best = np.full(dirs.shape[0], np.inf)
    for p in primitives:
        if isinstance(p, Plane):
            n = np.asarray(p.normal)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = ((np.asarray(p.point_m) - origin) @ n) / (dirs @ n)
        else:
            oc = origin - np.asarray(p.center_m)
            b = dirs @ oc
            disc = b * b - (oc @ oc - p.radius_m**2)
            with np.errstate(invalid="ignore"):
                t = -b - np.sqrt(disc)
        t = np.where(np.isfinite(t) & (t > 0.0), t, np.inf)
        best = np.minimum(best, t)
    return best


def test_noiseless_ranges_equal_the_true_distance_along_each_beam() -> None:
    primitives = (
        Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), SOLID),
        Plane((12.0, 0.0, 0.0), (-1.0, 0.2, 0.0), SOLID),
        Sphere((4.0, 2.0, 1.0), 1.2, SOLID),
        Sphere((-3.0, -4.0, 0.5), 2.0, SOLID),
    )
    T_world_camera = pose_from_xyz_ypr((0.5, 0.2, 1.4), yaw_rad=0.3)
    scan = simulate_lidar(_scene(*primitives), IDEAL, T_world_camera, rng=0)
    assert scan.points_m.shape[0] > 10_000 and scan.points_m.dtype == np.float32
    T_world_lidar = T_world_camera @ IDEAL.T_camera_lidar
    points = scan.points_m.astype(np.float64)
    ranges = np.linalg.norm(points, axis=1)
    dirs_world = (points / ranges[:, None]) @ T_world_lidar[:3, :3].T
    truth = _analytic_range(primitives, T_world_lidar[:3, 3], dirs_world)
    np.testing.assert_allclose(ranges, truth, rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(scan.range_m, truth, rtol=2e-6, atol=1e-5)
    np.testing.assert_allclose(scan.true_range_m, truth, rtol=2e-6, atol=1e-5)
    assert not scan.is_outlier.any()
    assert np.all((scan.intensity >= 0.0) & (scan.intensity <= 0.5 + 1e-6))


def test_lidar_points_project_onto_camera_pixels_with_the_same_depth() -> None:
    scene = make_indoor_scene(6)
    camera = PinholeCamera.from_fov(320, 240, 80.0)
    T_world_camera = camera_trajectory(scene, 10, step_m=0.3)[5]
    frame = render(scene, camera, T_world_camera)
    scan = simulate_lidar(scene, IDEAL, T_world_camera, rng=1)
    points_cam = transform_points(IDEAL.T_camera_lidar, scan.points_m)
    u, v, z = points_to_pixels(points_cam, camera)
    inside = camera.contains_px(u, v) & (u >= 1) & (v >= 1) & (u <= 318) & (v <= 238)
    u, v, z = u[inside], v[inside], z[inside]
    assert u.size > 1000
    # Bilinear interpolation of inverse depth is exact on planes; use it where all four
    # neighbours see the same face (same primitive and normal: away from edges).
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    au, av = u - u0, v - v0
    index, normals = frame.primitive_index, frame.normals
    same = np.ones(u.shape, dtype=bool)
    for dv, du in ((0, 1), (1, 0), (1, 1)):
        same &= index[v0, u0] == index[v0 + dv, u0 + du]
        same &= np.all(np.abs(normals[v0, u0] - normals[v0 + dv, u0 + du]) < 0.02, axis=1)
    inv = 1.0 / frame.depth_m.astype(np.float64)
    inv_interp = (
        (1 - au) * (1 - av) * inv[v0, u0]
        + au * (1 - av) * inv[v0, u0 + 1]
        + (1 - au) * av * inv[v0 + 1, u0]
        + au * av * inv[v0 + 1, u0 + 1]
    )
    depth_camera = 1.0 / inv_interp[same]
    z = z[same]
    matches = np.abs(depth_camera - z) < 1e-3 * z
    assert matches.mean() > 0.95
    # The rest are occlusions: the camera sees something in front of the LiDAR's point.
    assert np.all(depth_camera[~matches] < z[~matches])


def test_occlusion_differs_between_lidar_and_camera_because_of_the_mount_offset() -> None:
    # A small sphere right in front of a wall: the LiDAR 0.2 m above the camera sees parts of
    # the wall the camera does not.
    primitives = (
        Plane((6.0, 0.0, 0.0), (-1.0, 0.0, 0.0), SOLID),
        Sphere((1.0, 0.0, 1.1), 0.15, SOLID),
    )
    scene = _scene(*primitives)
    camera = PinholeCamera.from_fov(320, 240, 60.0)
    T_world_camera = pose_from_xyz_ypr((0.0, 0.0, 1.0))
    frame = render(scene, camera, T_world_camera)
    model = dataclasses.replace(
        IDEAL,
        horizontal_resolution_deg=0.1,
        num_beams=64,
        vertical_fov_min_deg=-10.0,
        vertical_fov_max_deg=10.0,
    )
    scan = simulate_lidar(scene, model, T_world_camera, rng=0)
    u, v, z = points_to_pixels(transform_points(model.T_camera_lidar, scan.points_m), camera)
    inside = camera.contains_px(u, v)
    depth = frame.depth_m[np.round(v[inside]).astype(int), np.round(u[inside]).astype(int)]
    occluded = depth < z[inside] - 0.5
    assert occluded.sum() >= 3


def test_beam_count_and_vertical_angles_match_the_model() -> None:
    model = dataclasses.replace(
        IDEAL,
        num_beams=16,
        vertical_fov_min_deg=-15.0,
        vertical_fov_max_deg=15.0,
        horizontal_resolution_deg=1.0,
    )
    scene = make_indoor_scene(1)  # closed room: every beam returns
    scan = simulate_lidar(scene, model, camera_trajectory(scene, 1)[0], rng=0)
    assert scan.points_m.shape == (16 * 360, 3)
    np.testing.assert_array_equal(np.bincount(scan.ring), [360] * 16)
    elevation = np.degrees(np.arcsin(scan.points_m[:, 2] / np.linalg.norm(scan.points_m, axis=1)))
    np.testing.assert_allclose(elevation, -15.0 + 2.0 * scan.ring, atol=1e-4)
    azimuth = np.degrees(np.arctan2(scan.points_m[:, 1], scan.points_m[:, 0]))
    np.testing.assert_allclose(np.sort(azimuth[scan.ring == 3]), -180.0 + np.arange(360), atol=1e-4)
    np.testing.assert_allclose(np.degrees(model.elevations_rad), np.linspace(-15, 15, 16))


def test_noise_dropout_and_outliers_follow_the_configured_rates() -> None:
    scene = make_indoor_scene(1)
    pose = camera_trajectory(scene, 1)[0]
    ideal = simulate_lidar(scene, IDEAL, pose, rng=3)
    noisy_model = dataclasses.replace(
        IDEAL, range_noise_std_m=0.05, dropout_probability=0.2, outlier_fraction=0.1
    )
    scan = simulate_lidar(scene, noisy_model, pose, rng=3)
    assert scan.points_m.shape[0] / ideal.points_m.shape[0] == pytest.approx(0.8, abs=0.01)
    assert scan.is_outlier.mean() == pytest.approx(0.1, abs=0.01)
    error = (scan.range_m - scan.true_range_m)[~scan.is_outlier]
    assert error.std() == pytest.approx(0.05, rel=0.03)
    assert abs(error.mean()) < 0.002
    np.testing.assert_allclose(np.linalg.norm(scan.points_m, axis=1), scan.range_m, rtol=1e-5)
    outlier_ranges = scan.range_m[scan.is_outlier]
    assert outlier_ranges.min() >= IDEAL.min_range_m and outlier_ranges.max() <= IDEAL.max_range_m
    # Uniform over [min, max]: the mean is the midpoint (far beyond the room).
    midpoint = (IDEAL.min_range_m + IDEAL.max_range_m) / 2.0
    assert outlier_ranges.mean() == pytest.approx(midpoint, rel=0.05)


def test_same_seed_gives_identical_scans_and_other_seeds_differ() -> None:
    scene = make_street_scene(2)
    pose = camera_trajectory(scene, 1)[0]
    model = LidarModel()  # default: noise, dropout and outliers on
    a = simulate_lidar(scene, model, pose, rng=7)
    b = simulate_lidar(scene, model, pose, rng=np.random.default_rng(7))
    c = simulate_lidar(scene, model, pose, rng=8)
    np.testing.assert_array_equal(a.points_m, b.points_m)
    np.testing.assert_array_equal(a.ring, b.ring)
    assert a.points_m.shape != c.points_m.shape or not np.array_equal(a.points_m, c.points_m)


def test_sky_and_ranges_beyond_max_range_give_no_points() -> None:
    ground = _scene(Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), SOLID))
    model = dataclasses.replace(
        IDEAL, num_beams=21, vertical_fov_min_deg=-10.0, vertical_fov_max_deg=10.0
    )
    T_world_camera = pose_from_xyz_ypr((0.0, 0.0, 1.5))
    scan = simulate_lidar(ground, model, T_world_camera, rng=0)
    elevations = np.degrees(model.elevations_rad)
    # The LiDAR is 1.7 m up: beams at or above the horizon see sky, and low beams beyond
    # max_range_m (100 m) are dropped too.
    reach_deg = math.degrees(math.asin(1.7 / 100.0))
    returning = np.flatnonzero(elevations < -reach_deg)
    np.testing.assert_array_equal(np.unique(scan.ring), returning)
    assert np.all(scan.points_m[:, 2] < 0.0)
    np.testing.assert_allclose(scan.points_m[:, 2], -1.7, atol=1e-4)
    sky_only = simulate_lidar(
        ground, dataclasses.replace(model, vertical_fov_min_deg=0.0), T_world_camera, rng=0
    )
    assert sky_only.points_m.shape == (0, 3)


def test_default_extrinsic_mounts_the_lidar_above_the_camera_in_rep103_axes() -> None:
    T = DEFAULT_T_CAMERA_LIDAR
    assert T[1, 3] == pytest.approx(-0.2)  # optical -y is up
    np.testing.assert_array_equal(T[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])  # forward
    np.testing.assert_array_equal(T[:3, :3] @ [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0])  # left
    np.testing.assert_array_equal(T[:3, :3] @ [0.0, 0.0, 1.0], [0.0, -1.0, 0.0])  # up
    np.testing.assert_array_equal(LidarModel().T_camera_lidar, T)
    assert not LidarModel().T_camera_lidar.flags.writeable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_beams": 0}, "num_beams must be a positive int, got 0"),
        ({"vertical_fov_min_deg": 20.0}, "vertical_fov_min_deg <= vertical_fov_max_deg"),
        ({"horizontal_resolution_deg": 0.0}, r"horizontal_resolution_deg must be in \(0, 90\]"),
        ({"max_range_m": float("inf")}, "need 0 <= min_range_m < max_range_m < inf"),
        ({"range_noise_std_m": -0.1}, "range_noise_std_m must be >= 0, got -0.1"),
        ({"dropout_probability": 1.0}, r"dropout_probability must be in \[0, 1\), got 1.0"),
        ({"outlier_fraction": 1.5}, r"outlier_fraction must be in \[0, 1\], got 1.5"),
        ({"T_camera_lidar": np.eye(3)}, r"T_camera_lidar must have shape \(4, 4\), got \(3, 3\)"),
    ],
)
def test_invalid_lidar_models_raise_errors_naming_the_argument(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LidarModel(**kwargs)


def test_simulate_lidar_rejects_bad_arguments() -> None:
    scene = make_indoor_scene(0)
    with pytest.raises(ValueError, match="rng must be a numpy Generator or an int seed, got 'x'"):
        simulate_lidar(scene, IDEAL, np.eye(4), rng="x")
    with pytest.raises(ValueError, match=r"T_world_camera must have shape \(4, 4\)"):
        simulate_lidar(scene, IDEAL, np.eye(3))
    with pytest.raises(ValueError, match="lidar must be a LidarModel"):
        simulate_lidar(scene, None, np.eye(4))
