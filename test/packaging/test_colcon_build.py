"""`colcon build` of the ROS package: install layout, generated message, Python package.

Builds once per session into a temporary folder (the source tree is only read), with the
environment of ``scripts/colcon_env.sh``: the PyPI ROS 2 wheels in the venv, or a sourced
ROS 2 install. Skips when colcon, cmake or the ament/rosidl CMake packages are missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.colcon, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "lotus2_ros"
BUILD_TIMEOUT_S = 900


def _venv_prefix() -> Path:
    return Path(sys.prefix)


def _ament_prefixes() -> list[Path]:
    """Prefixes colcon will search: the venv (ROS wheels) and a sourced ROS 2."""
    prefixes = [_venv_prefix()]
    prefixes += [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    return prefixes


def _find_cmake_package(name: str) -> Path | None:
    for prefix in _ament_prefixes():
        config_dir = prefix / "share" / name / "cmake"
        if config_dir.is_dir():
            return config_dir
    return None


def _which(program: str) -> str | None:
    path = os.pathsep.join([str(_venv_prefix() / "bin"), os.environ.get("PATH", "")])
    return shutil.which(program, path=path)


def _missing_build_tools() -> str | None:
    for program in ("colcon", "cmake"):
        if _which(program) is None:
            return f"'{program}' not found (make venv installs the ROS 2 build wheels)"
    for name in ("ament_cmake", "ament_cmake_python", "rosidl_default_generators", "std_msgs"):
        if _find_cmake_package(name) is None:
            return (f"CMake package '{name}' not found in the venv or AMENT_PREFIX_PATH "
                    "(make venv installs the ROS 2 build wheels)")
    return None


def _source_snapshot() -> dict[str, str]:
    """sha256 of every Python file of the source package, keyed by path inside it."""
    root = REPO / PACKAGE
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts
    }


@dataclass(frozen=True)
class ColconBuild:
    install: Path  # the install base (holds setup.sh)
    prefix: Path  # the package's own prefix (isolated layout): install/lotus2_ros
    seconds: float
    source_files: dict[str, str]  # package files unchanged while the build ran: path -> sha256

    def site_packages(self) -> Path:
        return (self.prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
                / "site-packages")

    def run_python(self, code: str, tmp_path: Path, timeout_s: float = 120, env_extra: dict | None = None) -> dict:
        """Run ``code`` in a fresh interpreter with the install tree sourced; its JSON output."""
        script = tmp_path / "probe.py"
        script.write_text(textwrap.dedent(code), encoding="utf-8")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(env_extra or {})
        cmd = f'. "{self.install}/setup.sh" && exec "{sys.executable}" "{script}"'
        proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=timeout_s)
        assert proc.returncode == 0, f"probe failed:\n{proc.stdout}\n{proc.stderr}"
        return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def colcon_build(tmp_path_factory) -> ColconBuild:
    if os.environ.get("LOTUS2_IN_COLCON_TEST"):
        pytest.skip("running inside `colcon test` of this package: it was just built")
    reason = _missing_build_tools()
    if reason:
        pytest.skip(reason)
    if (_venv_prefix() / "share" / "ament_index").is_dir():
        check = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "fix_ros_wheels_cmake.py"), "--check"],
            capture_output=True, text=True)
        if check.returncode != 0:
            pytest.fail("the ROS wheels' CMake files still name the wheel build machine's Python "
                        "paths; run `make venv` (or scripts/fix_ros_wheels_cmake.py):\n"
                        + check.stdout + check.stderr)

    work = tmp_path_factory.mktemp("colcon")
    install = work / "install"
    source_files = _source_snapshot()
    cmd = (f'. "{REPO}/scripts/colcon_env.sh" "{_venv_prefix()}" && '
           f'colcon --log-base "{work}/log" build --base-paths "{REPO}" '
           f'--packages-select {PACKAGE} --build-base "{work}/build" --install-base "{install}" '
           '--event-handlers console_cohesion+ summary-')
    started = time.monotonic()
    proc = subprocess.run(["bash", "-c", cmd], cwd=work, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT_S)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-60:])
        pytest.fail(f"colcon build failed after {seconds:.0f} s:\n{tail}")
    print(f"colcon build of {PACKAGE}: {seconds:.1f} s")
    after = _source_snapshot()
    stable = {k: v for k, v in source_files.items() if after.get(k) == v}
    return ColconBuild(install, install / PACKAGE, seconds, stable)


def test_colcon_test_runs_the_packages_pytest_tests(colcon_build, tmp_path):
    """`colcon test` (CTest → ament_add_pytest_test) runs pytest and reports its results (#13.13)."""
    if _find_cmake_package("ament_cmake_pytest") is None:
        pytest.skip("ament_cmake_pytest is not installed (make venv installs the ros-ament-cmake-pytest wheel)")
    work = colcon_build.install.parent
    cmd = (f'. "{REPO}/scripts/colcon_env.sh" "{_venv_prefix()}" && '
           f'colcon --log-base "{work}/log" test --base-paths "{REPO}" --packages-select {PACKAGE} '
           f'--build-base "{work}/build" --install-base "{colcon_build.install}" '
           '--ctest-args -R lotus2_ros_packaging --event-handlers console_cohesion+ summary-')
    proc = subprocess.run(["bash", "-c", cmd], cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    results = list((work / "build" / PACKAGE / "test_results").rglob("lotus2_ros_packaging.xunit.xml"))
    assert results, f"no pytest result file:\n{proc.stdout[-2000:]}"
    suite = ET.parse(results[0]).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert int(suite.get("tests")) >= 10 and int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0


def test_install_tree_registers_the_package_with_ament(colcon_build):
    share = colcon_build.prefix / "share"
    marker = share / "ament_index" / "resource_index" / "packages" / PACKAGE
    assert marker.is_file()
    root = ET.parse(share / PACKAGE / "package.xml").getroot()
    assert root.findtext("name") == PACKAGE
    assert (share / "ament_index" / "resource_index" / "rosidl_interfaces" / PACKAGE).is_file()


def test_install_tree_has_the_message_definition(colcon_build):
    share = colcon_build.prefix / "share" / PACKAGE
    installed = share / "msg" / "ScaleFit.msg"
    assert installed.read_text(encoding="utf-8") == (REPO / "msg" / "ScaleFit.msg").read_text(
        encoding="utf-8")
    assert (share / "msg" / "ScaleFit.idl").is_file()


def test_install_tree_has_the_node_executables_launch_file_parameters_and_rviz_config(colcon_build):
    prefix = colcon_build.prefix
    for exe in ("perception_node", "synthetic_camera", "predict"):
        launcher = prefix / "lib" / PACKAGE / exe
        assert launcher.is_file() and os.access(launcher, os.X_OK), exe
    share = prefix / "share" / PACKAGE
    for rel in ("launch/perception.launch.py", "config/perception.yaml", "config/lotus2.rviz"):
        assert (share / rel).read_bytes() == (REPO / rel).read_bytes(), rel


def test_predict_launcher_is_an_executable_bound_to_the_build_python(colcon_build):
    launcher = colcon_build.prefix / "lib" / PACKAGE / "predict"
    assert launcher.is_file() and os.access(launcher, os.X_OK)
    lines = launcher.read_text(encoding="utf-8").splitlines()
    interpreter = Path(lines[0].removeprefix("#!"))
    assert interpreter.is_absolute() and os.access(interpreter, os.X_OK), lines[0]
    assert 'main(["predict", *sys.argv[1:]])' in "\n".join(lines)


def test_predict_launcher_runs_the_predict_command(colcon_build, tmp_path):
    if not (REPO / PACKAGE / "cli" / "main.py").is_file():
        pytest.skip("lotus2_ros/cli/main.py not written yet")
    launcher = colcon_build.prefix / "lib" / PACKAGE / "predict"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    cmd = f'. "{colcon_build.install}/setup.sh" && exec "{launcher}" --help'
    proc = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "usage" in proc.stdout.lower() and "--base-model" in proc.stdout


def test_generated_message_round_trips_through_rclpy_serialization(colcon_build, tmp_path):
    result = colcon_build.run_python("""
        import json
        from rclpy.serialization import deserialize_message, serialize_message
        from lotus2_ros.msg import ScaleFit

        msg = ScaleFit()
        msg.header.stamp.sec = 1_700_000_000
        msg.header.stamp.nanosec = 123_456_789
        msg.header.frame_id = "camera_optical_frame"
        msg.scale = 0.8125
        msg.shift = -0.015625
        msg.fit_space = "disparity"
        msg.num_points = 4096
        msg.num_inliers = 3900
        msg.rmse_m = 0.25
        msg.abs_rel = 0.0625
        msg.valid = True
        msg.filtered = True
        data = serialize_message(msg)
        back = deserialize_message(data, ScaleFit)
        print(json.dumps({
            "equal": back == msg,
            "bytes": len(data),
            "fields": ScaleFit.get_fields_and_field_types(),
            "values": {
                "sec": back.header.stamp.sec, "nanosec": back.header.stamp.nanosec,
                "frame_id": back.header.frame_id, "scale": back.scale, "shift": back.shift,
                "fit_space": back.fit_space, "num_points": back.num_points,
                "num_inliers": back.num_inliers, "rmse_m": back.rmse_m,
                "abs_rel": back.abs_rel, "valid": back.valid, "filtered": back.filtered,
            },
            "module": __import__("lotus2_ros.msg").msg.__file__,
        }))
    """, tmp_path)
    assert result["equal"]
    assert result["values"] == {
        "sec": 1_700_000_000, "nanosec": 123_456_789, "frame_id": "camera_optical_frame",
        "scale": 0.8125, "shift": -0.015625, "fit_space": "disparity", "num_points": 4096,
        "num_inliers": 3900, "rmse_m": 0.25, "abs_rel": 0.0625, "valid": True, "filtered": True,
    }
    assert result["fields"] == {
        "header": "std_msgs/Header", "scale": "double", "shift": "double",
        "fit_space": "string", "num_points": "uint32", "num_inliers": "uint32",
        "rmse_m": "double", "abs_rel": "double", "valid": "boolean", "filtered": "boolean",
        "reason": "uint8", "reason_text": "string",
    }
    assert Path(result["module"]).is_relative_to(colcon_build.site_packages())


def test_installed_python_package_is_the_source_package_plus_msg(colcon_build, tmp_path):
    result = colcon_build.run_python("""
        import json
        import lotus2_ros
        print(json.dumps({"file": lotus2_ros.__file__, "version": lotus2_ros.__version__}))
    """, tmp_path)
    installed_root = colcon_build.site_packages() / PACKAGE
    assert Path(result["file"]) == installed_root / "__init__.py"
    source_init = (REPO / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    assert f'__version__ = "{result["version"]}"' in source_init

    installed = {
        str(p.relative_to(installed_root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in installed_root.rglob("*.py") if "__pycache__" not in p.parts
    }
    missing = sorted(set(colcon_build.source_files) - set(installed))
    assert not missing, f"source files not installed: {missing}"
    changed = sorted(k for k, v in colcon_build.source_files.items() if installed[k] != v)
    assert not changed, f"installed files differ from the source: {changed}"
    # Files added or edited in the source while the build ran are not "generated" either.
    generated = set(installed) - set(_source_snapshot())
    assert generated and all(name.startswith("msg/") for name in generated), sorted(generated)


def test_installed_node_publishes_scale_fit_over_dds(colcon_build, tiny_model, tmp_path):
    """~/scale_fit needs the generated message type, so it exists only in a colcon install: run the
    installed perception_node launcher, feed it a frame, then the same image with a depth reference
    that is an exact affine transform (s=2, t=0.1) of the disparity it published for that image."""
    launcher = colcon_build.prefix / "lib" / PACKAGE / "perception_node"
    result = colcon_build.run_python(f"""
        import json, subprocess, time
        import numpy as np
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image
        from lotus2_ros.msg import ScaleFit
        from lotus2_ros.geometry import PinholeCamera
        from lotus2_ros.io import build_camera_info, build_header, build_image, image_msg_to_array
        from lotus2_ros.ros.msg_types import RclpyTypes
        from lotus2_ros.synthetic import make_indoor_scene, render_sequence

        params = dict(base_model="{tiny_model.base_model}", weights="{tiny_model.weights}", device="cpu",
                      dtype="fp32", qos_reliability="reliable", sharpen_rate_hz=0.0, torch_threads=1,
                      metric_source="depth_image", metric_max_offset_ms=1.0, lidar_edge_window_px=0,
                      min_depth_m=0.01, max_depth_m=1000.0)
        args = ["{launcher}", "--ros-args", "-r", "__ns:=/sf"]
        for k, v in params.items():
            args += ["-p", f"{{k}}:={{v}}"]
        node_proc = subprocess.Popen(args, stdout=open("node.log", "w"), stderr=subprocess.STDOUT)
        rclpy.init()
        probe = rclpy.create_node("scale_fit_probe")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = RclpyTypes()
        got = {{"disparity": [], "scale_fit": [], "depth/image": []}}
        base = "/sf/lotus2_perception/"
        probe.create_subscription(Image, base + "disparity", got["disparity"].append, qos)
        probe.create_subscription(Image, base + "depth/image", got["depth/image"].append, qos)
        probe.create_subscription(ScaleFit, base + "scale_fit", got["scale_fit"].append, qos)
        image_pub = probe.create_publisher(Image, "/sf/image", qos)
        info_pub = probe.create_publisher(CameraInfo, "/sf/camera_info", qos)
        ref_pub = probe.create_publisher(Image, "/sf/depth_ref/image", qos)
        camera = PinholeCamera.from_fov(64, 48, hfov_deg=70.0)
        rgb = next(iter(render_sequence(make_indoor_scene(seed=0), camera, num_frames=1))).rgb

        def stamp_of(m):
            return m.header.stamp.sec * 10**9 + m.header.stamp.nanosec

        def send_until(topic, reference=None, timeout_s=120.0):
            stamp = probe.get_clock().now().nanoseconds
            header = build_header(types, stamp, "cam_optical")
            deadline = time.monotonic() + timeout_s
            sent_at = -1e9
            while time.monotonic() < deadline and node_proc.poll() is None:
                # Sent again until the answer comes: before the node has discovered us, or when the
                # image overtook its camera_info or reference (three topics, no order between them).
                if time.monotonic() - sent_at > 5.0:
                    info_pub.publish(build_camera_info(types, header, camera))
                    if reference is not None:
                        ref_pub.publish(build_image(types, header, reference, "32FC1"))
                        time.sleep(0.05)
                    image_pub.publish(build_image(types, header, rgb, "rgb8"))
                    sent_at = time.monotonic()
                rclpy.spin_once(probe, timeout_sec=0.1)
                hits = [m for m in got[topic] if stamp_of(m) == stamp]
                if hits:
                    return stamp, hits[0]
            raise SystemExit("no " + topic + " for the frame; node log:\\n" + open("node.log").read()[-3000:])

        try:
            _, disparity_msg = send_until("disparity")
            disparity = image_msg_to_array(disparity_msg).astype(np.float64)
            reference = (1.0 / (2.0 * disparity + 0.1)).astype(np.float32)
            stamp, fit = send_until("scale_fit", reference)
            end = time.monotonic() + 120  # published with the fit: a bound for a failure, not a wait
            while time.monotonic() < end and not any(stamp_of(m) == stamp for m in got["depth/image"]):
                rclpy.spin_once(probe, timeout_sec=0.1)
            depth = [image_msg_to_array(m) for m in got["depth/image"] if stamp_of(m) == stamp]
            print(json.dumps(dict(
                stamp_equal=stamp_of(fit) == stamp, frame_id=fit.header.frame_id, scale=fit.scale, shift=fit.shift,
                fit_space=fit.fit_space, num_points=fit.num_points, num_inliers=fit.num_inliers, rmse_m=fit.rmse_m,
                abs_rel=fit.abs_rel, valid=fit.valid, reason=fit.reason, reason_text=fit.reason_text,
                ok=ScaleFit.REASON_OK, pixels=int(reference.size),
                depth_max_rel_err=float(np.nanmax(np.abs(depth[0] / reference - 1))) if depth else None)))
        finally:
            node_proc.terminate()
            node_proc.wait(30)
            probe.destroy_node()
            rclpy.shutdown()
    """, tmp_path, timeout_s=420, env_extra={"ROS_DOMAIN_ID": str(110 + os.getpid() % 100),
                                               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"})
    assert result["stamp_equal"] and result["frame_id"] == "cam_optical" and result["valid"]
    assert result["reason"] == result["ok"] == 0 and result["reason_text"] == ""
    assert result["fit_space"] == "disparity"
    assert result["scale"] == pytest.approx(2.0, rel=1e-3) and result["shift"] == pytest.approx(0.1, abs=1e-3)
    assert 30 <= result["num_inliers"] <= result["num_points"] <= result["pixels"]
    assert result["rmse_m"] < 1e-3 and result["abs_rel"] < 1e-3
    assert result["depth_max_rel_err"] is not None and result["depth_max_rel_err"] < 1e-3
