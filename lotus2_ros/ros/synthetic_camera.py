"""``synthetic_camera``: publishes a synthetic camera (+ LiDAR) stream for demos and tests.

Published topics (relative, remappable): ``image`` (sensor_msgs/Image, rgb8 or bgr8),
``camera_info``, ``image/compressed`` (jpeg, if ``publish_compressed``), ``lidar/points``
(PointCloud2 x y z in ``lidar_frame_id``, if ``publish_lidar``), ``ground_truth/depth`` and
``ground_truth/normals`` (if ``publish_ground_truth``). All share the frame's stamp
(the node clock at publishing). Parameters: :class:`~lotus2_ros.synthetic.stream.SyntheticCameraConfig`.
The LiDAR → camera extrinsic is logged at start (no TF is published: tf2 is optional here).
"""

from __future__ import annotations

import sys

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from ..io.camera_info import build_camera_info
from ..io.image_msgs import build_compressed_image, build_image
from ..io.pointcloud import build_pointcloud2
from ..io.stamps import build_header
from ..synthetic.stream import SyntheticCameraConfig, SyntheticStream
from .msg_types import rclpy_types
from .params import declare_config


class SyntheticCameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__("synthetic_camera", **kwargs)
        self.config: SyntheticCameraConfig = declare_config(self, SyntheticCameraConfig)
        cfg = self.config
        self.types = rclpy_types()
        self.stream = SyntheticStream(cfg)
        reliability = ReliabilityPolicy.RELIABLE if cfg.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=reliability)
        self.image_pub = self.create_publisher(Image, "image", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
        self.compressed_pub = self.create_publisher(CompressedImage, "image/compressed", qos) \
            if cfg.publish_compressed else None
        self.lidar_pub = self.create_publisher(PointCloud2, "lidar/points", qos) if cfg.publish_lidar else None
        self.truth_pubs = ({name: self.create_publisher(Image, f"ground_truth/{name}", qos) for name in ("depth", "normals")}
                           if cfg.publish_ground_truth else {})
        self.count = 0
        self.create_timer(1.0 / cfg.rate_hz, self._publish)
        self.get_logger().info(
            f"publishing a {cfg.scene} scene {cfg.width}x{cfg.height} at {cfg.rate_hz} Hz; "
            f"T_camera_lidar = {np.round(self.stream.T_camera_lidar, 4).tolist()}")

    def _publish(self) -> None:
        cfg, item = self.config, self.stream.next()
        stamp_ns = self.get_clock().now().nanoseconds
        header = build_header(self.types, stamp_ns, cfg.frame_id)
        rgb = item.frame.rgb
        image = rgb if cfg.encoding == "rgb8" else np.ascontiguousarray(rgb[..., ::-1])
        self.info_pub.publish(build_camera_info(self.types, header, item.frame.camera))
        self.image_pub.publish(build_image(self.types, header, image, cfg.encoding))
        if self.compressed_pub is not None:
            self.compressed_pub.publish(build_compressed_image(self.types, header, rgb, "jpeg"))
        if self.lidar_pub is not None and item.lidar is not None:
            lidar_header = build_header(self.types, stamp_ns, cfg.lidar_frame_id)
            self.lidar_pub.publish(build_pointcloud2(self.types, lidar_header, item.lidar.points_m[None]))
        if self.truth_pubs:
            self.truth_pubs["depth"].publish(build_image(self.types, header, item.frame.depth_m.astype(np.float32), "32FC1"))
            self.truth_pubs["normals"].publish(build_image(self.types, header, item.frame.normals.astype(np.float32),
                                                           "32FC3"))
        self.count += 1


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=["synthetic_camera", *(argv or [])])
    try:
        node = SyntheticCameraNode()
    except Exception as err:  # noqa: BLE001
        print(f"synthetic_camera: cannot start: {err}", file=sys.stderr)
        rclpy.shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
