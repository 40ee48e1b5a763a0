"""Input messages → :class:`~lotus2_ros.perception.pipeline.Frame`, shared by the node and the bag tool.

Keeps the latest camera calibration and recent reference messages (LiDAR sweeps, sparse depth
images) and assembles each image with the reference nearest in time. Works on rclpy and rosbags
messages alike (the ``io`` converters are duck-typed); every malformed input raises
:class:`~lotus2_ros.io.errors.MessageError` naming the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..geometry.calibration import CameraCalibration
from ..io.camera_info import camera_info_to_calibration, check_image_matches
from ..io.errors import MessageError
from ..io.image_msgs import compressed_msg_to_rgb, image_msg_to_depth_m, image_msg_to_rgb
from ..io.pointcloud import pointcloud2_to_xyz
from ..io.stamps import header_stamp_ns
from .association import NearestInTime
from .config import PerceptionConfig
from .metric import MetricReference
from .pipeline import Frame

#: Smallest image side the model takes (it processes multiples of 16 pixels).
MIN_IMAGE_PX = 16
#: ``T_camera_lidar`` lookup: (camera frame_id, lidar frame_id, stamp_ns) → [4,4] or None.
ExtrinsicLookup = Callable[[str, str, int], "np.ndarray | None"]


class MissingCameraInfo(MessageError):
    """An image arrived before any camera_info while one is required."""


@dataclass
class Assembly:
    """What became of one image message (:meth:`FrameAssembler.try_assemble`).

    Attributes:
        frame: The frame to process, or None when the image was dropped.
        dropped: Why it was dropped: ``"no_camera_info"`` (none yet while one is required) or
            ``"bad_image"`` (malformed, or not matching the camera_info); None if not dropped.
        reference: ``"unusable"`` (a reference was found but could not be used), ``"missing"``
            (none within ``metric_max_offset_ms``) or None (paired, or no reference is configured).
        error: The error behind ``dropped`` or ``reference == "unusable"`` (names the problem).
    """

    frame: Frame | None
    dropped: str | None = None
    reference: str | None = None
    error: Exception | None = None


class FrameAssembler:
    """Builds pipeline frames from image, camera_info and reference messages."""

    def __init__(self, config: PerceptionConfig, extrinsic: ExtrinsicLookup | None = None):
        """Args:
            config: Which reference to use (``metric_source``), pairing window, camera_info policy.
            extrinsic: Where ``T_camera_lidar`` comes from (e.g. TF); None: ``config.lidar_extrinsic``.
        """
        self.config = config
        self.calibration: CameraCalibration | None = None
        self.references: NearestInTime[Any] = NearestInTime(capacity=30)
        self._extrinsic = extrinsic
        #: The last reference that could not be used (the frame went on without one), or None.
        self.reference_error: MessageError | None = None

    def add_camera_info(self, msg: Any) -> None:
        self.calibration = camera_info_to_calibration(msg)

    def add_reference(self, msg: Any) -> None:
        """Store a LiDAR PointCloud2 or a depth Image (converted when an image is paired with it)."""
        self.references.add(header_stamp_ns(msg.header), msg)

    def assemble(self, msg: Any, compressed: bool = False) -> Frame:
        """The frame of an image message, with calibration and the nearest reference.

        A reference that cannot be used (malformed, no extrinsic) leaves the frame without one
        and is kept in :attr:`reference_error` for the caller to count.

        Raises:
            MessageError: A malformed image, a camera_info that does not match it, or
                (:class:`MissingCameraInfo`) no camera_info yet while required.
        """
        limits = dict(max_pixels=self.config.max_image_px, min_side_px=MIN_IMAGE_PX)
        rgb = compressed_msg_to_rgb(msg, **limits) if compressed else image_msg_to_rgb(msg, **limits)
        stamp_ns = header_stamp_ns(msg.header)
        calibration = self.calibration
        if calibration is None and self.config.require_camera_info:
            raise MissingCameraInfo("no camera_info received yet")
        if calibration is not None:
            check_image_matches(calibration, rgb.shape[0], rgb.shape[1])
        frame_id = msg.header.frame_id
        self.reference_error = None
        try:
            reference = self._reference(stamp_ns, frame_id)
        except MessageError as err:
            self.reference_error, reference = err, None
        return Frame(rgb=rgb, stamp_ns=stamp_ns, frame_id=frame_id, calibration=calibration, reference=reference)

    def try_assemble(self, msg: Any, compressed: bool = False) -> Assembly:
        """:meth:`assemble` that never raises on input: the node and the bag tool count the outcome."""
        try:
            frame = self.assemble(msg, compressed)
        except MissingCameraInfo as err:
            return Assembly(None, dropped="no_camera_info", error=err)
        except (MessageError, ValueError) as err:
            return Assembly(None, dropped="bad_image", error=err)
        if self.reference_error is not None:
            return Assembly(frame, reference="unusable", error=self.reference_error)
        if frame.reference is None and self.config.metric_source in ("lidar", "depth_image"):
            return Assembly(frame, reference="missing")
        return Assembly(frame)

    def _reference(self, stamp_ns: int, frame_id: str) -> MetricReference | None:
        source = self.config.metric_source
        if source not in ("lidar", "depth_image"):
            return None
        found = self.references.nearest(stamp_ns, int(self.config.metric_max_offset_ms * 1e6))
        if found is None:
            return None
        ref_stamp, msg = found
        if source == "depth_image":
            return MetricReference(depth_m=image_msg_to_depth_m(msg), stamp_ns=ref_stamp)
        T = self._extrinsic(frame_id, msg.header.frame_id, ref_stamp) if self._extrinsic else self.config.T_camera_lidar
        if T is None:
            raise MessageError(f"no transform from LiDAR frame {msg.header.frame_id!r} to camera frame {frame_id!r}")
        return MetricReference(points_lidar_m=pointcloud2_to_xyz(msg), T_camera_lidar=T, stamp_ns=ref_stamp)
