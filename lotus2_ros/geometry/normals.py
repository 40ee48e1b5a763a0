"""Surface-normal conventions: the model's (DSINE/Lotus) frame ⇄ the ROS optical frame.

The model decodes normals as an RGB image ``u`` in ``[0, 1]`` with ``n = 2u − 1`` in the
DSINE/Lotus convention (x left, y up, z toward the viewer). The ROS optical frame is x right,
y down, z forward, so a camera-facing normal maps as ``n_ros = (−n_x, −n_y, −n_z)``. In ROS terms
a wall facing the camera is ``(0, 0, −1)`` and a floor seen by a level camera is ``(0, −1, 0)``.
"""

from __future__ import annotations

import cv2
import numpy as np

from .bands import row_bands

#: Vectors shorter than this are treated as undefined (NaN) when normalising.
MIN_NORM = 1e-6


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-normalise ``[..., 3]`` vectors; NaN where the length is below ``MIN_NORM`` or not finite."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.shape[-1:] != (3,):
        raise ValueError(f"vectors must have shape [..., 3], got {v.shape}")
    # The result is C-contiguous whatever the input layout, so copies into messages are memcpys.
    out = np.empty(v.shape, dtype=np.float32)
    # At least 2-D, so that the components are arrays (a single vector's would be 0-d scalars).
    v2, out2 = (v, out) if v.ndim > 1 else (v[None], out[None])
    _normalize_components((v2[..., 0], v2[..., 1], v2[..., 2]), (out2[..., 0], out2[..., 1], out2[..., 2]))
    return out


def _normalize_components(components: tuple[np.ndarray, np.ndarray, np.ndarray],
                          out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Writes ``v / |v|`` per component (NaN where ``|v|`` is below ``MIN_NORM`` or not finite).

    ``components`` and ``out`` are three same-shape float32 arrays each, of any strides (the
    channels of an ``[..., 3]`` array, or contiguous channel planes). Per-component arithmetic
    instead of ``np.linalg.norm`` and a broadcast divide: the same float32 operations in the same
    order (``x*x + y*y + z*z``, sqrt, divide: bit-identical), several times faster than reducing
    over and broadcasting along a length-3 axis.
    """
    x, y, z = components
    sq = x * x
    tmp = y * y
    sq += tmp
    np.multiply(z, z, out=tmp)
    sq += tmp
    norm = np.sqrt(sq, out=sq)  # [...]
    # Every length valid (the usual case) <=> min >= MIN_NORM and max finite (min/max propagate
    # NaN, which fails both tests): two fast reductions instead of building the mask.
    all_valid = norm.size == 0 or bool(norm.min() >= MIN_NORM) and bool(norm.max() < np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in range(3):
            np.divide(components[c], norm, out=out[c])
    if not all_valid:
        bad = ~((norm >= MIN_NORM) & (norm < np.inf))  # NaN compares False
        for c in range(3):
            out[c][bad] = np.nan


def model_to_optical(unit_rgb: np.ndarray) -> np.ndarray:
    """Decoded normal image ``[..., 3]`` in ``[0, 1]`` (model convention) → unit normals, ROS optical frame.

    Returns:
        ``float32`` ``[..., 3]`` unit vectors; NaN where the decoded vector has no direction.
    """
    u = np.asarray(unit_rgb, dtype=np.float32)
    return normalize(1.0 - 2.0 * u)  # −(2u − 1)


def planar_model_to_optical(unit_planes: np.ndarray) -> np.ndarray:
    """:func:`model_to_optical` for channel-planar input, as a decoder gives it (``[B,3,H,W]``).

    Args:
        unit_planes: ``[..., 3, H, W]`` decoded normal image in ``[0, 1]`` (model convention).

    Returns:
        ``float32`` ``[..., H, W, 3]`` C-contiguous unit vectors in the ROS optical frame, NaN
        where the decoded vector has no direction: bit-identical to
        ``model_to_optical(np.moveaxis(unit_planes, -3, -1))``.
    """
    u = np.asarray(unit_planes, dtype=np.float32)
    if u.ndim < 3 or u.shape[-3] != 3:
        raise ValueError(f"unit_planes must have shape [..., 3, H, W], got {u.shape}")
    # 1 − 2u on whole contiguous planes, in place after the first pass (2u is exact, so −2u + 1
    # rounds as 1 − 2u does).
    v = np.multiply(u, -2.0, dtype=np.float32)  # [..., 3, H, W], a fresh C-contiguous array
    v += 1.0
    return normalize_planes(v)


def normalize_planes(planes: np.ndarray) -> np.ndarray:
    """:func:`normalize` for channel-planar vectors: ``[..., 3, H, W]`` → ``[..., H, W, 3]`` unit vectors.

    Bit-identical to ``normalize(np.moveaxis(planes, -3, -1))`` (NaN where the length is below
    ``MIN_NORM`` or not finite). Runs over bands of rows (:mod:`.bands`): per band, the passes of
    :func:`_normalize_components` on contiguous plane rows, then one ``cv2.merge`` interleaves the
    band into the result, so the whole image is read once and written once.
    """
    v = np.ascontiguousarray(planes, dtype=np.float32)
    if v.ndim < 3 or v.shape[-3] != 3:
        raise ValueError(f"planes must have shape [..., 3, H, W], got {v.shape}")
    height, width = v.shape[-2:]
    out = np.empty((*v.shape[:-3], height, width, 3), dtype=np.float32)  # [..., H, W, 3]
    if out.size == 0:
        return out
    flat_v = v.reshape(-1, 3, height, width)
    flat_out = out.reshape(-1, height, width, 3)
    bands = list(row_bands(height, width))
    unit = np.empty((3, bands[0].stop - bands[0].start, width), dtype=np.float32)  # one band's planes
    for i in range(flat_v.shape[0]):
        for rows in bands:
            n = rows.stop - rows.start
            u = unit[:, :n]  # [3, n, W], each plane contiguous
            _normalize_components((flat_v[i, 0, rows], flat_v[i, 1, rows], flat_v[i, 2, rows]), (u[0], u[1], u[2]))
            cv2.merge([u[0], u[1], u[2]], dst=flat_out[i, rows])
    return out


def optical_to_model(normals_optical: np.ndarray) -> np.ndarray:
    """Unit normals in the ROS optical frame ``[..., 3]`` → the model's ``[0, 1]`` RGB encoding.

    The inverse of :func:`model_to_optical` for unit vectors (NaN stays NaN).
    """
    n = np.asarray(normals_optical, dtype=np.float32)
    if n.shape[-1:] != (3,):
        raise ValueError(f"normals_optical must have shape [..., 3], got {n.shape}")
    return (1.0 - n) / 2.0  # u = (n_model + 1) / 2 with n_model = −n
