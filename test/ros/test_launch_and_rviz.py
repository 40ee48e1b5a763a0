"""The launch file and the RViz configuration."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch" / "perception.launch.py"
HAVE_LAUNCH_ROS = all(importlib.util.find_spec(m) is not None for m in ("launch", "launch_ros"))


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

    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    declared = [e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert declared == launch_arguments()
    nodes = [e for e in description.entities if isinstance(e, Node)]
    assert any(n.node_executable == "perception_node" for n in nodes)
