"""Conversions between messages/files and numpy; never imports rclpy.

Message converters are duck-typed: they read rclpy messages and rosbags dataclasses alike and
build outgoing messages through a types provider (:func:`rosbags_types` here,
``lotus2_ros.ros.msg_types.rclpy_types()`` in the ROS shell). Malformed input raises
:class:`MessageError` (a ``ValueError``) naming the field and the bad value.
"""

from lotus2_ros.io.camera_info import build_camera_info, camera_info_to_calibration, check_image_matches
from lotus2_ros.io.errors import MessageError
from lotus2_ros.io.image_msgs import (
    DEPTH_ENCODINGS,
    IMAGE_ENCODINGS,
    RGB_ENCODINGS,
    build_compressed_image,
    build_image,
    compressed_msg_to_rgb,
    depth_m_to_mm,
    image_msg_to_array,
    image_msg_to_depth_m,
    image_msg_to_rgb,
)
from lotus2_ros.io.msg_types import MessageTypes, RosbagsTypes, data_as_uint8, rosbags_types
from lotus2_ros.io.pointcloud import (
    POINTFIELD_DTYPES,
    build_pointcloud2,
    pack_rgb,
    pointcloud2_to_xyz,
    read_pointcloud2_fields,
    unpack_rgb,
)
from lotus2_ros.io.stamps import build_header, copy_header, header_stamp_ns, ns_to_stamp, stamp_to_ns

__all__ = [
    # camera_info.py
    "build_camera_info",
    "camera_info_to_calibration",
    "check_image_matches",
    # errors.py
    "MessageError",
    # image_msgs.py
    "DEPTH_ENCODINGS",
    "IMAGE_ENCODINGS",
    "RGB_ENCODINGS",
    "build_compressed_image",
    "build_image",
    "compressed_msg_to_rgb",
    "depth_m_to_mm",
    "image_msg_to_array",
    "image_msg_to_depth_m",
    "image_msg_to_rgb",
    # msg_types.py
    "MessageTypes",
    "RosbagsTypes",
    "data_as_uint8",
    "rosbags_types",
    # pointcloud.py
    "POINTFIELD_DTYPES",
    "build_pointcloud2",
    "pack_rgb",
    "pointcloud2_to_xyz",
    "read_pointcloud2_fields",
    "unpack_rgb",
    # stamps.py
    "build_header",
    "copy_header",
    "header_stamp_ns",
    "ns_to_stamp",
    "stamp_to_ns",
]
