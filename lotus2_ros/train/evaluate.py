"""Run a predictor over evaluation sets and report the protocol metrics (table, JSON, CSV).

A predictor is any ``rgb uint8 [H,W,3] → array`` callable: the relative depth output ``[H,W]``
(disparity, larger = nearer; or affine-invariant depth for depth models, evaluated in that space)
for depth, unit normals ``[H,W,3]`` in the ROS optical frame for normals. :func:`pipeline_predictor`
wraps the perception pipeline (what ``lotus2 predict`` and the node run); :func:`constant_predictor` is the trivial
baseline (one value everywhere: after the depth protocol's scale/shift fit, a constant depth; for
normals, every pixel facing the camera).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .metrics import DEPTH_METRICS, NORMAL_METRICS, DepthMetricsAccumulator, NormalMetricsAccumulator

Predictor = Callable[[np.ndarray], np.ndarray]


@dataclass
class EvalResult:
    """Metrics of one predictor on one dataset and task.

    Depth metrics are fractions (AbsRel, δ1..δ3, mean over images); normal metrics are degrees
    (mean, median, rmse) and percentages (a5 … a30, pooled over pixels).
    """

    dataset: str
    task: str
    model: str
    num_images: int
    metrics: dict[str, float]
    per_image: list[dict] = field(default_factory=list)


def pipeline_predictor(pipeline, task: str, refine_steps: int | None = None) -> Predictor:
    """One task of a :class:`~lotus2_ros.perception.pipeline.PerceptionPipeline` (exactly what
    ``lotus2 predict``, the node and the bag tool run); ``refine_steps`` None: the configured steps."""
    def predict(rgb: np.ndarray) -> np.ndarray:
        out = pipeline.predict(rgb, refine_steps=refine_steps, wanted=set(), tasks=(task,))
        return out.relative if task == "depth" else out.normals
    return predict


def constant_predictor(task: str) -> Predictor:
    """Trivial baseline: constant disparity, or every normal facing the camera ``(0, 0, −1)``."""
    def predict(rgb: np.ndarray) -> np.ndarray:
        H, W = rgb.shape[:2]
        if task == "depth":
            return np.ones((H, W), np.float32)
        n = np.zeros((H, W, 3), np.float32)
        n[..., 2] = -1.0
        return n
    return predict


def evaluate_depth(predict: Predictor, samples: Iterable, dataset: str, model: str, min_depth_m: float,
                   max_depth_m: float, progress: bool = False, space: str = "disparity") -> EvalResult:
    """Affine-invariant depth protocol over ``samples`` (:class:`~.eval_data.DepthEvalSample`).

    ``space``: what the predictor returns, ``"disparity"`` or ``"depth"`` (aligned in that space).
    """
    from tqdm.auto import tqdm

    acc = DepthMetricsAccumulator()
    per_image = []
    for s in tqdm(samples, desc=f"{dataset} depth", disable=not progress, unit="img"):
        if s.valid.sum() < 2:
            continue
        m = acc.add(predict(s.rgb), s.depth_m, s.valid, min_depth_m, max_depth_m, space)
        per_image.append({"name": s.name, **m})
    return EvalResult(dataset, "depth", model, len(per_image), acc.result(), per_image)


def evaluate_normals(predict: Predictor, samples: Iterable, dataset: str, model: str,
                     progress: bool = False) -> EvalResult:
    """DSINE normal protocol over ``samples`` (:class:`~.eval_data.NormalEvalSample`)."""
    from tqdm.auto import tqdm

    acc = NormalMetricsAccumulator()
    per_image = []
    for s in tqdm(samples, desc=f"{dataset} normal", disable=not progress, unit="img"):
        before = (acc.count, acc.sum)
        acc.add(predict(s.rgb), s.normals, s.valid)
        n = acc.count - before[0]
        per_image.append({"name": s.name, "pixels": n, "mean": (acc.sum - before[1]) / n if n else math.nan})
    return EvalResult(dataset, "normal", model, len(per_image), acc.result(), per_image)


def results_table(results: list[EvalResult]) -> str:
    """A plain-text table: one row per (model, dataset, task)."""
    lines = []
    for task, keys, fmt in (("depth", DEPTH_METRICS, "{:8.4f}"), ("normal", NORMAL_METRICS, "{:8.2f}")):
        rows = [r for r in results if r.task == task]
        if not rows:
            continue
        w_model = max(len("model"), *(len(r.model) for r in rows))
        w_data = max(len("dataset"), *(len(r.dataset) for r in rows))
        head = f"{'model':<{w_model}}  {'dataset':<{w_data}}  {'images':>6}  " + "  ".join(f"{k:>8}" for k in keys)
        lines += [f"{task} ({'AbsRel/δ as fractions' if task == 'depth' else 'degrees / % of pixels'})", head,
                  "-" * len(head)]
        for r in rows:
            vals = "  ".join(fmt.format(r.metrics[k]) for k in keys)
            lines.append(f"{r.model:<{w_model}}  {r.dataset:<{w_data}}  {r.num_images:>6}  {vals}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_results(results: list[EvalResult], out_dir: Path) -> tuple[Path, Path]:
    """Write ``results.json`` (everything, per-image included) and ``results.csv`` (one row per result)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js, cs = out_dir / "results.json", out_dir / "results.csv"
    js.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    keys = [*DEPTH_METRICS, *NORMAL_METRICS]
    with open(cs, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "dataset", "task", "num_images", *keys])
        for r in results:
            w.writerow([r.model, r.dataset, r.task, r.num_images, *(r.metrics.get(k, "") for k in keys)])
    return js, cs
