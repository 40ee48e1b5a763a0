"""Start lotus2_ros perception_node on a camera stream (and optionally RViz).

    ros2 launch lotus2_ros perception.launch.py base_model:=/models/FLUX.1-dev weights:=/models/Lotus-2 \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info
"""

from typing import List

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("image", "image", "input image topic (sensor_msgs/Image)"),
    ("compressed_image", "image/compressed", "input compressed image topic, used with image_transport:=compressed"),
    ("camera_info", "camera_info", "input camera_info topic"),
    ("lidar", "lidar/points", "input LiDAR topic (sensor_msgs/PointCloud2)"),
    ("base_model", "", "FLUX.1-dev folder in diffusers layout"),
    ("weights", "", "Lotus-2 weights folder (with exported prompt embeddings)"),
    ("device", "cuda", "cpu, cuda or cuda:N"),
    ("dtype", "bf16", "fp32, bf16 or fp16"),
    ("tasks", "[depth, normal]", "predictions: [depth], [normal] or [depth, normal]"),
    ("sharpen_rate_hz", "1.0", "refined frames per second (0: off)"),
    ("image_transport", "raw", "raw or compressed"),
    ("namespace", "lotus2", "namespace of the node and its outputs"),
    ("rviz", "false", "also start RViz with config/lotus2.rviz"),
]


def generate_launch_description():
    share = FindPackageShare("lotus2_ros")
    args = [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
    lc = {name: LaunchConfiguration(name) for name, _, _ in ARGUMENTS}
    params = [
        PathJoinSubstitution([share, "config", "perception.yaml"]),
        {
            "base_model": lc["base_model"],
            "weights": lc["weights"],
            "device": lc["device"],
            "dtype": lc["dtype"],
            "tasks": ParameterValue(lc["tasks"], value_type=List[str]),  # launch accepts List[str], not list
            "sharpen_rate_hz": ParameterValue(lc["sharpen_rate_hz"], value_type=float),
            "image_transport": lc["image_transport"],
        },
    ]
    node = Node(
        package="lotus2_ros",
        executable="perception_node",
        name="lotus2_perception",
        namespace=lc["namespace"],
        output="screen",
        emulate_tty=True,
        parameters=params,
        remappings=[
            ("image", lc["image"]),
            ("image/compressed", lc["compressed_image"]),
            ("camera_info", lc["camera_info"]),
            ("lidar/points", lc["lidar"]),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "lotus2.rviz"])],
        condition=IfCondition(lc["rviz"]),
    )
    return LaunchDescription([*args, node, rviz])
