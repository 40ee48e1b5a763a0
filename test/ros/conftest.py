"""Real rclpy + DDS fixtures: an in-process probe node (node subprocesses: ros_harness.py).

Each test process uses its own ROS_DOMAIN_ID and localhost-only discovery, so parallel runs and
other sessions on the machine do not see each other. Messages go across processes through real
DDS (Fast DDS); the tests use reliable QoS.
"""

from __future__ import annotations

import os
import time

import pytest

from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.synthetic import camera_trajectory, make_indoor_scene, render

rclpy = pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")

os.environ["ROS_DOMAIN_ID"] = str(20 + os.getpid() % 70)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

from ros_harness import H, W  # noqa: E402  (needs rclpy, checked above)


@pytest.fixture(scope="session")
def ros_context():
    context = rclpy.context.Context()
    rclpy.init(context=context)
    yield context
    rclpy.shutdown(context=context)


@pytest.fixture()
def probe(ros_context):
    """A probe node for publishing inputs and collecting outputs (see ``test_perception_node``)."""
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node(f"probe_{os.getpid()}_{time.monotonic_ns()}", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    node.executor_ = executor
    yield node
    executor.remove_node(node)
    node.destroy_node()


@pytest.fixture(scope="session")
def scene_frames():
    scene = make_indoor_scene(seed=1)
    camera = PinholeCamera.from_fov(W, H, 70.0)
    return camera, [render(scene, camera, pose).rgb for pose in camera_trajectory(scene, 3)]
