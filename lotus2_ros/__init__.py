"""lotus2_ros: dense monocular depth and surface normals for ROS 2, built on Lotus-2.

The ROS-free core (``model``, ``geometry``, ``io``, ``synthetic``, ``train``, ``cli``) never
imports rclpy; only ``lotus2_ros.ros`` does.
"""

__version__ = "0.1.0"
