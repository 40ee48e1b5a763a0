"""The message converters import and work with rclpy and the ROS message packages blocked."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import lotus2_ros

BLOCKED = ("rclpy", "rosidl_runtime_py", "sensor_msgs", "std_msgs", "builtin_interfaces")


def test_io_converters_run_with_ros_python_packages_blocked():
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys

        class BlockRos:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {BLOCKED!r}:
                    raise ImportError(f"blocked for this test: {{name}}")
                return None

        sys.meta_path.insert(0, BlockRos())
        import numpy as np
        import lotus2_ros.io as io
        for info in pkgutil.walk_packages(io.__path__, "lotus2_ros.io."):
            importlib.import_module(info.name)

        types = io.rosbags_types()
        header = io.build_header(types, 1_000_000_007, "cam")
        depth = np.array([[1.0, np.nan]], dtype=np.float32)
        back = io.image_msg_to_depth_m(io.build_image(types, header, depth, "32FC1"))
        assert np.array_equal(back, depth, equal_nan=True), back
        cloud = io.build_pointcloud2(types, header, np.ones((1, 2, 3), np.float32))
        assert io.pointcloud2_to_xyz(cloud).tolist() == [[1.0, 1.0, 1.0]] * 2
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({BLOCKED!r}))
        assert not loaded, loaded
        print("ok")
        """
    )
    root = Path(lotus2_ros.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "ok"
