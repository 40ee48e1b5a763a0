"""First pass over a bag: which camera_info and reference message each image pairs with.

Live, the node pairs an image with the reference (LiDAR sweep, depth image) nearest in time
among those already received (:class:`~lotus2_ros.perception.association.NearestInTime`).
Offline the whole bag is known, so the pairing uses the same rule over *all* of the topic's
messages: a first pass reads the header stamps of the camera_info and reference topics (without
decoding clouds) and the TF topics; the second pass holds each image until its partners have
been read. The result does not depend on recording latency or on where a run was resumed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from ..perception.association import NearestInTime
from .errors import BagReadError
from .reader import TF_TOPICS, BagTopics, InputBag, cdr_header_stamp_ns
from .tf import TfTree

_UNLIMITED_NS = 2**62


class StampIndex:
    """Every header stamp of one topic; :meth:`nearest` is the node's nearest-in-time rule over them."""

    def __init__(self, stamps: Iterable[int]):
        unique = sorted(set(stamps))
        self._near: NearestInTime[int] = NearestInTime(capacity=max(1, len(unique)))
        for s in unique:  # in order: every insert appends
            self._near.add(s, s)

    def __len__(self) -> int:
        return len(self._near)

    def nearest(self, stamp_ns: int, max_offset_ns: int | None = None) -> int | None:
        """The stamp nearest ``stamp_ns`` within ``max_offset_ns`` (None: any distance); ties: the earlier."""
        found = self._near.nearest(stamp_ns, _UNLIMITED_NS if max_offset_ns is None else max_offset_ns)
        return None if found is None else found[0]


@dataclass
class BagIndex:
    """What the first pass learnt.

    Attributes:
        camera_info: Stamps of the camera_info topic (None without one).
        reference: Stamps of the reference topic (None without one).
        tf: The bag's transforms.
        image_count: Messages on the image topic.
    """

    camera_info: StampIndex | None
    reference: StampIndex | None
    tf: TfTree
    image_count: int


def index_bag(bag: InputBag, topics: BagTopics) -> BagIndex:
    """Read the stamps of ``topics.camera_info`` / ``topics.reference`` and all of ``/tf_static``, ``/tf``.

    Raises:
        BagReadError: A message is unreadable (names the bag and the topic).
    """
    stamps: dict[str, list[int]] = {t: [] for t in (topics.camera_info, topics.reference) if t}
    tree = TfTree()
    for conn, _, raw in bag.messages([*stamps, *topics.tf]):
        if conn.topic in stamps:
            try:
                stamps[conn.topic].append(cdr_header_stamp_ns(raw))
            except ValueError as err:
                raise BagReadError(f"input bag {bag.path}: a message on {conn.topic} has no readable "
                                   f"header: {err}") from err
        else:
            tree.add_message(bag.deserialize(raw, conn.msgtype, conn.topic), static=TF_TOPICS[conn.topic])
    return BagIndex(
        camera_info=StampIndex(stamps[topics.camera_info]) if topics.camera_info else None,
        reference=StampIndex(stamps[topics.reference]) if topics.reference else None,
        tf=tree, image_count=bag.message_count(topics.image))


class RecentMessages:
    """Raw messages of one topic read so far, by header stamp, until the images that need them are done.

    Keeps every message a waiting image is paired with (:meth:`pin` / :meth:`unpin`) plus the
    ``keep`` most recently read others, so memory stays bounded on long bags.
    """

    def __init__(self, keep: int):
        self.keep = keep
        self._items: OrderedDict[int, bytes] = OrderedDict()
        self._pins: Counter[int] = Counter()
        self.seen: set[int] = set()  #: stamps read so far (to know a partner has passed)

    def add(self, stamp_ns: int, raw: bytes) -> None:
        self._items[stamp_ns] = raw
        self._items.move_to_end(stamp_ns)
        self.seen.add(stamp_ns)
        self._trim()

    def _trim(self) -> None:
        excess = sum(1 for s in self._items if not self._pins[s]) - self.keep
        if excess <= 0:
            return
        for stamp in list(self._items):
            if excess <= 0:
                break
            if not self._pins[stamp]:
                del self._items[stamp]
                excess -= 1

    def pin(self, stamp_ns: int) -> None:
        self._pins[stamp_ns] += 1

    def unpin(self, stamp_ns: int) -> None:
        self._pins[stamp_ns] -= 1
        if self._pins[stamp_ns] <= 0:
            del self._pins[stamp_ns]
            self._trim()

    def get(self, stamp_ns: int) -> bytes | None:
        return self._items.get(stamp_ns)
