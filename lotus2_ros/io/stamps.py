"""Stamps and headers: ``builtin_interfaces/Time`` ⇄ int nanoseconds, header copies."""

from __future__ import annotations

import operator
from typing import Any

from .errors import MessageError
from .msg_types import MessageTypes

__all__ = ["build_header", "copy_header", "header_stamp_ns", "ns_to_stamp", "stamp_to_ns"]

_NS_PER_S = 1_000_000_000
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def stamp_to_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (``sec``, ``nanosec``) as int nanoseconds.

    Raises:
        MessageError: ``nanosec`` is outside [0, 1e9).
    """
    sec, nanosec = int(stamp.sec), int(stamp.nanosec)
    if not 0 <= nanosec < _NS_PER_S:
        raise MessageError(f"Time.nanosec must be in [0, 1e9), got {nanosec}")
    return sec * _NS_PER_S + nanosec


def ns_to_stamp(types: MessageTypes, stamp_ns: int) -> Any:
    """Int nanoseconds as a ``builtin_interfaces/Time`` of the given message family.

    Negative times keep ``0 <= nanosec < 1e9`` (``-1 ns`` is ``sec=-1, nanosec=999999999``).

    Raises:
        ValueError: ``stamp_ns`` is not an int or its seconds do not fit ``int32``.
    """
    # operator.index takes int and numpy integers but refuses floats: nanoseconds since 1970
    # do not survive float64's 53-bit mantissa.
    try:
        if isinstance(stamp_ns, bool):
            raise TypeError
        stamp_ns = operator.index(stamp_ns)
    except TypeError:
        raise ValueError(f"stamp_ns must be an int, got {stamp_ns!r}") from None
    sec, nanosec = divmod(stamp_ns, _NS_PER_S)
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise ValueError(f"stamp_ns {stamp_ns} is outside the int32 seconds range of Time")
    return types.Time(sec=sec, nanosec=nanosec)


def header_stamp_ns(header: Any) -> int:
    """The stamp of a ``std_msgs/Header`` as int nanoseconds."""
    return stamp_to_ns(header.stamp)


def build_header(types: MessageTypes, stamp_ns: int, frame_id: str) -> Any:
    """A new ``std_msgs/Header`` of the given family."""
    return types.Header(stamp=ns_to_stamp(types, stamp_ns), frame_id=str(frame_id))


def copy_header(types: MessageTypes, header: Any) -> Any:
    """A new header with the same stamp and ``frame_id``, built with ``types``.

    Output messages get their own header objects (never the input's), and the input may be of
    another family (e.g. an rclpy header copied into a rosbags message).
    """
    return build_header(types, header_stamp_ns(header), header.frame_id)
