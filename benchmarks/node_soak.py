"""Soak the live node: a camera at 30 Hz, 640x480, the tiny model, for minutes (prints figures; not a test).

Three processes on a private DDS domain: ``synthetic_camera`` (the camera), ``perception_node``
(tiny random model on CPU, fp32, one torch thread) and this script, which is an independent
depth-1 best-effort subscriber to the camera (what a second consumer of the stream gets) and a
subscriber to the node's ``~/disparity`` and ``/diagnostics``. Every ``--report-s`` seconds it
prints, over the whole run so far:

* ``published``: frames the camera published (the publication sequence number of the newest
  image this script received);
* ``indep``: frames the independent subscriber received;
* ``node_rx``: frames the node's subscription received (``frames_received``), ``missed``: the
  camera's frames that never reached it (``frames_missed_upstream``: transport or its DDS reader
  queue), ``dropped``: received but replaced in its mailbox before the model took them
  (latest frame wins), ``out``: frames published on ``~/disparity``;
* latency (image stamp -> receipt of ``~/disparity`` here) median / p95 / max over the interval;
* the node's resident memory (VmRSS) and the machine's 1-minute load average.

    python benchmarks/node_soak.py [--duration-s 600] [--rate-hz 30] [--size 640x480] [--report-s 30]
                                   [--transport LARGE_DATA] [--model DIR] [-p name:=value ...]

Without ``--model`` a tiny model is written to a temporary folder. ``--transport`` sets
``FASTDDS_BUILTIN_TRANSPORTS`` for all three processes (``DEFAULT`` leaves Fast DDS's own).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=600.0)
    ap.add_argument("--rate-hz", type=float, default=30.0)
    ap.add_argument("--size", default="640x480")
    ap.add_argument("--report-s", type=float, default=30.0)
    ap.add_argument("--transport", default="LARGE_DATA", help="FASTDDS_BUILTIN_TRANSPORTS (DEFAULT: Fast DDS's own)")
    ap.add_argument("--model", type=Path, help="folder with base_model/ and weights/ (default: a tiny model)")
    ap.add_argument("-p", dest="params", action="append", default=[], help="extra node parameter name:=value")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    os.environ["ROS_DOMAIN_ID"] = os.environ.get("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.transport != "DEFAULT":
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = args.transport
    tmp = tempfile.TemporaryDirectory(prefix="lotus2_soak_")
    if args.model is None:
        from lotus2_ros.model.tiny import make_tiny_model

        model = make_tiny_model(Path(tmp.name) / "model", seed=0)
        base_model, weights = model.base_model, model.weights
    else:
        base_model, weights = args.model / "base_model", args.model / "weights"

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    ns = "/soak"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    py = [sys.executable, "-m", "lotus2_ros.cli.main"]
    camera = subprocess.Popen(
        py + ["synthetic-camera", "--ros-args", "-r", f"__ns:={ns}", "-p", f"rate_hz:={args.rate_hz}",
              "-p", f"width:={width}", "-p", f"height:={height}", "-p", "publish_lidar:=false",
              "-p", "reliability:=best_effort", "-p", "loop_frames:=10"],
        cwd=REPO, env=env, stdout=open(Path(tmp.name) / "camera.log", "w"), stderr=subprocess.STDOUT)
    node_args = ["-p", f"base_model:={base_model}", "-p", f"weights:={weights}", "-p", "device:=cpu",
                 "-p", "dtype:=fp32", "-p", "torch_threads:=1", "-p", "sharpen_rate_hz:=0.0"]
    for p in args.params:
        node_args += ["-p", p]
    node_log = Path(tmp.name) / "node.log"
    node = subprocess.Popen(py + ["perception-node", "--ros-args", "-r", f"__ns:={ns}", *node_args],
                            cwd=REPO, env=env, stdout=open(node_log, "w"), stderr=subprocess.STDOUT)

    rclpy.init()
    probe = rclpy.create_node("soak_probe")
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    state = {"published": 0, "indep": 0, "lat": [], "out": 0, "diag": {}}

    def on_image(msg, info):
        state["indep"] += 1
        state["published"] = max(state["published"], int(info.get("publication_sequence_number") or 0))

    def on_disparity(msg):
        stamp_ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        state["lat"].append((time.time_ns() - stamp_ns) / 1e6)
        state["out"] += 1

    def on_diag(msg):
        for status in msg.status:
            if "lotus2" in status.name:
                state["diag"] = {kv.key: kv.value for kv in status.values}

    be1 = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)
    rel = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    probe.create_subscription(Image, f"{ns}/image", on_image, be1)
    probe.create_subscription(Image, f"{ns}/lotus2_perception/disparity", on_disparity, rel)
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)

    def diag(key: str) -> int:
        return int(float(state["diag"].get(key, 0)))

    print(f"# node soak: {width}x{height} at {args.rate_hz} Hz for {args.duration_s:.0f} s, tiny model on CPU, "
          f"FASTDDS_BUILTIN_TRANSPORTS={os.environ.get('FASTDDS_BUILTIN_TRANSPORTS', 'default')}, {os.cpu_count()} CPUs",
          flush=True)
    # Wait for the node to publish its first output (model loaded, discovery done).
    deadline = time.monotonic() + 180
    while state["out"] == 0 and time.monotonic() < deadline and node.poll() is None:
        executor.spin_once(timeout_sec=0.1)
    if state["out"] == 0:
        print("the node never published:\n" + node_log.read_text()[-3000:])
        return 1
    base = {"published": state["published"], "indep": state["indep"], "out": state["out"],
            **{k: diag(k) for k in ("frames_received", "frames_missed_upstream", "frames_dropped")}}
    state["lat"].clear()
    print(f"{'t_s':>5} {'published':>9} {'indep':>6} {'node_rx':>7} {'missed':>6} {'dropped':>7} {'out':>5} "
          f"{'lat_p50':>7} {'lat_p95':>7} {'lat_max':>7} {'rss_mib':>7} {'load1':>5}", flush=True)
    t0 = time.monotonic()
    next_report = t0 + args.report_s
    all_lat, rss = [], []
    while time.monotonic() - t0 < args.duration_s and node.poll() is None:
        executor.spin_once(timeout_sec=0.05)
        if time.monotonic() >= next_report:
            next_report += args.report_s
            lat, state["lat"] = state["lat"], []
            all_lat += lat
            rss.append(rss_mib(node.pid))
            q = statistics.quantiles(lat, n=20) if len(lat) >= 2 else [float("nan")] * 19
            print(f"{time.monotonic() - t0:5.0f} {state['published'] - base['published']:9d} "
                  f"{state['indep'] - base['indep']:6d} {diag('frames_received') - base['frames_received']:7d} "
                  f"{diag('frames_missed_upstream') - base['frames_missed_upstream']:6d} "
                  f"{diag('frames_dropped') - base['frames_dropped']:7d} {state['out'] - base['out']:5d} "
                  f"{statistics.median(lat) if lat else float('nan'):7.0f} {q[18]:7.0f} "
                  f"{max(lat) if lat else float('nan'):7.0f} {rss[-1]:7.0f} {os.getloadavg()[0]:5.1f}", flush=True)
    alive = node.poll() is None
    published = state["published"] - base["published"]
    print(f"# total: published {published}, independent subscriber {state['indep'] - base['indep']}, "
          f"node received {diag('frames_received') - base['frames_received']}, "
          f"missed upstream {diag('frames_missed_upstream') - base['frames_missed_upstream']}, "
          f"dropped (latest wins) {diag('frames_dropped') - base['frames_dropped']}, "
          f"processed+published {state['out'] - base['out']}; latency median "
          f"{statistics.median(all_lat) if all_lat else float('nan'):.0f} ms, max "
          f"{max(all_lat) if all_lat else float('nan'):.0f} ms; node RSS first/last/max "
          f"{rss[0] if rss else float('nan'):.0f}/{rss[-1] if rss else float('nan'):.0f}/"
          f"{max(rss) if rss else float('nan'):.0f} MiB; node {'alive' if alive else 'DIED'}", flush=True)
    for proc in (node, camera):
        proc.send_signal(2)
    t_stop = time.monotonic()
    rc = node.wait(30)
    camera.wait(30)
    print(f"# node exit code {rc} after {time.monotonic() - t_stop:.1f} s", flush=True)
    probe.destroy_node()
    rclpy.shutdown()
    return 0 if alive and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
