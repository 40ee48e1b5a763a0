"""Time stamps as int nanoseconds, and header copies, for rclpy and rosbags messages alike."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.io.errors import MessageError
from lotus2_ros.io.msg_types import rosbags_types
from lotus2_ros.io.stamps import build_header, copy_header, header_stamp_ns, ns_to_stamp, stamp_to_ns


def _rclpy():
    pytest.importorskip("sensor_msgs.msg", reason="needs the ROS 2 sensor_msgs wheels")
    from lotus2_ros.ros.msg_types import rclpy_types

    return rclpy_types()


@pytest.fixture(params=["rosbags", "rclpy"])
def types(request):
    """Both message families; the rclpy one needs the ROS 2 wheels (no running node)."""
    return rosbags_types() if request.param == "rosbags" else _rclpy()


def test_a_stamp_is_seconds_times_1e9_plus_nanoseconds(types):
    assert stamp_to_ns(types.Time(sec=1, nanosec=5)) == 1_000_000_005


@pytest.mark.parametrize(
    ("stamp_ns", "sec", "nanosec"),
    [
        (0, 0, 0),
        (1_700_000_000_123_456_789, 1_700_000_000, 123_456_789),  # beyond float64 precision
        (-1, -1, 999_999_999),
        (np.int64(2_000_000_001), 2, 1),
        ((2**31 - 1) * 10**9 + 999_999_999, 2**31 - 1, 999_999_999),
    ],
)
def test_nanoseconds_round_trip_exactly_through_time(types, stamp_ns, sec, nanosec):
    stamp = ns_to_stamp(types, stamp_ns)
    assert (stamp.sec, stamp.nanosec) == (sec, nanosec)
    assert stamp_to_ns(stamp) == stamp_ns
    assert type(stamp_to_ns(stamp)) is int


@pytest.mark.parametrize(
    ("stamp_ns", "expected"),
    [
        (1.5e9, "stamp_ns must be an int, got 1500000000.0"),
        (True, "stamp_ns must be an int, got True"),
        (2**31 * 10**9, "outside the int32 seconds range"),
    ],
)
def test_bad_nanoseconds_raise_value_error(types, stamp_ns, expected):
    with pytest.raises(ValueError, match=expected):
        ns_to_stamp(types, stamp_ns)


def test_a_stamp_with_nanosec_beyond_one_second_is_malformed(types):
    stamp = types.Time(sec=1, nanosec=1_000_000_000)
    with pytest.raises(MessageError, match=r"Time.nanosec must be in \[0, 1e9\), got 1000000000"):
        stamp_to_ns(stamp)


def test_copy_header_builds_a_new_header_with_the_same_stamp_and_frame(types):
    header = build_header(types, 12_345_678_901, "camera_optical_frame")
    copy = copy_header(types, header)
    assert copy is not header and copy.stamp is not header.stamp
    assert (header_stamp_ns(copy), copy.frame_id) == (12_345_678_901, "camera_optical_frame")


def test_headers_copy_across_message_families():
    rclpy_types = _rclpy()
    bag_types = rosbags_types()
    live = build_header(rclpy_types, 7_000_000_003, "cam")
    recorded = copy_header(bag_types, live)
    assert type(recorded) is bag_types.Header
    assert (header_stamp_ns(recorded), recorded.frame_id) == (7_000_000_003, "cam")
    back = copy_header(rclpy_types, recorded)
    assert back == live  # rclpy messages compare by value
