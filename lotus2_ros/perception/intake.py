"""What the node does with each incoming message, without ROS: checks, counters, frame assembly.

The node's callbacks hand every message here, and its worker hands back each image it takes
from the latest-frame mailbox; the fuzz test drives the same object. Every message ends in one
of: accepted (images go on to the mailbox, camera_info and references are stored) or rejected
and counted in :class:`~.stats.NodeStats` as ``bad_messages``, ``bad_<kind>`` and, where the
reason has its own counter, ``bad_<kind>_<reason>`` (``bad_image_too_large``, ``bad_image_too_small``).

Checks in the callback are O(1) (declared sizes, encoding, step, data length, the header of a
compressed stream, a cloud's field layout), so a malformed image never takes the mailbox from a
good one and is never counted as a frame the node dropped; the pixel conversion (and for
compressed images the decoding) happens in the worker, inside :meth:`Intake.assemble`.
"""

from __future__ import annotations

from typing import Any, Callable

from ..io.errors import MessageError
from ..io.image_msgs import DEPTH_ENCODINGS, RGB_ENCODINGS, check_image_msg, check_image_size, compressed_image_size
from ..io.msg_types import data_as_uint8
from ..io.pointcloud import check_pointcloud2_xyz
from .assembly import MIN_IMAGE_PX, ExtrinsicLookup, FrameAssembler
from .config import PerceptionConfig
from .pipeline import Frame
from .stats import NodeStats

#: Message kinds as counted (``bad_<kind>``).
KINDS = ("image", "camera_info", "reference")


class Intake:
    """Checks, counts and assembles incoming messages (thread-safe counters; one assembler)."""

    def __init__(self, config: PerceptionConfig, stats: NodeStats, extrinsic: ExtrinsicLookup | None = None,
                 warn: Callable[[str], None] | None = None):
        """Args:
            config: Limits (``max_image_px``), the metric source and the camera_info policy.
            stats: Where the counters go.
            extrinsic: ``T_camera_lidar`` lookup (TF) or None for ``lidar_extrinsic``.
            warn: Throttled logger for rejected messages (None: silent).
        """
        self.stats = stats
        self.assembler = FrameAssembler(config, extrinsic)
        self._warn = warn or (lambda text: None)

    @property
    def config(self) -> PerceptionConfig:
        return self.assembler.config

    @config.setter
    def config(self, config: PerceptionConfig) -> None:
        self.assembler.config = config

    # ------------------------------------------------------------------ callbacks (cheap)
    def check_image(self, msg: Any, compressed: bool) -> bool:
        """O(1) checks of an arriving image; False (and counted) if it can never make a frame."""
        try:
            if compressed:
                data = data_as_uint8(msg.data)
                if data.size == 0:
                    raise MessageError(f"CompressedImage.data is empty (format {str(msg.format)!r})")
                width, height = compressed_image_size(data)
                check_image_size(width, height, self.config.max_image_px, MIN_IMAGE_PX, what="CompressedImage")
            else:
                check_image_msg(msg, RGB_ENCODINGS, self.config.max_image_px, MIN_IMAGE_PX)
        except (MessageError, ValueError, TypeError) as err:
            self.reject("image", err)
            return False
        return True

    def camera_info(self, msg: Any) -> bool:
        """Store a camera_info; False (and counted) if it is malformed."""
        try:
            # A camera no acceptable image can match (over max_image_px) is refused as it arrives.
            check_image_size(int(msg.width), int(msg.height), self.config.max_image_px, what="CameraInfo")
            self.assembler.add_camera_info(msg)
        except (MessageError, ValueError, TypeError, OverflowError) as err:
            self.reject("camera_info", err)
            return False
        return True

    def reference(self, msg: Any) -> bool:
        """Store a LiDAR cloud or depth image after an O(1) layout check; False (and counted) if malformed."""
        try:
            if self.config.metric_source == "depth_image":
                check_image_msg(msg, DEPTH_ENCODINGS, self.config.max_image_px)
            else:
                check_pointcloud2_xyz(msg)
            self.assembler.add_reference(msg)
        except (MessageError, ValueError, TypeError, OverflowError) as err:
            self.reject("reference", err)
            return False
        return True

    # ------------------------------------------------------------------ worker
    def assemble(self, msg: Any, compressed: bool) -> Frame | None:
        """The frame of an image taken from the mailbox, or None (counted) if it cannot be used."""
        got = self.assembler.try_assemble(msg, compressed)
        if got.dropped == "no_camera_info":
            self.stats.count("frames_without_camera_info")
            self._warn("waiting for camera_info; dropping images until it arrives")
        elif got.dropped == "bad_image":
            self.reject("image", got.error)
        elif got.reference == "unusable":
            self.reject("reference", got.error)
        elif got.reference == "missing":
            self.stats.count("frames_without_reference")
        return got.frame

    def reject(self, kind: str, err: Exception | None) -> None:
        """Count a rejected message of ``kind`` (and its reason) and log it (throttled)."""
        self.stats.count("bad_messages")
        self.stats.count(f"bad_{kind}")
        reason = getattr(err, "reason", None)
        if reason:
            self.stats.count(f"bad_{kind}_{reason}")
        self._warn(f"dropped a bad {kind} message: {err}")
