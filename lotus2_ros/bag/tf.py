"""Transforms from a bag's own ``/tf_static`` and ``/tf``, looked up the way tf2 does.

tf2_ros is not available without a ROS install, and a bag holds the whole TF history anyway, so
:class:`TfTree` keeps every transform of the bag and answers ``lookup(target, source, stamp_ns)``
with ``T_target_source`` (maps points in ``source`` into ``target``), chaining through the
common ancestor. Dynamic transforms are interpolated between the two samples around the stamp
(linear translation, slerp rotation); a stamp outside a dynamic transform's samples has no
answer, as tf2 refuses to extrapolate. Static transforms hold at all times.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..geometry.transforms import rigid_transform
from ..io.stamps import header_stamp_ns

log = logging.getLogger("lotus2.bag.tf")

#: ``T_camera_lidar`` lookup for :class:`~lotus2_ros.perception.assembly.FrameAssembler`.
ExtrinsicLookup = Callable[[str, str, int], "np.ndarray | None"]
_MAX_DEPTH = 256  # longest parent chain followed (guards against cycles in a broken tree)


def _frame(name: str) -> str:
    return name.lstrip("/")  # ROS 1 style "/base_link" names the same frame


@dataclass
class _DynamicEdge:
    parent: str
    stamps: list[int] = field(default_factory=list)
    values: list[tuple[float, ...]] = field(default_factory=list)  # x y z qx qy qz qw
    _sorted: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, stamp_ns: int, value: tuple[float, ...]) -> None:
        self.stamps.append(stamp_ns)
        self.values.append(value)
        self._sorted = None

    def at(self, stamp_ns: int) -> np.ndarray | None:
        if self._sorted is None:
            order = np.argsort(np.asarray(self.stamps, dtype=np.int64), kind="stable")
            self._sorted = (np.asarray(self.stamps, dtype=np.int64)[order],
                            np.asarray(self.values, dtype=np.float64)[order])
        stamps, values = self._sorted
        i = int(np.searchsorted(stamps, stamp_ns, side="left"))
        if i < len(stamps) and stamps[i] == stamp_ns:
            return rigid_transform(values[i].tolist())
        if i == 0 or i == len(stamps):
            return None  # outside the recorded interval: tf2 would not extrapolate either
        t0, t1 = int(stamps[i - 1]), int(stamps[i])
        a = (stamp_ns - t0) / (t1 - t0)
        v0, v1 = values[i - 1], values[i]
        trans = (1 - a) * v0[:3] + a * v1[:3]
        return rigid_transform([*trans, *_slerp(v0[3:], v1[3:], a)])


def _slerp(q0: np.ndarray, q1: np.ndarray, a: float) -> np.ndarray:
    q0 = q0 / np.linalg.norm(q0)
    q1 = q1 / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # the shorter way round
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = (1 - a) * q0 + a * q1
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - a) * theta) * q0 + np.sin(a * theta) * q1) / np.sin(theta)


class TfTree:
    """Every transform of a bag; :meth:`lookup` chains them like ``tf2_ros.Buffer.lookup_transform``."""

    def __init__(self) -> None:
        self._static: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)
        self._dynamic: dict[str, _DynamicEdge] = {}

    def __len__(self) -> int:
        return len(self._static) + len(self._dynamic)

    @property
    def frames(self) -> set[str]:
        names = set(self._static) | set(self._dynamic)
        names |= {p for p, _ in self._static.values()} | {e.parent for e in self._dynamic.values()}
        return names

    def add_message(self, msg: Any, static: bool) -> None:
        """Add the transforms of a ``tf2_msgs/TFMessage`` (from ``/tf_static`` if ``static``)."""
        for t in msg.transforms:
            parent, child = _frame(t.header.frame_id), _frame(t.child_frame_id)
            tr, q = t.transform.translation, t.transform.rotation
            value = (float(tr.x), float(tr.y), float(tr.z), float(q.x), float(q.y), float(q.z), float(q.w))
            self.add(parent, child, value, header_stamp_ns(t.header), static)

    def add(self, parent: str, child: str, value: tuple[float, ...], stamp_ns: int, static: bool) -> None:
        """Add ``T_parent_child`` as translation (m) + quaternion ``x y z qx qy qz qw``.

        A static transform replaces an earlier one of the same child (as ``/tf_static`` latching does).
        """
        parent, child = _frame(parent), _frame(child)
        if static:
            self._static[child] = (parent, rigid_transform(list(value)))
            return
        edge = self._dynamic.get(child)
        if edge is None:
            edge = self._dynamic[child] = _DynamicEdge(parent)
        elif edge.parent != parent:
            log.warning("TF: %s has parents %s and %s; keeping %s", child, edge.parent, parent, edge.parent)
            return
        edge.add(stamp_ns, value)

    def _parent(self, frame: str) -> str | None:
        if frame in self._static:
            return self._static[frame][0]
        if frame in self._dynamic:
            return self._dynamic[frame].parent
        return None

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        while len(chain) < _MAX_DEPTH:
            parent = self._parent(chain[-1])
            if parent is None or parent in chain:
                break
            chain.append(parent)
        return chain

    def connected(self, target: str, source: str) -> bool:
        """True if both frames are in one tree (a transform exists at some time)."""
        target, source = _frame(target), _frame(source)
        return target == source or bool(set(self._chain(target)) & set(self._chain(source)))

    def _edge(self, child: str, stamp_ns: int) -> np.ndarray | None:
        if child in self._static:
            return self._static[child][1]
        return self._dynamic[child].at(stamp_ns)

    def _from_ancestor(self, chain: list[str], ancestor: str, stamp_ns: int) -> np.ndarray | None:
        """``T_ancestor_frame`` for ``chain = [frame, parent, …, ancestor, …]``."""
        T = np.eye(4)
        for child in chain[: chain.index(ancestor)]:
            edge = self._edge(child, stamp_ns)
            if edge is None:
                return None
            T = edge @ T
        return T

    def lookup(self, target: str, source: str, stamp_ns: int) -> np.ndarray | None:
        """``T_target_source`` ``[4,4]`` at ``stamp_ns`` (int ns), or None if there is none then."""
        target, source = _frame(target), _frame(source)
        if target == source:
            return np.eye(4)
        chain_t, chain_s = self._chain(target), self._chain(source)
        common = next((f for f in chain_s if f in set(chain_t)), None)
        if common is None:
            return None
        T_anc_source = self._from_ancestor(chain_s, common, stamp_ns)
        T_anc_target = self._from_ancestor(chain_t, common, stamp_ns)
        if T_anc_source is None or T_anc_target is None:
            return None
        return np.linalg.inv(T_anc_target) @ T_anc_source


def extrinsic_lookup(tree: TfTree, source: str, fallback: np.ndarray | None) -> ExtrinsicLookup | None:
    """The ``extrinsic`` callable of a run's :class:`FrameAssembler`, following ``extrinsic_source``.

    Args:
        tree: The bag's transforms.
        source: ``PerceptionConfig.extrinsic_source``: ``tf`` (the bag's TF only), ``parameter``
            (``lidar_extrinsic`` only: returns None) or ``auto`` (the bag's TF where it connects
            the two frames, else ``fallback``).
        fallback: ``T_camera_lidar`` from the parameters.
    """
    if source == "parameter":
        return None
    if source == "tf":
        return lambda camera, lidar, stamp_ns: tree.lookup(camera, lidar, stamp_ns)
    if not len(tree):
        return None
    warned: set[tuple[str, str]] = set()

    def lookup(camera: str, lidar: str, stamp_ns: int) -> np.ndarray | None:
        if tree.connected(camera, lidar):
            return tree.lookup(camera, lidar, stamp_ns)
        if (camera, lidar) not in warned:
            warned.add((camera, lidar))
            log.info("the bag's TF does not connect %s and %s: using lidar_extrinsic", lidar, camera)
        return fallback

    return lookup
