"""Helpers for the real-DDS node tests: node subprocesses and spinning until a condition."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.io import build_camera_info, build_compressed_image, build_header, build_image
from lotus2_ros.ros.msg_types import rclpy_types

REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    """A ``lotus2 <node>`` subprocess with its output captured to a file."""

    def __init__(self, subcommand: str, params: dict, namespace: str, log_path: Path, remaps: dict | None = None):
        args = [sys.executable, "-m", "lotus2_ros.cli.main", subcommand, "--ros-args", "-r", f"__ns:={namespace}"]
        for k, v in params.items():
            args += ["-p", f"{k}:={_param(v)}"]
        for k, v in (remaps or {}).items():
            args += ["-r", f"{k}:={v}"]
        self.log_path = log_path
        self._log = open(log_path, "w")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig=signal.SIGINT, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def _param(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(map(str, v)) + "]"
    return str(v)


def spin_until(node, predicate, timeout_s: float) -> bool:
    """Spin ``node`` until ``predicate()`` is true or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        node.executor_.spin_once(timeout_sec=0.05)
        if predicate():
            return True
    return False


W, H = 128, 96
RELIABLE = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
OUT_TOPICS = {
    "disparity": "Image", "depth/image": "Image", "depth/camera_info": "CameraInfo", "depth/colorized": "Image",
    "normals/image": "Image", "normals/colorized": "Image", "points": "PointCloud2",
}


def base_params(tiny_model, **extra):
    params = dict(base_model=str(tiny_model.base_model), weights=str(tiny_model.weights), device="cpu",
                  dtype="fp32", qos_reliability="reliable", diagnostics_period_s=0.5, sharpen_rate_hz=0.0,
                  torch_threads=1)
    params.update(extra)
    return params


class Probe:
    """Publishes frames to a node namespace and collects what comes back."""

    def __init__(self, node, ns: str, compressed: bool = False):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        self.node, self.ns, self.types = node, ns, rclpy_types()
        classes = {"Image": Image, "CameraInfo": CameraInfo, "PointCloud2": PointCloud2}
        self.image_topic = f"{ns}/image/compressed" if compressed else f"{ns}/image"
        self.image_pub = node.create_publisher(CompressedImage if compressed else Image, self.image_topic, RELIABLE)
        self.info_pub = node.create_publisher(CameraInfo, f"{ns}/camera_info", RELIABLE)
        self.received: dict[str, list] = {}
        for prefix in ("", "refined/"):
            for topic, cls in OUT_TOPICS.items():
                name = prefix + topic
                node.create_subscription(classes[cls], f"{ns}/lotus2_perception/{name}", self._collect(name), RELIABLE)
        self.diagnostics: list = []
        node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)

    def _collect(self, name):
        def cb(msg):
            self.received.setdefault(name, []).append((msg, time.monotonic()))
        return cb

    def wait_ready(self, proc: NodeProcess, timeout_s: float = 90.0) -> None:
        ok = spin_until(self.node, lambda: self.node.count_subscribers(self.image_topic) > 0
                        and self.node.count_publishers(f"{self.ns}/lotus2_perception/disparity") > 0
                        or proc.proc.poll() is not None, timeout_s)
        assert ok and proc.proc.poll() is None, f"node did not come up:\n{proc.log()[-3000:]}"
        # Let discovery settle in both directions before the first frame.
        spin_until(self.node, lambda: False, 1.0)

    def publish(self, rgb: np.ndarray, camera: PinholeCamera, stamp_ns: int, frame_id: str = "cam_optical",
                info: bool = True, compressed: bool = False) -> None:
        header = build_header(self.types, stamp_ns, frame_id)
        if info:
            self.info_pub.publish(build_camera_info(self.types, header, camera))
        if compressed:
            self.image_pub.publish(build_compressed_image(self.types, header, rgb, "png"))
        else:
            self.image_pub.publish(build_image(self.types, header, rgb, "rgb8"))

    def stamps(self, topic: str) -> list[int]:
        return [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m, _ in self.received.get(topic, [])]

    def wait_for(self, topic: str, stamp_ns: int, timeout_s: float = 60.0) -> bool:
        return spin_until(self.node, lambda: stamp_ns in self.stamps(topic), timeout_s)

    def latest_diagnostics(self) -> dict[str, str]:
        spin_until(self.node, lambda: False, 1.2)
        assert self.diagnostics, "no /diagnostics received"
        for status in self.diagnostics[-1].status:
            if "lotus2" in status.name and self.ns.strip("/") in status.name:
                return {kv.key: kv.value for kv in status.values}
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values}


def now_ns(probe_node) -> int:
    return probe_node.get_clock().now().nanoseconds
