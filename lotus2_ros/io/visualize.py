"""Colour images of predictions for people: colour-mapped disparity and the usual normal colouring."""

from __future__ import annotations

import math

import cv2
import numpy as np


def colorize_disparity(disparity: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Colour-map a disparity (or any "larger = nearer") image: near is red/yellow, far is blue.

    Args:
        disparity: ``[H,W]`` float; NaN/Inf pixels are drawn black.
        lo, hi: Value range mapped to the ends of the colour map (default: the finite min/max).

    Returns:
        ``uint8`` RGB ``[H,W,3]`` (OpenCV's Turbo colour map).
    """
    d = np.asarray(disparity, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"disparity must have shape [H,W], got {d.shape}")
    if d.size == 0:
        return np.zeros((*d.shape, 3), dtype=np.uint8)
    # min/max propagate NaN and reach ±Inf, so finite extremes mean an all-finite image: the
    # usual case, which then needs no masks (a mask pass and a masked copy cost more than the rest).
    d_min, d_max = float(d.min()), float(d.max())
    all_finite = math.isfinite(d_min) and math.isfinite(d_max)
    finite = None if all_finite else np.isfinite(d)
    if lo is None or hi is None:
        if all_finite:
            lo_, hi_ = d_min, d_max
        else:
            vals = d[finite]
            lo_, hi_ = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
        lo = lo_ if lo is None else lo
        hi = hi_ if hi is None else hi
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    idx = ((d if all_finite else np.where(finite, d, lo)) - lo) * scale  # float32
    np.clip(idx, 0, 255, out=idx)
    bgr = cv2.applyColorMap(idx.astype(np.uint8), cv2.COLORMAP_TURBO)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if not all_finite:
        rgb[~finite] = 0
    return rgb


def colorize_normals(normals_optical: np.ndarray) -> np.ndarray:
    """The usual normal colouring (as the Lotus/DSINE visualisations): RGB = (n_model + 1) / 2.

    Args:
        normals_optical: ``[H,W,3]`` unit normals in the ROS optical frame; NaN drawn black.

    Returns:
        ``uint8`` RGB ``[H,W,3]``. A wall facing the camera is light blue (128, 128, 255).
    """
    n = np.asarray(normals_optical, dtype=np.float32)
    if n.ndim != 3 or n.shape[-1] != 3:
        raise ValueError(f"normals_optical must have shape [H,W,3], got {n.shape}")
    # (n_model + 1)/2 = (1 − n)/2, scaled and rounded half up, in place (bit-identical to
    # optical_to_model(n) * 255 + 0.5 clipped); C order so the result is a plain RGB image.
    x = np.subtract(1.0, n, order="C")
    x /= 2.0
    x *= 255.0
    x += 0.5
    np.clip(x, 0, 255, out=x)
    # A non-finite channel makes the channel sum non-finite: the exact mask only when needed.
    if not np.isfinite(n[..., 0] + n[..., 1] + n[..., 2]).all():
        x[~np.isfinite(n).all(axis=-1)] = 0.0
    return x.astype(np.uint8)
