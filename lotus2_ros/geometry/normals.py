"""Surface-normal conventions: the model's (DSINE/Lotus) frame ⇄ the ROS optical frame.

The model decodes normals as an RGB image ``u`` in ``[0, 1]`` with ``n = 2u − 1`` in the
DSINE/Lotus convention (x left, y up, z toward the viewer). The ROS optical frame is x right,
y down, z forward, so a camera-facing normal maps as ``n_ros = (−n_x, −n_y, −n_z)``. In ROS terms
a wall facing the camera is ``(0, 0, −1)`` and a floor seen by a level camera is ``(0, −1, 0)``.
"""

from __future__ import annotations

import numpy as np

#: Vectors shorter than this are treated as undefined (NaN) when normalising.
MIN_NORM = 1e-6


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit-normalise ``[..., 3]`` vectors; NaN where the length is below ``MIN_NORM`` or not finite."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.shape[-1:] != (3,):
        raise ValueError(f"vectors must have shape [..., 3], got {v.shape}")
    # Per-component arithmetic instead of np.linalg.norm and a broadcast divide: the same float32
    # operations in the same order (bit-identical), several times faster than reducing over and
    # broadcasting along a length-3 axis. The result is C-contiguous whatever the input layout
    # (decoded normals arrive channel-planar from torch), so copies into messages are memcpys.
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    sq = x * x
    sq += y * y
    sq += z * z
    norm = np.sqrt(sq)  # [...]
    out = np.empty(v.shape, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in range(3):
            np.divide(v[..., c], norm, out=out[..., c])
    bad = ~((norm >= MIN_NORM) & (norm < np.inf))  # NaN compares False
    if bad.any():
        out[bad] = np.nan
    return out


def model_to_optical(unit_rgb: np.ndarray) -> np.ndarray:
    """Decoded normal image ``[..., 3]`` in ``[0, 1]`` (model convention) → unit normals, ROS optical frame.

    Returns:
        ``float32`` ``[..., 3]`` unit vectors; NaN where the decoded vector has no direction.
    """
    u = np.asarray(unit_rgb, dtype=np.float32)
    return normalize(1.0 - 2.0 * u)  # −(2u − 1)


def optical_to_model(normals_optical: np.ndarray) -> np.ndarray:
    """Unit normals in the ROS optical frame ``[..., 3]`` → the model's ``[0, 1]`` RGB encoding.

    The inverse of :func:`model_to_optical` for unit vectors (NaN stays NaN).
    """
    n = np.asarray(normals_optical, dtype=np.float32)
    if n.shape[-1:] != (3,):
        raise ValueError(f"normals_optical must have shape [..., 3], got {n.shape}")
    return (1.0 - n) / 2.0  # u = (n_model + 1) / 2 with n_model = −n
