"""PerceptionOutput → ROS messages by relative topic (rosbags family; no ROS needed).

The outputs are built by hand with known values, so every message can be read back and
compared with what went in.
"""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.io.image_msgs import image_msg_to_array
from lotus2_ros.io.msg_types import rosbags_types
from lotus2_ros.io.pointcloud import read_pointcloud2_fields, unpack_rgb
from lotus2_ros.perception.messages import OUTPUT_TOPICS, output_messages, topic_name
from lotus2_ros.perception.pipeline import PerceptionOutput

H, W = 12, 16
STAMP_NS = 1_700_000_123_456_789_012
FRAME_ID = "front_camera_optical_frame"
CAMERA = PinholeCamera(W, H, 20.0, 18.0, 7.25, 5.5)
FLOAT32 = 7
IMAGE_TOPICS = {  # topic -> (encoding, bytes per pixel, output attribute)
    "disparity": ("32FC1", 4, "disparity"),
    "depth/image": ("32FC1", 4, "depth_m"),
    "depth/colorized": ("rgb8", 3, "depth_colorized"),
    "normals/image": ("32FC3", 12, "normals"),
    "normals/colorized": ("rgb8", 3, "normals_colorized"),
}
METRIC_TOPICS = {"depth/image", "points"}
#: What a frame's products give (``scale_fit`` comes only with a reference fit, not a fixed scale).
PRODUCT_TOPICS = {
    "disparity": "sensor_msgs/msg/Image",
    "depth/image": "sensor_msgs/msg/Image",
    "depth/camera_info": "sensor_msgs/msg/CameraInfo",
    "depth/colorized": "sensor_msgs/msg/Image",
    "normals/image": "sensor_msgs/msg/Image",
    "normals/colorized": "sensor_msgs/msg/Image",
    "points": "sensor_msgs/msg/PointCloud2",
}


@pytest.fixture(scope="module")
def types():
    return rosbags_types()


def make_output(metric: bool = True, normals: bool = True, refined: bool = False) -> PerceptionOutput:
    """A small output with NaN pixels in depth, points and normals, aligned with ``CAMERA``."""
    rng = np.random.default_rng(1)
    disparity = rng.uniform(0.05, 1.0, (H, W)).astype(np.float32)
    n = rng.normal(size=(H, W, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[0, 0] = np.nan
    out = PerceptionOutput(
        stamp_ns=STAMP_NS, frame_id=FRAME_ID, refined=refined, calibration=CameraCalibration(CAMERA),
        rgb=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        disparity=disparity,
        normals=n if normals else None,
        depth_colorized=rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
        normals_colorized=rng.integers(0, 256, (H, W, 3), dtype=np.uint8) if normals else None,
    )
    if metric:
        depth = (1.0 / (2.0 * disparity + 0.1)).astype(np.float32)
        depth[3, 4:9] = np.nan
        u, v = np.meshgrid(np.arange(W), np.arange(H))
        out.depth_m = depth
        out.points_m = np.stack([(u - CAMERA.cx) / CAMERA.fx * depth, (v - CAMERA.cy) / CAMERA.fy * depth,
                                 depth], axis=-1).astype(np.float32)
        out.scale_shift = (2.0, 0.1)
    return out


def _check_header(msg):
    assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == STAMP_NS
    assert msg.header.frame_id == FRAME_ID


# ----------------------------------------------------------------------------- topics
def test_a_fixed_metric_output_gives_every_product_topic_with_its_message_type(types):
    msgs = output_messages(types, make_output())
    assert set(msgs) == set(PRODUCT_TOPICS)
    for topic, msg in msgs.items():
        assert msg.__msgtype__ == PRODUCT_TOPICS[topic] == OUTPUT_TOPICS[topic]
        _check_header(msg)


def test_a_relative_output_publishes_no_metric_topics(types):
    msgs = output_messages(types, make_output(metric=False))
    assert set(msgs) == set(PRODUCT_TOPICS) - METRIC_TOPICS


def test_refined_outputs_go_under_the_refined_prefix(types):
    msgs = output_messages(types, make_output(refined=True))
    assert set(msgs) == {"refined/" + t for t in PRODUCT_TOPICS}
    assert topic_name("points", refined=True) == "refined/points"
    assert topic_name("points", refined=False) == "points"
    _check_header(msgs["refined/depth/image"])


def test_wanted_filters_by_base_topic_name(types):
    assert set(output_messages(types, make_output(), {"disparity", "points"})) == {"disparity", "points"}
    refined = output_messages(types, make_output(refined=True), {"depth/image", "normals/colorized"})
    assert set(refined) == {"refined/depth/image", "refined/normals/colorized"}
    assert output_messages(types, make_output(), set()) == {}
    # A metric topic asked of a relative output simply does not exist.
    assert set(output_messages(types, make_output(metric=False), {"points", "disparity"})) == {"disparity"}


# ----------------------------------------------------------------------------- contents
@pytest.mark.parametrize("topic", list(IMAGE_TOPICS))
def test_images_have_the_right_encoding_size_and_pixels(types, topic):
    out = make_output()
    encoding, pixel_bytes, attr = IMAGE_TOPICS[topic]
    msg = output_messages(types, out)[topic]
    assert (msg.encoding, msg.height, msg.width, msg.step) == (encoding, H, W, W * pixel_bytes)
    assert msg.is_bigendian == 0
    np.testing.assert_array_equal(image_msg_to_array(msg), getattr(out, attr))  # NaN == NaN here


def test_depth_image_is_metres_with_nan_invalid(types):
    depth = image_msg_to_array(output_messages(types, make_output())["depth/image"])
    invalid = np.zeros((H, W), dtype=bool)
    invalid[3, 4:9] = True
    assert depth.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(depth), invalid)


def test_camera_info_describes_the_output_camera(types):
    msg = output_messages(types, make_output())["depth/camera_info"]
    assert (msg.width, msg.height, msg.distortion_model) == (W, H, "plumb_bob")
    np.testing.assert_array_equal(np.reshape(msg.k, (3, 3)), [[20.0, 0, 7.25], [0, 18.0, 5.5], [0, 0, 1]])
    np.testing.assert_array_equal(msg.d, np.zeros(5))
    np.testing.assert_array_equal(np.reshape(msg.r, (3, 3)), np.eye(3))
    np.testing.assert_array_equal(np.reshape(msg.p, (3, 4)), [[20.0, 0, 7.25, 0], [0, 18.0, 5.5, 0], [0, 0, 1, 0]])


def test_point_cloud_is_organised_with_xyz_rgb_and_normals(types):
    out = make_output()
    msg = output_messages(types, out)["points"]
    names = ["x", "y", "z", "rgb", "normal_x", "normal_y", "normal_z"]
    assert [f.name for f in msg.fields] == names
    assert [f.offset for f in msg.fields] == [0, 4, 8, 12, 16, 20, 24]
    assert {(f.datatype, f.count) for f in msg.fields} == {(FLOAT32, 1)}
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (H, W, 32, 32 * W)
    assert (msg.is_dense, msg.is_bigendian) == (False, False)
    fields = read_pointcloud2_fields(msg, names)
    np.testing.assert_array_equal(np.stack([fields[k] for k in "xyz"], axis=-1), out.points_m)
    np.testing.assert_array_equal(unpack_rgb(fields["rgb"]), out.rgb)
    np.testing.assert_array_equal(np.stack([fields[k] for k in names[4:]], axis=-1), out.normals)
    assert np.isnan(fields["z"][3, 4:9]).all()


def test_point_cloud_without_normals_has_only_xyz_rgb(types):
    msg = output_messages(types, make_output(normals=False))["points"]
    assert [f.name for f in msg.fields] == ["x", "y", "z", "rgb"]
    assert msg.point_step == 16


def test_every_message_serialises_and_reads_back(types):
    store = types.typestore
    for topic, msg in output_messages(types, make_output()).items():
        raw = store.serialize_cdr(msg, msg.__msgtype__)
        back = store.deserialize_cdr(raw, msg.__msgtype__)
        _check_header(back)
        if hasattr(msg, "data"):
            np.testing.assert_array_equal(back.data, msg.data, err_msg=topic)
