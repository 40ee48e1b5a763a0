"""Node overhead of this checkout against another git revision, frames alternating in one process.

On a busy machine the absolute figures of ``node_overhead.py`` move by 2x from one minute to the
next; run back to back, two revisions are not compared under the same load. This script loads
the other revision's package (``git archive REV lotus2_ros``, imported as ``lotus2_ros_ref``)
next to this checkout's, builds both pipelines on the same tiny model with the network forwards
replayed (the first frame's results), and alternates them frame by frame (ABBA order), so both see
the same load. It prints per-revision medians and minima, the per-frame ratio this/reference, and
how far the products of the two differ.

    python benchmarks/node_overhead_vs_revision.py [--rev e6554c5] [--frames 20] [--sizes 640x480 1280x720]

Needs git, the ROS 2 Python wheels (rclpy message classes) and both revisions' dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REF = "lotus2_ros_ref"
PRODUCTS = ("disparity", "normals", "depth_m", "points_m", "depth_colorized", "normals_colorized")


def export_revision(rev: str, dest: Path) -> None:
    """``lotus2_ros`` of ``rev`` as the package ``lotus2_ros_ref`` under ``dest``."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "lotus2_ros"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    (dest / "lotus2_ros").rename(dest / REF)
    for path in (dest / REF).rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\blotus2_ros(?=[.\s])", REF, text))


def load(pkg: str) -> dict:
    m = lambda name: importlib.import_module(f"{pkg}.{name}")  # noqa: E731
    return dict(cal=m("geometry.calibration").CameraCalibration, image=m("io.image_msgs"), stamps=m("io.stamps"),
                backend=m("model.backend"), engine=m("model.engine").Lotus2Engine, perception=m("perception"),
                messages=m("perception.messages"), forward=m("perception.pipeline").FORWARD_STAGES,
                types=m("ros.msg_types").rclpy_types, stream=m("synthetic.stream"), tiny=m("model.tiny"))


def replaying(engine_cls):
    """``engine_cls`` with encode/predict/decode replayed from their first results (any revision)."""
    class Replay(engine_cls):
        def __init__(self, engine):  # noqa: D107
            self.__dict__.update(engine.__dict__)
            self._cache = {}

        def _get(self, key, compute):
            if key not in self._cache:
                self._cache[key] = compute()
            return self._cache[key]

        def encode(self, x):
            return self._get(("e", tuple(x.shape)), lambda: engine_cls.encode(self, x))

        def predict(self, cond, tasks, timer=None):
            return dict(self._get(("p", tuple(tasks), tuple(cond.shape)),
                                  lambda: engine_cls.predict(self, cond, tasks, timer)))

        def decode(self, z, *task):  # decode(z) before the backend interface, decode(z, task) since
            return self._get(("d", tuple(z.shape), float(z.flatten()[0]), *task),
                             lambda: engine_cls.decode(self, z, *task))

    return Replay


def setup(p: dict, model, width: int, height: int):
    engine = p["engine"].load(p["backend"].BackendConfig(base_model=model.base_model, weights=model.weights,
                                                         tasks=("depth", "normal"), load_refiner=False))
    stream = p["stream"].SyntheticStream(p["stream"].SyntheticCameraConfig(width=width, height=height, loop_frames=1,
                                                                           publish_lidar=False))
    item = stream.next()
    types = p["types"]()
    msg = p["image"].build_image(types, p["stamps"].build_header(types, 1, "camera"), item.frame.rgb, "rgb8")
    config = p["perception"].PerceptionConfig(device="cpu", dtype="fp32", tasks=["depth", "normal"],
                                              sharpen_enabled=False, metric_source="fixed", fixed_scale=0.5,
                                              fixed_shift=0.02)
    pipeline = p["perception"].PerceptionPipeline(config, replaying(p["engine"])(engine))
    if hasattr(types, "payload_array"):  # products in message payloads, as the node does (since issue 15)
        pipeline.allocate = types.payload_array
    return pipeline, p["cal"](stream.camera), types, msg


def one_frame(p: dict, pipeline, cal, types, msg, stamp: int):
    t0 = time.perf_counter()
    rgb = p["image"].image_msg_to_rgb(msg)
    t_in = (time.perf_counter() - t0) * 1e3
    out, _ = pipeline.process(p["perception"].Frame(rgb, stamp, "camera", cal))
    t0 = time.perf_counter()
    p["messages"].output_messages(types, out)
    t_msgs = (time.perf_counter() - t0) * 1e3
    return out, t_in + out.overhead_ms + t_msgs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="e6554c5", help="the reference revision (default: before issue 15's work)")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
    with tempfile.TemporaryDirectory() as tmp:
        export_revision(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        packages = {f"reference {args.rev}": load(REF), "this checkout": load("lotus2_ros")}
        model = packages["this checkout"]["tiny"].make_tiny_model(Path(tmp) / "tiny", seed=0)
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            runs = {name: setup(p, model, width, height) for name, p in packages.items()}
            totals: dict[str, list[float]] = {name: [] for name in runs}
            last = {}
            order = list(runs)
            for i in range(args.warmup + args.frames):
                for name in (order if i % 2 == 0 else order[::-1]):  # ABBA: neither always goes first
                    out, total = one_frame(packages[name], *runs[name], stamp=1 + i)
                    if i >= args.warmup:
                        totals[name].append(total)
                    last[name] = out
            ref, new = (totals[n] for n in order)
            print(f"\n{width}x{height}, {args.frames} frames each, alternating (forwards replayed): ms per frame")
            for name in order:
                print(f"  {name:<22} median {statistics.median(totals[name]):7.2f}   min {min(totals[name]):7.2f}")
            ratios = [b / a for a, b in zip(ref, new, strict=True)]
            print(f"  this / reference: median of per-frame ratios {statistics.median(ratios):.3f}, "
                  f"ratio of minima {min(new) / min(ref):.3f}")
            a, b = (last[n] for n in order)
            for key in PRODUCTS:
                x, y = getattr(a, key), getattr(b, key)
                diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
                print(f"    {key:<18} max |diff| {np.nanmax(diff):.3g}, {np.mean(x != y) * 100:.2f} % of values differ")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
