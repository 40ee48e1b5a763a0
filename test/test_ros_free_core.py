"""The ROS-free core imports and runs on machines without ROS (trainer, bag tool, predictor)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import lotus2_ros

CORE_PACKAGES = ("model", "geometry", "io", "synthetic", "cli", "train", "bag", "perception")
#: The core proper: everything but the command line (which may start the ROS nodes) and the shell itself.
NO_SHELL_PACKAGES = ("model", "geometry", "io", "synthetic", "train", "bag", "perception")


def test_core_packages_import_with_rclpy_blocked():
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys

        class BlockRos:
            def find_spec(self, name, path=None, target=None):
                if (name.split(".")[0] in ("rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs")
                        or name == "lotus2_ros.ros" or name.startswith("lotus2_ros.ros.")):
                    raise ImportError(f"blocked for this test: {{name}}")
                return None

        sys.meta_path.insert(0, BlockRos())
        import lotus2_ros
        imported = []
        for pkg in {CORE_PACKAGES!r}:
            try:
                mod = importlib.import_module("lotus2_ros." + pkg)
            except ModuleNotFoundError as err:
                if err.name == "lotus2_ros." + pkg:
                    continue  # a package that does not exist yet
                raise
            imported.append(mod.__name__)
            for info in pkgutil.walk_packages(mod.__path__, mod.__name__ + "."):
                importlib.import_module(info.name)
                imported.append(info.name)
        assert not any(m.split(".")[0] == "rclpy" for m in sys.modules), "rclpy got imported"
        print(len(imported))
        """
    )
    root = Path(lotus2_ros.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.strip().splitlines()[-1]) >= 15  # model, geometry, io, synthetic, cli modules


def test_no_core_module_mentions_rclpy_imports():
    root = Path(lotus2_ros.__file__).resolve().parent
    offenders = []
    for pkg in CORE_PACKAGES:
        for path in (root / pkg).rglob("*.py") if (root / pkg).is_dir() else []:
            for line in path.read_text().splitlines():
                stripped = line.strip()
                if stripped.startswith(("import rclpy", "from rclpy")):
                    offenders.append(f"{path.relative_to(root)}: {stripped}")
    assert offenders == []


def _shell_references(path: Path) -> list[str]:
    """Every way a module names the ROS shell: imports (absolute or relative) and module-name strings."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(Path(lotus2_ros.__file__).resolve().parents[1]).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # resolve a relative import against the module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value]  # importlib.import_module("lotus2_ros.ros…"), __import__, …
        for name in names:
            if name == "lotus2_ros.ros" or name.startswith("lotus2_ros.ros.") or name.split(".")[0] == "rclpy":
                found.append(f"line {node.lineno}: {name}")
    return found


def test_no_core_module_reaches_the_ros_shell_however_it_imports():
    root = Path(lotus2_ros.__file__).resolve().parent
    offenders = {str(path.relative_to(root)): refs
                 for pkg in NO_SHELL_PACKAGES for path in sorted((root / pkg).rglob("*.py"))
                 if (refs := _shell_references(path))}
    assert offenders == {}


def test_the_shell_reference_check_sees_relative_imports_and_importlib_strings(tmp_path):
    root = Path(lotus2_ros.__file__).resolve().parent
    probe = root / "io" / "_probe_for_the_guard_test.py"
    probe.write_text('import importlib\nfrom ..ros import msg_types\nm = importlib.import_module("lotus2_ros.ros.x")\n')
    try:
        refs = _shell_references(probe)
    finally:
        probe.unlink()
    assert refs == ["line 2: lotus2_ros.ros", "line 2: lotus2_ros.ros.msg_types", "line 3: lotus2_ros.ros.x"]
