"""The ROS-free core imports and runs on machines without ROS (trainer, bag tool, predictor)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import lotus2_ros

CORE_PACKAGES = ("model", "geometry", "io", "synthetic", "cli", "train", "bag", "perception")


def test_core_packages_import_with_rclpy_blocked():
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys

        class BlockRos:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs"):
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
        importlib.import_module("lotus2_ros.prediction")
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
