"""InputBag: topics, stamps without decoding, and clear errors for missing, corrupt and ambiguous inputs."""

from __future__ import annotations

import shutil
import struct

import pytest
from bag_helpers import TINY_SETTINGS, fixed_config, read_bag

from lotus2_ros.bag import (
    BagReadError,
    BagTopicError,
    InputBag,
    ProcessBagOptions,
    cdr_header_stamp_ns,
    partial_path,
    plan_bag_run,
    process_bag,
    run_bag,
)
from lotus2_ros.bag.writer import OutputBag
from lotus2_ros.io.msg_types import rosbags_types
from lotus2_ros.perception.config import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")


def _rewrite(src, dest, keep=lambda topic: True, rename=None, storage="sqlite3"):
    """A copy of bag ``src`` with some topics dropped or renamed."""
    rename = rename or {}
    with OutputBag(dest, storage, rosbags_types().typestore) as out:
        conns = {}
        for topic, ty, t, raw in read_bag(src):
            if keep(topic):
                name = rename.get(topic, topic)
                conns.setdefault(name, out.add_topic(name, ty))
                out.write(conns[name], t, raw)
    return dest


def test_header_stamp_is_read_from_raw_cdr_in_both_byte_orders():
    little = bytes([0, 1, 0, 0]) + struct.pack("<iI", 1_700_000_000, 123_456_789) + b"rest"
    big = bytes([0, 0, 0, 0]) + struct.pack(">iI", -2, 5)
    assert cdr_header_stamp_ns(little) == 1_700_000_000_123_456_789
    assert cdr_header_stamp_ns(big) == -2 * 10**9 + 5
    with pytest.raises(ValueError):
        cdr_header_stamp_ns(b"\x00\x01\x00")
    with pytest.raises(ValueError, match="nanosec"):
        cdr_header_stamp_ns(bytes([0, 1, 0, 0]) + struct.pack("<iI", 0, 2_000_000_000))


def test_stamps_from_raw_messages_equal_the_deserialised_headers(lidar_bag):
    with InputBag(lidar_bag.path) as bag:
        for conn, _, raw in bag.messages(["/lidar/points", "/camera/image_raw"]):
            msg = bag.deserialize(raw, conn.msgtype, conn.topic)
            assert cdr_header_stamp_ns(raw) == msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_topics_are_picked_when_unambiguous(lidar_bag):
    with InputBag(lidar_bag.path) as bag:
        topics = bag.resolve_topics(metric_source="lidar")
        assert bag.storage == "sqlite3"
    assert (topics.image, topics.compressed, topics.camera_info, topics.reference, topics.tf) == (
        "/camera/image_raw", False, "/camera/camera_info", "/lidar/points", ("/tf_static",))


def test_a_raw_camera_and_its_compressed_twin_count_as_one_camera(lidar_bag, tmp_path):
    with InputBag(lidar_bag.path) as bag:
        raw_msgs = [(c, t, r) for c, t, r in bag.messages(["/camera/image_raw"])]
    with OutputBag(tmp_path / "twin", "mcap", rosbags_types().typestore) as out:
        a = out.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        b = out.add_topic("/camera/image_raw/compressed", "sensor_msgs/msg/CompressedImage")
        info = out.add_topic("/camera/camera_info", "sensor_msgs/msg/CameraInfo")
        other = out.add_topic("/other/camera_info", "sensor_msgs/msg/CameraInfo")
        del b, info, other
        for _, t, r in raw_msgs:
            out.write(a, t, r)
    with InputBag(tmp_path / "twin") as bag:
        topics = bag.resolve_topics()
        assert bag.storage == "mcap"
    assert topics.image == "/camera/image_raw" and topics.camera_info == "/camera/camera_info"


def test_missing_and_ambiguous_topics_name_the_bag_and_the_topic(lidar_bag, tmp_path):
    with InputBag(lidar_bag.path) as bag:
        with pytest.raises(BagTopicError, match=r"has no topic /front/image .*--image-topic"):
            bag.resolve_topics(image="/front/image")
        with pytest.raises(BagTopicError, match=r"/notes \(--lidar-topic\) is std_msgs/msg/String"):
            bag.resolve_topics(reference="/notes", metric_source="lidar")
    no_lidar = _rewrite(lidar_bag.path, tmp_path / "no_lidar", keep=lambda t: t != "/lidar/points")
    with pytest.raises(BagTopicError, match=f"{no_lidar} has no LiDAR topic"):
        plan_bag_run(ProcessBagOptions(no_lidar, tmp_path / "out", fixed_config(metric_source="lidar")),
                     TINY_SETTINGS)
    with pytest.raises(BagTopicError, match=f"{no_lidar} has no topic /velodyne_points"):
        plan_bag_run(ProcessBagOptions(no_lidar, tmp_path / "out", fixed_config(metric_source="none"),
                                       reference_topic="/velodyne_points"), TINY_SETTINGS)
    with pytest.raises(ConfigError, match="metric_source is 'fixed'"):
        plan_bag_run(ProcessBagOptions(lidar_bag.path, tmp_path / "out", fixed_config(),
                                       reference_topic="/lidar/points"), TINY_SETTINGS)
    with InputBag(lidar_bag.path) as bag, pytest.raises(
            BagTopicError, match=r"has no topic /right/camera_info \(--camera-info-topic\); its topics: /camera"):
        bag.resolve_topics(camera_info="/right/camera_info")
    with OutputBag(tmp_path / "two_cameras", "sqlite3", rosbags_types().typestore) as out:
        for topic in ("/left/image_raw", "/right/image_raw"):
            out.add_topic(topic, "sensor_msgs/msg/Image")
    with InputBag(tmp_path / "two_cameras") as bag, pytest.raises(BagTopicError, match="several image topics"):
        bag.resolve_topics()
    assert not partial_path(tmp_path / "out").exists()


@pytest.mark.parametrize("damage", ["missing", "not_a_bag", "bad_metadata", "truncated_db3"])
def test_unreadable_input_is_a_clear_error_and_stays_untouched(lidar_bag, tmp_path, damage):
    bag = tmp_path / "broken"
    if damage != "missing":
        shutil.copytree(lidar_bag.path, bag)
    if damage == "not_a_bag":
        (bag / "metadata.yaml").unlink()
    elif damage == "bad_metadata":
        (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: [")
    elif damage == "truncated_db3":
        db = next(bag.glob("*.db3"))
        db.write_bytes(db.read_bytes()[:5000])
    before = {p.name: p.read_bytes() for p in bag.iterdir()} if bag.exists() else {}
    with pytest.raises(BagReadError, match=str(bag)):
        plan_bag_run(ProcessBagOptions(bag, tmp_path / "out", fixed_config()), TINY_SETTINGS)
    after = {p.name: p.read_bytes() for p in bag.iterdir()} if bag.exists() else {}
    assert before == after and not (tmp_path / "out").exists()


def test_a_bag_corrupt_in_the_middle_fails_naming_the_bag(lidar_bag, tiny_engine, tmp_path):
    bag = tmp_path / "corrupt"
    shutil.copytree(lidar_bag.path, bag)
    db = next(bag.glob("*.db3"))
    data = bytearray(db.read_bytes())
    data[len(data) // 2: len(data) // 2 + 20000] = b"\xff" * 20000  # data pages, not the schema
    db.write_bytes(bytes(data))
    # metadata and schema are fine
    plan = plan_bag_run(ProcessBagOptions(bag, tmp_path / "out", fixed_config()), TINY_SETTINGS)
    with pytest.raises(BagReadError, match=f"input bag {bag} is corrupt .*malformed"):
        run_bag(plan, tiny_engine)
    assert db.read_bytes() == bytes(data) and not (tmp_path / "out").exists()
    # What was done before the damaged block is checkpointed in the partial folder, as for any failure.
    assert (partial_path(tmp_path / "out") / "journal.json").is_file()


def test_an_undecodable_image_in_the_middle_is_skipped_and_counted(lidar_bag, tiny_engine, tmp_path):
    # Damage the image payload of the second frame inside the sqlite file: the bag opens fine.
    bag = tmp_path / "damaged"
    shutil.copytree(lidar_bag.path, bag)
    import sqlite3

    db = next(bag.glob("*.db3"))
    with sqlite3.connect(db) as conn:
        topic_id = conn.execute("SELECT id FROM topics WHERE name='/camera/image_raw'").fetchone()[0]
        conn.execute("UPDATE messages SET data=? WHERE id=(SELECT id FROM messages WHERE topic_id=? "
                     "ORDER BY timestamp LIMIT 1 OFFSET 1)", (b"\x00\x01\x00\x00garbage", topic_id))
    stats = process_bag(ProcessBagOptions(bag, tmp_path / "out", fixed_config(), copy_inputs=False), tiny_engine)
    # A bad message is one skipped frame, counted with its reason, as the node drops it.
    assert stats.frames_processed == 2 and stats.skipped == {"image message does not deserialise": 1}
