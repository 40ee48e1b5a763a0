"""The launch file and the RViz configuration."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import yaml

from lotus2_ros.ros.launch_args import PARAMETER_ARGUMENTS, parameter_overrides
from lotus2_ros.ros.rviz_config import rviz_config

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
            names = []
            for elt in node.value.elts:
                if isinstance(elt, ast.Starred):  # *[(name, "", describe(name)) for name in PARAMETER_ARGUMENTS]
                    assert "PARAMETER_ARGUMENTS" in ast.unparse(elt)
                    names += PARAMETER_ARGUMENTS
                else:
                    names.append(elt.elts[0].value)
            return names
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


def readme_launch_examples() -> list[list[str]]:
    """The ``name:=value`` arguments of every ``ros2 launch lotus2_ros perception.launch.py`` in the docs."""
    examples = []
    for doc in (REPO / "README.md", REPO / "docs" / "NODE.md"):
        text = doc.read_text().replace("\\\n", " ")
        for match in re.finditer(r"ros2 launch lotus2_ros perception\.launch\.py([^`\n]*)", text):
            args = [a for a in shlex.split(match.group(1)) if not a.startswith("--")]  # --show-args
            if args:
                examples.append(args)
    assert len(examples) >= 3
    return examples


def test_every_docs_launch_example_names_only_declared_arguments_and_a_lidar_makes_depth_metric():
    declared = set(launch_arguments())
    for example in readme_launch_examples():
        given = dict(arg.split(":=", 1) for arg in example)
        assert set(given) <= declared, f"undeclared launch arguments {set(given) - declared} in {example}"
        params = parameter_overrides({k: v for k, v in given.items() if k in PARAMETER_ARGUMENTS},
                                     lidar=given.get("lidar", ""), depth_ref=given.get("depth_ref", ""))
        if "lidar" in given:  # the README's LiDAR example: a metric node, not a relative one
            assert params["metric_source"] == "lidar"


def test_launch_arguments_convert_to_the_parameter_types_and_empty_keeps_the_file_value():
    params = parameter_overrides({"tasks": "[depth]", "sharpen_rate_hz": "2", "process_res": "512", "rectify": "false",
                                  "lidar_extrinsic": "[0, 0, 0.1, 0, 0, 0, 1]", "device": "", "metric_source": ""})
    assert params == {"tasks": ["depth"], "sharpen_rate_hz": 2.0, "process_res": 512, "rectify": False,
                      "lidar_extrinsic": [0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 1.0]}
    assert isinstance(params["sharpen_rate_hz"], float)
    assert parameter_overrides({}, depth_ref="/depth")["metric_source"] == "depth_image"
    assert parameter_overrides({"metric_source": "fixed"}, lidar="/lidar")["metric_source"] == "fixed"
    with pytest.raises(ValueError, match="process_res"):
        parameter_overrides({"process_res": "big"})


def test_rviz_config_follows_the_namespace_the_image_remapping_and_the_camera_frame():
    text = rviz_config((REPO / "config" / "lotus2.rviz").read_text(), namespace="front",
                       image_topic="/camera/color/image_raw", fixed_frame="camera_color_optical_frame")
    config = yaml.safe_load(text)
    manager = config["Visualization Manager"]
    topics = {d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    assert topics == {"/camera/color/image_raw", "/front/lotus2_perception/depth/colorized",
                      "/front/lotus2_perception/normals/colorized", "/front/lotus2_perception/points",
                      "/front/lotus2_perception/refined/points"}
    assert manager["Global Options"]["Fixed Frame"] == "camera_color_optical_frame"
    relative = yaml.safe_load(rviz_config((REPO / "config" / "lotus2.rviz").read_text(), namespace="/",
                                          image_topic="image_rect", fixed_frame="cam"))
    assert "/image_rect" in {d["Topic"]["Value"] for d in relative["Visualization Manager"]["Displays"] if "Topic" in d}


def evaluate_launch(args: dict[str, str], rviz2_installed: bool = False, monkeypatch=None):
    """The actions ``ros2 launch`` would start for ``args`` (the package share is this checkout)."""
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    module = load_launch_module()
    module.FindPackageShare = lambda package: str(REPO)
    if monkeypatch is not None:
        import ament_index_python.packages as packages

        def prefix(name):
            if name == "rviz2" and rviz2_installed:
                return "/opt/ros/fake"
            raise packages.PackageNotFoundError(name)

        monkeypatch.setattr(packages, "get_package_prefix", prefix)
    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update(args)
    actions = []
    for entity in description.entities:
        if isinstance(entity, DeclareLaunchArgument):
            entity.execute(context)
        elif isinstance(entity, OpaqueFunction):
            actions += entity.execute(context) or []
    return context, actions


def node_command(context, node):
    from launch.utilities import perform_substitutions

    node._perform_substitutions(context)  # what Node.execute() does before starting the process
    context.extend_locals({"ros_specific_arguments": {"name": "", "ns": ""}})
    return [perform_substitutions(context, part) for part in node.cmd[1:]]


@pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason="launch/launch_ros are not installed (no registry has them)")
def test_the_readme_lidar_example_starts_a_lidar_metric_node_with_typed_parameters_and_remappings(monkeypatch):
    from launch_ros.actions import Node

    example = dict(arg.split(":=", 1) for arg in readme_launch_examples()[0])
    context, actions = evaluate_launch({**example, "sharpen_rate_hz": "2", "use_sim_time": "true"}, False, monkeypatch)
    nodes = [a for a in actions if isinstance(a, Node)]
    assert [n.node_executable for n in nodes] == ["perception_node"]  # rviz:=true, but no rviz2 here
    cmd = node_command(context, nodes[0])
    files = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--params-file"]
    assert Path(files[0]) == REPO / "config" / "perception.yaml"
    params = yaml.safe_load(Path(files[1]).read_text())["/lotus2/lotus2_perception"]["ros__parameters"]
    assert params["metric_source"] == "lidar" and params["use_sim_time"] is True
    assert params["sharpen_rate_hz"] == 2.0 and isinstance(params["sharpen_rate_hz"], float)
    assert params["base_model"] == example["base_model"]
    assert "device" not in params  # not given: the parameter file's value
    assert nodes[0].expanded_node_namespace == "/lotus2"
    assert ("lidar/points", example["lidar"]) in nodes[0].expanded_remapping_rules
    assert ("image", example["image"]) in nodes[0].expanded_remapping_rules


@pytest.mark.skipif(not HAVE_LAUNCH_ROS, reason="launch/launch_ros are not installed (no registry has them)")
def test_rviz_gets_this_launchs_namespace_topics_and_frame_when_installed_and_is_skipped_otherwise(monkeypatch,
                                                                                                   tmp_path):
    from launch.actions import LogInfo
    from launch_ros.actions import Node

    robot = tmp_path / "robot.yaml"
    robot.write_text("/**:\n  ros__parameters:\n    device: cpu\n")
    args = {"rviz": "true", "namespace": "front", "image": "/cam/image_raw", "camera_frame": "cam_optical",
            "params_file": str(robot)}
    _, without = evaluate_launch(args, False, monkeypatch)
    assert [type(a) for a in without] == [Node, LogInfo]
    context, with_rviz = evaluate_launch(args, True, monkeypatch)
    rviz = next(a for a in with_rviz if isinstance(a, Node) and a.node_executable == "rviz2")
    cmd = node_command(context, rviz)
    config = yaml.safe_load(Path(cmd[cmd.index("-d") + 1]).read_text())["Visualization Manager"]
    topics = {d["Topic"]["Value"] for d in config["Displays"] if "Topic" in d}
    assert "/cam/image_raw" in topics and "/front/lotus2_perception/depth/colorized" in topics
    assert config["Global Options"]["Fixed Frame"] == "cam_optical"
    node = next(a for a in with_rviz if isinstance(a, Node) and a.node_executable == "perception_node")
    node_cmd = node_command(context, node)
    assert node_cmd[node_cmd.index("--params-file") + 1] == str(robot)
