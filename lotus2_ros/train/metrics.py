"""Evaluation metrics: affine-invariant depth (disparity alignment) and the DSINE normal protocol.

Depth, as Lotus-2 reports it (Marigold's "least_square_disparity" protocol):

1. ``gt_disp = 1 / gt_depth`` on the valid pixels;
2. scale ``s`` and shift ``t`` minimise ``Σ (s·pred + t − gt_disp)²`` over the valid pixels
   where the prediction is positive (one least-squares fit per image);
3. ``depth = 1 / max(s·pred + t, 1e-3)``, clipped to the dataset's ``[min_depth, max_depth]``;
   For models that predict affine-invariant *depth* (Lotus-1 ``v1-0``; ``space="depth"``) the
   fit is in depth space instead, as the official Lotus evaluation does without ``--disparity``
   (Marigold's "least_square"): ``s·pred + t ≈ gt_depth``, then clipped to the range;
4. per image over the valid pixels: ``AbsRel = mean(|depth − gt| / gt)``,
   ``δk = mean(max(depth/gt, gt/depth) < 1.25^k)``; the dataset figure is the mean over images.

Normals (DSINE protocol): the per-pixel angle between predicted and ground-truth normals in
degrees, pooled over every valid pixel of the dataset (not averaged per image): mean, median,
RMSE and the percentages below 5°, 7.5°, 11.25°, 22.5° and 30°. A pixel where the model gives
no direction (NaN) counts as 90° (what a zero vector scores under the cosine).
"""

from __future__ import annotations

import numpy as np

DEPTH_METRICS = ("abs_rel", "delta1", "delta2", "delta3")
NORMAL_THRESHOLDS_DEG = (5.0, 7.5, 11.25, 22.5, 30.0)
NORMAL_METRICS = ("mean", "median", "rmse", "a5", "a7.5", "a11.25", "a22.5", "a30")
MIN_ALIGNED_DISPARITY = 1e-3


def fit_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Least-squares ``(s, t)`` with ``s·pred + t ≈ target`` over ``mask`` (float64).

    Raises:
        ValueError: Fewer than 2 pixels in ``mask`` or a constant prediction there.
    """
    p = pred[mask].astype(np.float64)
    g = target[mask].astype(np.float64)
    if p.size < 2:
        raise ValueError(f"need at least 2 valid pixels to fit scale and shift, got {p.size}")
    A = np.stack([p, np.ones_like(p)], axis=1)
    (s, t), *_ = np.linalg.lstsq(A, g, rcond=None)
    return float(s), float(t)


def depth_metrics(pred_disparity: np.ndarray, gt_depth_m: np.ndarray, valid: np.ndarray,
                  min_depth_m: float, max_depth_m: float, space: str = "disparity") -> dict[str, float]:
    """One image's AbsRel and δ1..δ3 after least-squares alignment in the prediction's space.

    Args:
        pred_disparity: ``[H,W]`` affine-invariant disparity (any scale; larger = nearer), or
            affine-invariant depth with ``space="depth"``.
        gt_depth_m: ``[H,W]`` ground-truth depth in metres.
        valid: ``[H,W]`` bool evaluation mask (dataset range, crops, sensor holes already applied).
        min_depth_m, max_depth_m: The dataset's depth range the aligned prediction is clipped to.

    Returns:
        ``{"abs_rel", "delta1", "delta2", "delta3"}`` as fractions (not percent).
        space: ``"disparity"`` (the default protocol) or ``"depth"``.
    """
    if space not in ("disparity", "depth"):
        raise ValueError(f"space must be disparity or depth, got {space!r}")
    if pred_disparity.shape != gt_depth_m.shape or valid.shape != gt_depth_m.shape:
        raise ValueError(f"shapes differ: pred {pred_disparity.shape}, gt {gt_depth_m.shape}, mask {valid.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        gt_disp = np.where(gt_depth_m > 0, 1.0 / gt_depth_m, 0.0)
        if space == "disparity":
            fit_mask = valid & (gt_depth_m > 0) & (pred_disparity > 0) & np.isfinite(pred_disparity)
            s, t = fit_scale_shift(pred_disparity, gt_disp, fit_mask)
            aligned = np.clip(s * pred_disparity.astype(np.float64) + t, MIN_ALIGNED_DISPARITY, None)
            depth = np.clip(1.0 / aligned, min_depth_m, max_depth_m)
        else:
            fit_mask = valid & (gt_depth_m > 0) & np.isfinite(pred_disparity)
            s, t = fit_scale_shift(pred_disparity, gt_depth_m, fit_mask)
            depth = np.clip(s * pred_disparity.astype(np.float64) + t, min_depth_m, max_depth_m)
        depth = np.clip(depth, 1e-6, None)
        d, g = depth[valid], gt_depth_m[valid].astype(np.float64)
        ratio = np.maximum(d / g, g / d)
    return {
        "abs_rel": float(np.mean(np.abs(d - g) / g)),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
    }


def angular_error_deg(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-pixel angle in degrees between two ``[...,3]`` normal fields (any lengths; NaN pred → 90°)."""
    p = np.nan_to_num(np.asarray(pred, np.float64), nan=0.0)
    g = np.asarray(gt, np.float64)
    eps = 1e-8  # torch.cosine_similarity's: a zero vector scores cos = 0
    cos = np.sum(p * g, axis=-1) / (np.maximum(np.linalg.norm(p, axis=-1), eps) * np.maximum(np.linalg.norm(g, axis=-1), eps))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


class DepthMetricsAccumulator:
    """Mean of per-image depth metrics over a dataset."""

    def __init__(self):
        self.per_image: list[dict[str, float]] = []

    def add(self, pred_disparity, gt_depth_m, valid, min_depth_m, max_depth_m, space="disparity") -> dict[str, float]:
        m = depth_metrics(pred_disparity, gt_depth_m, valid, min_depth_m, max_depth_m, space)
        self.per_image.append(m)
        return m

    def result(self) -> dict[str, float]:
        if not self.per_image:
            return {k: float("nan") for k in DEPTH_METRICS}
        return {k: float(np.mean([m[k] for m in self.per_image])) for k in DEPTH_METRICS}


class NormalMetricsAccumulator:
    """DSINE metrics pooled over all valid pixels, without keeping every error in memory.

    Mean and RMSE come from exact running sums; the median and the threshold percentages from
    a 0.001° histogram (exact for the thresholds, which are bin edges).
    """

    BIN_DEG = 1e-3

    def __init__(self):
        self.count = 0
        self.sum = 0.0
        self.sum_sq = 0.0
        self.hist = np.zeros(round(180.0 / self.BIN_DEG) + 1, np.int64)

    def add_errors(self, errors_deg: np.ndarray) -> None:
        e = np.asarray(errors_deg, np.float64).ravel()
        self.count += e.size
        self.sum += float(e.sum())
        self.sum_sq += float((e * e).sum())
        idx = np.clip(np.floor(e / self.BIN_DEG + 1e-9).astype(np.int64), 0, self.hist.size - 1)
        self.hist += np.bincount(idx, minlength=self.hist.size)

    def add(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> None:
        """Add one image: ``pred``/``gt`` ``[H,W,3]`` in the same frame, ``mask`` ``[H,W]`` bool."""
        self.add_errors(angular_error_deg(pred[mask], gt[mask]))

    def result(self) -> dict[str, float]:
        if self.count == 0:
            return {k: float("nan") for k in NORMAL_METRICS}
        cdf = np.cumsum(self.hist)
        median_bin = int(np.searchsorted(cdf, (self.count + 1) / 2.0))
        out = {
            "mean": self.sum / self.count,
            "median": (median_bin + 0.5) * self.BIN_DEG,
            "rmse": float(np.sqrt(self.sum_sq / self.count)),
        }
        for thr in NORMAL_THRESHOLDS_DEG:
            below = int(self.hist[: round(thr / self.BIN_DEG)].sum())
            out[f"a{thr:g}"] = 100.0 * below / self.count
        return out
