"""lotus2_ros: dense monocular depth and surface normals for ROS 2, built on Lotus-2.

The ROS-free core (``model``, ``geometry``, ``io``, ``synthetic``, ``train``, ``cli``) never
imports rclpy; only ``lotus2_ros.ros`` does.
"""

from pkgutil import extend_path

# A colcon build installs the rosidl-generated ``lotus2_ros.msg`` beside a copy of these sources;
# extending the path lets a source checkout that comes first on sys.path still find it.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
