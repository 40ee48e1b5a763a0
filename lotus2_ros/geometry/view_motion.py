"""The change of view between two frames, estimated from the images, for a relative output.

:class:`~lotus2_ros.geometry.relative_alignment.RelativeAligner` holds a running reference of a
relative output (disparity up to scale and shift). When the camera moves towards a surface the
true disparity at a pixel grows; a fit of the new frame to a reference that has not moved takes
that for a change of the model's normalisation. This module moves the reference into the new view
first:

1. :func:`track_view_change`: corners of the previous image (Shi–Tomasi) tracked into the new one
   (pyramidal Lucas–Kanade), then the rotation ``R`` and the translation's direction ``t̂`` from
   the essential matrix (RANSAC) with the camera's ``K``: ``X_1 = R·X_0 + λ·t̂``.
2. :func:`output_zero`: the value the output takes at zero inverse depth. The tracks are
   triangulated (inverse depth up to one scale) and the previous output at them is fitted
   robustly as ``zero + a·(1/Z)``.
3. :func:`translation_length`: ``λ`` in the output's own inverse-depth units ``q = value − zero``.
   A track moves as ``x_1 = (R·r_0 + λ·q·t̂)_xy / (R·r_0 + λ·q·t̂)_z`` (``r_0`` its normalised ray),
   which is linear in ``λ``; Tukey-weighted least squares over both image axes of every track.
4. :func:`move_grid`: every reference cell as a point (its ray over ``q``) moved by ``(R, λ·t̂)``
   into the new view; the nearest point that lands in a cell gives its value ``zero + q_1``.

Pixels are full-image pixel coordinates with the pixel centre at integer values; ``K`` is the
3×3 pinhole matrix of the image the values are aligned with. A distorted (raw) image is treated
as a pinhole through ``K`` alone. Needs texture and parallax: it returns None when the tracks or
the pose are not found, and the aligner uses a moved reference only when the new frame fits it
better than the unmoved one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["ViewChange", "move_grid", "output_zero", "track_view_change", "translation_length"]

#: Fewest tracks (after the pose's RANSAC) for an estimate.
MIN_TRACKS = 12
_TUKEY_C = 4.685
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class ViewChange:
    """Tracks between two frames and the relative pose (pose inliers only).

    Attributes:
        px0, px1: ``[N,2]`` float64 pixel coordinates of the tracks in the previous and new image.
        R: ``[3,3]`` rotation, ``X_1 = R·X_0 + λ·t_dir`` for a point in the two camera frames.
        t_dir: ``[3]`` unit direction of the translation (its length is unknown from the images).
    """

    px0: np.ndarray
    px1: np.ndarray
    R: np.ndarray
    t_dir: np.ndarray


def _rays(px: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels ``[N,2]`` → normalised rays ``[N,3]`` (z = 1)."""
    x = (px[:, 0] - K[0, 2]) / K[0, 0]
    y = (px[:, 1] - K[1, 2]) / K[1, 1]
    return np.stack([x, y, np.ones_like(x)], axis=1)


def track_view_change(grey0: np.ndarray, grey1: np.ndarray, K: np.ndarray, *, scale: float = 1.0,
                      max_corners: int = 400) -> ViewChange | None:
    """Tracks from ``grey0`` into ``grey1`` and the relative pose, or None.

    Args:
        grey0, grey1: ``uint8 [h,w]`` images of one size (possibly reduced from the full image).
        K: ``[3,3]`` pinhole matrix of the **full** image.
        scale: Size of the grey images over the full image's (``≤ 1``); tracks are returned in
            full-image pixels.
        max_corners: Corners detected in ``grey0``.
    """
    if grey0.shape != grey1.shape or grey0.ndim != 2:
        raise ValueError(f"two grey images of one size are needed, got {grey0.shape} and {grey1.shape}")
    try:
        return _track(grey0, grey1, np.asarray(K, dtype=np.float64), scale, max_corners)
    except cv2.error:  # a degenerate configuration OpenCV refuses: no estimate for this frame
        return None


def _track(grey0: np.ndarray, grey1: np.ndarray, K: np.ndarray, scale: float, max_corners: int) -> ViewChange | None:
    corners = cv2.goodFeaturesToTrack(grey0, max_corners, 0.01, max(2.0, 6.0 * scale))
    if corners is None or len(corners) < MIN_TRACKS:
        return None
    moved, status, _ = cv2.calcOpticalFlowPyrLK(grey0, grey1, corners, None, winSize=(21, 21), maxLevel=3)
    ok = status[:, 0] == 1
    if ok.sum() < MIN_TRACKS:
        return None
    # Reduced-image pixels → full-image pixels (pixel centres at integers in both).
    px0 = (corners[ok, 0].astype(np.float64) + 0.5) / scale - 0.5
    px1 = (moved[ok, 0].astype(np.float64) + 0.5) / scale - 0.5
    E, inliers = cv2.findEssentialMat(px0, px1, K, cv2.RANSAC, 0.999, 0.5 / scale)
    if E is None or E.shape != (3, 3):
        return None
    _, R, t, pose_inliers = cv2.recoverPose(E, px0, px1, K, mask=inliers.copy())
    keep = pose_inliers[:, 0] > 0
    if keep.sum() < MIN_TRACKS:
        return None
    return ViewChange(px0[keep], px1[keep], R, t[:, 0] / max(np.linalg.norm(t), 1e-12))


def _sample(values: np.ndarray, px: np.ndarray) -> np.ndarray:
    """``values [H,W]`` at ``floor(px)`` for each ``px [N,2]`` (NaN outside): the pixel up and left
    of a point between pixel centres."""
    h, w = values.shape
    cols, rows = np.floor(px[:, 0]), np.floor(px[:, 1])
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    out = np.full(len(px), np.nan)
    out[inside] = values[rows[inside].astype(np.intp), cols[inside].astype(np.intp)]
    return out


def output_zero(view: ViewChange, K: np.ndarray, previous: np.ndarray) -> float | None:
    """The previous output's value at zero inverse depth, from the tracks' triangulation, or None.

    Args:
        previous: ``[H,W]`` the previous frame's (aligned) output, disparity-like.
    """
    from .relative_alignment import fit_affine_robust

    K = np.asarray(K, dtype=np.float64)
    P0 = K @ np.hstack([np.eye(3), np.zeros((3, 1))])
    P1 = K @ np.hstack([view.R, view.t_dir[:, None]])
    X = cv2.triangulatePoints(P0, P1, view.px0.T, view.px1.T)
    with np.errstate(invalid="ignore", divide="ignore"):
        z0 = X[2] / X[3]
    values = _sample(previous, view.px0)
    use = np.isfinite(z0) & (z0 > 0) & np.isfinite(values)
    if use.sum() < MIN_TRACKS:
        return None
    inverse = np.median(z0[use]) / z0[use]  # inverse depth in units of its median
    slope, zero = fit_affine_robust(inverse, values[use])
    return float(zero) if math.isfinite(zero) and slope > 0 else None


def translation_length(view: ViewChange, K: np.ndarray, previous: np.ndarray, zero: float) -> float | None:
    """``λ`` of ``X_1 = R·X_0 + λ·t̂`` in units of the output's inverse depth ``q = value − zero``
    (positive), or None. Tukey-weighted least squares of the tracks' motion (see the module docstring)."""
    q = _sample(previous, view.px0) - zero
    rotated = _rays(view.px0, K) @ view.R.T  # [N,3]
    x1 = _rays(view.px1, K)[:, :2]
    ok = np.isfinite(q) & (q > 0)
    if ok.sum() < MIN_TRACKS:
        return None
    t = view.t_dir
    A = (q[ok, None] * (x1[ok] * t[2] - t[None, :2])).reshape(-1)
    y = (rotated[ok, :2] - x1[ok] * rotated[ok, 2:3]).reshape(-1)
    w = np.ones_like(A)
    lam = math.nan
    for _ in range(6):
        den = float((w * A * A).sum())
        if not den > 0.0:
            return None
        lam = float((w * A * y).sum()) / den
        residual = y - lam * A
        cut = _TUKEY_C * _MAD_TO_SIGMA * float(np.median(np.abs(residual)))
        if not cut > 0.0:
            break
        w = np.square(np.clip(1.0 - np.square(residual / cut), 0.0, None))
    return lam if math.isfinite(lam) and lam > 0.0 else None


def move_grid(reference: np.ndarray, zero: float, lam: float, view: ViewChange, K: np.ndarray,
              image_hw: tuple[int, int]) -> np.ndarray:
    """The reference grid ``[gh,gw]`` (cells over an ``image_hw`` image) moved into the new view:
    ``float32 [gh,gw]``, NaN where no point lands; where several land, the nearest."""
    gh, gw = reference.shape
    H, W = image_hw
    u, v = np.meshgrid((np.arange(gw) + 0.5) * W / gw - 0.5, (np.arange(gh) + 0.5) * H / gh - 0.5)
    ref = reference.reshape(-1).astype(np.float64)
    q = np.maximum(ref - zero, 0.0)  # at or beyond infinity: a direction
    X1 = _rays(np.stack([u.reshape(-1), v.reshape(-1)], 1), K) @ view.R.T + lam * view.t_dir[None] * q[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        q1 = q / X1[:, 2]
        col = np.floor((K[0, 0] * X1[:, 0] / X1[:, 2] + K[0, 2] + 0.5) * gw / W)
        row = np.floor((K[1, 1] * X1[:, 1] / X1[:, 2] + K[1, 2] + 0.5) * gh / H)
    inside = np.isfinite(ref) & (X1[:, 2] > 0) & (col >= 0) & (col < gw) & (row >= 0) & (row < gh)
    moved = np.full(gh * gw, -np.inf)
    np.maximum.at(moved, (row[inside] * gw + col[inside]).astype(np.intp), q1[inside])  # the nearest wins
    return np.where(np.isfinite(moved), zero + moved, np.nan).reshape(gh, gw).astype(np.float32)
