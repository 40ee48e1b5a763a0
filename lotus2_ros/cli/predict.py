"""``lotus2 predict``: depth and/or normals for image files.

Writes, per input ``<stem>``: ``<stem>_depth.npy`` (float32 [H,W], affine-invariant disparity,
official scale, larger = nearer) and ``<stem>_depth.png`` (colour-mapped), and/or
``<stem>_normal.npy`` (float32 [H,W,3] unit vectors, ROS optical frame) and ``<stem>_normal.png``.
Existing outputs are never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from ..io.images import collect_images, read_rgb, write_rgb
from ..io.visualize import colorize_disparity, colorize_normals
from ..model.weights import TASKS
from .common import add_engine_arguments, engine_config

log = logging.getLogger("lotus2.predict")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_engine_arguments(p)
    p.add_argument("--task", choices=TASKS, action="append",
                   help="depth or normal; repeat for both (default depth)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGES", help="image files or folders")


def output_paths(outdir: Path, stem: str, task: str) -> tuple[Path, Path]:
    return outdir / f"{stem}_{task}.npy", outdir / f"{stem}_{task}.png"


def command(args: argparse.Namespace) -> int:
    from ..model.engine import Lotus2Engine

    tasks = tuple(dict.fromkeys(args.task or ["depth"]))
    try:
        images = collect_images(args.images)
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    planned = [p for img in images for t in tasks for p in output_paths(args.output, img.stem, t)]
    existing = [p for p in planned if p.exists()]
    if existing and not args.force:
        log.error("%d output file(s) exist, e.g. %s; pass --force to overwrite", len(existing), existing[0])
        return 2
    try:
        engine = Lotus2Engine.load(engine_config(args, tasks))
    except (FileNotFoundError, ValueError) as err:
        log.error("cannot load the model: %s", err)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in images:
        try:
            rgb = read_rgb(path)
            t0 = time.perf_counter()
            pred = engine.predict(rgb, tasks=tasks, sharpen_steps=args.sharpen_steps)[0]
        except ValueError as err:
            log.error("skipping %s: %s", path, err)
            failures += 1
            continue
        for task in tasks:
            npy, png = output_paths(args.output, path.stem, task)
            if task == "depth":
                np.save(npy, pred.disparity.astype(np.float32))
                write_rgb(png, colorize_disparity(pred.disparity))
            else:
                np.save(npy, pred.normals.astype(np.float32))
                write_rgb(png, colorize_normals(pred.normals))
        log.info("%s: %dx%d processed at %dx%d in %.0f ms", path.name, rgb.shape[1], rgb.shape[0],
                 pred.process_hw[1], pred.process_hw[0], (time.perf_counter() - t0) * 1e3)
    return 1 if failures else 0
