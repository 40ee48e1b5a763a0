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

The camera's motion (``motion``, with the image and K in :meth:`RelativeAligner.update`): without
it the aligner cannot tell a real change of the depth seen at a pixel from a change of the model's
normalisation. Surfaces the camera moves along (floor, side walls) look the same at a fixed pixel,
but when a surface the camera drives towards fills the view, a fit to an unmoved reference takes
the approach for a normalisation change and the output drifts from the truth
(``benchmarks/relative_alignment.py --variant plain``: the 6 s indoor drives that end 2 m from the
end wall come out worse than the raw output under one scale and shift for the sequence, AbsRel
18.6 → 23.3 % and 24.7 → 32.0 %). With ``motion``, before the fit the reference is moved into the
new view by the change of view seen in the images (:mod:`.view_motion`), and used only when the
frame fits the moved reference better than the unmoved one: 18.6 → 12.0 % and 24.7 → 24.0 %, and
all twelve benchmark sequences better than raw. The motion is estimated in the disparity space
only (a depth output is fitted without it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .view_motion import move_grid, output_zero, track_view_change, translation_length

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
        motion: Move the reference into each new view before the fit, the change of view
            estimated from the images (:mod:`.view_motion`; needs ``rgb`` and ``K`` in
            :meth:`RelativeAligner.update`, else the frame is fitted as without it).
        motion_max_px: Long edge of the reduced grey images the tracking runs on, pixels.
    """

    space: str = "disparity"
    grid_px: int = 64
    reference_weight: float = 0.5
    inlier_threshold: float = 0.05
    min_inlier_fraction: float = 0.5
    max_gap_ns: int = 1_000_000_000
    irls_iterations: int = 8
    motion: bool = False
    motion_max_px: int = 320

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
        if isinstance(self.motion_max_px, bool) or not isinstance(self.motion_max_px, (int, np.integer)) \
                or self.motion_max_px < 32:
            raise ValueError(f"motion_max_px must be an int >= 32, got {self.motion_max_px!r}")


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


def _fit_error(grid: np.ndarray, reference: np.ndarray) -> float:
    """Median absolute residual of the robust fit ``reference ≈ a·grid + b`` over the reference's
    5–95 % spread (inf with fewer than 16 cells valid in both)."""
    both = np.isfinite(reference) & np.isfinite(grid)
    if both.sum() < 16:
        return math.inf
    x, y = grid[both], reference[both]
    a, b = fit_affine_robust(x, y)
    if not math.isfinite(a):
        return math.inf
    lo, hi = np.percentile(y, (5, 95))
    return float(np.median(np.abs(y - (a * x + b)))) / max(float(hi - lo), 1e-12)


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
        self._forget_motion()

    def _forget_motion(self) -> None:
        self._previous_grey: np.ndarray | None = None  # the last frame's reduced grey image
        self._previous_values: np.ndarray | None = None  # and its output as given out
        self._zeros: list[float] = []  # the output's zero per frame since the reference started
        self.moved_frames = 0  # frames fitted to a moved reference since the reference started

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

    def _restart(self, prediction: np.ndarray, grid: np.ndarray, stamp: int, reason: str, out: np.ndarray | None,
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
        self.moved_frames = 0
        if not keep_range:  # a restart mapped onto the old range keeps the output's zero too
            self._zeros = []
        values = np.asarray(prediction, dtype=np.float32)
        if (a, b) != (1.0, 0.0):
            values = np.multiply(values, np.float32(a), out=out)
            values += np.float32(b)
        elif out is not None and out is not values:
            np.copyto(out, values)
            values = out
        return AlignedPrediction(values, a, b, True, reason, inliers)

    def update(self, prediction: np.ndarray, stamp_ns: int, rgb: np.ndarray | None = None,
               K: np.ndarray | None = None, out: np.ndarray | None = None) -> AlignedPrediction:
        """Align one frame's relative prediction to the frames before it.

        Args:
            prediction: ``[H,W]`` relative output in the configured space; NaN/Inf invalid.
            stamp_ns: The frame's stamp, int nanoseconds.
            rgb: ``uint8 [H,W,3]`` the image the prediction is aligned with, and
            K: its ``[3,3]`` pinhole matrix: with ``config.motion`` (disparity space only), the
                reference is moved into this view first (see :mod:`.view_motion`). Without them
                the frame is fitted as without motion (and the next frame has no image to track from).
            out: ``float32 [H,W]`` array the aligned values are written to (it may be ``prediction``
                itself: aligned in place); default: a new array (or ``prediction`` itself when a
                restart leaves it as it is).
        """
        p = np.asarray(prediction)
        if p.ndim != 2:
            raise ValueError(f"prediction must have shape [H,W], got {p.shape}")
        grey = self._motion_input(rgb, K, p.shape) if self.config.motion and self.config.space == "disparity" \
            and rgb is not None and K is not None else None
        if out is not None and (out.shape != p.shape or out.dtype != np.float32):
            raise ValueError(f"out must be float32 {p.shape}, got {out.dtype} {out.shape}")
        result = self._update(p, int(stamp_ns), grey, K, out)
        if grey is None:
            self._previous_grey = self._previous_values = None
        else:
            self._previous_grey, self._previous_values = grey, result.values
        return result

    def _motion_input(self, rgb: np.ndarray, K: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The reduced grey image of ``rgb`` (long edge ``motion_max_px`` at most), checked against ``shape``."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.shape != (*shape, 3):
            raise ValueError(f"rgb must be uint8 [H,W,3] like the prediction {shape}, got {rgb.dtype} {rgb.shape}")
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3) or not np.isfinite(K).all() or not (K[0, 0] > 0 and K[1, 1] > 0):
            raise ValueError(f"K must be a finite 3x3 pinhole matrix with positive focal lengths, got {K.tolist()}")
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        scale = self._motion_scale(shape)
        if scale < 1.0:  # fx = fy = scale exactly (dsize from them), so pixels map back exactly
            grey = cv2.resize(grey, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return grey

    def _motion_scale(self, shape: tuple[int, int]) -> float:
        return min(1.0, self.config.motion_max_px / max(shape))

    def _move_reference(self, grid: np.ndarray, grey: np.ndarray, K: np.ndarray, shape: tuple[int, int]) -> None:
        """Replace the reference by its move into this view when the frame fits the moved one better."""
        if self._previous_grey is None or self._previous_grey.shape != grey.shape \
                or self._previous_values is None or self._previous_values.shape != shape:
            return
        K = np.asarray(K, dtype=np.float64)
        view = track_view_change(self._previous_grey, grey, K, scale=self._motion_scale(shape))
        if view is None:
            return
        zero = output_zero(view, K, self._previous_values)
        if zero is not None:
            self._zeros.append(zero)
        zero = float(np.median(self._zeros)) if self._zeros else 0.0
        lam = translation_length(view, K, self._previous_values, zero)
        if lam is None:
            return
        moved = move_grid(self._reference, zero, lam, view, K, shape)
        if np.isfinite(moved).mean() > 0.5 and _fit_error(grid, moved) < _fit_error(grid, self._reference):
            self._reference = moved
            self.moved_frames += 1

    def _update(self, p: np.ndarray, stamp: int, grey: np.ndarray | None, K: np.ndarray | None,
                out: np.ndarray | None) -> AlignedPrediction:
        cfg = self.config
        grid = self._grid(p)
        if self._reference is None or self._reference.shape != grid.shape:
            return self._restart(p, grid, stamp, "first frame", out)
        if stamp < self._last_stamp_ns:
            return self._restart(p, grid, stamp, "time jumped back", out)
        if stamp - self._last_stamp_ns > cfg.max_gap_ns:
            return self._restart(p, grid, stamp, f"gap of {(stamp - self._last_stamp_ns) * 1e-9:.3g} s", out)
        if grey is not None:
            self._move_reference(grid, grey, K, p.shape)
        ref = self._reference
        both = np.isfinite(ref) & np.isfinite(grid)
        if both.sum() < 16:
            return self._restart(p, grid, stamp, "too few valid cells", out)
        x, y = grid[both], ref[both]
        a, b = fit_affine_robust(x, y, cfg.irls_iterations)
        if not (math.isfinite(a) and a > 0.0):
            return self._restart(p, grid, stamp, f"no positive scale (α={a:.3g})", out)
        lo, hi = np.percentile(y, (5, 95))
        tolerance = cfg.inlier_threshold * max(float(hi - lo), 1e-12)
        inliers = float(np.mean(np.abs(y - (a * x + b)) <= tolerance))
        if inliers < cfg.min_inlier_fraction:
            return self._restart(p, grid, stamp, f"scene change: {inliers:.0%} of the cells agree", out, inliers,
                                 keep_range=True)
        aligned_grid = a * grid + b
        wgt = cfg.reference_weight
        self._reference = np.where(np.isfinite(ref), (1.0 - wgt) * ref + wgt * aligned_grid, aligned_grid)
        self._reference = np.where(np.isfinite(self._reference), self._reference, aligned_grid).astype(np.float32)
        self._last_stamp_ns = stamp
        values = np.multiply(p, np.float32(a), out=out, dtype=np.float32)  # one pass fewer than astype, then *
        values += np.float32(b)
        return AlignedPrediction(values, a, b, False, "", inliers)
