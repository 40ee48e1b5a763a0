"""The writer's fast paths: CDR of images/clouds as spliced pieces, direct sqlite3 blob writes, shared typestore.

Each must give exactly what rosbags gives: the serialised bytes (both byte orders, odd sizes,
every alignment of the strings before ``data``), the stored rows, and the bag's metadata.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from lotus2_ros.bag import writer as writer_mod
from lotus2_ros.bag.cdr import SPLICED_TYPES, parts_size, serialize_cdr_parts
from lotus2_ros.bag.reader import InputBag
from lotus2_ros.bag.writer import BLOB_WRITE_MIN_BYTES, SQLITE_PAGE_SIZE, OutputBag
from lotus2_ros.io.msg_types import rosbags_types

T = rosbags_types()
STORE = T.typestore
IMAGE, CLOUD, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/PointCloud2", "sensor_msgs/msg/CompressedImage"
HAS_BLOBOPEN = hasattr(sqlite3.Connection, "blobopen")


def _header(frame_id: str, sec: int = 1_700_000_123, nanosec: int = 999_999_999):
    return T.Header(stamp=T.Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def _image(frame_id: str, encoding: str, nbytes: int, seed: int = 0):
    data = np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)
    return T.Image(header=_header(frame_id), height=1, width=max(1, nbytes), encoding=encoding,
                   is_bigendian=0, step=nbytes, data=data)


def _cloud(frame_id: str, names: list[str], npoints: int, point_step: int, dense: bool, seed: int = 0):
    fields = [T.PointField(name=n, offset=4 * i, datatype=7 if i % 2 else 2, count=1 + i % 3)
              for i, n in enumerate(names)]
    data = np.random.default_rng(seed).integers(0, 256, npoints * point_step, dtype=np.uint8)
    return T.PointCloud2(header=_header(frame_id), height=1, width=npoints, fields=fields, is_bigendian=False,
                         point_step=point_step, row_step=npoints * point_step, data=data, is_dense=dense)


def _joined(parts) -> bytes:
    return b"".join(bytes(memoryview(p)) for p in parts)


FRAME_IDS = ["", "c", "ca", "cam", "cam0", "camé_optical", "x" * 17]


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("frame_id", FRAME_IDS)
@pytest.mark.parametrize("nbytes", [0, 1, 3, 5, 7, 640 * 480 * 3 + 1])
def test_image_parts_equal_rosbags(frame_id, nbytes, little_endian):
    for encoding in ("rgb8", "32FC1", "mono16x"):  # encodings of several lengths: every alignment of `step`
        msg = _image(frame_id, encoding, nbytes)
        parts = serialize_cdr_parts(STORE, msg, IMAGE, little_endian=little_endian)
        expected = bytes(STORE.serialize_cdr(msg, IMAGE, little_endian=little_endian))
        assert _joined(parts) == expected
        assert parts_size(parts) == len(expected)
        assert len(parts) == 4 and (msg.data.size == 0 or np.shares_memory(np.asarray(parts[2]), msg.data))  # the payload is not copied


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("dense", [True, False])
@pytest.mark.parametrize("names,npoints,point_step", [
    ([], 0, 0), (["x"], 1, 4), (["x", "y", "z"], 5, 13), (["x", "y", "z", "rgb", "normal_x"], 27_001, 31),
    (["intensity_é", "t"], 3, 7)])
def test_pointcloud_parts_equal_rosbags(names, npoints, point_step, dense, little_endian):
    for frame_id in FRAME_IDS[:5]:
        msg = _cloud(frame_id, names, npoints, point_step, dense)
        parts = serialize_cdr_parts(STORE, msg, CLOUD, little_endian=little_endian)
        assert _joined(parts) == bytes(STORE.serialize_cdr(msg, CLOUD, little_endian=little_endian))
        assert len(parts) == 4 and (msg.data.size == 0 or np.shares_memory(np.asarray(parts[2]), msg.data))


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("fmt", ["", "j", "jpeg", "rgb8; jpeg compressed bgr8"])
def test_compressed_image_parts_equal_rosbags(fmt, little_endian):
    data = np.random.default_rng(3).integers(0, 256, 1001, dtype=np.uint8)
    msg = T.CompressedImage(header=_header("cam"), format=fmt, data=data)
    parts = serialize_cdr_parts(STORE, msg, COMPRESSED, little_endian=little_endian)
    assert _joined(parts) == bytes(STORE.serialize_cdr(msg, COMPRESSED, little_endian=little_endian))


def test_other_messages_and_odd_payloads_are_serialised_whole():
    info = T.CameraInfo(header=_header("cam"), height=480, width=640, distortion_model="plumb_bob",
                        d=np.zeros(5), k=np.arange(9, dtype=np.float64), r=np.eye(3).reshape(-1),
                        p=np.arange(12, dtype=np.float64), binning_x=0, binning_y=0,
                        roi=T.RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    for le in (True, False):
        parts = serialize_cdr_parts(STORE, info, "sensor_msgs/msg/CameraInfo", little_endian=le)
        assert len(parts) == 1 and _joined(parts) == bytes(STORE.serialize_cdr(info, "sensor_msgs/msg/CameraInfo",
                                                                                little_endian=le))
    # A strided payload cannot be handed over as is: one buffer from rosbags, same bytes.
    msg = _image("cam", "rgb8", 64)
    strided = T.Image(header=msg.header, height=1, width=32, encoding="mono8", is_bigendian=0, step=32,
                      data=msg.data[::2])
    parts = serialize_cdr_parts(STORE, strided, IMAGE)
    assert len(parts) == 1 and _joined(parts) == bytes(STORE.serialize_cdr(strided, IMAGE))
    assert set(SPLICED_TYPES) == {IMAGE, CLOUD, COMPRESSED}


def _messages(n: int = 3):
    """(topic, type, stamp, message) of a few frames: large images/clouds and small messages, stamps out of order."""
    out = []
    for i in range(n):
        t = 1_000_000_000 * (n - i)
        out.append(("/img", IMAGE, t, _image("cam", "rgb8", BLOB_WRITE_MIN_BYTES + 3 * i + 1, seed=i)))  # > BLOB_WRITE_MIN_BYTES
        out.append(("/small", IMAGE, t + 1, _image("cam", "mono8", 7 + i, seed=i)))
        out.append(("/cloud", CLOUD, t + 2, _cloud("lidar", ["x", "y", "z"], 9_000 + i, 13, i % 2 == 0, seed=i)))
    return out


def _write(path, storage, messages, copies=()):
    with OutputBag(path, storage, STORE) as out:
        conns = {}
        for topic, msgtype, t, msg in messages:
            conn = conns.get(topic) or conns.setdefault(topic, out.add_topic(topic, msgtype))
            n = out.write_message(conn, t, msg)
            assert n == len(STORE.serialize_cdr(msg, msgtype))
        for topic, msgtype, t, raw in copies:
            conn = conns.get(topic) or conns.setdefault(topic, out.add_topic(topic, msgtype))
            out.write(conn, t, raw)
        fast = out._sqlite is not None
    return fast


def _read(path):
    with Reader(path) as reader:
        rows = [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]
        meta = (reader.message_count, reader.start_time, reader.end_time, reader.duration,
                sorted((c.topic, c.msgtype, c.msgcount, c.digest) for c in reader.connections))
    return rows, meta


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_output_bag_stores_rosbags_bytes(tmp_path, storage, monkeypatch):
    messages = _messages()
    big_raw = bytes(STORE.serialize_cdr(_image("cam", "rgb8", BLOB_WRITE_MIN_BYTES + 3, seed=9), IMAGE))
    copies = [("/copy", IMAGE, 5, big_raw), ("/copy", IMAGE, 6, memoryview(big_raw))]
    fast = _write(tmp_path / "fast", storage, messages, copies)
    assert fast == (storage == "sqlite3" and HAS_BLOBOPEN)
    # Reference: everything through rosbags' serialize_cdr and Writer.write.
    monkeypatch.setattr(writer_mod, "_sqlite_fast_path", lambda w: None)

    def reference_write_message(self, conn, t, msg):
        raw = STORE.serialize_cdr(msg, conn.msgtype)
        self._writer.write(conn, int(t), raw)
        return len(raw)

    monkeypatch.setattr(OutputBag, "write_message", reference_write_message)
    assert not _write(tmp_path / "ref", storage, messages, copies)
    rows, meta = _read(tmp_path / "fast")
    ref_rows, ref_meta = _read(tmp_path / "ref")
    assert rows == ref_rows and meta == ref_meta
    expected = {(topic, t, bytes(STORE.serialize_cdr(m, mt))) for topic, mt, t, m in messages}
    assert expected <= set(rows)


@pytest.mark.skipif(not HAS_BLOBOPEN, reason="sqlite3 blob writes need Python >= 3.11")
def test_sqlite_output_settings(tmp_path):
    _write(tmp_path / "bag", "sqlite3", _messages(1))
    with sqlite3.connect(tmp_path / "bag" / "bag.db3") as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == SQLITE_PAGE_SIZE
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # tuned=False (the synthetic "recorded" inputs): SQLite's defaults, rosbags' writes only.
    with OutputBag(tmp_path / "plain", "sqlite3", STORE, tuned=False) as out:
        assert out._sqlite is None
        out.write_message(out.add_topic("/img", IMAGE), 1, _messages(1)[0][3])
    with sqlite3.connect(tmp_path / "plain" / "plain.db3") as db:
        assert db.execute("PRAGMA page_size").fetchone()[0] == 4096


def test_write_to_an_unknown_connection_is_refused(tmp_path):
    big = _messages(1)[0][3]
    with OutputBag(tmp_path / "a", "sqlite3", STORE) as a, OutputBag(tmp_path / "b", "sqlite3", STORE) as b:
        foreign = b.add_topic("/img", IMAGE)
        with pytest.raises(Exception, match="unknown connection"):
            a.write_message(foreign, 1, big)


def test_input_bag_deserialises_with_the_shared_typestore_when_types_match(lidar_bag):
    with InputBag(lidar_bag.path) as bag:
        for conn, _, raw in bag.messages():
            msg = bag.deserialize(raw, conn.msgtype, conn.topic)
            assert bytes(STORE.serialize_cdr(msg, conn.msgtype)) == bytes(raw)
        assert bag._stores and all(s is STORE for s in bag._stores.values())


def test_input_bag_keeps_its_own_definition_when_it_differs(lidar_bag, monkeypatch):
    with InputBag(lidar_bag.path) as bag:
        monkeypatch.setattr(type(STORE), "hash_rihs01", lambda self, t: "shared" if self is STORE else "bag")
        conn, _, raw = next(iter(bag.messages()))
        msg = bag.deserialize(raw, conn.msgtype, conn.topic)
        assert bag._stores[conn.msgtype] is bag.typestore
        assert bytes(bag.typestore.serialize_cdr(msg, conn.msgtype)) == bytes(raw)
