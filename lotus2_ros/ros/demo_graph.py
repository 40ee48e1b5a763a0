"""The ROS graph of ``lotus2 demo``: synthetic camera (+ LiDAR) → perception_node → a recorder.

Both nodes run as their own processes (as ``ros2 launch`` would start them) on a private DDS
domain; this process subscribes to every output for a fixed time, measures output rates and
latencies (image stamp → receipt), prints the node's own diagnostics (rates, drops, per-stage
medians), and writes the last message of every output topic to files.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..io.image_msgs import image_msg_to_array
from ..io.images import write_rgb
from ..io.ply import write_ply
from ..io.pointcloud import read_pointcloud2_fields, unpack_rgb
from ..perception.outputs import OUTPUT_TOPICS, REFINED_PREFIX

NAMESPACE = "/demo"
NODE = "lotus2_perception"


def _param_args(params: dict) -> list[str]:
    out = []
    for k, v in params.items():
        v = ("true" if v else "false") if isinstance(v, bool) else v
        if isinstance(v, list):
            v = "[" + ",".join(map(str, v)) + "]"
        out += ["-p", f"{k}:={v}"]
    return out


def start(subcommand: str, params: dict, log_path: Path) -> subprocess.Popen:
    args = [sys.executable, "-m", "lotus2_ros.cli.main", subcommand, "--ros-args", "-r", f"__ns:={NAMESPACE}",
            *_param_args(params)]
    return subprocess.Popen(args, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))


def run_graph(model: dict, out_dir: Path, *, seconds: float, width: int, height: int, rate_hz: float,
              sharpen_rate_hz: float, metric: dict) -> int:
    """Run the demo graph; returns an exit code (0 if outputs came through).

    Args:
        model: perception_node parameters naming the model (base_model, weights, device, dtype and
            optionally process_res / sharpen_steps; the model's own defaults otherwise).
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    os.environ.setdefault("ROS_DOMAIN_ID", str(60 + os.getpid() % 40))  # private, in the safe 0-101 range
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # Camera-size images between processes: with Fast DDS's default transports (a 512 KB shared
    # memory segment, then UDP fragments) most 640x480 frames never reached the node on a busy
    # CPU (14 of 52 in 30 s here); LARGE_DATA (shared memory + TCP, Fast DDS >= 2.14) delivers them.
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    out_dir.mkdir(parents=True, exist_ok=True)
    camera = start("synthetic-camera", dict(width=width, height=height, rate_hz=rate_hz, loop_frames=20,
                                            publish_ground_truth=True),
                   out_dir / "synthetic_camera.log")
    node = start("perception-node", dict(**model, sharpen_rate_hz=sharpen_rate_hz, diagnostics_period_s=1.0,
                                         torch_threads=1, **metric),
                 out_dir / "perception_node.log")
    rclpy.init()
    rec = rclpy.create_node("demo_recorder")
    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    received: dict[str, list] = {}
    diagnostics: list = []

    def collect(name):
        def cb(msg):
            received.setdefault(name, []).append((msg, rec.get_clock().now().nanoseconds))
        return cb

    classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo,
                   "sensor_msgs/msg/PointCloud2": PointCloud2}
    for prefix in ("", REFINED_PREFIX):
        for topic, type_name in OUTPUT_TOPICS.items():
            if type_name not in classes:
                continue  # scale_fit: a colcon-built message type
            rec.create_subscription(classes[type_name], f"{NAMESPACE}/{NODE}/{prefix + topic}",
                                    collect(prefix + topic), qos)
    for name in ("depth", "normals"):
        rec.create_subscription(Image, f"{NAMESPACE}/ground_truth/{name}", collect(f"ground_truth/{name}"), qos)
    # The camera's real rate (camera_info goes with every image and is small): on a busy CPU the
    # camera process itself can fall behind its nominal rate.
    rec.create_subscription(CameraInfo, f"{NAMESPACE}/camera_info", collect("input/camera_info"), qos)
    rec.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    code = 0
    try:
        print(f"waiting for the first output (model loading) — logs in {out_dir}")
        deadline = time.monotonic() + 180
        while not received.get("disparity") and time.monotonic() < deadline:
            rclpy.spin_once(rec, timeout_sec=0.1)
            if node.poll() is not None or camera.poll() is not None:
                print("a node exited early; see the logs", file=sys.stderr)
                return 1
        if not received.get("disparity"):
            print("no output within 180 s; see the logs", file=sys.stderr)
            return 1
        print(f"recording for {seconds:.0f} s ...")
        t0 = time.monotonic()
        received.clear()
        while time.monotonic() - t0 < seconds:
            rclpy.spin_once(rec, timeout_sec=0.1)
        print(summary(received, diagnostics, seconds, width, height, rate_hz))
        print(accuracy(received))
        write_outputs(received, out_dir / "outputs")
        print(f"wrote the last message of each output to {out_dir / 'outputs'}")
    finally:
        for proc in (node, camera):
            proc.send_signal(signal.SIGINT)
        for proc in (node, camera):
            try:
                code |= proc.wait(30) != 0
            except subprocess.TimeoutExpired:
                proc.kill()
                code = 1
        rec.destroy_node()
        rclpy.shutdown()
    return code


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def summary(received: dict[str, list], diagnostics: list, seconds: float, width: int, height: int,
            rate_hz: float) -> str:
    lines = [f"perception_node on a {width}x{height} synthetic camera at {rate_hz} Hz, {seconds:.0f} s:",
             f"  {'topic':<28}{'messages':>9}{'rate Hz':>9}{'latency median ms':>19}{'max ms':>9}"]
    inputs = received.get("input/camera_info", [])
    lines.append(f"  synthetic camera published {len(inputs)} frames ({len(inputs) / seconds:.2f} Hz) while recording")
    for name in sorted(n for n in received if not n.startswith(("ground_truth/", "input/"))):
        msgs = received[name]
        lat = [(t - _stamp_ns(m)) / 1e6 for m, t in msgs]
        lines.append(f"  {name:<28}{len(msgs):>9}{len(msgs) / seconds:>9.2f}"
                     f"{statistics.median(lat):>19.0f}{max(lat):>9.0f}")
    if diagnostics:
        values = {}
        for status in diagnostics[-1].status:
            if NODE in status.name:
                values = {kv.key: kv.value for kv in status.values}
        keys = ["input_rate_hz", "output_rate_hz", "refined_rate_hz", "frames_received", "frames_published",
                "frames_dropped", "bad_messages", "fits_valid", "fits_invalid", "frames_without_reference"]
        lines.append("  node diagnostics: " + ", ".join(f"{k}={values[k]}" for k in keys if k in values))
        stages = {k[len("stage_"):-len("_ms")]: v for k, v in values.items() if k.startswith("stage_")}
        if stages:
            lines.append("  node stage medians (ms): " + ", ".join(f"{k} {float(v):.0f}" for k, v in stages.items()))
    return "\n".join(lines)


def accuracy(received: dict[str, list]) -> str:
    """The published outputs against the synthetic camera's ground truth, frame by frame (same stamp).

    Relative depth: AbsRel and δ1 after the evaluation protocol's least-squares alignment in
    disparity space (the model's own quality). Metric depth: AbsRel of ``depth/image`` as
    published, i.e. with the node's LiDAR fit, no alignment. Normals: mean angular error.
    """
    from ..train.metrics import angular_error_deg, depth_metrics

    truth = {name: {_stamp_ns(m): image_msg_to_array(m) for m, _ in received.get(f"ground_truth/{name}", [])}
             for name in ("depth", "normals")}
    lines = ["accuracy against the synthetic ground truth (frames matched by stamp; mean over frames):"]
    for prefix in ("", "refined/"):
        rel, metric, normal = [], [], []
        for m, _ in received.get(prefix + "disparity", []):
            gt = truth["depth"].get(_stamp_ns(m))
            if gt is not None:
                valid = np.isfinite(gt) & (gt > 0)
                rel.append(depth_metrics(image_msg_to_array(m), gt, valid, 0.01, 1000.0))
        for m, _ in received.get(prefix + "depth/image", []):
            gt = truth["depth"].get(_stamp_ns(m))
            if gt is not None:
                depth = image_msg_to_array(m)
                both = np.isfinite(gt) & (gt > 0) & np.isfinite(depth)
                if both.any():
                    metric.append((float(np.mean(np.abs(depth[both] - gt[both]) / gt[both])), float(both.mean())))
        for m, _ in received.get(prefix + "normals/image", []):
            gt = truth["normals"].get(_stamp_ns(m))
            if gt is not None:
                valid = np.isfinite(gt).all(axis=-1)
                normal.append(float(np.mean(angular_error_deg(image_msg_to_array(m)[valid], gt[valid]))))
        kind = "refined" if prefix else "core"
        parts = []
        if rel:
            parts.append(f"relative depth AbsRel {np.mean([r['abs_rel'] for r in rel]):.3f}, "
                         f"δ1 {np.mean([r['delta1'] for r in rel]):.3f} ({len(rel)} frames)")
        if metric:
            parts.append(f"metric depth AbsRel {np.mean([a for a, _ in metric]):.3f} over "
                         f"{100 * np.mean([c for _, c in metric]):.0f}% of pixels ({len(metric)} frames)")
        elif rel:
            parts.append("no metric depth published (no valid LiDAR fit)")
        if normal:
            parts.append(f"normals mean angular error {np.mean(normal):.1f}° ({len(normal)} frames)")
        if parts:
            lines.append(f"  {kind:<8}" + "; ".join(parts))
    return "\n".join(lines) if len(lines) > 1 else lines[0] + " no frames matched"


def write_outputs(received: dict[str, list], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, msgs in received.items():
        msg = msgs[-1][0]
        stem = folder / name.replace("/", "_")
        if hasattr(msg, "encoding"):
            array = image_msg_to_array(msg)
            if msg.encoding == "rgb8":
                write_rgb(stem.with_suffix(".png"), array)
            else:
                np.save(stem.with_suffix(".npy"), array)
        elif hasattr(msg, "fields"):
            names = [f.name for f in msg.fields]
            f = read_pointcloud2_fields(msg, names)
            points = np.stack([f["x"], f["y"], f["z"]], -1)
            rgb = unpack_rgb(f["rgb"]) if "rgb" in f else None
            normals = np.stack([f["normal_x"], f["normal_y"], f["normal_z"]], -1) if "normal_x" in f else None
            write_ply(stem.with_suffix(".ply"), points, rgb, normals)
