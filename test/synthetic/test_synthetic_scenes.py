"""Scene generators, poses, trajectories, primitives and textures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lotus2_ros.synthetic import (
    R_BODY_OPTICAL,
    SCENE_KINDS,
    Box,
    Plane,
    Scene,
    Sphere,
    Texture,
    camera_trajectory,
    cast_rays,
    invert_pose,
    look_at,
    make_indoor_scene,
    make_scene,
    make_street_scene,
    pose_from_xyz_ypr,
    surface_properties,
    transform_points,
)
from lotus2_ros.synthetic.textures import evaluate_texture, value_noise


def _unit_sphere_directions(count: int, seed: int = 0) -> np.ndarray:
    dirs = np.random.default_rng(seed).normal(size=(count, 3))
    return dirs / np.linalg.norm(dirs, axis=1, keepdims=True)


def _inside_distance(primitive, point: np.ndarray) -> float:
    """How deep the point lies inside a solid primitive (<= 0: outside)."""
    if isinstance(primitive, Sphere):
        return primitive.radius_m - float(np.linalg.norm(point - primitive.center_m))
    if isinstance(primitive, Box):
        local = (point - primitive.center_m) @ primitive.R_world_box
        return float(np.min(np.asarray(primitive.half_extents_m) - np.abs(local)))
    return -math.inf


def test_level_pose_looks_along_world_x_with_optical_axes() -> None:
    T = pose_from_xyz_ypr((1.0, 2.0, 3.0))
    np.testing.assert_array_equal(T[:3, :3], R_BODY_OPTICAL)
    np.testing.assert_array_equal(T[:3, 3], [1.0, 2.0, 3.0])
    # Optical z forward = world +x, optical x right = world -y, optical y down = world -z.
    np.testing.assert_array_equal(T[:3, :3] @ [0, 0, 1], [1, 0, 0])
    np.testing.assert_array_equal(T[:3, :3] @ [1, 0, 0], [0, -1, 0])
    np.testing.assert_array_equal(T[:3, :3] @ [0, 1, 0], [0, 0, -1])


def test_positive_pitch_looks_down_and_positive_yaw_turns_left() -> None:
    down = pose_from_xyz_ypr((0, 0, 0), pitch_rad=math.radians(30.0))
    np.testing.assert_allclose(down[:3, 2], [math.cos(math.radians(30)), 0.0, -0.5], atol=1e-12)
    left = pose_from_xyz_ypr((0, 0, 0), yaw_rad=math.pi / 2)
    np.testing.assert_allclose(left[:3, 2], [0.0, 1.0, 0.0], atol=1e-12)


def test_look_at_points_the_optical_axis_at_the_target_with_image_up_up() -> None:
    T = look_at((1.0, 1.0, 2.0), (4.0, 5.0, 2.0))
    np.testing.assert_allclose(T[:3, 2], [0.6, 0.8, 0.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, 1], [0.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target_m must differ from eye_m"):
        look_at((1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="parallel to up_world"):
        look_at((0.0, 0.0, 0.0), (0.0, 0.0, -3.0))


def test_invert_and_transform_points_are_consistent() -> None:
    T = pose_from_xyz_ypr((1.0, -2.0, 0.5), 0.3, 0.2, 0.1)
    points = np.random.default_rng(0).normal(size=(10, 3))
    np.testing.assert_allclose(
        transform_points(invert_pose(T), transform_points(T, points)), points, atol=1e-12
    )
    np.testing.assert_allclose(invert_pose(T) @ T, np.eye(4), atol=1e-12)


@pytest.mark.parametrize("kind", SCENE_KINDS)
def test_camera_trajectory_is_smooth_and_never_enters_an_object(kind: str) -> None:
    scene = make_scene(kind, 9)
    poses = camera_trajectory(scene, 300, step_m=0.2)  # longer than the path: ping-pong
    positions = np.array([T[:3, 3] for T in poses])
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    assert np.all(steps <= 0.2 + 1e-3) and np.median(steps) == pytest.approx(0.2, abs=1e-3)
    along = (positions - scene.path_start_m) @ (
        math.cos(scene.path_yaw_rad),
        math.sin(scene.path_yaw_rad),
        0.0,
    )
    assert along.min() >= -1e-9 and along.max() <= scene.path_length_m + 1e-9
    forward = np.array([T[:3, 2] for T in poses])
    turn = np.degrees(np.arccos(np.clip(np.sum(forward[1:] * forward[:-1], axis=1), -1, 1)))
    assert turn.max() < 2.0  # no jumps in orientation
    for position in positions[::10]:
        assert max(_inside_distance(p, position) for p in scene.primitives) < -0.3
        # Nothing closer than 0.3 m in any direction (casts through the scene).
        t, _ = cast_rays(scene, position, _unit_sphere_directions(500).T)
        assert t.min() > 0.3


def test_indoor_scene_is_closed_and_street_scene_has_sky() -> None:
    indoor, street = make_indoor_scene(4), make_street_scene(4)
    dirs = _unit_sphere_directions(2000).T
    _, index = cast_rays(indoor, indoor.path_start_m, dirs)
    assert np.all(index >= 0)
    _, index = cast_rays(street, street.path_start_m, dirs, max_t=street.max_depth_m)
    up = dirs[2] > 0.2
    assert np.mean(index[up] < 0) > 0.3 and np.all(index[dirs[2] < -0.1] >= 0)


def test_scene_generators_are_deterministic_and_seed_dependent() -> None:
    for kind in SCENE_KINDS:
        assert make_scene(kind, 5) == make_scene(kind, 5)
        assert make_scene(kind, 5) != make_scene(kind, 6)
        assert make_scene(kind, 5).name == kind
    assert len(make_street_scene(0).primitives) <= 40  # keeps rendering fast


def test_value_noise_is_smooth_deterministic_and_in_unit_range() -> None:
    s = np.linspace(-10.0, 10.0, 20001)
    noise = value_noise(s, np.full_like(s, 0.37), seed=3)
    assert noise.min() >= 0.0 and noise.max() <= 1.0 and noise.std() > 0.1
    assert np.max(np.abs(np.diff(noise))) < 0.01  # continuous: small steps for small moves
    np.testing.assert_array_equal(noise, value_noise(s, np.full_like(s, 0.37), seed=3))
    assert not np.array_equal(noise, value_noise(s, np.full_like(s, 0.37), seed=4))


def test_checker_and_stripes_follow_the_period() -> None:
    checker = Texture("checker", (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), period_m=2.0, grain=0.0)
    albedo = evaluate_texture(
        checker, np.array([0.5, 1.5, 1.5, 2.5]), np.array([0.5, 0.5, 1.5, 0.5])
    )
    np.testing.assert_array_equal(albedo[:, 0], [1.0, 0.0, 1.0, 1.0])
    stripes = Texture("stripes", (1.0, 0.0, 0.0), (0.0, 0.0, 1.0), period_m=1.0, grain=0.0)
    albedo = evaluate_texture(stripes, np.array([0.25, 0.75, 1.25]), np.array([5.0, -3.0, 0.0]))
    np.testing.assert_array_equal(albedo, [[1, 0, 0], [0, 0, 1], [1, 0, 0]])


def test_surface_properties_give_outward_normals_and_texture_colours() -> None:
    box = Box(
        (0.0, 0.0, 0.0),
        (1.0, 2.0, 3.0),
        Texture("solid", (0.2, 0.4, 0.6), grain=0.0),
        yaw_rad=math.pi / 2,
    )
    sphere = Sphere((5.0, 0.0, 0.0), 2.0, Texture("solid", (0.1, 0.1, 0.1), grain=0.0))
    scene = Scene("test", 0, (box, sphere))
    points = np.array([[0.5, 1.0, 0.0], [-2.0, 0.3, 0.0], [0.0, 0.0, 3.0], [5.0, 0.0, -2.0]])
    normals, albedo = surface_properties(scene, points, np.array([0, 0, 0, 1]))
    # Yawed by 90 degrees the box's x half-extent (1) lies along world y.
    np.testing.assert_allclose(normals, [[0, 1, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]], atol=1e-6)
    np.testing.assert_allclose(albedo, [[0.2, 0.4, 0.6]] * 3 + [[0.1, 0.1, 0.1]], atol=1e-6)


def test_box_slab_test_handles_rays_parallel_to_faces() -> None:
    box = Box((5.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    dirs = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # [3,3]: +x, +x, +y
    t = box.intersect(np.array([0.0, 0.5, 0.0]), dirs)
    np.testing.assert_array_equal(t, [4.0, 4.0, np.inf])
    t_outside = box.intersect(np.array([0.0, 1.5, 0.0]), dirs[:, :1])
    np.testing.assert_array_equal(t_outside, [np.inf])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Texture("plaid"), "pattern must be one of"),
        (lambda: Texture("solid", (1.2, 0.0, 0.0)), r"color_a must be 3 values in \[0, 1\]"),
        (
            lambda: Texture("solid", period_m=0.0),
            "period_m must be a positive finite number, got 0.0",
        ),
        (lambda: Plane((0, 0, 0), (0, 0, 0)), r"normal must be non-zero, got \(0, 0, 0\)"),
        (lambda: Plane((0, 0), (0, 0, 1)), r"point_m must be 3 finite numbers, got \(0, 0\)"),
        (lambda: Sphere((0, 0, 0), -1.0), "radius_m must be a positive finite number, got -1.0"),
        (lambda: Box((0, 0, 0), (1, 0, 1)), r"half_extents_m must all be > 0, got \(1, 0, 1\)"),
        (
            lambda: Box((0, 0, 0), (1, 1, 1), rotation=((1, 0, 0), (0, 1, 0), (0, 0, -1))),
            "rotation must be a proper",
        ),
        (lambda: Scene("x", 0, ()), "primitives must hold at least one primitive"),
        (
            lambda: Scene("x", 0, (Sphere((0, 0, 0), 1.0),), ambient=2.0),
            r"ambient must be in \[0, 1\], got 2.0",
        ),
        (
            lambda: make_scene("forest", 0),
            r"kind must be one of \('indoor', 'street'\), got 'forest'",
        ),
        (lambda: make_indoor_scene(-1), "seed must be a non-negative int, got -1"),
        (
            lambda: camera_trajectory(make_indoor_scene(0), 0),
            "num_frames must be a positive int, got 0",
        ),
        (
            lambda: camera_trajectory(make_indoor_scene(0), 2, step_m=-1.0),
            "step_m must be finite and >= 0",
        ),
        (lambda: pose_from_xyz_ypr((0, 0)), r"position_m must be 3 finite numbers"),
    ],
)
def test_invalid_scene_arguments_raise_errors_naming_them(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_synthetic_package_imports_neither_ros_nor_torch() -> None:
    # OpenCV may come in through lotus2_ros.geometry (allowed there); the scenes themselves are numpy.
    import subprocess
    import sys

    code = (
        "import sys, lotus2_ros.synthetic, lotus2_ros.geometry.camera; "
        "print(sorted(m for m in ('rclpy', 'torch') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
