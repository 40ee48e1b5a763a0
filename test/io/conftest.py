"""Fixtures shared by the message-converter tests."""

from __future__ import annotations

import pytest

from lotus2_ros.io.msg_types import rosbags_types


@pytest.fixture(params=["rosbags", "rclpy"])
def types(request):
    """Both message families; the rclpy one needs the ROS 2 wheels (no running node)."""
    if request.param == "rosbags":
        return rosbags_types()
    pytest.importorskip("sensor_msgs.msg", reason="needs the ROS 2 sensor_msgs wheels")
    from lotus2_ros.ros.msg_types import rclpy_types

    return rclpy_types()
