"""Nearest-in-time pairing of images with LiDAR sweeps / depth images."""

from __future__ import annotations

import pytest

from lotus2_ros.perception.association import NearestInTime


def test_nearest_picks_the_closest_stamp_within_the_window():
    buf = NearestInTime[str](capacity=5)
    for stamp, name in [(100, "a"), (200, "b"), (300, "c")]:
        buf.add(stamp, name)
    assert buf.nearest(190, 50) == (200, "b")
    assert buf.nearest(251, 50) == (300, "c")
    assert buf.nearest(250, 50) == (200, "b")  # a tie goes to the earlier sweep
    assert buf.nearest(400, 50) is None
    assert buf.nearest(40, 50) is None
    assert buf.nearest(40, 60) == (100, "a")


def test_out_of_order_items_are_sorted_and_the_oldest_is_forgotten_first():
    buf = NearestInTime[int](capacity=3)
    for stamp in (300, 100, 200, 400):
        buf.add(stamp, stamp)
    assert len(buf) == 3
    assert buf.nearest(100, 10) is None  # 100 was the oldest and went first
    assert buf.nearest(210, 20) == (200, 200)


def test_an_item_with_the_same_stamp_replaces_the_stored_one():
    buf = NearestInTime[str]()
    buf.add(5, "old")
    buf.add(5, "new")
    assert len(buf) == 1 and buf.nearest(5, 0) == (5, "new")


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity"):
        NearestInTime(0)
