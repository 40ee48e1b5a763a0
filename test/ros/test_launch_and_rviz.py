"""The launch file and the RViz configuration."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "perception.launch.py"


def _have_launch_ros() -> bool:
    # Import, not find_spec: launch_ros.actions also needs composition_interfaces/lifecycle_msgs.
    try:
        import launch.actions  # noqa: F401
        import launch_ros.actions  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_LAUNCH_ROS = _have_launch_ros()


def load_launch_module():
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch_arguments() -> list[str]:
    tree = ast.parse(LAUNCH.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ARGUMENTS" for t in node.targets):
            return [elt.elts[0].value for elt in node.value.elts]
    raise AssertionError("no ARGUMENTS list in the launch file")


def test_launch_file_declares_the_arguments_users_need():
    args = launch_arguments()
    for name in ("image", "camera_info", "lidar", "base_model", "weights", "device", "dtype", "tasks",
                 "sharpen_rate_hz"):
        assert name in args


def test_rviz_config_shows_the_camera_depth_normals_and_cloud_of_the_default_names():
    config = yaml.safe_load((REPO / "config" / "lotus2.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d["Class"] for d in displays if "Topic" in d}
    ns = "/lotus2/lotus2_perception"  # launch defaults: namespace lotus2, node lotus2_perception
    assert topics["/lotus2/image"] == "rviz_default_plugins/Image"
    assert topics[f"{ns}/depth/colorized"] == "rviz_default_plugins/Image"
    assert topics[f"{ns}/normals/colorized"] == "rviz_default_plugins/Image"
    assert topics[f"{ns}/points"] == "rviz_default_plugins/PointCloud2"


@pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason="launch/launch_ros are not installed (no registry has them)")
def test_launch_description_builds_a_perception_node_with_the_package_parameters():
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import Node

    description = load_launch_module().generate_launch_description()
    declared = [e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert declared == launch_arguments()
    nodes = [e for e in description.entities if isinstance(e, Node)]
    assert any(n.node_executable == "perception_node" for n in nodes)


@pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason="launch/launch_ros are not installed (no registry has them)")
def test_launch_substitutions_give_the_node_typed_parameters_and_remappings():
    # Building the description evaluates no substitution; ros2 launch does so when it starts the
    # node. Do that step here (the package need not be installed: its share folder is the repo).
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node

    module = load_launch_module()
    module.FindPackageShare = lambda package: str(REPO)
    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update({"tasks": "[depth]", "sharpen_rate_hz": "2", "image": "/demo/image"})
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)  # defaults for the arguments not given
    node = next(e for e in description.entities if isinstance(e, Node) and e.node_executable == "perception_node")
    node._perform_substitutions(context)  # what Node.execute() does before starting the process
    context.extend_locals({"ros_specific_arguments": {"name": "", "ns": ""}})  # execute() fills these

    cmd = [perform_substitutions(context, part) for part in node.cmd[1:]]  # [0]: the executable
    files = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--params-file"]
    assert Path(files[0]) == REPO / "config" / "perception.yaml"
    params = yaml.safe_load(Path(files[1]).read_text())["/lotus2/lotus2_perception"]["ros__parameters"]
    assert params["tasks"] == ["depth"]
    assert params["sharpen_rate_hz"] == 2.0 and isinstance(params["sharpen_rate_hz"], float)
    assert params["device"] == "cuda" and params["dtype"] == "bf16"
    assert node.expanded_node_namespace == "/lotus2"
    assert ("image", "/demo/image") in node.expanded_remapping_rules
    assert ("camera_info", "camera_info") in node.expanded_remapping_rules
