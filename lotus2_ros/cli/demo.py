"""``lotus2 demo``: the product on a synthetic camera, on this machine, with a small model.

By default it runs the ROS graph (``demo_graph``): a synthetic camera (+ LiDAR) node and
``perception_node`` as separate processes, for a fixed time, printing output rates, latencies and
the node's per-stage times, and writing one frame of every output (images, ``.npy``, ``.ply``).

``--engine-only`` runs the perception pipeline alone (no ROS) on a synthetic sequence instead:
it prints the median time of each stage and the peak memory and writes every frame's files (the
exporter ``lotus2 predict`` uses) next to the input and the ground truth.

The model is ``--model DIR`` (Lotus-2: a folder with ``base_model/`` and ``weights/``; ``make demo``
uses the trained ``models/demo``; ``--backend lotus1``: a folder of Lotus-1 pipeline folders,
``make demo DEMO_BACKEND=lotus1`` uses ``models/demo_lotus1``), else the tiny random model of that
family built in the output folder; a random model shows the pipeline working end to end, not the
method's quality. The processing size and refinement steps are the model's own (its
``model.json``) unless given.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import time
from pathlib import Path

import numpy as np

from ..io.images import write_rgb
from ..io.visualize import colorize_disparity, colorize_normals
from .common import report_settings, sharpen_steps

log = logging.getLogger("lotus2.demo")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", type=Path, default=Path("demo_output"), metavar="DIR",
                   help="output folder (default demo_output/)")
    p.add_argument("--frames", type=int, default=6, help="frames to process after one warm-up (default 6)")
    p.add_argument("--width", type=int, default=640, help="camera width in px (default 640)")
    p.add_argument("--height", type=int, default=480, help="camera height in px (default 480)")
    p.add_argument("--sharpen-steps", type=sharpen_steps, default=None, metavar="N",
                   help="refinement steps per refined frame: lotus2 detail-sharpener steps, lotus1 Lotus-G "
                        "ensemble seeds (default: the model's)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--seed", type=int, default=0, help="scene and tiny-model seed")
    p.add_argument("--backend", choices=("lotus2", "lotus1"), default="lotus2",
                   help="model family (default lotus2; lotus1: Lotus-D/G pipeline folders)")
    p.add_argument("--model", type=Path, default=None, metavar="DIR",
                   help="lotus2: folder with base_model/ and weights/; lotus1: folder of Lotus-1 pipeline folders "
                        "(default: the tiny random model)")
    p.add_argument("--process-res", type=int, default=None, metavar="R",
                   help="cap on the long edge the model sees (default: the model's, from "
                        "MODEL/weights/model.json when present, else 1024)")
    p.add_argument("--engine-only", action="store_true", help="run the engine alone (no ROS), with stage timings")
    p.add_argument("--seconds", type=float, default=30.0, help="ROS graph: recording time (default 30)")
    p.add_argument("--rate-hz", type=float, default=2.0, help="ROS graph: camera rate (default 2 Hz)")
    p.add_argument("--sharpen-rate-hz", type=float, default=0.5,
                   help="ROS graph: refined frames per second (default 0.5)")


def command(args: argparse.Namespace) -> int:
    from ..geometry import PinholeCamera
    from ..model.tiny import make_tiny_model
    from ..perception.config import PerceptionConfig
    from ..perception.export import FrameExporter
    from ..perception.pipeline import load_pipeline
    from ..synthetic import make_indoor_scene, render_sequence

    if args.frames < 1:
        log.error("--frames must be >= 1, got %d", args.frames)
        return 2
    out = args.output
    lotus1 = args.backend == "lotus1"
    model_dir = args.model or out / ("tiny_lotus1" if lotus1 else "tiny_model")
    if args.model is None and not (model_dir if lotus1 else model_dir / "weights").is_dir():
        print(f"building the tiny model in {model_dir}")
        if lotus1:
            from ..model.tiny_lotus1 import make_tiny_lotus1

            make_tiny_lotus1(model_dir, mode="d", seed=args.seed, force=True)
        else:
            make_tiny_model(model_dir, seed=args.seed, force=True)
    if lotus1:
        model = dict(backend="lotus1", weights=str(model_dir), device=args.device, dtype=args.dtype)
    else:
        model = dict(base_model=str(model_dir / "base_model"), weights=str(model_dir / "weights"), device=args.device,
                     dtype=args.dtype)
    if args.process_res:
        model["process_res"] = args.process_res
    if args.sharpen_steps:
        model["ensemble_size" if lotus1 else "sharpen_steps"] = args.sharpen_steps
    if not args.engine_only:
        from ..ros.demo_graph import run_graph

        return run_graph(model, out / "graph", seconds=args.seconds, width=args.width, height=args.height,
                         rate_hz=args.rate_hz, sharpen_rate_hz=args.sharpen_rate_hz, metric=lidar_metric_params())
    t0 = time.perf_counter()
    pipeline = load_pipeline(PerceptionConfig(**model, metric_source="none", require_camera_info=False,
                                              publish_points=False, sharpen_enabled=args.sharpen_steps != 0))
    load_s = time.perf_counter() - t0
    report_settings(pipeline)
    print(f"model {model_dir}: {_settings_text(pipeline)}")

    camera = PinholeCamera.from_fov(args.width, args.height, hfov_deg=70.0)
    scene = make_indoor_scene(seed=args.seed)
    frames_dir = out / "frames"
    exporter = FrameExporter(frames_dir)
    per_stage: dict[str, list[float]] = {}
    totals = []
    for i, frame in enumerate(render_sequence(scene, camera, num_frames=args.frames + 1, rate_hz=10.0)):
        t_start = time.perf_counter()
        pred = pipeline.predict(frame.rgb, stamp_ns=frame.stamp_ns, frame_id="camera")
        total = (time.perf_counter() - t_start) * 1e3
        if i == 0:
            continue  # warm-up: first-call allocations and lazy initialisation
        totals.append(total)
        for k, v in pred.timings_ms.items():
            per_stage.setdefault(k, []).append(v)
        stem = f"frame_{i:03d}"
        exporter.export(pred, stem=stem)
        write_rgb(frames_dir / f"{stem}_rgb.png", frame.rgb)
        write_rgb(frames_dir / f"{stem}_gt_depth.png", colorize_disparity(1.0 / frame.depth_m))
        write_rgb(frames_dir / f"{stem}_gt_normal.png", colorize_normals(frame.normals))

    print(report(pipeline, per_stage, totals, args, load_s))
    print(f"wrote {len(totals)} frames of RGB, predictions and ground truth to {frames_dir}")
    return 0


def _settings_text(pipeline) -> str:
    s = pipeline.backend.info.settings
    cap = f"the long edge capped at {s.process_res} px" if s.process_res else "full resolution"
    return (f"the model sees images with {cap}, {pipeline.refine_steps} sharpener step(s) per refined frame"
            f"{' (its own defaults: ' + pipeline.backend.info.source + ')' if s.notes else ''}")


def lidar_metric_params() -> dict:
    """perception_node parameters that fit the prediction to the synthetic camera's LiDAR."""
    from ..synthetic import DEFAULT_T_CAMERA_LIDAR

    return dict(metric_source="lidar", extrinsic_source="parameter", metric_max_offset_ms=20.0,
                lidar_extrinsic=[float(v) for v in np.asarray(DEFAULT_T_CAMERA_LIDAR).ravel()])


def report(pipeline, per_stage: dict[str, list[float]], totals: list[float], args, load_s: float) -> str:
    med = {k: statistics.median(v) for k, v in per_stage.items()}
    steps = pipeline.refine_steps
    engine = pipeline.backend
    lines = [
        f"{'Lotus-1' if engine.info.family == 'lotus1' else 'Lotus-2'} pipeline demo: "
        f"{'model ' + str(args.model) if args.model else 'tiny random model'}, "
        f"{args.width}x{args.height} synthetic frames (processed at {args.height}x{args.width} or smaller), "
        f"device {engine.device}, {args.dtype}, {' + '.join(pipeline.tasks)}, {steps} refinement step(s); median of "
        f"{len(totals)} frames",
        f"  model load                {load_s * 1e3:9.1f} ms",
        f"  preprocess                {med.get('preprocess', 0):9.1f} ms",
        f"  encode (VAE, shared)      {med.get('encode', 0):9.1f} ms",
    ]
    batched = "+".join(pipeline.tasks)
    if f"core_{batched}" in med and len(pipeline.tasks) > 1:  # one transformer forward for all tasks
        lines += [
            f"  core {batched} (one forward) {med[f'core_{batched}']:9.1f} ms",
            f"  sharpen {batched} per step {med.get(f'sharpen_{batched}', 0) / steps if steps else 0:9.1f} ms",
        ]
    for task in pipeline.tasks:
        if f"core_{task}" in med:
            lines += [
                f"  core {task:<7}              {med[f'core_{task}']:9.1f} ms",
                f"  sharpen {task:<7} per step  {med.get(f'sharpen_{task}', 0) / steps if steps else 0:9.1f} ms",
            ]
        if f"lcm_{task}" in med:  # Lotus-2 only
            lines.append(f"  LCM {task:<7}               {med[f'lcm_{task}']:9.1f} ms")
        lines += [
            f"  decode {task:<7}            {med.get(f'decode_{task}', 0):9.1f} ms",
            f"  post-process {task:<7}      {med[f'postprocess_{task}']:9.1f} ms",
        ]
    lines.append(f"  whole frame               {statistics.median(totals):9.1f} ms")
    lines.append(f"  peak memory               {peak_memory_text(engine.device)}")
    return "\n".join(lines)


def peak_memory_text(device) -> str:
    """Peak resident memory of this process (and peak CUDA allocation on a GPU)."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    text = f"{rss_kib / 1024:.0f} MiB process RSS"
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        text += f", {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB CUDA allocated"
    return text

