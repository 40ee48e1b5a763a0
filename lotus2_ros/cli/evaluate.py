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

from ..model.weights import TASKS
from .common import add_engine_arguments, engine_config

log = logging.getLogger("lotus2.evaluate")


def _named_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name.strip().lower(), Path(path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_engine_arguments(p, required=False)
    p.set_defaults(process_res=0)  # the paper's evaluation runs at the input resolution
    p.add_argument("--task", choices=TASKS, action="append", help="depth and/or normal (repeat; default depth)")
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
    from ..train import eval_data
    from ..train.evaluate import (
        constant_predictor,
        engine_predictor,
        evaluate_depth,
        evaluate_normals,
        results_table,
        write_results,
    )

    tasks = tuple(dict.fromkeys(args.task or ["depth"]))
    if not (args.depth_dataset or args.normal_dataset or args.synthetic):
        log.error("nothing to evaluate: give --depth-dataset, --normal-dataset and/or --synthetic N")
        return 2
    if args.baseline is None and (args.base_model is None or args.weights is None):
        log.error("give --base-model and --weights (or --baseline constant)")
        return 2
    try:
        sw, sh = (int(v) for v in args.synthetic_size.lower().split("x"))
    except ValueError:
        log.error("--synthetic-size must be WxH, got %r", args.synthetic_size)
        return 2
    if args.baseline:
        name = args.name or args.baseline
        predictors = {t: constant_predictor(t) for t in tasks}
    else:
        from ..model.engine import Lotus2Engine

        try:
            engine = Lotus2Engine.load(engine_config(args, tasks))
        except (FileNotFoundError, ValueError) as err:
            log.error("cannot load the model: %s", err)
            return 2
        name = args.name or Path(args.weights).name
        predictors = {t: engine_predictor(engine, t, args.sharpen_steps) for t in tasks}

    lists = {"depth": dict(args.depth_list), "normal": dict(args.normal_list)}
    results = []
    try:
        if "depth" in tasks:
            for ds, root in args.depth_dataset:
                r = eval_data.DEPTH_RANGES.get(ds)
                samples = eval_data.depth_eval_samples(ds, root, lists["depth"].get(ds), args.max_images)
                results.append(evaluate_depth(predictors["depth"], samples, ds, name, r.min_m if r else 0,
                                              r.max_m if r else 0, progress=True))
        if "normal" in tasks:
            for ds, root in args.normal_dataset:
                samples = eval_data.normal_eval_samples(ds, root, lists["normal"].get(ds), args.max_images)
                results.append(evaluate_normals(predictors["normal"], samples, ds, name, progress=True))
        if args.synthetic:
            pairs = list(eval_data.synthetic_eval_samples(args.synthetic, sw, sh))
            if "depth" in tasks:
                results.append(evaluate_depth(predictors["depth"], [d for d, _ in pairs], "synthetic", name,
                                              1e-3, 1e3))
            if "normal" in tasks:
                results.append(evaluate_normals(predictors["normal"], [n for _, n in pairs], "synthetic", name))
    except (FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    print(results_table(results), end="")
    js, cs = write_results(results, args.output)
    print(f"wrote {js} and {cs}")
    return 0
