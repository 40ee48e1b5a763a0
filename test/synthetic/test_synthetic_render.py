"""Rendered depth, normals and colour against analytic truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lotus2_ros.geometry import PinholeCamera, depth_to_points
from lotus2_ros.synthetic import (
    Box,
    Plane,
    Scene,
    Sphere,
    Texture,
    camera_trajectory,
    invert_pose,
    look_at,
    make_indoor_scene,
    make_street_scene,
    pose_from_xyz_ypr,
    render,
    render_sequence,
    transform_points,
)

CAMERA = PinholeCamera(160, 120, fx=130.0, fy=125.0, cx=81.2, cy=58.9)
SOLID = Texture("solid", (0.6, 0.5, 0.4), grain=0.0)


def _scene(*primitives, **kwargs) -> Scene:
    return Scene(name="test", seed=0, primitives=tuple(primitives), **kwargs)


def _signed_distance(primitive, points_world: np.ndarray) -> np.ndarray:
    """Independent surface distance: 0 on the primitive's surface."""
    if isinstance(primitive, Plane):
        return (points_world - primitive.point_m) @ np.asarray(primitive.normal)
    if isinstance(primitive, Sphere):
        return np.linalg.norm(points_world - primitive.center_m, axis=1) - primitive.radius_m
    local = (points_world - primitive.center_m) @ primitive.R_world_box
    return np.max(np.abs(local) - np.asarray(primitive.half_extents_m), axis=1)


def test_camera_facing_a_wall_sees_its_distance_everywhere() -> None:
    position = np.array([1.3, -0.4, 2.0])
    distance_m = 4.25
    wall = Plane((position[0] + distance_m, 0.0, 0.0), (-1.0, 0.0, 0.0), SOLID)
    frame = render(_scene(wall), CAMERA, pose_from_xyz_ypr(position))
    assert frame.depth_m.shape == (120, 160) and frame.depth_m.dtype == np.float32
    assert np.max(np.abs(frame.depth_m - distance_m)) < 1e-5
    np.testing.assert_allclose(frame.normals.reshape(-1, 3), [[0.0, 0.0, -1.0]] * 19200, atol=1e-6)
    assert np.all(frame.primitive_index == 0)


def test_tilted_plane_depth_matches_analytic_z_per_pixel() -> None:
    T_world_camera = pose_from_xyz_ypr((2.0, 1.0, 1.5), yaw_rad=0.4, pitch_rad=0.2, roll_rad=-0.1)
    # The plane in the camera frame: n_c . p = offset_m.
    n_c = np.array([0.3, -0.2, -1.0]) / np.linalg.norm([0.3, -0.2, -1.0])
    p0_c = np.array([0.1, 0.2, 3.0])
    plane = Plane(
        tuple(transform_points(T_world_camera, p0_c)),
        tuple(T_world_camera[:3, :3] @ n_c),
        SOLID,
    )
    frame = render(_scene(plane), CAMERA, T_world_camera)
    rays = CAMERA.pixel_rays().astype(np.float64)  # [H,W,3], z = 1
    with np.errstate(divide="ignore"):
        z_true = (n_c @ p0_c) / (rays @ n_c)
    visible = z_true > 0.0
    assert visible.mean() > 0.99
    np.testing.assert_allclose(frame.depth_m[visible], z_true[visible], rtol=2e-6)
    assert np.all(np.isnan(frame.depth_m[~visible]))
    # n_c faces the camera (n . ray < 0 on the optical axis); a flipped plane renders the same.
    expected = np.broadcast_to(n_c, (visible.sum(), 3))
    np.testing.assert_allclose(frame.normals[visible], expected, atol=1e-6)
    flipped = Plane(plane.point_m, tuple(-np.asarray(plane.normal)), SOLID)
    frame_flipped = render(_scene(flipped), CAMERA, T_world_camera)
    np.testing.assert_allclose(frame_flipped.normals[visible], expected, atol=1e-6)


def test_floor_seen_by_a_level_camera_has_normal_minus_y_and_analytic_depth() -> None:
    height_m = 1.5
    frame = render(
        _scene(Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), SOLID)),
        CAMERA,
        pose_from_xyz_ypr((0.0, 0.0, height_m)),
    )
    rows = np.arange(120)
    below = rows > CAMERA.cy
    # A level camera at height h sees the floor at z = h * fy / (v - cy) below the horizon.
    z_true = height_m * CAMERA.fy / (rows[below] - CAMERA.cy)
    np.testing.assert_allclose(frame.depth_m[below], np.repeat(z_true[:, None], 160, 1), rtol=2e-6)
    assert np.all(np.isnan(frame.depth_m[~below]))
    np.testing.assert_allclose(
        frame.normals[below].reshape(-1, 3), [[0.0, -1.0, 0.0]] * (below.sum() * 160), atol=1e-6
    )
    assert np.all(np.isnan(frame.normals[~below]))


def test_sphere_normals_equal_offset_from_centre_over_radius_and_face_the_camera() -> None:
    center_world = np.array([4.0, 0.3, 1.2])
    radius_m = 0.8
    T_world_camera = look_at((0.5, -0.5, 1.6), center_world)
    frame = render(_scene(Sphere(tuple(center_world), radius_m, SOLID)), CAMERA, T_world_camera)
    hit = np.isfinite(frame.depth_m)
    assert 0.05 < hit.mean() < 0.9
    points = depth_to_points(frame.depth_m, CAMERA)[hit].astype(np.float64)  # [M,3] camera
    center_cam = transform_points(invert_pose(T_world_camera), center_world)
    normals = frame.normals[hit]
    np.testing.assert_allclose(np.linalg.norm(points - center_cam, axis=1), radius_m, atol=2e-5)
    np.testing.assert_allclose(normals, (points - center_cam) / radius_m, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-6)
    assert np.all(np.einsum("ij,ij->i", normals, points) < 0.0)


def test_camera_inside_a_sphere_sees_its_inner_surface() -> None:
    frame = render(
        _scene(Sphere((0.1, 0.0, 0.0), 5.0, SOLID)), CAMERA, pose_from_xyz_ypr((0, 0, 0))
    )
    points = depth_to_points(frame.depth_m, CAMERA).reshape(-1, 3).astype(np.float64)
    world = transform_points(frame.T_world_camera, points)
    np.testing.assert_allclose(np.linalg.norm(world - (0.1, 0.0, 0.0), axis=1), 5.0, atol=1e-5)
    assert np.all(np.einsum("ij,ij->i", frame.normals.reshape(-1, 3), points) < 0.0)


def test_rotated_box_shows_faces_with_rotated_normals() -> None:
    yaw = math.radians(35.0)
    box = Box((5.0, 0.0, 1.0), (1.0, 0.6, 1.0), SOLID, yaw_rad=yaw)
    T_world_camera = pose_from_xyz_ypr((0.0, 0.0, 1.0))
    frame = render(_scene(box), CAMERA, T_world_camera)
    hit = np.isfinite(frame.depth_m)
    normals_world = frame.normals[hit] @ T_world_camera[:3, :3].T
    # In box coordinates the camera sits at (-5 cos(yaw), 5 sin(yaw), 0) = (-4.1, 2.9, 0): it
    # sees the box's -x face and its +y face, turned by the yaw.
    minus_x = np.array([-math.cos(yaw), -math.sin(yaw), 0.0])
    plus_y = np.array([-math.sin(yaw), math.cos(yaw), 0.0])
    on_x = np.abs(normals_world @ minus_x - 1.0) < 1e-5
    on_y = np.abs(normals_world @ plus_y - 1.0) < 1e-5
    assert np.all(on_x | on_y) and on_x.sum() > 100 and on_y.sum() > 100
    world = transform_points(T_world_camera, depth_to_points(frame.depth_m, CAMERA)[hit])
    assert np.max(np.abs(_signed_distance(box, world))) < 2e-5


def test_depth_to_points_lie_on_the_primitives_of_generated_scenes() -> None:
    seen: set[tuple[str, int]] = set()
    for scene in (make_indoor_scene(3), make_street_scene(3)):
        for T_world_camera in camera_trajectory(scene, 5, step_m=0.6)[::2]:
            frame = render(scene, CAMERA, T_world_camera)
            hit = np.isfinite(frame.depth_m)
            points = depth_to_points(frame.depth_m, CAMERA)[hit]
            world = transform_points(T_world_camera, points)
            index = frame.primitive_index[hit]
            tolerance_m = 2e-4 * max(1.0, float(np.nanmax(frame.depth_m)))
            for i in np.unique(index):
                distance = _signed_distance(scene.primitives[i], world[index == i])
                assert np.max(np.abs(distance)) < tolerance_m
                seen.add((scene.name, int(i)))
    assert len(seen) >= 12


def test_shading_is_lambertian_in_the_normal() -> None:
    light = np.array([0.5, -1.0, -2.0]) / math.sqrt(5.25)
    ambient = 0.25
    albedo = np.array([0.6, 0.5, 0.4])
    scene = _scene(
        Plane((6.0, 0.0, 0.0), (-1.0, 0.0, 0.0), SOLID),  # wall facing the camera
        Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), SOLID),  # floor
        light_direction_world=tuple(light),
        ambient=ambient,
    )
    frame = render(scene, CAMERA, pose_from_xyz_ypr((0.0, 0.0, 1.0)))
    for index, normal_world in ((0, (-1.0, 0.0, 0.0)), (1, (0.0, 0.0, 1.0))):
        shade = ambient + (1.0 - ambient) * max(0.0, -float(np.dot(normal_world, light)))
        expected = np.round(255.0 * (albedo * shade) ** (1.0 / 2.2))
        pixels = frame.rgb[frame.primitive_index == index]
        np.testing.assert_allclose(pixels, np.broadcast_to(expected, pixels.shape), atol=1.0)
    assert not np.array_equal(frame.rgb[0, 0], frame.rgb[-1, 0])


def test_sky_has_nan_depth_and_normals_and_a_sky_colour() -> None:
    scene = make_street_scene(0)
    frame = render(scene, CAMERA, pose_from_xyz_ypr((0.0, 0.0, 1.5), pitch_rad=-0.5))
    sky = frame.primitive_index < 0
    assert 0.1 < sky.mean() < 0.9
    assert np.all(np.isnan(frame.depth_m[sky])) and np.all(np.isfinite(frame.depth_m[~sky]))
    assert np.all(np.isnan(frame.normals[sky])) and np.all(np.isfinite(frame.normals[~sky]))
    lo = np.minimum(scene.sky_horizon_rgb, scene.sky_zenith_rgb)
    hi = np.maximum(scene.sky_horizon_rgb, scene.sky_zenith_rgb)
    rgb_sky = frame.rgb[sky].astype(np.float64)
    assert np.all(rgb_sky >= np.floor(255 * lo ** (1 / 2.2))) and np.all(
        rgb_sky <= np.ceil(255 * hi ** (1 / 2.2))
    )


def test_hits_beyond_max_depth_count_as_sky() -> None:
    scene = _scene(Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), SOLID), max_depth_m=20.0)
    frame = render(scene, CAMERA, pose_from_xyz_ypr((0.0, 0.0, 1.5)))
    assert np.nanmax(frame.depth_m) <= 20.0
    rows = np.arange(120)
    far = (rows > CAMERA.cy) & (1.5 * CAMERA.fy / np.maximum(rows - CAMERA.cy, 1e-9) > 20.0)
    assert far.sum() >= 1 and np.all(frame.primitive_index[far] == -1)


def test_distorted_camera_renders_raw_pixels_whose_points_lie_on_the_plane() -> None:
    camera = PinholeCamera(160, 120, 120.0, 120.0, 79.5, 59.5, D=(-0.25, 0.06, 0.0, 0.0, 0.0))
    wall_x = 3.0
    scene = _scene(Plane((wall_x, 0.0, 0.0), (-1.0, 0.0, 0.0), SOLID))
    frame = render(scene, camera, pose_from_xyz_ypr((0.0, 0.0, 0.0)))
    np.testing.assert_allclose(frame.depth_m, wall_x, atol=1e-5)
    # A sphere off-centre: the raw image bends it, but back-projected points stay on it.
    sphere = Sphere((4.0, 1.0, 0.5), 0.7, SOLID)
    frame = render(_scene(sphere), camera, pose_from_xyz_ypr((0.0, 0.0, 0.0)))
    hit = np.isfinite(frame.depth_m)
    world = transform_points(frame.T_world_camera, depth_to_points(frame.depth_m, camera)[hit])
    assert hit.sum() > 200 and np.max(np.abs(_signed_distance(sphere, world))) < 1e-4


def test_culling_does_not_change_the_image() -> None:
    # The renderer skips pixels outside each object's projected bounds; casting every pixel
    # against every primitive must give the same hits.
    from lotus2_ros.synthetic import cast_rays

    scene = make_street_scene(5)
    T_world_camera = camera_trajectory(scene, 30, step_m=1.0)[-1]
    frame = render(scene, CAMERA, T_world_camera)
    rays = np.moveaxis(CAMERA.pixel_rays(), -1, 0).astype(np.float64)
    dirs = np.einsum("ij,jhw->ihw", T_world_camera[:3, :3], rays).astype(np.float32)
    t, index = cast_rays(scene, T_world_camera[:3, 3], dirs, max_t=scene.max_depth_m)
    np.testing.assert_array_equal(index, frame.primitive_index)
    np.testing.assert_allclose(np.where(index >= 0, t, np.nan), frame.depth_m, rtol=1e-5)


def test_same_seed_renders_identical_frames_and_other_seeds_differ() -> None:
    for make in (make_indoor_scene, make_street_scene):
        a, b, c = make(11), make(11), make(12)
        pose = camera_trajectory(a, 1)[0]
        frame_a, frame_b = render(a, CAMERA, pose), render(b, CAMERA, pose)
        np.testing.assert_array_equal(frame_a.rgb, frame_b.rgb)
        np.testing.assert_array_equal(frame_a.depth_m, frame_b.depth_m)
        np.testing.assert_array_equal(frame_a.normals, frame_b.normals)
        frame_c = render(c, CAMERA, pose)
        assert np.mean(frame_a.rgb != frame_c.rgb) > 0.5
        assert a.primitives[0].texture != c.primitives[0].texture


def test_rgb_has_texture_on_every_large_surface() -> None:
    scene = make_indoor_scene(4)
    frame = render(scene, CAMERA, camera_trajectory(scene, 1)[0])
    for i in np.unique(frame.primitive_index):
        mask = frame.primitive_index == i
        if mask.sum() > 500:
            assert frame.rgb[mask].astype(float).std(axis=0).max() > 2.0


def test_render_sequence_stamps_frames_at_the_rate_along_the_trajectory() -> None:
    scene = make_indoor_scene(2)
    frames = list(render_sequence(scene, CAMERA.scaled(40, 30), 4, rate_hz=30.0, start_stamp_ns=5))
    assert [f.stamp_ns for f in frames] == [5, 33_333_338, 66_666_672, 100_000_005]
    for frame, pose in zip(frames, camera_trajectory(scene, 4)):
        np.testing.assert_array_equal(frame.T_world_camera, pose)
    poses = [pose_from_xyz_ypr((1.0 + i, 0.0, 1.0)) for i in range(2)]
    frames = list(render_sequence(scene, CAMERA.scaled(40, 30), 2, poses=poses))
    assert frames[1].stamp_ns == 100_000_000
    np.testing.assert_array_equal(frames[1].T_world_camera, poses[1])


def test_render_rejects_bad_arguments_naming_them() -> None:
    scene = make_indoor_scene(0)
    with pytest.raises(ValueError, match=r"T_world_camera must have shape \(4, 4\), got \(3, 4\)"):
        render(scene, CAMERA, np.eye(4)[:3])
    with pytest.raises(ValueError, match="T_world_camera must be a rigid transform"):
        render(scene, CAMERA, np.diag([2.0, 1.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="camera must be a PinholeCamera, got ndarray"):
        render(scene, np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="stamp_ns must be an int"):
        render(scene, CAMERA, np.eye(4), stamp_ns=1.5)
    with pytest.raises(ValueError, match="rate_hz must be a positive finite number, got 0"):
        render_sequence(scene, CAMERA, 2, rate_hz=0)
    with pytest.raises(ValueError, match="poses must hold num_frames=3 poses, got 1"):
        render_sequence(scene, CAMERA, 3, poses=[np.eye(4)])
