"""Relative depth on one scale without a metric reference: jitter and temporal consistency (prints figures).

    PYTHONPATH=. python benchmarks/relative_alignment.py [--frames 30 60] [--seeds 0 1 2] [--model models/demo]
        [--variant aligner|plain|pull|oracle] [--pull-time-constant-s 1.0]

Trajectories: the synthetic scenes (indoor and street, several seeds) along their camera
trajectory (0.1 m per frame at 10 Hz with a ±5° yaw sway), 320x240 px, 70° field of view, for
3 s and 6 s: indoors the 6 s drive ends about 2 m from the room's end wall (5.5–6.6 m of path),
the street is 100 m long. For each, the relative disparity of every frame is taken as it
comes ("raw") and after :class:`~lotus2_ros.geometry.relative_alignment.RelativeAligner`
("aligned", the pipeline's default with ``metric_source: none``). Predictions:

* ``simulated``: what an affine-invariant model gives — the true inverse depth normalised per
  frame to its own 2nd–98th percentiles, then a per-frame scale and shift inconsistency
  (scale ×exp(N(0, 8 %)), shift N(0, 0.03)), a smooth ±5 % bias and 2 % per-pixel noise.
* ``model`` (``--model DIR``, e.g. the committed ``models/demo``): the core prediction of a model
  folder on the rendered images, CPU fp32 (about 2 s per frame on a busy 2-core machine).

Figures, each against the ground truth of the same frames:

* scale jitter: RMS over consecutive frames of ``log(s_{k+1} / s_k)``, with ``(s_k, t_k)`` the
  per-frame least-squares fit ``1/z ≈ s·d + t`` (what a per-frame metric reference would need
  to undo), percent.
* AbsRel (sequence): one ``(s, t)`` fitted by least squares over all frames of the sequence,
  then the mean ``|ẑ − z| / z`` over every valid pixel of every frame.
* TAE: as Video Depth Anything's temporal alignment error — each frame's metric depth from that
  one sequence fit is moved into the next frame with the true poses and compared with the next
  frame's own depth there (AbsRel), both directions, averaged; only points the next frame sees
  (true depths agree within 2 %).

``--variant`` replaces the aligned column by an experiment of issue #14 (``pull`` and ``oracle``
reach into the aligner's state; they run without the motion):

* ``pull``: a complementary filter — the aligner's frame-to-frame fit, with the output's scale
  (log inter-quartile ratio) and median offset from the raw frame's own decaying towards the raw
  frame with time constant ``--pull-time-constant-s``, the pulled frame fed back into the reference.
* ``oracle``: before each fit the reference is moved by the true change of the view — multiplied
  by the median ratio of the true disparities of this frame and the one before (fixed pixels),
  about the output's true zero disparity (from the first frame's least-squares fit). Information
  no prediction carries: it shows what the aligner lacks.
* ``plain``: the product's aligner without the motion of the view (``motion=False``, what it
  did before it had the images); the default column passes each frame's image and the camera's K.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from lotus2_ros.geometry import PinholeCamera
from lotus2_ros.geometry.relative_alignment import (
    AlignedPrediction,
    RelativeAligner,
    RelativeAlignmentConfig,
)
from lotus2_ros.synthetic import camera_trajectory, make_scene, render

CAMERA = PinholeCamera.from_fov(320, 240, 70.0)
RATE_HZ = 10.0


def simulate(depth_m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Affine-invariant disparity as a per-frame normalising model gives it (see the docstring)."""
    inverse = np.where(np.isfinite(depth_m), 1.0 / depth_m, 0.0)
    lo, hi = np.percentile(inverse, (2, 98))
    d = (inverse - lo) / (hi - lo)
    H, W = d.shape
    yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, 2)
    bias = 1.0 + 0.05 * np.sin(2 * np.pi * 0.8 * xx + phase[0]) * np.cos(2 * np.pi * 0.6 * yy + phase[1])
    d = d * bias * (1.0 + 0.02 * rng.standard_normal(d.shape))
    d = math.exp(rng.normal(0.0, 0.08)) * d + rng.normal(0.0, 0.03)
    return d.astype(np.float32)


def per_frame_scales(preds: list[np.ndarray], depths: list[np.ndarray]) -> np.ndarray:
    scales = []
    for d, z in zip(preds, depths):
        valid = np.isfinite(z) & np.isfinite(d)
        A = np.stack([d[valid], np.ones(valid.sum())], 1).astype(np.float64)
        scales.append(np.linalg.lstsq(A, 1.0 / z[valid], rcond=None)[0][0])
    return np.array(scales)


def sequence_depths(preds: list[np.ndarray], depths: list[np.ndarray]) -> list[np.ndarray]:
    """Metric depth of every frame from one (s, t) least-squares fit over the whole sequence."""
    A, y = [], []
    for d, z in zip(preds, depths):
        valid = np.isfinite(z) & np.isfinite(d)
        A.append(np.stack([d[valid], np.ones(valid.sum())], 1))
        y.append(1.0 / z[valid])
    s, t = np.linalg.lstsq(np.concatenate(A).astype(np.float64), np.concatenate(y), rcond=None)[0]
    out = []
    for d in preds:
        inverse = s * d.astype(np.float64) + t
        out.append(np.where(inverse > 1e-3, 1.0 / np.maximum(inverse, 1e-3), np.nan))
    return out


def abs_rel(estimates: list[np.ndarray], depths: list[np.ndarray]) -> float:
    errors = []
    for e, z in zip(estimates, depths):
        valid = np.isfinite(z)
        # A pixel the sequence fit gives no depth (s·d + t <= 0) counts as a 100 % error.
        errors.append(np.where(np.isfinite(e[valid]), np.abs(e[valid] - z[valid]) / z[valid], 1.0))
    return float(np.mean(np.concatenate(errors)))


def _move(depth_a: np.ndarray, T_b_a: np.ndarray):
    """Frame a's depth moved into frame b: landing rows, cols, depth in b, and which pixels of a land inside."""
    p = (CAMERA.pixel_rays().astype(np.float64) * depth_a[..., None]).reshape(-1, 3) @ T_b_a[:3, :3].T + T_b_a[:3, 3]
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.floor(CAMERA.fx * p[:, 0] / p[:, 2] + CAMERA.cx + 0.5)
        v = np.floor(CAMERA.fy * p[:, 1] / p[:, 2] + CAMERA.cy + 0.5)
        inside = (p[:, 2] > 0) & (u >= 0) & (u < CAMERA.width_px) & (v >= 0) & (v < CAMERA.height_px)
    rows, cols = np.zeros(p.shape[0], int), np.zeros(p.shape[0], int)
    rows[inside], cols[inside] = v[inside].astype(int), u[inside].astype(int)
    return rows, cols, p[:, 2], inside


def tae(estimates, depths, poses) -> float:
    """Mean AbsRel of each frame's depth moved into the neighbouring frame (true poses) against that
    frame's depth at the landing pixel, both directions; only pixels whose true point the other frame sees."""
    errors = []
    for k in range(len(estimates) - 1):
        for a, b in ((k, k + 1), (k + 1, k)):
            T_b_a = np.linalg.inv(poses[b]) @ poses[a]
            rows, cols, z, inside = _move(depths[a], T_b_a)  # the truth: which pixels of a frame b sees
            seen = inside.copy()
            seen[inside] = np.abs(depths[b][rows[inside], cols[inside]] / z[inside] - 1.0) < 0.02
            rows, cols, z, inside = _move(np.nan_to_num(estimates[a], nan=-1.0), T_b_a)  # the estimate, moved
            use = seen & inside
            target = estimates[b][rows[use], cols[use]]
            moved = z[use]
            valid = np.isfinite(target)
            errors.append(np.abs(moved[valid] - target[valid]) / target[valid])
    return float(np.mean(np.concatenate(errors)))


def scale_figures(preds, depths) -> tuple[dict[str, float], list[np.ndarray]]:
    """Scale jitter and sequence AbsRel (percent), and the metric depths of the one sequence fit."""
    scales = per_frame_scales(preds, depths)
    metric = sequence_depths(preds, depths)
    with np.errstate(invalid="ignore"):  # a frame whose prediction runs against the truth has s <= 0: no jitter
        steps = np.diff(np.log(np.where(scales > 0, scales, np.nan)))
    steps = steps[np.isfinite(steps)]
    return {"jitter_pct": 100.0 * float(np.sqrt(np.mean(steps ** 2))) if steps.size else math.nan,
            "absrel_pct": 100.0 * abs_rel(metric, depths)}, metric


def figures(preds, depths, poses) -> dict[str, float]:
    result, metric = scale_figures(preds, depths)
    return result | {"tae_pct": 100.0 * tae(metric, depths, poses)}


class PulledAligner(RelativeAligner):
    """``--variant pull`` (an experiment, see the docstring): the fit's scale and median offset decay
    towards the raw frame's with ``time_constant_s``."""

    def __init__(self, time_constant_s: float, config: RelativeAlignmentConfig):
        super().__init__(config)
        self.time_constant_s = time_constant_s

    def update(self, prediction, stamp_ns):
        last, reference = self._last_stamp_ns, self._reference
        result = super().update(prediction, stamp_ns)
        if result.reset:
            return result
        keep = math.exp(-(stamp_ns - last) * 1e-9 / self.time_constant_s)
        grid = self._grid(prediction)
        median = float(np.median(grid[np.isfinite(grid)]))
        scale = result.scale ** keep  # log scale decays towards 0 (the raw frame's IQR)
        shift = median + keep * (result.scale * median + result.shift - median) - scale * median
        pulled = scale * grid + shift
        w = self.config.reference_weight
        blended = np.where(np.isfinite(reference), (1.0 - w) * reference + w * pulled, pulled)
        self._reference = np.where(np.isfinite(blended), blended, pulled).astype(np.float32)
        values = prediction.astype(np.float32) * np.float32(scale) + np.float32(shift)
        return AlignedPrediction(values, scale, shift, False, "", result.inlier_fraction)


class OracleAligner(RelativeAligner):
    """``--variant oracle`` (an experiment, see the docstring): the reference moved by the true change of the view."""

    def __init__(self, depths: list[np.ndarray], zero: float, config: RelativeAlignmentConfig):
        super().__init__(config)
        self.depths, self.zero, self.k = depths, zero, 0

    def update(self, prediction, stamp_ns):
        if self._reference is not None and self.k > 0:
            before, now = (self._grid(np.where(np.isfinite(z), 1.0 / z, np.nan))
                           for z in self.depths[self.k - 1:self.k + 1])
            ratio = float(np.nanmedian(now / before))
            self._reference = (self.zero + ratio * (self._reference - self.zero)).astype(np.float32)
        self.k += 1
        return super().update(prediction, stamp_ns)


def align(preds: list[np.ndarray], space: str = "disparity", variant: str = "aligner",
          pull_time_constant_s: float = 1.0, depths: list[np.ndarray] | None = None,
          rgbs: list[np.ndarray] | None = None) -> tuple[list[np.ndarray], int]:
    """The variant's outputs and its number of resets after the first frame. The product's aligner
    ("aligner") moves its reference with the motion seen in ``rgbs`` when they are given."""
    config = RelativeAlignmentConfig(space=space, motion=variant == "aligner")
    if variant == "pull":
        aligner = PulledAligner(pull_time_constant_s, config)
    elif variant == "oracle":
        valid = np.isfinite(depths[0]) & np.isfinite(preds[0])
        A = np.stack([preds[0][valid], np.ones(valid.sum())], 1).astype(np.float64)
        s, t = np.linalg.lstsq(A, 1.0 / depths[0][valid], rcond=None)[0]
        aligner = OracleAligner(depths, -t / s, config)  # the output value of zero disparity
    else:
        aligner = RelativeAligner(config)
    out, resets = [], 0
    for k, d in enumerate(preds):
        # The image and K reach the product's aligner only (motion=False ignores them; the
        # experiments' update takes neither).
        extra = {"rgb": rgbs[k], "K": CAMERA.K} if variant in ("aligner", "plain") and rgbs is not None else {}
        result = aligner.update(d, int(k * 1e9 / RATE_HZ), **extra)
        out.append(result.values)
        resets += result.reset and k > 0
    return out, resets


def model_predictor(folder: Path):
    from lotus2_ros.model.backend import BackendConfig, load_backend
    from lotus2_ros.perception.pipeline import offline_pipeline

    backend = load_backend(BackendConfig(base_model=str(folder / "base_model"), weights=str(folder / "weights"),
                                         tasks=("depth",), device="cpu", dtype="fp32", load_refiner=False))
    pipeline = offline_pipeline(backend, relative_alignment="off")
    return lambda rgb: pipeline.predict(rgb, refine_steps=0).disparity


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 60], help="sequence lengths")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--model", default="none",
                        help="also a model folder's own predictions (e.g. models/demo; slow on a CPU), or 'none'")
    parser.add_argument("--variant", choices=("aligner", "plain", "pull", "oracle"), default="aligner",
                        help="what makes the aligned column: the product's aligner or an experiment (see above)")
    parser.add_argument("--pull-time-constant-s", type=float, default=1.0, help="--variant pull: time constant, s")
    args = parser.parse_args(argv)
    sources = {"simulated": None}
    if args.model != "none":
        sources[Path(args.model).name] = model_predictor(Path(args.model))
    variant = {"aligner": "aligned", "plain": "aligned without motion", "oracle": "oracle",
               "pull": f"pulled (time constant {args.pull_time_constant_s:g} s)"}[args.variant]
    print(f"{CAMERA.width_px}x{CAMERA.height_px}, {RATE_HZ:g} Hz; figures: raw -> {variant}")
    print("| prediction | trajectory | frames | scale jitter % | AbsRel % (one s,t per sequence) | TAE % | resets |")
    print("|---|---|---|---|---|---|---|")
    worse = {n: [] for n in args.frames}
    for source, predict in sources.items():
        for kind in ("indoor", "street"):
            for seed in args.seeds:
                scene = make_scene(kind, seed)
                poses = camera_trajectory(scene, max(args.frames))
                frames = [render(scene, CAMERA, pose) for pose in poses]
                if predict is None:
                    rng = np.random.default_rng(1000 * seed + (kind == "street"))
                    all_preds = [simulate(f.depth_m, rng) for f in frames]
                else:
                    all_preds = [predict(f.rgb) for f in frames]
                for n in args.frames:
                    preds, depths = all_preds[:n], [f.depth_m.astype(np.float64) for f in frames[:n]]
                    aligned, resets = align(preds, variant=args.variant, depths=depths,
                                            pull_time_constant_s=args.pull_time_constant_s,
                                            rgbs=[f.rgb for f in frames[:n]])
                    raw, new = figures(preds, depths, poses[:n]), figures(aligned, depths, poses[:n])
                    if not all(new[k] < raw[k] for k in ("jitter_pct", "absrel_pct")):
                        worse[n].append(f"{source} {kind} {seed}")
                    print(f"| {source} | {kind} seed {seed} | {n} | {raw['jitter_pct']:.2f} -> {new['jitter_pct']:.2f} | "
                          f"{raw['absrel_pct']:.2f} -> {new['absrel_pct']:.2f} | {raw['tae_pct']:.2f} -> "
                          f"{new['tae_pct']:.2f} | {resets} |", flush=True)
    for n, names in worse.items():
        print(f"{n} frames: {variant} lowered both scale jitter and AbsRel on "
              f"{len(sources) * 2 * len(args.seeds) - len(names)} of {len(sources) * 2 * len(args.seeds)} trajectories"
              + (f"; not on: {', '.join(names)}" if names else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
