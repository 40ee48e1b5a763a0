"""``lotus2 predict``: depth and/or normals for image files, through the perception pipeline.

Writes, per input ``<stem>`` (see :mod:`lotus2_ros.perception.export`): ``<stem>_depth.npy``
(float32 [H,W], the official relative output: affine-invariant disparity, larger = nearer) and
``<stem>_depth.png`` (colour-mapped), ``<stem>_normal.npy`` (float32 [H,W,3] unit vectors, ROS
optical frame) and ``<stem>_normal.png``, and ``<stem>.json`` (what each file holds, the
processing size and steps); with a Lotus-G ensemble (``--ensemble K``) also ``<stem>_depth_std.npy``. Existing outputs are never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from ..io.images import collect_images, read_rgb
from .common import add_model_arguments, add_task_argument, offline_config, report_settings

log = logging.getLogger("lotus2.predict")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    add_task_argument(p)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("images", type=Path, nargs="+", metavar="IMAGES", help="image files or folders")


def command(args: argparse.Namespace) -> int:
    from ..perception.config import ConfigError
    from ..perception.export import FrameExporter, planned_files
    from ..perception.pipeline import load_pipeline, model_settings

    try:
        images = collect_images(args.images)
        config = offline_config(args)
        settings = model_settings(config)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    ensemble = (settings.refinement == "ensemble" and config.sharpen_enabled
                and (config.refine_setting or settings.refine_steps) > 1)
    existing = [p for img in images for p in planned_files(args.output, img.stem, settings.tasks, uncertainty=ensemble)
                if p.exists()]
    if existing and not args.force:
        log.error("%d output file(s) exist, e.g. %s; pass --force to overwrite", len(existing), existing[0])
        return 2
    try:
        pipeline = load_pipeline(config)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        log.error("cannot load the model: %s", err)
        return 2
    report_settings(pipeline)
    exporter = FrameExporter(args.output)
    failures = 0
    for path in images:
        try:
            rgb = read_rgb(path)
            t0 = time.perf_counter()
            out = pipeline.predict(rgb, wanted={"depth/colorized", "normals/colorized"})
        except ValueError as err:
            log.error("skipping %s: %s", path, err)
            failures += 1
            continue
        exporter.export(out, stem=path.stem)
        log.info("%s: %dx%d processed at %dx%d in %.0f ms", path.name, rgb.shape[1], rgb.shape[0],
                 out.process_hw[1], out.process_hw[0], (time.perf_counter() - t0) * 1e3)
    return 1 if failures else 0
