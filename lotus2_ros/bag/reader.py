"""Reading ROS 2 bags (sqlite3 and mcap) with ``rosbags``: topics, raw messages, stamps.

:class:`InputBag` wraps ``rosbags.highlevel.AnyReader`` so that every failure — a missing
folder, unreadable metadata, a corrupt storage file, a message that does not deserialise —
becomes a :class:`~lotus2_ros.bag.errors.BagReadError` naming the bag (and the topic). The
input is only ever opened for reading (rosbags opens sqlite3 files ``immutable``).
"""

from __future__ import annotations

import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BagReadError, BagTopicError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
POINTCLOUD_TYPE = "sensor_msgs/msg/PointCloud2"
TF_TYPE = "tf2_msgs/msg/TFMessage"
#: TF topics read for the camera–LiDAR extrinsic, with whether they are static.
TF_TOPICS = {"/tf_static": True, "/tf": False}
STORAGE_SUFFIXES = {".db3": "sqlite3", ".mcap": "mcap"}


def cdr_header_stamp_ns(raw: bytes | memoryview) -> int:
    """The ``header.stamp`` of a serialised message whose first field is a ``std_msgs/Header``.

    Reads the 8 bytes after the 4-byte CDR encapsulation header (``int32 sec``,
    ``uint32 nanosec``) without deserialising the message, so indexing a LiDAR topic does not
    decode its clouds.

    Raises:
        ValueError: Too short, or not plain CDR.
    """
    if len(raw) < 12 or raw[0] != 0 or raw[1] not in (0, 1):
        raise ValueError(f"not a CDR message with a header ({len(raw)} bytes)")
    sec, nanosec = struct.unpack_from("<iI" if raw[1] == 1 else ">iI", raw, 4)
    if nanosec >= 1_000_000_000:
        raise ValueError(f"header.stamp.nanosec out of range: {nanosec}")
    return sec * 1_000_000_000 + nanosec


@dataclass(frozen=True)
class BagTopics:
    """The topics one run reads.

    Attributes:
        image: Camera image topic.
        compressed: True if ``image`` carries ``sensor_msgs/CompressedImage``.
        camera_info: CameraInfo topic, or None (then only disparity and normals are produced).
        reference: LiDAR PointCloud2 (``metric_source: lidar``) or depth Image
            (``metric_source: depth_image``) topic, or None.
        tf: TF topics present in the bag (``/tf_static``, ``/tf``).
    """

    image: str
    compressed: bool
    camera_info: str | None
    reference: str | None
    tf: tuple[str, ...]

    @property
    def needed(self) -> tuple[str, ...]:
        """Topics the processing reads (without the copies of other inputs)."""
        return tuple(t for t in (self.image, self.camera_info, self.reference) if t)


class InputBag:
    """A ROS 2 bag opened for reading (a bag folder, or a lone ``.db3`` / ``.mcap`` file).

    Use as a context manager::

        with InputBag(path) as bag:
            for connection, t_ns, raw in bag.messages(["/camera/image_raw"]):
                msg = bag.deserialize(raw, connection.msgtype)
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._reader: Any = None
        self._stores: dict[str, Any] = {}  # message type -> typestore that deserialises it

    # ------------------------------------------------------------------ open / close
    def __enter__(self) -> InputBag:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the bag.

        Raises:
            BagReadError: The path is missing, is not a ROS 2 bag, or its metadata/storage is unreadable.
        """
        from rosbags.highlevel import AnyReader, AnyReaderError

        from ..io.msg_types import rosbags_types

        if not self.path.exists():
            raise BagReadError(f"input bag {self.path} does not exist")
        if self.path.is_dir() and not (self.path / "metadata.yaml").is_file():
            raise BagReadError(f"input bag {self.path} is not a ROS 2 bag (no metadata.yaml)")
        if self.path.is_file() and self.path.suffix not in STORAGE_SUFFIXES:
            raise BagReadError(f"input bag {self.path} is neither a bag folder nor a .db3/.mcap file")
        reader = AnyReader([self.path], default_typestore=rosbags_types().typestore)
        try:
            reader.open()
        except (AnyReaderError, OSError, ValueError, KeyError, AssertionError) as err:
            raise BagReadError(f"cannot read input bag {self.path}: {err}") from err
        except Exception as err:  # noqa: BLE001 - rosbags raises what its parsers raise (sqlite, struct, zstd)
            raise BagReadError(f"cannot read input bag {self.path}: {type(err).__name__}: {err}") from err
        self._reader = reader

    def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            self._stores.clear()
            reader.close()

    @property
    def reader(self) -> Any:
        if self._reader is None:
            raise BagReadError(f"input bag {self.path} is not open")
        return self._reader

    # ------------------------------------------------------------------ what is in it
    @property
    def connections(self) -> list[Any]:
        return list(self.reader.connections)

    @property
    def typestore(self) -> Any:
        """The bag's own typestore (types from its message definitions)."""
        return self.reader.typestore

    def topic_types(self) -> dict[str, str]:
        """``{topic: message type}`` of every topic (the first type if a topic has several)."""
        types: dict[str, str] = {}
        for c in self.reader.connections:
            types.setdefault(c.topic, c.msgtype)
        return types

    def message_count(self, topic: str) -> int:
        return sum(c.msgcount for c in self.reader.connections if c.topic == topic)

    @property
    def storage(self) -> str:
        """``"sqlite3"`` or ``"mcap"``."""
        if self.path.is_file():
            return STORAGE_SUFFIXES[self.path.suffix]
        for f in sorted(self.path.iterdir()):
            for suffix, name in STORAGE_SUFFIXES.items():
                if f.name.endswith(suffix) or f.name.endswith(suffix + ".zstd"):
                    return name
        raise BagReadError(f"input bag {self.path} has no .db3 or .mcap file")

    def fingerprint(self) -> list[list]:
        """``[[file name, size, mtime_ns], …]`` of the bag's files (to check it did not change)."""
        files = [self.path] if self.path.is_file() else sorted(p for p in self.path.iterdir() if p.is_file())
        return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in files]

    # ------------------------------------------------------------------ messages
    def messages(self, topics: Collection[str] | None = None) -> Iterator[tuple[Any, int, bytes]]:
        """``(connection, log time ns, raw CDR)`` in log-time order; all topics if ``topics`` is None.

        Raises:
            BagReadError: The storage is corrupt (names the bag and the topic of the last good message).
        """
        conns = [c for c in self.reader.connections if topics is None or c.topic in topics]
        if not conns:
            return
        last_topic = None
        it = self.reader.messages(connections=conns)
        while True:
            try:
                item = next(it)
            except StopIteration:
                return
            except Exception as err:  # noqa: BLE001 - sqlite3/struct/zstd errors of a corrupt file
                where = f" after a message on {last_topic}" if last_topic else ""
                raise BagReadError(f"input bag {self.path} is corrupt{where} "
                                   f"(reading topics {sorted({c.topic for c in conns})}): "
                                   f"{type(err).__name__}: {err}") from err
            last_topic = item[0].topic
            yield item

    def deserialize(self, raw: bytes | memoryview, msgtype: str, topic: str = "") -> Any:
        """A message object from raw CDR (rosbags dataclass; works with the duck-typed ``io`` readers).

        Raises:
            BagReadError: The bytes do not deserialise as ``msgtype`` (names bag and topic).
        """
        try:
            store = self._stores.get(msgtype) or self._store_for(msgtype)
            return store.deserialize_cdr(raw, msgtype)
        except Exception as err:  # noqa: BLE001 - rosbags raises struct/index/serde errors here
            raise BagReadError(f"input bag {self.path}: a {msgtype} message on {topic or '?'} does not "
                               f"deserialise: {type(err).__name__}: {err}") from err

    def _store_for(self, msgtype: str) -> Any:
        """The typestore to deserialise ``msgtype`` with: the process-wide one where it is the same type.

        The bag's own typestore (built from its definitions at every open) generates its
        (de)serialisers anew on first use, tens of ms per type; the shared one of
        :func:`~lotus2_ros.io.msg_types.rosbags_types` keeps them for the process, and the
        writer has already built those of Image, CameraInfo and PointCloud2. It is used only if
        its definition of ``msgtype`` (nested types included) has the bag's RIHS01 hash, so the
        decoded fields are the same.
        """
        from ..io.msg_types import rosbags_types

        own = self.reader.typestore
        shared = rosbags_types().typestore
        store = own
        if shared is not own and msgtype in shared.fielddefs:
            try:
                if shared.hash_rihs01(msgtype) == own.hash_rihs01(msgtype):
                    store = shared
            except Exception:  # noqa: BLE001 - an odd definition in the bag: keep the bag's own
                store = own
        self._stores[msgtype] = store
        return store

    # ------------------------------------------------------------------ topic choice
    def resolve_topics(self, *, image: str | None = None, camera_info: str | None = None,
                       reference: str | None = None, metric_source: str = "none",
                       require_camera_info: bool = True) -> BagTopics:
        """Pick the topics of a run: the given ones (checked) or the only candidate of each type.

        Args:
            image: Image or CompressedImage topic; None: the only one in the bag other than
                ``reference`` (a raw topic and its ``…/compressed`` twin count as one, the raw one
                is used).
            camera_info: CameraInfo topic; None: the only one, or ``<image namespace>/camera_info``.
            reference: LiDAR / depth-reference topic; None: for ``metric_source: lidar`` the only
                PointCloud2 topic.
            metric_source: ``PerceptionConfig.metric_source``; a reference topic is needed for
                ``lidar`` and ``depth_image``.
            require_camera_info: Without a CameraInfo topic, fail (True) or go on without one.

        Raises:
            BagTopicError: A given topic is missing or has the wrong type, or the choice is
                ambiguous or impossible (the message names the bag, the topic and the candidates).
        """
        types = self.topic_types()
        # A named depth reference is an Image too, but never the camera image.
        candidates = {t: ty for t, ty in types.items() if t != reference} if image is None else types
        image = self._pick(candidates, image, (IMAGE_TYPE, COMPRESSED_TYPE), "image", "--image-topic")
        compressed = types[image] == COMPRESSED_TYPE
        if camera_info is None:
            infos = [t for t, ty in types.items() if ty == CAMERA_INFO_TYPE]
            base = image.removesuffix("/compressed")
            sibling = base.rsplit("/", 1)[0] + "/camera_info"
            camera_info = infos[0] if len(infos) == 1 else (sibling if sibling in infos else None)
            if camera_info is None and require_camera_info:
                raise BagTopicError(
                    f"input bag {self.path}: no camera_info topic for {image} "
                    f"({'candidates: ' + ', '.join(infos) if infos else 'the bag has no CameraInfo topic'}); "
                    "name one with --camera-info-topic, or set require_camera_info: false in the config")
        else:
            self._check(types, camera_info, (CAMERA_INFO_TYPE,), "--camera-info-topic")
        if metric_source == "lidar":
            reference = self._pick(types, reference, (POINTCLOUD_TYPE,), "LiDAR", "--lidar-topic")
        elif metric_source == "depth_image":
            if reference is None:
                raise BagTopicError(f"input bag {self.path}: metric_source depth_image needs the depth "
                                    "reference topic to be named")
            self._check(types, reference, (IMAGE_TYPE,), "reference topic")
        else:
            reference = None
        tf = tuple(t for t in TF_TOPICS if types.get(t) == TF_TYPE)
        return BagTopics(image=image, compressed=compressed, camera_info=camera_info, reference=reference, tf=tf)

    def _check(self, types: dict[str, str], topic: str, wanted: tuple[str, ...], option: str) -> None:
        if topic not in types:
            raise BagTopicError(f"input bag {self.path} has no topic {topic} ({option}); "
                                f"its topics: {', '.join(sorted(types)) or 'none'}")
        if types[topic] not in wanted:
            raise BagTopicError(f"input bag {self.path}: topic {topic} ({option}) is {types[topic]}, "
                                f"expected {' or '.join(wanted)}")

    def _pick(self, types: dict[str, str], topic: str | None, wanted: tuple[str, ...], what: str,
              option: str) -> str:
        if topic is not None:
            self._check(types, topic, wanted, option)
            return topic
        found = sorted(t for t, ty in types.items() if ty in wanted)
        if len(found) == 2 and found[1] == found[0] + "/compressed":
            found = found[:1]  # raw and compressed of one camera: the raw one is lossless
        if len(found) == 1:
            return found[0]
        if not found:
            raise BagTopicError(f"input bag {self.path} has no {what} topic ({' or '.join(wanted)}); "
                                f"its topics: {', '.join(sorted(types)) or 'none'}")
        raise BagTopicError(f"input bag {self.path} has several {what} topics ({', '.join(found)}); "
                            f"choose one with {option}")
