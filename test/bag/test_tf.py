"""TfTree against analytic transforms: chains through a common parent, interpolation, no extrapolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lotus2_ros.bag.synthetic import quaternion_from_matrix
from lotus2_ros.bag.tf import TfTree, extrinsic_lookup


def _rot_z(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _pose(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _value(T) -> tuple[float, ...]:
    return (*T[:3, 3], *quaternion_from_matrix(T))


def test_quaternion_round_trip_covers_all_branches():
    from lotus2_ros.geometry.transforms import rigid_transform

    rng = np.random.default_rng(0)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        R = rigid_transform([0, 0, 0, *q])[:3, :3]
        np.testing.assert_allclose(rigid_transform([0, 0, 0, *quaternion_from_matrix(R)])[:3, :3], R, atol=1e-12)


def test_static_chain_through_the_common_parent_maps_points_between_sensors():
    T_base_cam = _pose(_rot_z(90), (0.1, 0.0, 1.2))
    T_base_lidar = _pose(_rot_z(-30), (0.0, 0.2, 1.5))
    T_world_base = _pose(_rot_z(10), (5.0, 1.0, 0.0))
    tree = TfTree()
    tree.add("base_link", "camera", _value(T_base_cam), 0, static=True)
    tree.add("/base_link", "lidar", _value(T_base_lidar), 0, static=True)  # ROS 1 style name: same frame
    tree.add("world", "base_link", _value(T_world_base), 0, static=True)
    expected = np.linalg.inv(T_base_cam) @ T_base_lidar
    np.testing.assert_allclose(tree.lookup("camera", "lidar", 123), expected, atol=1e-12)
    np.testing.assert_allclose(tree.lookup("lidar", "camera", 123), np.linalg.inv(expected), atol=1e-12)
    # A point 2 m ahead of the LiDAR, seen from the camera: through the world it is the same point.
    p_lidar = np.array([2.0, 0.0, 0.0, 1.0])
    p_world = T_world_base @ T_base_lidar @ p_lidar
    np.testing.assert_allclose(tree.lookup("camera", "lidar", 0) @ p_lidar,
                               np.linalg.inv(T_world_base @ T_base_cam) @ p_world, atol=1e-12)
    assert tree.connected("camera", "world") and tree.lookup("camera", "camera", 0).tolist() == np.eye(4).tolist()
    assert not tree.connected("camera", "gps") and tree.lookup("camera", "gps", 0) is None


def test_dynamic_transforms_are_interpolated_and_never_extrapolated():
    tree = TfTree()
    tree.add("odom", "base", _value(_pose(_rot_z(0), (0, 0, 0))), 1_000, static=False)
    tree.add("odom", "base", _value(_pose(_rot_z(90), (2, 0, 0))), 3_000, static=False)
    tree.add("base", "lidar", _value(_pose(np.eye(3), (0, 0, 1))), 0, static=True)
    mid = tree.lookup("odom", "lidar", 2_000)
    np.testing.assert_allclose(mid[:3, 3], [1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(mid[:3, :3], _rot_z(45), atol=1e-12)  # slerp half way
    np.testing.assert_allclose(tree.lookup("odom", "lidar", 3_000)[:3, :3], _rot_z(90), atol=1e-12)
    assert tree.lookup("odom", "lidar", 999) is None and tree.lookup("odom", "lidar", 3_001) is None


@pytest.mark.parametrize("source", ["auto", "tf", "parameter"])
def test_extrinsic_source_decides_between_bag_tf_and_parameters(source):
    tree = TfTree()
    T = _pose(_rot_z(5), (0.0, -0.2, -0.05))
    tree.add("camera", "lidar", _value(T), 0, static=True)
    fallback = np.full((4, 4), 7.0)
    lookup = extrinsic_lookup(tree, source, fallback)
    if source == "parameter":
        assert lookup is None  # the assembler then uses lidar_extrinsic
        return
    np.testing.assert_allclose(lookup("camera", "lidar", 0), T, atol=1e-12)
    other = lookup("camera", "velodyne", 0)
    assert (other is fallback) if source == "auto" else other is None
    assert extrinsic_lookup(TfTree(), "auto", fallback) is None  # a bag without TF: parameters
