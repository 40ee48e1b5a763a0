"""The rclpy message family for the builders in ``lotus2_ros.io`` (see ``io/msg_types.py``).

How a numpy buffer gets into an rclpy ``uint8[]`` field fast (figures from
``python -m lotus2_ros.io.benchmark``, 640x480 RGBA = 1.2 MB, on the 2-core CI machine):

* The generated setter stores an ``array.array('B')`` as it is when field checks are on, and
  otherwise copies whatever it gets with ``array.array('B', value)``. For anything but an
  ``array.array``, ``bytes`` or ``bytearray`` that copy walks the value element by element
  (numpy array ~350 ms, memoryview ~170 ms); with checks on (``ROS_PYTHON_CHECK_FIELDS=1``, and
  always before Jazzy) even ``bytes`` take ~290 ms, because every element is type-checked.
* ``array.frombytes(memoryview(ndarray))`` is one memcpy (~0.15 ms) and is the fast path in both
  modes, so :meth:`RclpyTypes.pack_data` returns that.
* The constructor copies a ``data`` keyword argument once more before the setter runs, and with
  checks off the setter copies again. :meth:`RclpyTypes.create` therefore constructs the message
  without ``data`` and with ``check_fields=True`` where the distribution supports that argument
  (Jazzy and later), then assigns the packed array: one copy in total, which for a 640x480 cloud
  with normals (9.8 MB) saves two ~3 ms copies.
* At publish time the C conversion reads the ``array.array`` through the buffer protocol.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

__all__ = ["RclpyTypes", "rclpy_types"]


def _accepts_check_fields() -> bool:
    """Whether generated messages take the ``check_fields`` constructor argument (Jazzy+)."""
    try:
        Time(check_fields=True)
    except AssertionError:  # Humble asserts on unknown constructor arguments
        return False
    return True


class RclpyTypes:
    """rclpy message classes plus the construction hooks the ``io`` builders use."""

    name = "rclpy"
    Image = Image
    CompressedImage = CompressedImage
    CameraInfo = CameraInfo
    PointCloud2 = PointCloud2
    PointField = PointField
    RegionOfInterest = RegionOfInterest
    Header = Header
    Time = Time

    def __init__(self) -> None:
        #: Whether message constructors take ``check_fields`` (Jazzy and later).
        self.supports_check_fields = _accepts_check_fields()

    def create(self, cls: Any, /, **fields: Any) -> Any:
        """``cls(**fields)`` with ``data`` (a fresh 1-D uint8 ndarray) stored with one copy.

        With checks on, every field assignment is validated (cheap for the builders' scalar and
        header fields) and an ``array.array('B')`` is stored without a copy.
        """
        data = fields.pop("data", None)
        msg = cls(check_fields=True, **fields) if self.supports_check_fields else cls(**fields)
        if data is not None:
            msg.data = self.pack_data(data)
        return msg

    @staticmethod
    def pack_data(data: np.ndarray) -> array.array:
        """A uint8 ndarray as ``array.array('B')`` (one memcpy), the setter's fast path."""
        packed = array.array("B")
        packed.frombytes(memoryview(np.ascontiguousarray(data, dtype=np.uint8)).cast("B"))
        return packed

    @staticmethod
    def pack_float64(values: Sequence[float] | np.ndarray) -> Any:
        """A list of Python floats: accepted by both ``float64[]`` and ``float64[N]`` setters."""
        return [float(v) for v in np.asarray(values, dtype=np.float64).reshape(-1)]

    def __repr__(self) -> str:
        return "RclpyTypes()"


@lru_cache(maxsize=1)
def rclpy_types() -> RclpyTypes:
    """The rclpy message family (one shared instance)."""
    return RclpyTypes()
