"""Start lotus2_ros perception_node on a camera stream (and optionally RViz).

    ros2 launch lotus2_ros perception.launch.py base_model:=/models/FLUX.1-dev weights:=/models/Lotus-2 \
        image:=/camera/color/image_raw camera_info:=/camera/color/camera_info [lidar:=/lidar/points] \
        [params_file:=my_robot.yaml] [use_sim_time:=true] [rviz:=true camera_frame:=camera_color_optical_frame]

Every node parameter a user sets per robot is an argument of the same name (``ros2 launch
lotus2_ros perception.launch.py --show-args``); one left empty keeps the value in
``params_file`` (the package's ``config/perception.yaml`` by default). Naming a LiDAR topic
(``lidar:=…``) or a depth reference topic (``depth_ref:=…``) selects that metric source unless
``metric_source`` is given. ``rviz:=true`` starts RViz when it is installed (otherwise it says so
and the node runs alone), showing this launch's namespace, topics and camera frame.
"""

import tempfile
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from lotus2_ros.ros.launch_args import PARAMETER_ARGUMENTS, describe, parameter_overrides
from lotus2_ros.ros.rviz_config import resolve_topic, rviz_config

NODE_NAME = "lotus2_perception"
ARGUMENTS = [
    ("image", "image", "input image topic (sensor_msgs/Image)"),
    ("compressed_image", "image/compressed", "input compressed image topic, used with image_transport:=compressed"),
    ("camera_info", "camera_info", "input camera_info topic"),
    ("lidar", "", "LiDAR topic (sensor_msgs/PointCloud2); naming one sets metric_source lidar"),
    ("depth_ref", "", "sparse metric depth image topic (32FC1 m / 16UC1 mm); naming one sets metric_source "
                      "depth_image"),
    ("params_file", "", "node parameter file (empty: the package's config/perception.yaml)"),
    ("namespace", "lotus2", "namespace of the node and its outputs"),
    ("use_sim_time", "false", "use /clock (simulation, bag replay) for the node and RViz"),
    *[(name, "", describe(name)) for name in PARAMETER_ARGUMENTS],
    ("rviz", "false", "also start RViz (rviz2) with config/lotus2.rviz for this launch's names"),
    ("camera_frame", "camera_optical_frame", "RViz fixed frame: the camera's optical frame (the images' frame_id)"),
]


def _launch(context, share):
    arg = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    share_dir = Path(share) if isinstance(share, (str, Path)) else Path(share.perform(context))
    params = parameter_overrides({name: arg[name] for name in PARAMETER_ARGUMENTS},
                                 lidar=arg["lidar"], depth_ref=arg["depth_ref"])
    use_sim_time = arg["use_sim_time"].strip().lower() in ("true", "1", "yes")
    params["use_sim_time"] = use_sim_time
    remappings = [("image", arg["image"]), ("image/compressed", arg["compressed_image"]),
                  ("camera_info", arg["camera_info"])]
    if arg["lidar"]:
        remappings.append(("lidar/points", arg["lidar"]))
    if arg["depth_ref"]:
        remappings.append(("depth_ref/image", arg["depth_ref"]))
    params_file = arg["params_file"] or str(share_dir / "config" / "perception.yaml")
    actions = [Node(
        package="lotus2_ros",
        executable="perception_node",
        name=NODE_NAME,
        namespace=arg["namespace"],
        output="screen",
        emulate_tty=True,
        parameters=[params_file, params],
        remappings=remappings,
    )]
    if arg["rviz"].strip().lower() in ("true", "1", "yes"):
        actions += _rviz(arg, share_dir, use_sim_time)
    return actions


def _rviz(arg, share_dir, use_sim_time):
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        get_package_prefix("rviz2")
    except (ImportError, PackageNotFoundError):
        return [LogInfo(msg="rviz:=true but rviz2 is not installed (apt install ros-$ROS_DISTRO-rviz2): "
                            "the node runs without RViz")]
    image = arg["compressed_image"] if arg.get("image_transport") == "compressed" else arg["image"]
    text = rviz_config((share_dir / "config" / "lotus2.rviz").read_text(), namespace=arg["namespace"],
                       image_topic=resolve_topic(arg["namespace"], image), fixed_frame=arg["camera_frame"],
                       node_name=NODE_NAME)
    with tempfile.NamedTemporaryFile("w", prefix="lotus2_", suffix=".rviz", delete=False) as f:
        f.write(text)
    return [Node(package="rviz2", executable="rviz2", name="lotus2_rviz", arguments=["-d", f.name],
                 parameters=[{"use_sim_time": use_sim_time}], output="log")]


def generate_launch_description():
    share = FindPackageShare("lotus2_ros")
    args = [DeclareLaunchArgument(name, default_value=default, description=text) for name, default, text in ARGUMENTS]
    return LaunchDescription([*args, OpaqueFunction(function=_launch, args=[share])])
