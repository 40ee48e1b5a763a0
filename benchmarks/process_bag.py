"""Benchmark of ``process_bag``: frames/s with the tiny model, and the time per frame outside the network.

Writes a synthetic 640×480 bag (camera, camera_info, a 32-beam LiDAR with ~27k points per sweep,
``/tf_static``) and processes it like ``lotus2 process-bag`` with the defaults that matter: the
LiDAR metric fit, the detail sharpener on every frame, core and refined outputs, input topics
copied. Two runs, in the same process:

1. **tiny model** — the random tiny Lotus-2 on the CPU: frames/s of the whole tool, and the
   per-frame time on the processing thread outside network forwards.
2. **forwards replayed** — the same, with the network forwards (VAE encode/decode, transformer
   passes) replaced by the tiny model's first results, so what is left is everything else: bag
   reading, decoding, preprocessing, metric fit, products, message building and writing. Its
   per-frame time is the cost the bag tool adds to a real model on a GPU (target <= 15 ms).
   Run with the LiDAR fit, and with a fixed scale (every frame then has metric depth and a
   coloured point cloud with normals: the largest messages).

Writing runs on a writer thread that overlaps the next frame's forwards; its time is shown
separately (``write_bg``), with a plain rosbags read + write of the input as a reference.

``--settings-table`` instead compares output settings on the fixed-scale run with replayed
forwards (every frame has metric depth and a cloud): the node's full output set, core and
refined, uncompressed (what the tool wrote before it compressed and chose outputs), the
defaults, and a lean selection — output MiB per frame and the writer thread's ms per frame,
with ratios against the first row of the same run. For the figures in docs/BAGS.md::

    .venv/bin/python benchmarks/process_bag.py --width 1242 --height 375 --frames 8 --settings-table

Usage::

    .venv/bin/python benchmarks/process_bag.py [--frames 6] [--storage sqlite3|mcap] [--sharpen-steps 1]
        [--width 640 --height 480] [--keep DIR] [--settings-table] [--compression-threads N]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lotus2_ros.bag import ProcessBagOptions, RunStats, is_forward, process_bag  # noqa: E402
from lotus2_ros.bag.synthetic import write_synthetic_bag  # noqa: E402
from lotus2_ros.bag.selection import ALL_OUTPUTS, OutputSelection  # noqa: E402
from lotus2_ros.bag.writer import BagCompression, OutputBag  # noqa: E402
from lotus2_ros.model.engine import Lotus2Engine  # noqa: E402
from lotus2_ros.perception import PerceptionConfig  # noqa: E402
from lotus2_ros.synthetic import LidarModel  # noqa: E402
from replay import ReplayEngine  # noqa: E402  (benchmarks/replay.py)

#: Stages of the bag tool on the processing thread (the rest is the pipeline's, shared with the node).
BAG_STAGES = ("read", "decode", "write_wait")


def copy_baseline_ms(bag: Path, out: Path, storage: str, frames: int) -> float:
    """Per frame: reading every message of ``bag`` and writing it into a new bag (rosbags only).

    The output is written with rosbags' own writes and SQLite's defaults (``tuned=False``), not
    with the faster settings the tool's output gets, so the figure stays a plain-rosbags reference.
    """
    from rosbags.rosbag2 import Reader

    from lotus2_ros.io.msg_types import rosbags_types

    t0 = time.perf_counter()
    with Reader(bag) as reader, OutputBag(out, storage, rosbags_types().typestore, tuned=False) as writer:
        conns = {c.id: writer.add_copy(c) for c in reader.connections}
        for c, t, raw in reader.messages():
            writer.write(conns[c.id], t, raw)
    return (time.perf_counter() - t0) * 1e3 / frames


def report(title: str, stats: RunStats, wall_s: float, out: Path) -> None:
    med = stats.stage_medians_ms()
    overhead = np.asarray(stats.frame_overhead_ms)
    n = stats.frames_processed
    bag_ms = sum(med.get(k, 0.0) for k in BAG_STAGES) + stats.index_ms_total / n
    pipeline = {k: v for k, v in med.items() if not is_forward(k) and k not in BAG_STAGES and not k.endswith("_bg")}
    out_mib = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"\n== {title}")
    print(f"frames/s: {n / wall_s:.3f} ({n} frames in {wall_s:.1f} s incl. planning and the first pass); "
          f"output {out_mib / n:.1f} MiB/frame, {stats.messages_written / n:.0f} messages/frame; "
          f"fits valid {stats.fits['core_valid']}/{stats.fits['core_valid'] + stats.fits['core_invalid']}")
    print(f"time outside network forwards, processing thread: median {np.median(overhead):.1f} ms/frame "
          f"(min {overhead.min():.1f}, max {overhead.max():.1f})")
    print(f"  bag tool: {bag_ms:.1f} ms (read {med.get('read', 0):.1f}, decode {med.get('decode', 0):.1f}, "
          f"waiting for the writer {med.get('write_wait', 0):.1f}, first pass {stats.index_ms_total / n:.1f})")
    print(f"  pipeline (shared with the node): {sum(pipeline.values()):.1f} ms: "
          + ", ".join(f"{k} {v:.1f}" for k, v in sorted(pipeline.items(), key=lambda kv: -kv[1])))
    print(f"  writer thread, overlapping the forwards: messages + serialisation + writing "
          f"{med.get('write_bg', 0):.1f} ms/frame, input copies {stats.copy_ms_total / n:.1f} ms/frame")
    forward = sum(v for k, v in med.items() if is_forward(k))
    if forward > 1.0:
        print(f"  network forwards (sum of medians): {forward:.0f} ms/frame")


#: (label, ProcessBagOptions fields) of --settings-table; the first row is the reference.
SETTINGS = [
    ("every output, core + refined, clouds with normals, uncompressed (as before)",
     dict(outputs=ALL_OUTPUTS, write_core=True, compression=BagCompression("none"))),
    ("default: refined outputs, clouds without normals, zstd 1",
     dict()),
    ("default outputs, uncompressed", dict(compression=BagCompression("none"))),
    ("lean: --outputs depth,normals, zstd 1", dict(outputs=OutputSelection.parse("depth,normals"))),
]


def settings_table(bag: Path, work: Path, engine, sharpen: dict, args) -> None:
    """MiB and writer ms per frame for each of :data:`SETTINGS` (fixed scale, forwards replayed)."""
    config = PerceptionConfig(device="cpu", dtype="fp32", metric_source="fixed", fixed_shift=0.1, **sharpen)
    # Once untimed: the replayed forwards are computed here, not in the first row.
    process_bag(ProcessBagOptions(bag, work / "out", config, force=True, outputs=ALL_OUTPUTS, write_core=True), engine)
    rows = []
    for label, fields in SETTINGS:
        if "compression" not in fields:
            fields = dict(fields, compression=BagCompression(threads=args.compression_threads))
        out = work / "out"
        t0 = time.perf_counter()
        stats = process_bag(ProcessBagOptions(bag, out, config, force=True, **fields), engine)
        wall = time.perf_counter() - t0
        n = stats.frames_processed
        writes = stats.stage_ms.get("write_bg", [])
        rows.append((label, sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20 / n,
                     float(np.median(writes)), float(np.min(writes)), float(np.median(stats.frame_overhead_ms)),
                     n / wall, fields["compression"].describe()))
    ref_mib, ref_ms = rows[0][1], rows[0][2]
    print("\n| setting | MiB/frame | vs first | writer ms/frame, median (min) | vs first | processing thread outside "
          "forwards, ms/frame | frames/s | compression |")
    print("|---|---|---|---|---|---|---|---|")
    for label, mib, ms, ms_min, overhead, fps, comp in rows:
        print(f"| {label} | {mib:.1f} | {ref_mib / mib:.2f}x smaller | {ms:.0f} ({ms_min:.0f}) | {ms / ref_ms:.2f} "
              f"| {overhead:.0f} | {fps:.2f} | {comp} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=6)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.add_argument("--sharpen-steps", type=int, default=1)
    p.add_argument("--skip-model-run", action="store_true", help="only the runs with replayed forwards")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    p.add_argument("--settings-table", action="store_true",
                   help="compare output settings (size and writer time per frame) instead of the usual runs")
    p.add_argument("--compression-threads", type=int, default=0, help="zstd threads (default: the machine's cores)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")

    import torch

    from lotus2_ros.model.backend import BackendConfig
    from lotus2_ros.model.tiny import make_tiny_model

    work = args.keep or Path(tempfile.mkdtemp(prefix="lotus2_bench_bag_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        if not (work / "tiny").exists():
            make_tiny_model(work / "tiny", seed=0)
        bag = work / f"in_{args.storage}_{args.width}x{args.height}_{args.frames}"
        if not bag.exists():
            write_synthetic_bag(bag, num_frames=args.frames, width=args.width, height=args.height,
                                storage=args.storage, lidar_model=LidarModel())
        size_mib = sum(f.stat().st_size for f in bag.iterdir()) / 2**20
        engine = Lotus2Engine.load(BackendConfig(base_model=work / "tiny" / "base_model",
                                                 weights=work / "tiny" / "weights", tasks=("depth", "normal")))
        print(f"{args.frames} frames {args.width}x{args.height} + 32-beam LiDAR, {args.storage}, "
              f"{size_mib / args.frames:.1f} MiB/frame in; CPU, {torch.get_num_threads()} torch threads; "
              f"sharpener {args.sharpen_steps} step(s) on every frame, depth + normals")
        sharpen = {"sharpen_enabled": args.sharpen_steps > 0, "sharpen_steps": max(1, args.sharpen_steps)}
        if args.settings_table:
            settings_table(bag, work, ReplayEngine(engine), sharpen, args)
            return 0
        runs = [("forwards replayed, LiDAR fit", ReplayEngine(engine), "lidar"),
                ("forwards replayed, fixed scale (metric depth + point clouds on every frame)",
                 ReplayEngine(engine), "fixed")]
        if not args.skip_model_run:
            runs.insert(0, ("tiny model, LiDAR fit", engine, "lidar"))
        for title, eng, metric in runs:
            config = PerceptionConfig(device="cpu", dtype="fp32", metric_source=metric, fixed_shift=0.1, **sharpen)
            out = work / "out"
            t0 = time.perf_counter()
            stats = process_bag(ProcessBagOptions(bag, out, config, force=True), eng)
            report(title, stats, time.perf_counter() - t0, out)
        baseline = copy_baseline_ms(bag, work / "copy", args.storage, args.frames)
        shutil.rmtree(work / "copy")
        print(f"\nreference, same process: plain rosbags read + write of the input bag {baseline:.1f} ms/frame")
        return 0
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
