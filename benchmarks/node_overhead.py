"""Per-frame overhead of the perception node outside the network forwards (prints figures; not a test).

What one camera frame costs the node besides the model: converting the incoming rclpy
``sensor_msgs/Image`` (rgb8) to RGB, pre-processing, post-processing (resizing the decoded
outputs back, normals to the optical frame), the products (colourised images, metric depth,
points) and building every output message with the rclpy types (all topics, the organised cloud
with normals included). The stage times come from ``PerceptionOutput.timings_ms`` (every stage
that is not a network forward), conversion-in and message building are timed here. The tiny
model (``make_tiny_model`` into a temporary folder) runs on CPU in fp32 with depth + normal and a
fixed metric reference; its forwards are not counted.

    python benchmarks/node_overhead.py [--frames 15] [--warmup 2] [--sizes 640x480 1280x720]
                                       [--torch-threads N] [--replay-forwards]

Figures are medians (and minima) over ``--frames`` frames after ``--warmup`` frames; the total
is the median of the per-frame sums; the targets are 10 ms at 640x480 and 25 ms at 1280x720
(issues 3 and 15). A CUDA node runs the pre/post-processing and colourising on the GPU (one
upload, one download); on the CPU they run with OpenCV/numpy, which is what this measures.
``--replay-forwards`` replays the network forwards from the first frame's results (seconds
instead of minutes; the caches then hold what the overhead stages touch, so figures can be a
little lower than with real forwards in between). Needs the ROS 2 Python wheels (rclpy message
classes); no node is started.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's package, not an installed one

from lotus2_ros.geometry.bands import host_threads, set_host_threads  # noqa: E402
from lotus2_ros.geometry.calibration import CameraCalibration  # noqa: E402
from lotus2_ros.io.image_msgs import build_image, image_msg_to_rgb  # noqa: E402
from lotus2_ros.io.stamps import build_header  # noqa: E402
from lotus2_ros.model.backend import BackendConfig  # noqa: E402
from lotus2_ros.model.engine import Lotus2Engine  # noqa: E402
from lotus2_ros.model.tiny import make_tiny_model  # noqa: E402
from lotus2_ros.perception import Frame, PerceptionConfig, PerceptionPipeline  # noqa: E402
from lotus2_ros.perception.memory import retain_freed_memory  # noqa: E402
from lotus2_ros.perception.messages import output_messages  # noqa: E402
from lotus2_ros.perception.outputs import base_output_topics  # noqa: E402
from lotus2_ros.perception.pipeline import FORWARD_STAGES  # noqa: E402
from lotus2_ros.ros.msg_types import rclpy_types  # noqa: E402
from lotus2_ros.synthetic.stream import SyntheticCameraConfig, SyntheticStream  # noqa: E402

#: Targets, ms per frame (median), by image size.
TARGETS_MS = {(640, 480): 10.0, (1280, 720): 25.0}
STAMP_NS = 1_700_000_000_000_000_000


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def bench_size(engine: Lotus2Engine, width: int, height: int, frames: int, warmup: int) -> float:
    """Prints the stage medians for one image size and returns the median total, ms."""
    types = rclpy_types()
    stream = SyntheticStream(SyntheticCameraConfig(width=width, height=height, loop_frames=1, publish_lidar=False))
    item = stream.next()
    calibration = CameraCalibration(stream.camera)
    image_msg = build_image(types, build_header(types, STAMP_NS, "camera"), item.frame.rgb, "rgb8")
    config = PerceptionConfig(device="cpu", dtype="fp32", tasks=["depth", "normal"], sharpen_enabled=False,
                              metric_source="fixed", fixed_scale=0.5, fixed_shift=0.02)
    pipeline = PerceptionPipeline(config, engine, allocate=types.payload_array)  # as the node does
    # Every topic a fixed-metric disparity frame with depth + normal has (``scale_fit`` needs a reference fit).
    PRODUCT_TOPICS = base_output_topics(config, ("depth", "normal"))

    stages: dict[str, list[float]] = {}
    totals: list[float] = []
    forward_ms: list[float] = []
    topic_ms: dict[str, list[float]] = {t: [] for t in PRODUCT_TOPICS}
    for i in range(warmup + frames):
        t0 = time.perf_counter()
        rgb = image_msg_to_rgb(image_msg)
        t_in = (time.perf_counter() - t0) * 1e3
        out, _ = pipeline.process(Frame(rgb, STAMP_NS + i, "camera", calibration))
        t0 = time.perf_counter()
        msgs = output_messages(types, out)
        t_msgs = (time.perf_counter() - t0) * 1e3
        assert set(msgs) == set(PRODUCT_TOPICS), sorted(msgs)
        # Per-topic builds, for the breakdown only (not part of the total).
        for topic in PRODUCT_TOPICS:
            t0 = time.perf_counter()
            output_messages(types, out, {topic})
            topic_ms[topic].append((time.perf_counter() - t0) * 1e3)
        if i < warmup:
            for v in topic_ms.values():
                v.clear()
            continue
        overhead = {k: v for k, v in out.timings_ms.items() if not k.startswith(FORWARD_STAGES)}
        for k, v in {"convert_in": t_in, **overhead, "build_messages": t_msgs}.items():
            stages.setdefault(k, []).append(v)
        totals.append(t_in + out.overhead_ms + t_msgs)
        forward_ms.append(sum(out.timings_ms.values()) - out.overhead_ms)

    total = _median(totals)
    process_hw = engine.preprocess(np.zeros((height, width, 3), np.uint8)).shape[-2:]
    print(f"\n{width}x{height} (processed at {process_hw[1]}x{process_hw[0]}), {frames} frames: median (min)")
    for name, values in stages.items():
        print(f"  {name:<28s} {_median(values):8.2f} ms  ({min(values):6.2f})")
    print(f"  {'total (node overhead)':<28s} {total:8.2f} ms  ({min(totals):6.2f})   tiny-model forwards, "
          f"not counted: {_median(forward_ms):.0f} ms")
    print("  message building by topic (separate builds):")
    for topic, values in topic_ms.items():
        print(f"    {topic:<26s} {_median(values):8.2f} ms  ({min(values):6.2f})")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(640, 480), (1280, 720)])
    parser.add_argument("--replay-forwards", action="store_true",
                        help="replay the network forwards from the first frame (fast; see the module docstring)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); 1 keeps torch's idle worker "
                        "threads from competing with the numpy stages on a small, busy machine")
    parser.add_argument("--host-threads", type=int, default=0,
                        help="threads for the per-pixel host stages, as the node's host_threads parameter "
                        "(0: the default, the cores up to 4; 1: all on the frame's thread)")
    parser.add_argument("--no-retain-freed-memory", dest="retain_freed_memory", action="store_false",
                        help="leave glibc's allocator as it is (the node calls retain_freed_memory at start)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    set_host_threads(args.host_threads)  # as the node does with its host_threads parameter

    # As the node does at start (perception/memory.py); --no-retain-freed-memory measures without.
    retained = retain_freed_memory() if args.retain_freed_memory else False
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}; "
          f"freed memory retained as in the node: {retained}; host threads: {host_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        model = make_tiny_model(Path(tmp) / "tiny", seed=0)
        engine = Lotus2Engine.load(BackendConfig(base_model=model.base_model, weights=model.weights,
                                                 tasks=("depth", "normal"), load_refiner=False))
        if args.replay_forwards:
            from replay import ReplayEngine

            engine = ReplayEngine(engine)
        totals = {size: bench_size(engine, *size, args.frames, args.warmup) for size in args.sizes}
    print()
    for size, target in TARGETS_MS.items():
        if size in totals:
            ratio = totals[size] / target
            print(f"{size[0]}x{size[1]}: {totals[size]:.2f} ms = {ratio:.2f} x the {target:.0f} ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
