"""Relative depth on one scale through a sequence, without a metric reference.

An affine-invariant model gives each frame its own scale and shift: ``d_k = a_k·D + b_k`` for
the frame's true inverse depth (or depth) ``D``, with ``a_k``, ``b_k`` that change from frame to
frame (the scene's content decides the normalisation, and the network is not exactly
consistent). Colourised depth, ``fixed_scale`` depth and clouds then jump from frame to frame.
:class:`RelativeAligner` maps each frame onto the scale of the frames before it.

Algorithm (:meth:`RelativeAligner.update`), in the output's own space (``space``: ``disparity``
for Lotus-2, ``depth`` for affine-invariant depth models; an affine map is the ambiguity in
either space, so the fit is the same, and the values are never mixed across spaces):

1. Both the prediction and the running reference are reduced to a small grid (long edge
   ``grid_px``, area averaging), so a small camera motion moves content by a fraction of a cell.
2. Robust fit ``reference ≈ α·prediction + β`` on the grid: a start from the medians and
   inter-quartile ranges (robust to whatever moved), then Tukey IRLS on the residuals
   (cut-off ``4.685 × 1.4826 × MAD``).
3. Scene change: fewer than ``min_inlier_fraction`` of the cells within ``inlier_threshold``
   (a fraction of the reference's 5–95 % spread) or a non-positive ``α``: the reference
   restarts from this frame, mapped so that its median and inter-quartile range are those of the
   reference (a new scene has no geometric tie to the old one, but the output keeps its range, so
   colours and fixed-scale depth do not flash). The first frame, a stamp that jumps back and one
   more than ``max_gap_ns`` after the last restart from the frame as the model gave it
   (``α = 1``, ``β = 0``).
4. Otherwise the frame is output as ``α·prediction + β`` and blended into the reference with
   weight ``reference_weight`` (an exponential average of the aligned previous frames).

What it cannot do: without the camera's motion it cannot tell a real change of the depth seen at
a pixel from a change of the model's normalisation. Surfaces the camera moves along (floor, side
walls) look the same at a fixed pixel, so while they fill most of the view the scale holds; when a
surface the camera drives towards fills it (the last metres before a wall), the aligner takes
the approach for a normalisation change and holds the old output, so the output drifts from the
truth. ``benchmarks/relative_alignment.py`` measures it: the 6 s indoor drives that end 2 m from
the end wall (seeds 1 and 2) are worse than the raw output under one scale and shift for the
sequence (AbsRel 18.6 → 23.3 %, 24.7 → 32.0 %); 3 s drives and street drives are much better.
The drift is in the output's level more than in its scale (per-frame fits to the truth: the shift
grows fourfold over such a drive, in the raw output as much), and the predictions do not carry
the approach: a wall is flat in disparity, so its expansion does not show in them. Two
experiments (issue #14, the benchmark's ``--variant``): pulling the output's scale and median
back towards the raw frame's own (a complementary filter, time constant 0.3–2 s) does not help,
since the raw frame's normalisation drifts the same way (seed 1: 20.7–23.1 %); moving the
reference before each fit by the true change of the view (median ratio of the true disparities)
about the output's true zero disparity does (8.5 %, 5.1 %). What is missing is that change (and,
to apply a ratio of disparities to a relative output, the output's value of zero disparity): the
camera's motion and the scene's depth structure, from the images or odometry, not a different filter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["AlignedPrediction", "RelativeAligner", "RelativeAlignmentConfig", "fit_affine_robust"]

SPACES = ("disparity", "depth")
_MAD_TO_SIGMA = 1.4826
_TUKEY_C = 4.685


@dataclass(frozen=True)
class RelativeAlignmentConfig:
    """Settings of :class:`RelativeAligner`.

    Attributes:
        space: What the prediction is: ``"disparity"`` (larger = nearer) or ``"depth"``.
        grid_px: Long edge of the grid the fit runs on, pixels.
        reference_weight: Weight of a new aligned frame in the running reference, (0, 1].
        inlier_threshold: A cell agrees with the reference within this fraction of the
            reference's 5–95 % spread.
        min_inlier_fraction: Fewer agreeing cells than this fraction: scene change, reset.
        max_gap_ns: A frame more than this after the previous one resets, nanoseconds.
        irls_iterations: Tukey IRLS iterations.
    """

    space: str = "disparity"
    grid_px: int = 64
    reference_weight: float = 0.5
    inlier_threshold: float = 0.05
    min_inlier_fraction: float = 0.5
    max_gap_ns: int = 1_000_000_000
    irls_iterations: int = 8

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {self.space!r}")
        if isinstance(self.grid_px, bool) or not isinstance(self.grid_px, (int, np.integer)) or self.grid_px < 8:
            raise ValueError(f"grid_px must be an int >= 8, got {self.grid_px!r}")
        if not 0.0 < self.reference_weight <= 1.0:
            raise ValueError(f"reference_weight must be in (0, 1], got {self.reference_weight!r}")
        if not (math.isfinite(self.inlier_threshold) and self.inlier_threshold > 0.0):
            raise ValueError(f"inlier_threshold must be a positive number, got {self.inlier_threshold!r}")
        if not 0.0 <= self.min_inlier_fraction <= 1.0:
            raise ValueError(f"min_inlier_fraction must be in [0, 1], got {self.min_inlier_fraction!r}")
        if isinstance(self.max_gap_ns, bool) or not isinstance(self.max_gap_ns, (int, np.integer)) \
                or self.max_gap_ns <= 0:
            raise ValueError(f"max_gap_ns must be a positive int (nanoseconds), got {self.max_gap_ns!r}")


@dataclass(frozen=True)
class AlignedPrediction:
    """One frame after :meth:`RelativeAligner.update`.

    Attributes:
        values: ``float32`` like the input: ``scale·prediction + shift`` (the input's space and
            invalid pixels; values may leave the model's [0, 1] range slightly).
        scale: ``α`` applied (1 after a reset).
        shift: ``β`` applied (0 after a reset).
        reset: True when the reference restarted from this frame.
        reason: Why it restarted (empty otherwise).
        inlier_fraction: Fraction of grid cells that agreed with the reference (NaN after a reset
            that had no fit).
    """

    values: np.ndarray
    scale: float
    shift: float
    reset: bool
    reason: str
    inlier_fraction: float


def _median(v: np.ndarray) -> float:
    """``np.median`` of a finite 1-D float64 array, bit for bit, without its generic overhead
    (the IRLS loop takes two per iteration)."""
    n = v.size
    k = n // 2
    if n % 2:
        return float(np.partition(v, k)[k])
    part = np.partition(v, (k - 1, k))
    return float((part[k - 1] + part[k]) / 2.0)


def fit_affine_robust(x: np.ndarray, y: np.ndarray, iterations: int = 8) -> tuple[float, float]:
    """Robust ``y ≈ α·x + β`` (median/IQR start, Tukey IRLS); NaN when ``x`` does not vary.

    Args:
        x, y: ``[N]`` finite values.
        iterations: IRLS iterations.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    qx = np.percentile(x, (25, 50, 75))
    qy = np.percentile(y, (25, 50, 75))
    if not qx[2] - qx[0] > 1e-12 * max(1.0, abs(qx[1])):
        return math.nan, math.nan
    a = (qy[2] - qy[0]) / (qx[2] - qx[0])
    b = qy[1] - a * qx[1]
    for _ in range(iterations):
        r = y - (a * x + b)
        sigma = _MAD_TO_SIGMA * _median(np.abs(r - _median(r)))
        if not sigma > 0.0:
            break
        u = r / (_TUKEY_C * sigma)
        w = np.square(np.clip(1.0 - u * u, 0.0, None))
        sw = w.sum()
        if not sw > 0.0:
            break
        mx, my = float(w @ x) / sw, float(w @ y) / sw
        sxx = float(w @ np.square(x - mx))
        if not sxx > 0.0:
            break
        a = float(w @ ((x - mx) * (y - my))) / sxx
        b = my - a * mx
    return float(a), float(b)


class RelativeAligner:
    """Keeps one camera's relative outputs on one scale (see the module docstring).

    One instance per output stream (refined frames get their own: they are older than the live
    ones). Deterministic and clock-free: time comes from the ``stamp_ns`` arguments.
    """

    def __init__(self, config: RelativeAlignmentConfig = RelativeAlignmentConfig()):
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget the reference."""
        self._reference: np.ndarray | None = None
        self._last_stamp_ns: int | None = None
        self._grid_hw: tuple[int, int] | None = None
        self._shape: tuple[int, int] | None = None

    @property
    def has_reference(self) -> bool:
        return self._reference is not None

    def _grid(self, values: np.ndarray) -> np.ndarray:
        h, w = values.shape
        if self._grid_hw is None or self._shape != (h, w):
            s = min(1.0, self.config.grid_px / max(h, w))
            self._grid_hw = (max(1, round(h * s)), max(1, round(w * s)))
            self._shape = (h, w)
        gh, gw = self._grid_hw
        v = np.asarray(values, dtype=np.float32)
        # Every pixel has a positive weight in some cell and NaN/Inf propagate through the area
        # sums, so a finite grid means a finite input: the full-size check only when it is not.
        grid = cv2.resize(v, (gw, gh), interpolation=cv2.INTER_AREA)
        if np.isfinite(grid).all():
            return grid
        finite = np.isfinite(v)
        if finite.all():  # finite values whose area sums overflow
            return grid
        # Area average of the finite pixels only; a cell without any is NaN.
        total = cv2.resize(np.where(finite, v, 0.0).astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
        count = cv2.resize(finite.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0.25, total / count, np.nan).astype(np.float32)

    def _restart(self, prediction: np.ndarray, grid: np.ndarray, stamp: int, reason: str,
                 inliers: float = math.nan, keep_range: bool = False) -> AlignedPrediction:
        a, b = 1.0, 0.0
        if keep_range:
            # A new scene has no geometric tie to the old one: keep the output's range (medians and
            # inter-quartile ranges matched) so that colours and fixed-scale depth do not flash.
            new, old = grid[np.isfinite(grid)], self._reference[np.isfinite(self._reference)]
            qn, qo = np.percentile(new, (25, 50, 75)), np.percentile(old, (25, 50, 75))
            if qn[2] > qn[0] and qo[2] > qo[0]:
                a = float((qo[2] - qo[0]) / (qn[2] - qn[0]))
                b = float(qo[1] - a * qn[1])
        self._reference = (a * grid + b).astype(np.float32)
        self._last_stamp_ns = stamp
        values = np.asarray(prediction, dtype=np.float32)
        if (a, b) != (1.0, 0.0):
            values = values * np.float32(a) + np.float32(b)
        return AlignedPrediction(values, a, b, True, reason, inliers)

    def update(self, prediction: np.ndarray, stamp_ns: int) -> AlignedPrediction:
        """Align one frame's relative prediction to the frames before it.

        Args:
            prediction: ``[H,W]`` relative output in the configured space; NaN/Inf invalid.
            stamp_ns: The frame's stamp, int nanoseconds.
        """
        p = np.asarray(prediction)
        if p.ndim != 2:
            raise ValueError(f"prediction must have shape [H,W], got {p.shape}")
        stamp = int(stamp_ns)
        cfg = self.config
        grid = self._grid(p)
        if self._reference is None or self._reference.shape != grid.shape:
            return self._restart(p, grid, stamp, "first frame")
        if stamp < self._last_stamp_ns:
            return self._restart(p, grid, stamp, "time jumped back")
        if stamp - self._last_stamp_ns > cfg.max_gap_ns:
            return self._restart(p, grid, stamp, f"gap of {(stamp - self._last_stamp_ns) * 1e-9:.3g} s")
        ref = self._reference
        both = np.isfinite(ref) & np.isfinite(grid)
        if both.sum() < 16:
            return self._restart(p, grid, stamp, "too few valid cells")
        x, y = grid[both], ref[both]
        a, b = fit_affine_robust(x, y, cfg.irls_iterations)
        if not (math.isfinite(a) and a > 0.0):
            return self._restart(p, grid, stamp, f"no positive scale (α={a:.3g})")
        lo, hi = np.percentile(y, (5, 95))
        tolerance = cfg.inlier_threshold * max(float(hi - lo), 1e-12)
        inliers = float(np.mean(np.abs(y - (a * x + b)) <= tolerance))
        if inliers < cfg.min_inlier_fraction:
            return self._restart(p, grid, stamp, f"scene change: {inliers:.0%} of the cells agree", inliers,
                                 keep_range=True)
        aligned_grid = a * grid + b
        wgt = cfg.reference_weight
        self._reference = np.where(np.isfinite(ref), (1.0 - wgt) * ref + wgt * aligned_grid, aligned_grid)
        self._reference = np.where(np.isfinite(self._reference), self._reference, aligned_grid).astype(np.float32)
        self._last_stamp_ns = stamp
        values = np.multiply(p, np.float32(a), dtype=np.float32)  # one pass fewer than astype, then *
        values += np.float32(b)
        return AlignedPrediction(values, a, b, False, "", inliers)
