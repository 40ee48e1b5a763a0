"""Message type providers: where the builders in ``io`` get the message classes they construct.

Reading works on any message object by attribute access (rclpy messages and rosbags dataclasses
look alike). Building needs the classes, and the two families differ in what the array fields
want, so every builder takes a *types provider*:

* :func:`rosbags_types` (here): rosbags dataclasses for the bag tool and machines without ROS.
  Every field must be passed to the constructor; ``uint8[]`` and ``float64[]`` fields must be
  numpy arrays.
* ``lotus2_ros.ros.msg_types.rclpy_types()``: the generated rclpy classes for the live node.
  Their ``uint8[]`` setter walks a numpy array or memoryview element by element (and ``bytes``
  too when field checks are on): 0.1-0.3 s for one 640x480 RGBA image. It stores an
  ``array.array('B')`` as it is, so that provider's ``pack_data`` returns one and its ``create``
  avoids the constructor's extra copies.

Large payloads go into the field's own storage with at most one copy: ``copy_data`` for an
array the builder holds, ``new_data`` for a payload the builder writes itself.

Builders pass every field as a keyword argument, which both families accept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

__all__ = ["MessageTypes", "RosbagsTypes", "data_as_uint8", "rosbags_types"]


class MessageTypes(Protocol):
    """What the builders need from a message family (rclpy or rosbags).

    Attributes:
        name: Short name of the family, e.g. ``"rclpy"`` or ``"rosbags"``.
        Image, CompressedImage, CameraInfo, PointCloud2, PointField, RegionOfInterest: The
            ``sensor_msgs/msg`` classes.
        Header: ``std_msgs/msg/Header``.
        Time: ``builtin_interfaces/msg/Time``.
    """

    name: str
    Image: Any
    CompressedImage: Any
    CameraInfo: Any
    PointCloud2: Any
    PointField: Any
    RegionOfInterest: Any
    Header: Any
    Time: Any

    def create(self, cls: Any, /, **fields: Any) -> Any:
        """``cls(**fields)`` where a ``data`` field (``uint8[]``) is a fresh 1-D uint8 array.

        The builders construct every message that carries a large ``data`` field through this
        hook, so each family can store the buffer with the fewest copies.
        """
        ...

    def pack_data(self, data: np.ndarray) -> Any:
        """Turns a fresh 1-D C-contiguous uint8 array into the value of a ``uint8[]`` field.

        The builders hand over arrays that nothing else references, so a provider may keep the
        array itself instead of copying it. A value from :meth:`copy_data` or :meth:`new_data`
        is returned as it is.
        """
        ...

    def copy_data(self, data: np.ndarray) -> Any:
        """A ``uint8[]`` field value holding a copy of a 1-D C-contiguous uint8 array the caller keeps.

        One copy in total, straight into the field's own storage (builders of messages that
        carry an existing array, e.g. an image, need no intermediate copy of their own).
        """
        ...

    def new_data(self, nbytes: int) -> tuple[Any, np.ndarray]:
        """A ``uint8[]`` field value of ``nbytes`` bytes and a writable 1-D uint8 view of its storage.

        For builders that assemble a payload (e.g. interleaved point records): they write it
        through the view, with no intermediate array and no copy afterwards, and pass the value as
        ``data`` to :meth:`create`. The initial contents are unspecified: write every byte. Drop
        the view before the message leaves the builder.
        """
        ...

    def pack_float64(self, values: Sequence[float] | np.ndarray) -> Any:
        """Turns values into the value of a ``float64[]`` / ``float64[N]`` field (CameraInfo)."""
        ...


@dataclass(frozen=True, eq=False)
class RosbagsTypes:
    """rosbags message dataclasses from one typestore (see :func:`rosbags_types`).

    Attributes:
        typestore: The typestore the classes come from; use it to serialise
            (``typestore.serialize_cdr(msg, msg.__msgtype__)``) and to register types in a writer.
    """

    typestore: Typestore
    name: str = "rosbags"

    def __getattr__(self, attr: str) -> Any:
        # Only called for names that are not dataclass fields: the message classes.
        if attr in _ROSBAGS_NAMES:
            return self.typestore.types[_ROSBAGS_NAMES[attr]]
        raise AttributeError(f"{type(self).__name__} has no attribute {attr!r}")

    def create(self, cls: Any, /, **fields: Any) -> Any:
        """``cls(**fields)``; the dataclasses need every field, ``data`` as a uint8 ndarray."""
        if "data" in fields:
            fields["data"] = self.pack_data(fields["data"])
        return cls(**fields)

    @staticmethod
    def pack_data(data: np.ndarray) -> np.ndarray:
        """rosbags wants a uint8 ndarray; the builders' arrays are fresh, so no copy."""
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)

    @staticmethod
    def copy_data(data: np.ndarray) -> np.ndarray:
        """A new uint8 ndarray with the bytes of ``data``."""
        return np.array(data, dtype=np.uint8, order="C").reshape(-1)

    @staticmethod
    def new_data(nbytes: int) -> tuple[np.ndarray, np.ndarray]:
        """An uninitialised uint8 ndarray, which is its own view."""
        data = np.empty(int(nbytes), dtype=np.uint8)
        return data, data

    @staticmethod
    def pack_float64(values: Sequence[float] | np.ndarray) -> np.ndarray:
        """rosbags serialises float arrays from ndarrays only (a list fails in ``serialize_cdr``)."""
        return np.array(values, dtype=np.float64).reshape(-1)


_ROSBAGS_NAMES = {
    "Image": "sensor_msgs/msg/Image",
    "CompressedImage": "sensor_msgs/msg/CompressedImage",
    "CameraInfo": "sensor_msgs/msg/CameraInfo",
    "PointCloud2": "sensor_msgs/msg/PointCloud2",
    "PointField": "sensor_msgs/msg/PointField",
    "RegionOfInterest": "sensor_msgs/msg/RegionOfInterest",
    "Header": "std_msgs/msg/Header",
    "Time": "builtin_interfaces/msg/Time",
    "ScaleFit": "lotus2_ros/msg/ScaleFit",
}


@lru_cache(maxsize=1)
def _default_typestore() -> Typestore:
    from rosbags.typesys import Stores, get_typestore

    # The sensor_msgs definitions used here are the same in every ROS 2 distribution.
    from .custom_msgs import register_custom_msgs

    store = getattr(Stores, "ROS2_KILTED", None) or Stores.LATEST
    typestore = get_typestore(store)
    register_custom_msgs(typestore)  # lotus2_ros/msg/ScaleFit from msg/
    return typestore


def rosbags_types(typestore: Typestore | None = None) -> RosbagsTypes:
    """The rosbags message family.

    Args:
        typestore: Typestore to take the classes from (e.g. the one a bag writer registers its
            types with). None: the ROS 2 Kilted store (``Stores.LATEST`` on older rosbags),
            created once per process (it takes ~0.2 s).

    Returns:
        A provider whose attributes ``Image``, ``PointCloud2``, ... are that store's dataclasses.
    """
    return RosbagsTypes(_default_typestore() if typestore is None else typestore)


def data_as_uint8(data: Any) -> np.ndarray:
    """A message's ``uint8[]`` field as a 1-D uint8 array, without a copy where possible.

    Works for what either family stores there (rclpy: ``array.array('B')``; rosbags: a numpy
    array, read-only after deserialisation) and for ``bytes``/``memoryview``/lists. The result may
    share memory with the message and be read-only: copy before writing to it.
    """
    if isinstance(data, np.ndarray):
        return data.reshape(-1) if data.dtype == np.uint8 else np.asarray(data, dtype=np.uint8).reshape(-1)
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # not a buffer: a list or another sequence of ints
        return np.asarray(data, dtype=np.uint8).reshape(-1)
