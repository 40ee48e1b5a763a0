"""Frames of a bag for ``lotus2 lidar-overlay``: image + camera_info + LiDAR sweep + extrinsic, as the bag tool pairs them.

The same pairing as ``process_bag`` (:mod:`.index`: camera_info nearest in time at any
distance, the sweep nearest within ``metric_max_offset_ms``), the same extrinsic
(:func:`~.tf.extrinsic_lookup` over the bag's ``/tf_static`` and ``/tf``, else
``lidar_extrinsic``, as ``extrinsic_source`` says) and the same :class:`FrameAssembler`
(decoding, camera_info checks). Only the images asked for are decoded; the bag is read once
after the first pass, holding each chosen image until its partners have been read.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..perception.assembly import FrameAssembler
from ..perception.config import PerceptionConfig
from ..perception.pipeline import Frame
from .errors import BagError
from .index import RecentMessages, index_bag
from .reader import CAMERA_INFO_TYPE, BagTopics, InputBag, cdr_header_stamp_ns
from .tf import extrinsic_lookup

log = logging.getLogger("lotus2.lidar_overlay")
#: Partners read before their image that are kept (as the bag tool keeps them).
_KEEP_CAMERA_INFOS, _KEEP_REFERENCES = 64, 16

__all__ = ["BagOverlayFrames"]


@dataclass
class _Wanted:
    raw: bytes
    msgtype: str
    stamp_ns: int
    info: int | None
    ref: int | None


@dataclass
class BagOverlayFrames:
    """Iterates ``(frame, stem, extrinsic_source)`` of a bag's images that have a LiDAR sweep.

    Attributes:
        path: The bag (read only).
        config: ``metric_source`` is taken as ``lidar``; ``extrinsic_source``, ``lidar_extrinsic``
            and ``metric_max_offset_ms`` apply.
        image_topic, camera_info_topic, lidar_topic: None picks the bag's only candidate.
        every: Use every ``every``-th image (1: all).
        max_frames: Stop after this many frames (None: all).
        skipped: Images not used, by reason (filled while iterating).
        topics: The topics chosen (after iterating starts).
    """

    path: Path
    config: PerceptionConfig
    image_topic: str | None = None
    camera_info_topic: str | None = None
    lidar_topic: str | None = None
    every: int = 1
    max_frames: int | None = None
    skipped: Counter = field(default_factory=Counter)
    topics: BagTopics | None = None

    def __post_init__(self):
        self.path = Path(self.path)
        if self.config.metric_source != "lidar":
            self.config = self.config.replace(metric_source="lidar")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")

    def resolve(self, bag: InputBag) -> BagTopics:
        """The topics of the run (raises :class:`~.errors.BagTopicError` naming what is missing)."""
        return bag.resolve_topics(image=self.image_topic, camera_info=self.camera_info_topic,
                                  reference=self.lidar_topic, metric_source="lidar", require_camera_info=True)

    def __iter__(self) -> Iterator[tuple[Frame, str, str]]:
        cfg = self.config
        with InputBag(self.path) as bag:
            topics = self.topics = self.resolve(bag)
            index = index_bag(bag, topics)
            lookup = extrinsic_lookup(index.tf, cfg.extrinsic_source, cfg.T_camera_lidar)
            assembler = FrameAssembler(cfg, lookup)
            max_offset_ns = int(cfg.metric_max_offset_ms * 1e6)
            # As the bag tool: partners read before their image stay held for a while.
            infos, refs = RecentMessages(_KEEP_CAMERA_INFOS), RecentMessages(_KEEP_REFERENCES)
            pending: deque[_Wanted] = deque()
            image_index = taken = 0
            applied_info: int | None = None
            ref_type = bag.topic_types()[topics.reference]
            for conn, _, raw in bag.messages(topics.needed):
                if conn.topic == topics.image:
                    chosen = image_index % self.every == 0
                    image_index += 1
                    if not chosen or (self.max_frames is not None and taken >= self.max_frames):
                        continue
                    taken += 1
                    self._enqueue(pending, raw, conn.msgtype, index, max_offset_ns, infos, refs)
                else:
                    store = infos if conn.topic == topics.camera_info else refs
                    try:
                        store.add(cdr_header_stamp_ns(raw), bytes(raw))
                    except ValueError:
                        continue  # index_bag has refused a bag with such headers already
                while pending and (pending[0].info is None or pending[0].info in infos.seen) \
                        and pending[0].ref in refs.seen:
                    w = pending.popleft()
                    info_raw, ref_raw = infos.get(w.info) if w.info is not None else None, refs.get(w.ref)
                    for store, s in ((infos, w.info), (refs, w.ref)):
                        if s is not None:
                            store.unpin(s)
                    if ref_raw is None or (w.info is not None and info_raw is None):
                        self.skipped["partner read too long before its image"] += 1
                        continue
                    if w.info is not None and w.info != applied_info:
                        assembler.add_camera_info(bag.deserialize(info_raw, CAMERA_INFO_TYPE, topics.camera_info))
                        applied_info = w.info
                    cloud = bag.deserialize(ref_raw, ref_type, topics.reference)
                    assembler.add_reference(cloud)
                    got = self._assemble(bag, assembler, index, w, topics, cloud.header.frame_id)
                    if got is not None:
                        yield got
                if self.max_frames is not None and taken >= self.max_frames and not pending:
                    return
            if pending:  # partners the index found but the stream never delivered: a damaged bag
                self.skipped["partners missing"] += len(pending)

    def _enqueue(self, pending, raw, msgtype: str, index, max_offset_ns: int, infos: RecentMessages,
                 refs: RecentMessages) -> None:
        try:
            stamp = cdr_header_stamp_ns(raw)
        except ValueError:
            self.skipped["image without a readable header"] += 1
            return
        info = index.camera_info.nearest(stamp) if index.camera_info is not None else None
        ref = index.reference.nearest(stamp, max_offset_ns)
        if ref is None:
            self.skipped["no LiDAR sweep within metric_max_offset_ms"] += 1
            return
        for store, s in ((infos, info), (refs, ref)):
            if s is not None:
                store.pin(s)
        pending.append(_Wanted(bytes(raw), msgtype, stamp, info, ref))

    def _assemble(self, bag: InputBag, assembler: FrameAssembler, index, w: _Wanted, topics: BagTopics,
                  lidar_frame_id: str) -> tuple[Frame, str, str] | None:
        try:
            msg = bag.deserialize(w.raw, w.msgtype, topics.image)
        except BagError as err:
            self.skipped["image message does not deserialise"] += 1
            log.warning("image stamped %d skipped: %s", w.stamp_ns, err)
            return None
        got = assembler.try_assemble(msg, topics.compressed)
        if got.frame is None or got.frame.reference is None:
            reason = got.dropped or f"reference {got.reference}"
            self.skipped[reason] += 1
            log.warning("image stamped %d skipped (%s): %s", w.stamp_ns, reason, got.error)
            return None
        frame = got.frame
        source = "parameter"
        if self.config.extrinsic_source != "parameter" and index.tf.connected(frame.frame_id, lidar_frame_id):
            source = "tf"
        return frame, f"{frame.stamp_ns:019d}", source
