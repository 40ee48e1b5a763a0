"""Colour images of predictions for people: colour-mapped disparity and the usual normal colouring."""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

from ..geometry.bands import row_bands
from ..geometry.normals import normal_colour_components


def colorize_disparity(disparity: np.ndarray, lo: float | None = None, hi: float | None = None,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Colour-map a disparity (or any "larger = nearer") image: near is red/yellow, far is blue.

    Args:
        disparity: ``[H,W]`` float; NaN/Inf pixels are drawn black.
        lo, hi: Value range mapped to the ends of the colour map (default: the finite min/max).
        out: C-contiguous ``uint8 [H,W,3]`` array to draw into (default: a new one).

    Returns:
        ``uint8`` RGB ``[H,W,3]`` (OpenCV's Turbo colour map), ``out`` if given.
    """
    d = np.asarray(disparity, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"disparity must have shape [H,W], got {d.shape}")
    out = _rgb_out(out, d.shape)
    if d.size == 0:
        return out
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
    idx = _colormap_index(d if all_finite else np.where(finite, d, lo), lo, scale)  # float32
    # Clipping to [0, 255] changes nothing when every index is already in [0, 256) (truncation
    # then gives the same byte): value -> index is monotone (each rounded step is), so the extreme
    # indices are those of the extreme values, computed as scalars with the same operations.
    # Skips a full pass in the usual case (the default range).
    ends = _colormap_index(np.array([d_min, d_max], np.float32), lo, scale) if all_finite else None
    if ends is None or not (ends[0] >= 0.0 and ends[1] < 256.0):
        np.clip(idx, 0, 255, out=idx)
    # Turbo with an RGB-ordered table: the same look-up applyColorMap does, without the
    # BGR -> RGB pass afterwards.
    cv2.applyColorMap(idx.astype(np.uint8), _turbo_rgb_lut(), dst=out)
    if not all_finite:
        out[~finite] = 0
    return out


def _rgb_out(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """``out`` checked to be a C-contiguous ``uint8 [H,W,3]`` image of ``shape``, or a new one."""
    if out is None:
        return np.empty((*shape[:2], 3), dtype=np.uint8)
    if out.shape != (*shape[:2], 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous uint8 {(*shape[:2], 3)} array, got {out.dtype} {out.shape}")
    return out


def _colormap_index(values: np.ndarray, lo: float, scale: float) -> np.ndarray:
    """``(values - lo) * scale`` as one new array (float32 for float32 values and Python-float bounds)."""
    idx = values - lo
    idx *= scale
    return idx


def turbo_rgb_table() -> np.ndarray:
    """The colour map of :func:`colorize_disparity`: ``[256,3]`` uint8 RGB, index = colour-map position."""
    return _turbo_rgb_lut()[:, 0, :].copy()


@lru_cache(maxsize=1)
def _turbo_rgb_lut() -> np.ndarray:
    """OpenCV's Turbo colour map as a ``[256,1,3]`` uint8 RGB table (taken from applyColorMap itself)."""
    bgr = cv2.applyColorMap(np.arange(256, dtype=np.uint8).reshape(256, 1), cv2.COLORMAP_TURBO)  # [256,1,3]
    return np.ascontiguousarray(bgr[..., ::-1])


def colorize_relative(values: np.ndarray, kind: str, lo: float | None = None, hi: float | None = None,
                      out: np.ndarray | None = None) -> np.ndarray:
    """Colour-map a relative depth output so that near is red and far blue, whatever its kind.

    ``kind`` ``"disparity"`` (larger = nearer) is mapped as it is, ``"depth"`` (larger = farther)
    negated first. ``lo``/``hi``: the value range mapped to the ends (default: the finite extremes).
    ``out``: as for :func:`colorize_disparity`.
    """
    if kind == "disparity":
        return colorize_disparity(values, lo, hi, out)
    if kind == "depth":
        return colorize_disparity(-np.asarray(values, dtype=np.float32), None if hi is None else -hi,
                                  None if lo is None else -lo, out)
    raise ValueError(f"kind must be disparity or depth, got {kind!r}")


def colorize_normals(normals_optical: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The usual normal colouring (as the Lotus/DSINE visualisations): RGB = (n_model + 1) / 2.

    Args:
        normals_optical: ``[H,W,3]`` unit normals in the ROS optical frame; NaN drawn black.
        out: C-contiguous ``uint8 [H,W,3]`` array to draw into (default: a new one).

    Returns:
        ``uint8`` RGB ``[H,W,3]`` (``out`` if given). A wall facing the camera is light blue (128, 128, 255).
    """
    n = np.asarray(normals_optical, dtype=np.float32)
    if n.ndim != 3 or n.shape[-1] != 3:
        raise ValueError(f"normals_optical must have shape [H,W,3], got {n.shape}")
    # The colour of each component (geometry.normals.normal_colour_components), over bands of rows
    # (geometry.bands), so the passes after the first read cache, not memory.
    height, width = n.shape[:2]
    out = _rgb_out(out, n.shape)  # C order: a plain RGB image
    if out.size == 0:
        return out
    bands = list(row_bands(height, width))
    buf = np.empty((bands[0].stop - bands[0].start, width, 3), dtype=np.float32)
    for rows in bands:
        nb, x, rgb = n[rows], buf[: rows.stop - rows.start], out[rows]
        normal_colour_components((nb[..., 0], nb[..., 1], nb[..., 2]), (x[..., 0], x[..., 1], x[..., 2]),
                                 (rgb[..., 0], rgb[..., 1], rgb[..., 2]))
    return out


def draw_depth_points(rgb: np.ndarray, u_px: np.ndarray, v_px: np.ndarray, depth_m: np.ndarray, *,
                      radius_px: int = 1, near_m: float | None = None, far_m: float | None = None) -> np.ndarray:
    """Draw points on a copy of an image, coloured by depth (Turbo on inverse depth: near red, far blue).

    Points are drawn far to near (nearer ones on top) as discs of ``radius_px``; colours are
    spread over ``[near_m, far_m]`` (default: the 2nd and 98th percentile of the depths).

    Args:
        rgb: ``uint8`` ``[H,W,3]`` image.
        u_px, v_px: ``[M]`` column and row of each point, pixels (centres at integers).
        depth_m: ``[M]`` depth of each point, metres (> 0).
        radius_px: Disc radius, pixels (0: single pixels).

    Returns:
        ``uint8`` ``[H,W,3]`` RGB.
    """
    out = np.array(rgb, dtype=np.uint8, copy=True)
    z = np.asarray(depth_m, dtype=np.float64).reshape(-1)
    if z.size == 0:
        return out
    h, w = out.shape[:2]
    cols = np.floor(np.asarray(u_px, dtype=np.float64).reshape(-1) + 0.5).astype(np.int64)
    rows = np.floor(np.asarray(v_px, dtype=np.float64).reshape(-1) + 0.5).astype(np.int64)
    near = float(np.percentile(z, 2)) if near_m is None else near_m
    far = float(np.percentile(z, 98)) if far_m is None else far_m
    inverse = 1.0 / np.clip(z, 1e-6, None)
    lo, hi = 1.0 / max(far, 1e-6), 1.0 / max(near, 1e-6)
    index = np.clip((inverse - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255).astype(np.uint8)
    colours = _turbo_rgb_lut()[index, 0]  # [M,3]
    r = int(radius_px)
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dx * dx + dy * dy <= r * r + r]
    y = (rows[None, :] + np.array([o[0] for o in offsets])[:, None]).reshape(-1)  # [K·M] disc pixels
    x = (cols[None, :] + np.array([o[1] for o in offsets])[:, None]).reshape(-1)
    point = np.tile(np.arange(z.size), len(offsets))
    inside = np.flatnonzero((y >= 0) & (y < h) & (x >= 0) & (x < w))
    pixel, point = y[inside] * w + x[inside], point[inside]
    # Per pixel the nearest point wins (a z-buffer): sort by pixel, then depth; first of each pixel.
    order = np.lexsort((z[point], pixel))
    pixel, point = pixel[order], point[order]
    first = np.flatnonzero(np.r_[True, pixel[1:] != pixel[:-1]])
    out.reshape(-1, 3)[pixel[first]] = colours[point[first]]
    return out
