"""``lotus2 evaluate`` (also ``ros2 run lotus2_ros evaluate``): protocol metrics on evaluation sets.

Depth: affine-invariant protocol (least-squares scale and shift in disparity space, dataset
ranges and masks; AbsRel, δ1–δ3) on Marigold-layout NYUv2, KITTI Eigen test, ETH3D, ScanNet and
DIODE. Normals: DSINE protocol (mean/median angle, % within 11.25°/22.5°/30°) on DSINE-layout
NYUv2, ScanNet, iBims-1, Sintel and OASIS (validation split). ``--synthetic N`` adds N held-out synthetic frames.
Prints a table and writes ``results.json`` / ``results.csv`` to ``-o``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import add_model_arguments, add_task_argument, offline_config, report_settings

log = logging.getLogger("lotus2.evaluate")


def _named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name.strip().lower(), Path(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p, required=False)
    add_task_argument(p)
    p.add_argument("--depth-dataset", type=_named_path, action="append", default=[], metavar="NAME=PATH",
                   help="nyuv2|kitti|eth3d|scannet|diode = folder or .tar in Marigold's layout")
    p.add_argument("--depth-list", type=_named_path, action="append", default=[], metavar="NAME=FILE",
                   help="file list of a depth dataset (Marigold's data_split/…; needed for kitti and eth3d)")
    p.add_argument("--normal-dataset", type=_named_path, action="append", default=[], metavar="NAME=PATH",
                   help="nyuv2|scannet|ibims|sintel|oasis = folder in DSINE's layout")
    p.add_argument("--normal-list", type=_named_path, action="append", default=[], metavar="NAME=FILE",
                   help="split file of a normal dataset (default: every *_img.png; oasis: the official split/val.txt)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="also evaluate N held-out synthetic frames")
    p.add_argument("--synthetic-size", default="160x128", metavar="WxH", help="synthetic frame size (default 160x128)")
    p.add_argument("--max-images", type=int, metavar="N", help="first N images of each dataset (quick checks)")
    p.add_argument("--baseline", choices=("constant",), help="evaluate the trivial baseline instead of a model")
    p.add_argument("--name", help="model label in the results (default: the weights folder)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="results folder")


def command(args: argparse.Namespace) -> int:
    from ..perception.config import ConfigError
    from ..perception.pipeline import load_pipeline
    from ..train import eval_data
    from ..train.evaluate import (
        constant_predictor,
        evaluate_depth,
        evaluate_normals,
        pipeline_predictor,
        results_table,
        write_results,
    )

    if not (args.depth_dataset or args.normal_dataset or args.synthetic):
        log.error("nothing to evaluate: give --depth-dataset, --normal-dataset and/or --synthetic N")
        return 2
    if args.baseline is None and args.weights is None:
        log.error("give the model (--weights, and --base-model for Lotus-2) or --baseline constant")
        return 2
    try:
        sw, sh = (int(v) for v in args.synthetic_size.lower().split("x"))
    except ValueError:
        log.error("--synthetic-size must be WxH, got %r", args.synthetic_size)
        return 2
    if args.baseline:
        name = args.name or args.baseline
        tasks = tuple(dict.fromkeys(args.task or ["depth"]))
        predictors = {t: constant_predictor(t) for t in tasks}
    else:
        if args.process_res is None and _published_protocol_resolution(args):
            args.process_res = 0  # no model.json: the published protocols run at the input resolution
        try:
            pipeline = load_pipeline(offline_config(args, publish_colorized=False))
        except (ConfigError, FileNotFoundError, ValueError) as err:
            log.error("cannot load the model: %s", err)
            return 2
        report_settings(pipeline)
        name = args.name or Path(args.weights).name
        tasks = pipeline.tasks
        predictors = {t: pipeline_predictor(pipeline, t) for t in tasks}

    space = pipeline.backend.info.depth_output if not args.baseline else "disparity"
    lists = {"depth": dict(args.depth_list), "normal": dict(args.normal_list)}
    results = []
    try:
        if "depth" in tasks:
            for ds, root in args.depth_dataset:
                r = eval_data.DEPTH_RANGES.get(ds)
                samples = eval_data.depth_eval_samples(ds, root, lists["depth"].get(ds), args.max_images)
                results.append(evaluate_depth(predictors["depth"], samples, ds, name, r.min_m if r else 0,
                                              r.max_m if r else 0, progress=True, space=space))
        if "normal" in tasks:
            for ds, root in args.normal_dataset:
                samples = eval_data.normal_eval_samples(ds, root, lists["normal"].get(ds), args.max_images)
                results.append(evaluate_normals(predictors["normal"], samples, ds, name, progress=True))
        if args.synthetic:
            pairs = list(eval_data.synthetic_eval_samples(args.synthetic, sw, sh))
            if "depth" in tasks:
                results.append(evaluate_depth(predictors["depth"], [d for d, _ in pairs], "synthetic", name,
                                              1e-3, 1e3, space=space))
            if "normal" in tasks:
                results.append(evaluate_normals(predictors["normal"], [n for _, n in pairs], "synthetic", name))
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    print(results_table(results), end="")
    js, cs = write_results(results, args.output)
    print(f"wrote {js} and {cs}")
    return 0


def _published_protocol_resolution(args: argparse.Namespace) -> bool:
    """True when the model states no processing size of its own (no ``process_res`` in its ``model.json``).

    The official evaluations run the releases at the input resolution; a model trained at one
    size (the demo model: 160 px) is evaluated at that size, as every other front end runs it.
    """
    import json

    from ..model.spec import MODEL_DEFAULTS_FILE

    path = Path(args.weights) / MODEL_DEFAULTS_FILE
    try:
        return "process_res" not in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return True  # no (readable) model.json: the load reports a bad one
