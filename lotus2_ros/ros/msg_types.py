"""The rclpy message family for the builders in ``lotus2_ros.io`` (see ``io/msg_types.py``).

How a numpy buffer gets into an rclpy ``uint8[]`` field fast (figures from
``python benchmarks/message_converters.py``, 640x480 RGBA = 1.2 MB, on the 2-core CI machine):

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
* Builders that hold the payload in an array already (images) use :meth:`RclpyTypes.copy_data`:
  the same single memcpy, straight from their array — or none at all when the array was made by
  :meth:`RclpyTypes.payload_array`: its memory is a payload already, which the message takes as
  it is (the node's pipeline computes its image products into such arrays; at 1280x720 that
  saves copying 24 MB per frame). Builders that assemble a payload (the
  point cloud's interleaved records) write it through a numpy view of the final ``array.array``
  from :meth:`RclpyTypes.new_data`: no intermediate array and no copy afterwards, only the
  memset that sizes the array (for the 9.8 MB cloud, one pass instead of a full copy).
* At publish time the C conversion reads the ``array.array`` through the buffer protocol.
* Large payloads are recycled (:class:`PayloadPool`): sizing a fresh 29.5 MB array for a 1280x720
  cloud with normals is a memset over pages the kernel must first fault in (~4 ms on the CI
  machine); ``publish()`` copies the payload into the middleware before it returns, so once a
  message is dropped its array can carry the next frame's payload without either cost.
"""

from __future__ import annotations

import array
import sys
import threading
import weakref
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import Header

__all__ = ["PayloadPool", "RclpyTypes", "rclpy_types", "whole_payload"]


class PayloadPool:
    """Reuses the ``array.array('B')`` payloads of messages nobody holds any more.

    A payload is handed out again only when the pool's own reference is the only one left
    (CPython reference count, calibrated at construction on an array only the pool holds): a
    message that is still alive — queued, kept by a test, its ``data`` taken by someone — keeps its
    bytes. The node builds, publishes and drops its messages, so at most a frame's worth (core and
    refined) is in use at once; ``per_size`` arrays per byte size are kept (``max_bytes`` in all),
    beyond that payloads are allocated and left to the garbage collector as before.

    Thread-safe: the node's core and refinement threads build messages concurrently. ``per_size``
    covers a frame's products of one size in flight: at 1280x720 the disparity, the metric depth,
    the previous frame's disparity the aligner keeps, for core and refined results.
    """

    def __init__(self, min_bytes: int = 1 << 20, per_size: int = 8, max_bytes: int = 256 << 20) -> None:
        self.min_bytes = int(min_bytes)
        self.per_size = int(per_size)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._arrays: dict[int, list[array.array]] = {}
        self._held_bytes = 0
        probe = [array.array("B")]
        self._free_refcount = self._refcount(probe, 0)

    @staticmethod
    def _refcount(arrays: list[array.array], i: int) -> int:
        # The same call shape as in take(): list slot + local name + getrefcount's argument.
        arr = arrays[i]
        return sys.getrefcount(arr)

    def take(self, nbytes: int) -> array.array:
        """An ``array.array('B')`` of ``nbytes`` bytes; its contents are unspecified (recycled or zero)."""
        nbytes = int(nbytes)
        if nbytes < self.min_bytes:
            return array.array("B", b"\0") * nbytes
        with self._lock:
            arrays = self._arrays.setdefault(nbytes, [])
            for i in range(len(arrays)):
                if self._refcount(arrays, i) == self._free_refcount:
                    return arrays[i]
            fresh = array.array("B", b"\0") * nbytes
            if len(arrays) < self.per_size and self._held_bytes + nbytes <= self.max_bytes:
                arrays.append(fresh)
                self._held_bytes += nbytes
            return fresh

    @property
    def held_bytes(self) -> int:
        """Bytes of the arrays the pool keeps (in use or free)."""
        return self._held_bytes


def whole_payload(data: np.ndarray) -> array.array | None:
    """The ``array.array('B')`` whose memory ``data`` covers exactly (C-contiguous, all of it), else None."""
    base = data
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if not (isinstance(base, array.array) and base.typecode == "B" and data.flags.c_contiguous):
        return None
    address, length = base.buffer_info()
    return base if length == data.nbytes and data.ctypes.data == address else None


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
        try:  # generated by rosidl in a colcon build of this package; absent in a pip install
            from lotus2_ros.msg import ScaleFit
        except ImportError:
            ScaleFit = None
        #: ``lotus2_ros/msg/ScaleFit``, or None where the package was not built with colcon.
        self.ScaleFit = ScaleFit
        #: Recycled payloads of :meth:`copy_data`, :meth:`new_data` and :meth:`payload_array`.
        self.payloads = PayloadPool()
        #: The payloads :meth:`payload_array` lent last (weakly: unpooled ones go when dropped).
        self._product_payloads: dict[int, weakref.ref] = {}

    def create(self, cls: Any, /, **fields: Any) -> Any:
        """``cls(**fields)`` with ``data`` (a fresh 1-D uint8 ndarray) stored with one copy.

        ``data`` from :meth:`copy_data` or :meth:`new_data` is stored without another copy.

        With checks on, every field assignment is validated (cheap for the builders' scalar and
        header fields) and an ``array.array('B')`` is stored without a copy.
        """
        data = fields.pop("data", None)
        msg = cls(check_fields=True, **fields) if self.supports_check_fields else cls(**fields)
        if data is not None:
            msg.data = self.pack_data(data)
        return msg

    def pack_data(self, data: np.ndarray | array.array) -> array.array:
        """A uint8 ndarray as ``array.array('B')`` (one memcpy), the setter's fast path.

        An ``array.array('B')`` (from :meth:`copy_data` or :meth:`new_data`) is returned as it is.
        """
        if isinstance(data, array.array) and data.typecode == "B":
            return data
        return self.copy_data(np.ascontiguousarray(data, dtype=np.uint8))

    def copy_data(self, data: np.ndarray) -> array.array:
        """``array.array('B')`` with a copy of a C-contiguous uint8 array's bytes (one memcpy, into a
        recycled payload when one is free).

        An array from :meth:`payload_array` (or a view of all of it) is not copied: its payload is
        returned, so the message and the array share memory. Its maker does not write to it
        afterwards (the pipeline's products are final once messages are built). Any other array
        is copied, whatever memory it views (an incoming message's, say).
        """
        packed = whole_payload(data)
        if packed is not None and self._is_product_payload(packed):
            return packed
        flat = memoryview(data).cast("B")
        if flat.nbytes < self.payloads.min_bytes:
            packed = array.array("B")
            packed.frombytes(flat)
            return packed
        packed = self._take(flat.nbytes)
        np.frombuffer(packed, dtype=np.uint8)[:] = np.frombuffer(flat, dtype=np.uint8)
        return packed

    def _take(self, nbytes: int, product: bool = False) -> array.array:
        """A pooled payload, marked as product storage (:meth:`payload_array`) or not."""
        packed = self.payloads.take(nbytes)
        key, marks = id(packed), self._product_payloads
        if product:
            # Weakly (arrays are unhashable): the mark goes with an unpooled payload when it is dropped.
            marks[key] = weakref.ref(packed, lambda ref, key=key: marks.pop(key, None) if marks.get(key) is ref else None)
        elif key in marks:
            marks.pop(key, None)
        return packed

    def _is_product_payload(self, packed: array.array) -> bool:
        ref = self._product_payloads.get(id(packed))
        return ref is not None and ref() is packed

    def payload_array(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """An uninitialised C-contiguous array whose memory is a whole message payload.

        :meth:`copy_data` hands the payload itself to a message built from the array (no copy);
        the pool recycles it once neither the array (nor a view of it) nor a message holds it.
        Small arrays (below the pool's ``min_bytes``) are plain numpy arrays.
        """
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < self.payloads.min_bytes:
            return np.empty(shape, dtype)
        return np.frombuffer(self._take(nbytes, product=True), dtype=dtype).reshape(shape)

    def new_data(self, nbytes: int) -> tuple[array.array, np.ndarray]:
        """``array.array('B')`` of ``nbytes`` bytes (recycled or zeros) and a writable numpy view of it.

        The view keeps the array from being resized or recycled while it lives, so builders drop
        it before the message is used.
        """
        packed = self._take(nbytes)
        return packed, np.frombuffer(packed, dtype=np.uint8)

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
