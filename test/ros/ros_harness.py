"""Helpers for the real-DDS node tests: node subprocesses, a probe, and waiting for observed events."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.io import build_camera_info, build_compressed_image, build_header, build_image
from lotus2_ros.ros.msg_types import rclpy_types

REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    """A ``lotus2 <node>`` subprocess with its output captured to a file.

    ``gate``: run it through ``gated_node.py`` with that gate file (see there); ``node_name``: a
    node name other than the default (``__node`` remap), e.g. to tell its ``/diagnostics`` apart.
    """

    def __init__(self, subcommand: str, params: dict, namespace: str, log_path: Path, remaps: dict | None = None,
                 gate: Path | None = None, node_name: str | None = None):
        entry = ["-m", "lotus2_ros.cli.main"] if gate is None else [str(Path(__file__).with_name("gated_node.py")),
                                                                     str(gate)]
        args = [sys.executable, *entry, subcommand, "--ros-args", "-r", f"__ns:={namespace}"]
        if node_name:
            args += ["-r", f"__node:={node_name}"]
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
NODE_NAME = "lotus2_perception"
#: How long a probe waits for an answer to a frame before it sends the frame again.
RESEND_S = 2.0


def base_params(tiny_model, **extra):
    params = dict(base_model=str(tiny_model.base_model), weights=str(tiny_model.weights), device="cpu",
                  dtype="fp32", qos_reliability="reliable", diagnostics_period_s=0.5, sharpen_rate_hz=0.0,
                  torch_threads=1)
    params.update(extra)
    return params


class Probe:
    """Publishes frames to a node namespace and collects what comes back.

    Nothing here waits a fixed time for something to happen: every wait is for an observed event
    (a match, an output, a diagnostics value), with a timeout only as the failure bound. Where
    two input topics are not ordered against each other (an image and its camera_info or LiDAR
    sweep), :meth:`send_until` sends the frame again until the expected result is seen.
    """

    def __init__(self, node, ns: str, compressed: bool = False, node_name: str = NODE_NAME):
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

        self.node, self.ns, self.types, self.compressed = node, ns, rclpy_types(), compressed
        self.node_name = node_name
        classes = {"Image": Image, "CameraInfo": CameraInfo, "PointCloud2": PointCloud2}
        self.image_topic = f"{ns}/image/compressed" if compressed else f"{ns}/image"
        self.image_pub = node.create_publisher(CompressedImage if compressed else Image, self.image_topic, RELIABLE)
        self.info_pub = node.create_publisher(CameraInfo, f"{ns}/camera_info", RELIABLE)
        self.received: dict[str, list] = {}
        self._subs = []
        for prefix in ("", "refined/"):
            for topic, cls in OUT_TOPICS.items():
                name = prefix + topic
                self._subs.append(node.create_subscription(classes[cls], f"{ns}/{node_name}/{name}",
                                                           self._collect(name), RELIABLE))
        #: The node's latest /diagnostics values and how many of its messages arrived.
        self.diag: dict[str, str] = {}
        self.diag_count = 0
        #: Every /diagnostics message received (all nodes), oldest first.
        self.diagnostics: list = []
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        #: Stamps of the warm-up frames :meth:`wait_ready` sent.
        self.warmup_stamps: list[int] = []

    def _collect(self, name):
        def cb(msg):
            self.received.setdefault(name, []).append((msg, time.monotonic()))
        return cb

    def _on_diagnostics(self, msg) -> None:
        self.diagnostics.append(msg)
        for status in msg.status:
            # "<fully qualified node name>: lotus2 perception"
            if status.name.startswith(f"{self.ns.rstrip('/')}/{self.node_name}:"):
                self.diag = {kv.key: kv.value for kv in status.values}
                self.diag_count += 1

    def _matched(self) -> bool:
        # The node advertises only what its configuration can publish; every configuration has disparity.
        return (self.image_pub.get_subscription_count() > 0 and self.info_pub.get_subscription_count() > 0
                and self._subs[0].get_publisher_count() > 0)

    def wait_ready(self, proc: NodeProcess, timeout_s: float = 90.0) -> None:
        """Until the node runs, our endpoints matched its endpoints, and a warm-up frame went through.

        The round trip proves both directions of discovery and gives the node a camera_info
        before the test's first frame. Each new try has a new stamp, and only the answer to the
        newest try ends the wait, so no warm-up frame is still on its way when the test starts.
        """
        ok = spin_until(self.node, lambda: self._matched() or proc.proc.poll() is not None, timeout_s)
        assert ok and proc.proc.poll() is None, f"node did not come up:\n{proc.log()[-3000:]}"
        camera, grey = PinholeCamera.from_fov(W, H, 70.0), np.full((H, W, 3), 128, np.uint8)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.proc.poll() is None:
            stamp = now_ns(self.node)
            self.warmup_stamps.append(stamp)
            self.publish(grey, camera, stamp, compressed=self.compressed)
            if spin_until(self.node, lambda: stamp in self.stamps("disparity") or proc.proc.poll() is not None,
                          min(RESEND_S, max(deadline - time.monotonic(), 0.0))) and proc.proc.poll() is None:
                return
        raise AssertionError(f"no warm-up frame came back:\n{proc.log()[-3000:]}")

    def publish(self, rgb: np.ndarray, camera: PinholeCamera, stamp_ns: int, frame_id: str = "cam_optical",
                info: bool = True, compressed: bool = False) -> None:
        header = build_header(self.types, stamp_ns, frame_id)
        if info:
            self.info_pub.publish(build_camera_info(self.types, header, camera))
        if compressed:
            self.image_pub.publish(build_compressed_image(self.types, header, rgb, "png"))
        else:
            self.image_pub.publish(build_image(self.types, header, rgb, "rgb8"))

    def send_until(self, rgb: np.ndarray, camera: PinholeCamera, stamp_ns: int, predicate,
                   timeout_s: float = 60.0, info: bool = True, compressed: bool = False,
                   frame_id: str = "cam_optical") -> bool:
        """Publish the frame (same stamp, same pixels) every :data:`RESEND_S` until ``predicate()``."""
        return self.repeat_until(
            lambda: self.publish(rgb, camera, stamp_ns, frame_id=frame_id, info=info, compressed=compressed),
            predicate, timeout_s)

    def repeat_until(self, action, predicate, timeout_s: float = 60.0) -> bool:
        """Run ``action()`` every :data:`RESEND_S` until ``predicate()`` holds; False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            action()
            if spin_until(self.node, predicate, min(RESEND_S, deadline - time.monotonic())):
                return True
        return False

    def value(self, key: str) -> float:
        """The node's latest /diagnostics value of ``key`` (0 before it reports one)."""
        return _float(self.diag.get(key, "0"))

    def stamps(self, topic: str) -> list[int]:
        return [stamp_of(m) for m, _ in self.received.get(topic, [])]

    def message(self, topic: str, stamp_ns: int):
        """The first message received on ``topic`` with that stamp."""
        return next(m for m, _ in self.received[topic] if stamp_of(m) == stamp_ns)

    def wait_for(self, topic: str, stamp_ns: int, timeout_s: float = 60.0) -> bool:
        return spin_until(self.node, lambda: stamp_ns in self.stamps(topic), timeout_s)

    def wait_diagnostics(self, predicate=lambda d: True, timeout_s: float = 30.0) -> dict[str, float]:
        """The values of the node's next /diagnostics message for which ``predicate(values)`` holds.

        Values are floats; a counter the node has not reported yet is 0.
        """
        first = self.diag_count + 1  # a message received after this call started
        values = lambda: defaultdict(float, {k: _float(v) for k, v in self.diag.items()})  # noqa: E731
        ok = spin_until(self.node, lambda: self.diag_count >= first and predicate(values()), timeout_s)
        assert ok, f"no /diagnostics of {self.node_name} in {self.ns} satisfied the condition; last: {self.diag}"
        return values()


#: Where each frame the node received ends up (perception_node's counters).
FRAME_OUTCOMES = ("frames_published", "frames_dropped", "frames_skipped_no_subscribers", "frames_without_camera_info",
                  "bad_image", "processing_errors")


def settled(values: dict[str, float]) -> bool:
    """True when every frame the node received is accounted for: none waits or is being processed."""
    return values["frames_received"] == sum(values[k] for k in FRAME_OUTCOMES)


def _float(v: str) -> float:
    try:
        return float(v)
    except ValueError:
        return math.nan


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def now_ns(probe_node) -> int:
    return probe_node.get_clock().now().nanoseconds
