"""Colour images of predictions for people: colour-mapped disparity and the usual normal colouring."""

from __future__ import annotations

import cv2
import numpy as np

from ..geometry.normals import optical_to_model


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
    finite = np.isfinite(d)
    if lo is None or hi is None:
        vals = d[finite]
        lo_, hi_ = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
        lo = lo_ if lo is None else lo
        hi = hi_ if hi is None else hi
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    idx = np.clip((np.where(finite, d, lo) - lo) * scale, 0, 255).astype(np.uint8)
    rgb = cv2.applyColorMap(idx, cv2.COLORMAP_TURBO)[..., ::-1]  # OpenCV gives BGR
    rgb = np.ascontiguousarray(rgb)
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
    unit = optical_to_model(n)
    valid = np.isfinite(unit).all(axis=-1)
    rgb = np.clip(np.where(valid[..., None], unit, 0.0) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return rgb
