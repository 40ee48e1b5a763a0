"""Recycled message payloads (``ros.msg_types.PayloadPool``): reused only once nobody holds them."""

from __future__ import annotations

import threading
import weakref

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="needs the ROS 2 sensor_msgs wheels")

from lotus2_ros.io.image_msgs import build_image, image_msg_to_array  # noqa: E402
from lotus2_ros.io.pointcloud import build_pointcloud2, read_pointcloud2_fields  # noqa: E402
from lotus2_ros.io.stamps import build_header  # noqa: E402
from lotus2_ros.ros.msg_types import PayloadPool, RclpyTypes, whole_payload  # noqa: E402

SIZE = 2 << 20  # above the pool's 1 MiB threshold


def test_a_dropped_payload_is_handed_out_again_and_a_held_one_never():
    pool = PayloadPool()
    first = pool.take(SIZE)
    first_ref = weakref.ref(first)
    second = pool.take(SIZE)
    assert second is not first  # `first` is still held
    del first
    assert pool.take(SIZE) is first_ref()  # recycled, not reallocated
    assert len(second) == SIZE and pool.held_bytes == 2 * SIZE


def test_payloads_below_the_threshold_or_beyond_the_budget_are_not_kept():
    pool = PayloadPool(min_bytes=1024, per_size=1, max_bytes=3 * SIZE)
    assert len(pool.take(100)) == 100 and pool.held_bytes == 0
    a = pool.take(SIZE)
    b = pool.take(SIZE)  # per_size reached: allocated, not kept
    assert a is not b and pool.held_bytes == SIZE
    big = pool.take(4 * SIZE)  # over max_bytes
    assert len(big) == 4 * SIZE and pool.held_bytes == SIZE


def _cloud(types, value: float):
    h, w = 256, 512  # 256x512 points x 32 bytes = 4 MiB
    points = np.full((h, w, 3), value, np.float32)
    normals = np.zeros((h, w, 3), np.float32)
    normals[..., 2] = -1.0
    rgb = np.full((h, w, 3), int(value) % 256, np.uint8)
    return build_pointcloud2(types, build_header(types, 5, "cam"), points, rgb, normals)


def test_a_message_somebody_keeps_is_never_overwritten_by_the_next_one():
    types = RclpyTypes()
    kept = _cloud(types, 1.0)
    kept_image = build_image(types, build_header(types, 5, "cam"), np.full((512, 1024), 3.0, np.float32), "32FC1")
    data_only = _cloud(types, 2.0).data  # the message is gone, its payload is held
    for value in (4.0, 5.0, 6.0):
        _cloud(types, value)
        build_image(types, build_header(types, 5, "cam"), np.full((512, 1024), value, np.float32), "32FC1")
    np.testing.assert_array_equal(read_pointcloud2_fields(kept, ["x"])["x"], 1.0)
    np.testing.assert_array_equal(image_msg_to_array(kept_image), 3.0)
    assert np.frombuffer(data_only, np.float32)[0] == 2.0


def test_messages_built_into_recycled_payloads_equal_fresh_ones():
    recycled, fresh = RclpyTypes(), RclpyTypes()
    fresh.payloads.min_bytes = 1 << 40  # never pooled
    for value in (7.0, 8.0):  # the second cloud reuses the first one's payload
        msg = _cloud(recycled, value)
        assert bytes(msg.data) == bytes(_cloud(fresh, value).data)
        del msg
    assert recycled.payloads.held_bytes == 256 * 512 * 32


def test_threads_building_at_once_never_share_a_payload():
    types = RclpyTypes()
    errors: list[str] = []

    def build(value: float) -> None:
        for _ in range(20):
            msg = _cloud(types, value)
            x = read_pointcloud2_fields(msg, ["x"])["x"]
            if not np.all(x == value):
                errors.append(f"thread {value}: cloud holds {np.unique(x)[:4]}")

    threads = [threading.Thread(target=build, args=(v,)) for v in (10.0, 11.0, 12.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_an_image_made_in_payload_storage_goes_into_its_message_without_a_copy():
    types = RclpyTypes()
    header = build_header(types, 5, "cam")
    depth = types.payload_array((512, 1024), np.float32)  # 2 MiB: pooled
    depth[:] = 4.0
    msg = build_image(types, header, depth, "32FC1")
    assert msg.data is whole_payload(depth)  # the message holds the array's own memory
    np.testing.assert_array_equal(image_msg_to_array(msg), 4.0)
    rgb = types.payload_array((1, 512, 1024, 3), np.uint8)  # a [1,H,W,3] product, published as its [0]
    rgb[:] = 9
    assert build_image(types, header, rgb[0], "rgb8").data is whole_payload(rgb)


def test_part_of_a_payload_array_a_plain_array_or_a_small_one_is_copied():
    types = RclpyTypes()
    header = build_header(types, 5, "cam")
    big = types.payload_array((1024, 1024), np.float32)
    big[:] = np.arange(1024, dtype=np.float32)[:, None]
    half = build_image(types, header, big[:512], "32FC1")  # the payload's first half only
    assert whole_payload(big[:512]) is None and half.data is not whole_payload(big)
    big[:] = -1.0
    np.testing.assert_array_equal(image_msg_to_array(half), np.arange(512, dtype=np.float32)[:, None].repeat(1024, 1))
    small = types.payload_array((8, 8), np.float32)  # below the pool's threshold: an ordinary array
    assert whole_payload(small) is None
    plain = np.zeros((512, 1024), np.float32)
    msg = build_image(types, header, plain, "32FC1")
    plain[:] = 1.0
    np.testing.assert_array_equal(image_msg_to_array(msg), 0.0)


def test_a_payload_is_recycled_only_once_the_product_array_and_its_message_are_gone():
    types = RclpyTypes()
    product = types.payload_array((512, 1024), np.float32)
    product[:] = 1.0
    msg = build_image(types, build_header(types, 5, "cam"), product, "32FC1")
    payload = weakref.ref(msg.data)
    del msg
    other = types.payload_array((512, 1024), np.float32)  # the product still holds its payload
    other[:] = 2.0
    assert whole_payload(other) is not payload()
    np.testing.assert_array_equal(product, 1.0)
    del product
    assert whole_payload(types.payload_array((512, 1024), np.float32)) is payload()  # now free again


def test_an_array_viewing_some_other_message_payload_is_still_copied():
    types = RclpyTypes()
    header = build_header(types, 5, "cam")
    incoming = build_image(types, header, np.full((512, 1024), 1.0, np.float32), "32FC1")  # e.g. a received image
    view = np.frombuffer(incoming.data, np.float32).reshape(512, 1024)  # all of that message's payload
    assert whole_payload(view) is incoming.data
    outgoing = build_image(types, header, view, "32FC1")
    assert outgoing.data is not incoming.data  # not a product array: copied as before
    recycled = types.payload_array((512, 1024), np.float32)
    del incoming, view, outgoing
    reused = build_image(types, header, np.zeros((512, 1024), np.float32), "32FC1")  # may reuse a product's payload
    assert reused.data is not whole_payload(recycled)  # the product still holds its own
