"""CDR serialisation of large messages as a list of buffers, without copying their payload.

``typestore.serialize_cdr`` builds one new buffer per message and copies the payload into it;
for the tool's outputs (``sensor_msgs/Image`` and ``PointCloud2`` of several MB each, tens of MB
per frame) that copy is a large part of the writer's time. Here the message is serialised by
rosbags with an *empty* ``data`` field, and the real payload is spliced in: the result is the
list ``[everything before data's length, data's length, data, everything after data]``, whose
concatenation is byte for byte what ``serialize_cdr`` returns (the tests check it). The
writer then copies the pieces straight into the storage (:meth:`OutputBag.write_message`).

This is exact because ``data`` (``uint8[]``) is the last field of these types but for trailing
fields of one-byte alignment (``PointCloud2.is_dense``), so nothing after it depends on its length.
"""

from __future__ import annotations

import dataclasses
import struct
import sys
from typing import Any

import numpy as np

#: Types whose ``data: uint8[]`` is spliced, with the CDR size of what follows it. Every field
#: after ``data`` must have 1-byte alignment.
SPLICED_TYPES = {
    "sensor_msgs/msg/Image": 0,
    "sensor_msgs/msg/CompressedImage": 0,
    "sensor_msgs/msg/PointCloud2": 1,  # bool is_dense
}


def _payload(msg: Any) -> np.ndarray | None:
    """``msg.data`` as a flat C-contiguous uint8 array without copying it, or None if that is impossible."""
    data = getattr(msg, "data", None)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or not data.flags.c_contiguous:
        return None
    return data.reshape(-1)


def serialize_cdr_parts(typestore: Any, msg: Any, msgtype: str, *,
                        little_endian: bool = sys.byteorder == "little") -> list[Any]:
    """``typestore.serialize_cdr(msg, msgtype)`` as a list of buffers (``b"".join`` gives the same bytes).

    Messages of :data:`SPLICED_TYPES` with a contiguous uint8 ndarray ``data`` come back as four
    pieces, ``data`` itself (not a copy) third; others as one serialised buffer.
    """
    trailing = SPLICED_TYPES.get(msgtype)
    data = _payload(msg) if trailing is not None and dataclasses.is_dataclass(msg) else None
    if data is None:
        return [typestore.serialize_cdr(msg, msgtype, little_endian=little_endian)]
    empty = typestore.serialize_cdr(dataclasses.replace(msg, data=data[:0]), msgtype, little_endian=little_endian)
    split = len(empty) - trailing
    head = split - 4  # the (aligned) uint32 length of an empty data sequence
    if head < 4 or bytes(empty[head:split]) != b"\0\0\0\0":
        return [typestore.serialize_cdr(msg, msgtype, little_endian=little_endian)]  # not the expected layout
    length = struct.pack("<I" if little_endian else ">I", data.size)
    return [empty[:head], length, data, empty[split:]]


def parts_size(parts: list[Any]) -> int:
    """Total byte count of :func:`serialize_cdr_parts`' result."""
    return sum(memoryview(p).nbytes for p in parts)
