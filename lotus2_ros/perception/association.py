"""Pairing each image with the reference message (LiDAR sweep, depth image) nearest in time."""

from __future__ import annotations

import bisect
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class NearestInTime(Generic[T]):
    """The last ``capacity`` items by stamp; :meth:`nearest` finds the one closest to a stamp.

    Thread-safe (the node adds from a callback and looks up from its worker). Items may arrive
    out of order; an item with the same stamp as a stored one replaces it.
    """

    def __init__(self, capacity: int = 20):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._stamps: list[int] = []
        self._items: list[T] = []
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, item: T) -> None:
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            if i < len(self._stamps) and self._stamps[i] == stamp_ns:
                self._items[i] = item
                return
            self._stamps.insert(i, stamp_ns)
            self._items.insert(i, item)
            if len(self._stamps) > self.capacity:
                del self._stamps[0], self._items[0]  # forget the oldest

    def nearest(self, stamp_ns: int, max_offset_ns: int) -> tuple[int, T] | None:
        """``(stamp, item)`` closest to ``stamp_ns`` within ``max_offset_ns`` (ties: the earlier), else None."""
        with self._lock:
            if not self._stamps:
                return None
            i = bisect.bisect_left(self._stamps, stamp_ns)
            best = None
            for j in (i - 1, i):
                if 0 <= j < len(self._stamps):
                    off = abs(self._stamps[j] - stamp_ns)
                    if off <= max_offset_ns and (best is None or off < best[0]):
                        best = (off, j)
            return None if best is None else (self._stamps[best[1]], self._items[best[1]])

    def __len__(self) -> int:
        return len(self._stamps)
