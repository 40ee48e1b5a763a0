"""package.xml declares what the package uses, and only that; LICENSE; `colcon test` has tests (#13.13, #13.17)."""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Python import name → the ROS package (rosdep key) that provides it.
ROS_IMPORTS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "builtin_interfaces": "builtin_interfaces",
    "sensor_msgs": "sensor_msgs", "std_msgs": "std_msgs", "diagnostic_msgs": "diagnostic_msgs",
    "tf2_ros": "tf2_ros_py", "launch": "launch", "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python", "yaml": "python3-yaml", "numpy": "python3-numpy",
    "cv2": "python3-opencv", "geometry_msgs": "geometry_msgs", "visualization_msgs": "visualization_msgs",
    "std_srvs": "std_srvs",
}
#: Run-time dependencies that no import names: generated message support, the RViz the launch file starts.
NOT_IMPORTED = {"rosidl_default_runtime", "rviz2"}


def imported_modules() -> set[str]:
    """Top-level modules imported anywhere in the package and the launch files."""
    names = set()
    for path in [*(REPO / "lotus2_ros").rglob("*.py"), *(REPO / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def dependencies(*tags: str) -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip() for tag in tags for e in root.findall(tag)}


def test_every_ros_package_the_code_imports_is_a_declared_dependency():
    used = {ROS_IMPORTS[m] for m in imported_modules() if m in ROS_IMPORTS}
    declared = dependencies("depend", "exec_depend")
    assert used - declared == set(), f"imported but not in package.xml: {sorted(used - declared)}"


def test_package_xml_lists_no_dependency_the_package_does_not_use():
    used = {ROS_IMPORTS[m] for m in imported_modules() if m in ROS_IMPORTS} | NOT_IMPORTED
    declared = dependencies("depend", "exec_depend")
    assert declared - used == set(), f"declared but never used: {sorted(declared - used)}"


def test_rviz2_is_an_optional_dependency_with_a_condition():
    root = ET.parse(REPO / "package.xml").getroot()
    rviz = [e for e in root.findall("exec_depend") if e.text == "rviz2"]
    assert len(rviz) == 1 and rviz[0].get("condition"), "rviz2 must be conditional (headless robots)"


def test_the_apache_license_text_ships_with_the_package():
    assert ET.parse(REPO / "package.xml").getroot().findtext("license") == "Apache-2.0"
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) >= 200


def test_colcon_test_runs_the_pytest_suite_through_ament_cmake_pytest():
    cmake = (REPO / "CMakeLists.txt").read_text()
    block = cmake[cmake.index("if(BUILD_TESTING)"):cmake.index("ament_package()")]
    assert "find_package(ament_cmake_pytest" in block
    tests = re.findall(r"ament_add_pytest_test\((\w+) (\S+)", block)
    assert ("lotus2_ros_packaging", "test/packaging/test_package_metadata.py") in tests
    assert ("lotus2_ros_suite", "test") in tests
    assert "ament_cmake_pytest" in dependencies("test_depend")
    assert '"ros-ament-cmake-pytest"' in (REPO / "scripts" / "setup_venv.py").read_text()


def test_build_docs_say_to_source_the_venv_underlay_in_a_plain_workspace():
    text = (REPO / "docs" / "BUILD.md").read_text()
    section = text[text.index("### A plain workspace with the pip-installed ROS 2"):]
    section = section[:section.index("\n## ")]
    lines = [line.strip() for line in section.splitlines()]
    source = next(i for i, line in enumerate(lines) if line.startswith("source") and "local_setup.bash" in line)
    build = next(i for i, line in enumerate(lines) if line.startswith("cd ") and "colcon build" in line)
    assert source < build
    assert "colcon test" in section
    assert "local_setup" in (REPO / "scripts" / "fix_ros_wheels_cmake.py").read_text()
