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


def planar_model_to_optical(unit_planes: np.ndarray, out: np.ndarray | None = None,
                            colorized: np.ndarray | None = None) -> np.ndarray:
    """:func:`model_to_optical` for channel-planar input, as a decoder gives it (``[B,3,H,W]``).

    Args:
        unit_planes: ``[..., 3, H, W]`` decoded normal image in ``[0, 1]`` (model convention).
        out: C-contiguous float32 ``[..., H, W, 3]`` array to write to (default: a new one).
        colorized: C-contiguous uint8 ``[..., H, W, 3]`` array to draw the normals' colour image
            into in the same pass (what :func:`lotus2_ros.io.visualize.colorize_normals` gives).

    Returns:
        ``float32`` ``[..., H, W, 3]`` C-contiguous unit vectors in the ROS optical frame (``out``
        if given), NaN where the decoded vector has no direction: bit-identical to
        ``model_to_optical(np.moveaxis(unit_planes, -3, -1))``.
    """
    u = np.asarray(unit_planes, dtype=np.float32)
    if u.ndim < 3 or u.shape[-3] != 3:
        raise ValueError(f"unit_planes must have shape [..., 3, H, W], got {u.shape}")
    return _planes_to_unit(u, decoded=True, out=out, colorized=colorized)


def normal_colour_components(n: tuple[np.ndarray, np.ndarray, np.ndarray],
                             scratch: tuple[np.ndarray, np.ndarray, np.ndarray],
                             out: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Writes the colour bytes of optical-frame unit normals, component by component.

    RGB = (n_model + 1)/2 · 255 rounded half up, n_model = −n; black where a component is not
    finite. ``n`` (float32), ``scratch`` (float32) and ``out`` (uint8) are three same-shape arrays
    each, of any strides (an ``[..., 3]`` array's channels or contiguous planes).

    (n_model + 1)/2 = (1 − n)/2. Halving 1 − n is exact (it is 0 or a normal float), so
    (1 − n)·127.5 rounds the same real number as (1 − n)/2·255: bit-identical to
    ``optical_to_model(n) * 255 + 0.5`` clipped to [0, 255] and truncated, with one pass less.
    """
    for component, x in zip(n, scratch, strict=True):
        np.subtract(1.0, component, out=x)
        x *= 127.5
        x += 0.5
    # Unit normals give values in [0.5, 255.5]: truncation alone is then exact (no clip), and a
    # finite min and max show that no component was NaN/Inf (they propagate NaN), so the
    # per-pixel mask is only built when needed. Large finite inputs also take the exact slow path.
    if not all(float(x.min()) >= 0.0 and float(x.max()) < 256.0 for x in scratch):
        for x in scratch:
            np.clip(x, 0, 255, out=x)
        bad = ~(np.isfinite(n[0]) & np.isfinite(n[1]) & np.isfinite(n[2]))
        if bad.any():
            for x in scratch:
                x[bad] = 0.0
    for c in range(3):
        np.copyto(out[c], scratch[c], casting="unsafe")  # float → uint8 truncates, as astype does


def normalize_planes(planes: np.ndarray) -> np.ndarray:
    """:func:`normalize` for channel-planar vectors: ``[..., 3, H, W]`` → ``[..., H, W, 3]`` unit vectors.

    Bit-identical to ``normalize(np.moveaxis(planes, -3, -1))`` (NaN where the length is below
    ``MIN_NORM`` or not finite).
    """
    v = np.asarray(planes, dtype=np.float32)
    if v.ndim < 3 or v.shape[-3] != 3:
        raise ValueError(f"planes must have shape [..., 3, H, W], got {v.shape}")
    return _planes_to_unit(v, decoded=False)


def _planes_to_unit(planes: np.ndarray, decoded: bool, out: np.ndarray | None = None,
                    colorized: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors ``[..., H, W, 3]`` from ``[..., 3, H, W]`` planes: of ``1 − 2·planes`` if ``decoded``.

    Runs over bands of rows (:mod:`.bands`): per band, ``1 − 2u`` (2u is exact, so ``−2u + 1``
    rounds as ``1 − 2u`` does), the passes of :func:`_normalize_components` and, with
    ``colorized``, of :func:`normal_colour_components` on contiguous plane rows, then one
    ``cv2.merge`` each interleaves the band into the results: the input is read once and the
    results written once.
    """
    height, width = planes.shape[-2:]
    shape = (*planes.shape[:-3], height, width, 3)
    if out is None:
        out = np.empty(shape, dtype=np.float32)  # [..., H, W, 3]
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 {shape} array, got {out.dtype} {out.shape}")
    if colorized is not None and (colorized.shape != shape or colorized.dtype != np.uint8
                                  or not colorized.flags.c_contiguous):
        raise ValueError(f"colorized must be a C-contiguous uint8 {shape} array, got {colorized.dtype} "
                         f"{colorized.shape}")
    if out.size == 0:
        return out
    flat_v = planes.reshape(-1, 3, height, width)
    flat_out = out.reshape(-1, height, width, 3)
    flat_rgb = None if colorized is None else colorized.reshape(-1, height, width, 3)

    bands = list(row_bands(height, width))
    rows_max = bands[0].stop - bands[0].start
    unit = np.empty((3, rows_max, width), dtype=np.float32)  # one band's planes
    coded = np.empty((3, rows_max, width), dtype=np.float32) if decoded or colorized is not None else None
    rgb = np.empty((3, rows_max, width), dtype=np.uint8) if colorized is not None else None
    for i in range(flat_v.shape[0]):
        for rows in bands:
            n = rows.stop - rows.start
            v = [flat_v[i, c, rows] for c in range(3)]
            if decoded:
                for c in range(3):
                    np.multiply(v[c], -2.0, out=coded[c, :n])
                    coded[c, :n] += 1.0
                v = [coded[c, :n] for c in range(3)]
            u = unit[:, :n]  # [3, n, W], each plane contiguous
            _normalize_components((v[0], v[1], v[2]), (u[0], u[1], u[2]))
            cv2.merge([u[0], u[1], u[2]], dst=flat_out[i, rows])
            if flat_rgb is not None:  # the colours while the unit planes are in cache (coded is free again)
                normal_colour_components((u[0], u[1], u[2]), (coded[0, :n], coded[1, :n], coded[2, :n]),
                                         (rgb[0, :n], rgb[1, :n], rgb[2, :n]))
                cv2.merge([rgb[0, :n], rgb[1, :n], rgb[2, :n]], dst=flat_rgb[i, rows])
    return out


def optical_to_model(normals_optical: np.ndarray) -> np.ndarray:
    """Unit normals in the ROS optical frame ``[..., 3]`` → the model's ``[0, 1]`` RGB encoding.

    The inverse of :func:`model_to_optical` for unit vectors (NaN stays NaN).
    """
    n = np.asarray(normals_optical, dtype=np.float32)
    if n.shape[-1:] != (3,):
        raise ValueError(f"normals_optical must have shape [..., 3], got {n.shape}")
    return (1.0 - n) / 2.0  # u = (n_model + 1) / 2 with n_model = −n
