"""package.xml, setup.py, CMakeLists.txt, msg/ and scripts/ agree with each other."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import lotus2_ros

REPO = Path(__file__).resolve().parents[2]

SCALE_FIT_FIELDS = {
    "header": "std_msgs/Header",
    "scale": "float64",
    "shift": "float64",
    "fit_space": "string",
    "num_points": "uint32",
    "num_inliers": "uint32",
    "rmse_m": "float64",
    "abs_rel": "float64",
    "valid": "bool",
    "filtered": "bool",
    "reason": "uint8",
    "reason_text": "string",
}


def _package_xml() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def _msg_fields(path: Path) -> dict[str, str]:
    """``name -> type`` of a .msg file (comments, blank lines and constants skipped)."""
    fields = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and "=" not in line:
            type_, name = line.split()[:2]
            fields[name] = type_
    return fields


def _cmake_list(name: str) -> list[str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    match = re.search(rf"set\({name}\s+([^)]*)\)", text)
    assert match, f"CMakeLists.txt: no set({name} ...)"
    return match.group(1).split()


def _setup_py_list(name: str) -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py: no {name} = [...]")


def test_package_xml_is_format_3_ament_cmake_with_the_package_name():
    root = _package_xml()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "lotus2_ros"
    assert root.findtext("export/build_type") == "ament_cmake"
    assert root.find("maintainer").get("email")
    assert root.findtext("license")


def test_versions_agree_across_package_xml_setup_py_and_the_module():
    setup_version = subprocess.run(
        [sys.executable, "setup.py", "--version"], cwd=REPO, capture_output=True, text=True,
        check=True).stdout.strip().splitlines()[-1]
    assert _package_xml().findtext("version") == lotus2_ros.__version__ == setup_version


def test_package_xml_declares_what_message_generation_needs():
    root = _package_xml()
    buildtool = {e.text for e in root.findall("buildtool_depend")}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= buildtool
    assert "std_msgs" in {e.text for e in root.findall("depend")}  # ScaleFit has a Header
    exec_deps = {e.text for e in root.findall("exec_depend")}
    assert {"rosidl_default_runtime", "rclpy", "sensor_msgs"} <= exec_deps
    assert root.findtext("member_of_group") == "rosidl_interface_packages"


def test_scale_fit_msg_has_the_documented_fields_in_order():
    fields = _msg_fields(REPO / "msg" / "ScaleFit.msg")
    assert list(fields.items()) == list(SCALE_FIT_FIELDS.items())


def test_scale_fit_reason_constants_are_the_fit_reasons():
    from lotus2_ros.geometry.scale_fit import FitReason

    constants = {}
    for line in (REPO / "msg" / "ScaleFit.msg").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            type_, assignment = line.split()
            name, value = assignment.split("=")
            assert type_ == "uint8"
            constants[name] = int(value)
    assert constants == {f"REASON_{r.name}": r.value for r in FitReason}


def test_every_msg_file_is_generated_by_cmake():
    on_disk = sorted(f"msg/{p.name}" for p in (REPO / "msg").glob("*.msg"))
    assert sorted(_cmake_list("LOTUS2_ROS_MSGS")) == on_disk


def test_scale_fit_msg_parses_with_rosbags_for_bag_files():
    # The bag tool registers this definition with rosbags to write ScaleFit without ROS.
    from rosbags.typesys import get_types_from_msg

    text = (REPO / "msg" / "ScaleFit.msg").read_text(encoding="utf-8")
    types = get_types_from_msg(text, "lotus2_ros/msg/ScaleFit")
    consts, fields = types["lotus2_ros/msg/ScaleFit"]
    assert [name for name, _ in fields] == list(SCALE_FIT_FIELDS)
    assert ("REASON_TOO_FEW_INLIERS", "uint8", 6) in consts


def test_scale_fit_msg_parses_with_rosidl_adapter_as_cmake_does():
    parser = pytest.importorskip("rosidl_adapter.parser",
                                 reason="rosidl_adapter (ROS 2 build tools) not installed")
    text = (REPO / "msg" / "ScaleFit.msg").read_text(encoding="utf-8")
    spec = parser.parse_message_string("lotus2_ros", "ScaleFit", text)
    parsed = {f.name: str(f.type) for f in spec.fields}
    assert parsed == SCALE_FIT_FIELDS


def test_every_executable_has_a_launcher_forwarding_to_its_subcommand():
    executables = _cmake_list("LOTUS2_ROS_EXECUTABLES")
    assert "predict" in executables
    for name in executables:
        launcher = REPO / "scripts" / name
        assert launcher.is_file() and os.access(launcher, os.X_OK), launcher
        text = launcher.read_text(encoding="utf-8")
        assert text.startswith("#!")
        subcommand = name.replace("_", "-")
        assert f'main(["{subcommand}", *sys.argv[1:]])' in text, launcher


def test_setup_py_keeps_torch_unpinned_and_offers_the_lotus2_command():
    requires = _setup_py_list("INSTALL_REQUIRES")
    torch = [r for r in requires if re.match(r"torch\b", r)]
    assert torch == ["torch>=2.1"]  # a == pin or +cu suffix would drag in a CUDA build
    text = (REPO / "setup.py").read_text(encoding="utf-8")
    assert '"lotus2 = lotus2_ros.cli.main:main"' in text


def test_ament_resource_marker_exists():
    assert (REPO / "resource" / "lotus2_ros").is_file()
