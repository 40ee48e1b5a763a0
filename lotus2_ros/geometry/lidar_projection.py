"""LiDAR points -> camera image: projection, baseline-occlusion removal, disparity sampling.

Frames and units: the cloud is in the LiDAR frame (any axes), metres; ``T_camera_lidar`` ([4,4])
maps it into the camera's optical frame (x right, y down, z forward). Depth is z-depth along the
optical axis in metres, like every depth image in the package.

Two camera models, chosen by ``rectified`` to match the image the prediction was made on:

* ``rectified=True`` (``image_rect``, or a raw image that the node rectified before the
  model): the rectification rotation ``R`` (3x3) of ROS ``camera_info``, then the full 3x4
  ``P``: ``[u v w]' = P·[R·p; 1]``, ``Tx``, ``Ty`` and ``Tz`` included, for a cloud brought into
  the frame the camera_info's ``frame_id`` names (see :mod:`~lotus2_ros.geometry.camera_model`
  for the convention and what it assumes). ``z_m`` is then ``w``, the depth seen from this
  camera's own centre. ``D`` is ignored.
* ``rectified=False`` (``image_raw``): ``K`` plus plumb_bob distortion ``D``, exactly
  :func:`~lotus2_ros.geometry.camera.points_to_pixels` with ``apply_distortion=True``. Points
  whose undistorted direction lies well outside the image are dropped before distorting, because
  the distortion polynomial folds such directions back into the image.

Occlusions from the camera-LiDAR baseline (:func:`parallax_occlusion_mask`). The LiDAR sees some
surfaces that a foreground object hides from the camera. Every camera ray and LiDAR ray to a
point ``p`` lie in one epipolar plane, the plane through the baseline and ``p``. Measure, in that
plane, the angle of a point from the baseline direction seen from the camera centre
(``alpha_C``) and from the LiDAR centre (``alpha_L``). Another point ``q`` lies inside the
triangle (camera, LiDAR, ``p``), i.e. in front of ``p`` between the two lines of sight, exactly
when the two orders disagree: ``alpha_C(q) < alpha_C(p)`` but ``alpha_L(q) > alpha_L(p)``. A
surface sampled there by the LiDAR and reaching the camera ray hides ``p`` from the camera.

* Why not a z-buffer: the test compares orders, not depths, so it does not remove far ground
  points because nearer ground points project a few pixels below them (what a minimum-depth
  window of a LiDAR's ring spacing does), and range noise moves a point along its LiDAR ray,
  which leaves ``alpha_L`` unchanged.
* Cost: points are grouped in bins of the epipolar-plane angle; in each bin, after one sort by
  ``alpha_C`` (a SIMD sort of packed integer keys), a running maximum of ``alpha_L`` finds the
  flips: O(N log N), no Python loop.
* Outliers: a gross range error far too short would flip a whole bin, so by default only
  *confirmed* points act as occluders: points with a ring mate next to them in the sorted bin
  (same ``alpha_L``, close ``alpha_C``: the same surface an azimuth step away). An outlier is
  moved along its beam, away from its ring mates in ``alpha_C``, and stays unconfirmed.
* Limits: a hidden point is found only when the LiDAR sampled the occluder inside the triangle,
  i.e. where the parallax ``baseline·(1/z_near − 1/z_far)`` exceeds the LiDAR's ring spacing
  (dense LiDARs, near occluders); the hidden points left are close to the occluder's outline
  in the image, where the depth-edge test below removes many, and the robust fit treats the
  rest as outliers. Bins of ``epipolar_bin_deg`` should hold two or three azimuth steps; points
  of neighbouring azimuths in one bin cost a few visible points next to depth edges.

Depth discontinuities (:func:`sample_disparity`). A sample is rejected when the predicted
disparity varies by more than ``max_edge_variation`` of the spread of the sampled disparities
within a ``(2w+1)^2`` window around the point's pixel (probed at the window's four corners and
its centre: an edge crossing the window separates two of them). The network blurs depth edges,
so LiDAR points next to an edge pair their exact depth with a mixed prediction; those are the
samples this removes. The kept points are then sampled bilinearly: on a plane, disparity is an
affine function of the pixel coordinates, so bilinear sampling is exact there, while the
nearest pixel is off by up to half a pixel of the depth gradient (about 1 % on the road 20 m
ahead of a KITTI camera: f = 721 px, 1.65 m high). Bilinear sampling never mixes across an
edge, since the window that passed the test contains its 2x2 footprint (``"nearest"`` remains
available).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from lotus2_ros.geometry.camera import PinholeCamera, distort_normalized, undistort_normalized
from lotus2_ros.geometry.camera_model import decompose_projection

__all__ = [
    "DisparitySamples",
    "LidarProjection",
    "LidarProjectionConfig",
    "parallax_occlusion_mask",
    "project_lidar_points",
    "sample_disparity",
]

# Baselines shorter than this cause no measurable parallax; the occlusion test is skipped.
_MIN_BASELINE_M = 1e-4
_IDENTITY = np.eye(3)
_HOMOGENEOUS_ROW = np.array([0.0, 0.0, 0.0, 1.0])
# Undistorted directions beyond the image's own undistorted border by this factor are dropped
# before distortion (plumb_bob folds far-off-axis directions back into the image).
_DISTORTION_BORDER_MARGIN = 0.15


@dataclass(frozen=True)
class LidarProjectionConfig:
    """Settings of :func:`project_lidar_points` and :func:`sample_disparity`.

    Attributes:
        min_range_m: Points with a camera z-depth below this are dropped, metres (>= 0).
        max_range_m: Points with a camera z-depth above this are dropped, metres.
        occlusion_filter: Remove points that the camera-LiDAR baseline hides from the camera.
        epipolar_bin_deg: Width of the epipolar-plane bins of the occlusion test, degrees. About
            two or three LiDAR azimuth steps: points of one bin are compared with each other.
        occlusion_tolerance_deg: A point counts as in front of another only when the LiDAR sees
            it at least this much further from the baseline, degrees (absorbs the spread of one
            ring's elevation inside a bin).
        confirm_occluders: Count a point as an occluder only when a ring mate on its surface
            (same LiDAR angle, close camera angle, same bin) confirms it, so that a gross range
            outlier does not erase the points behind it.
        view_margin_px: Points up to this far outside the image take part in the occlusion test
            as occluders, pixels.
        edge_window_px: Half size ``w`` of the window of the depth-edge test, pixels (0 = off).
        max_edge_variation: A sample is rejected when the predicted disparity varies by more
            than this fraction of the sampled disparities' spread (max - min) inside its window.
        interpolation: ``"bilinear"`` (default) or ``"nearest"`` sampling of the prediction at
            the kept points.
        max_samples: At most this many points are sampled for the fit: an even subsample of
            the projected points (0 = all). The fit refines on 2048 points anyway, so a dense
            scan only costs time beyond this.
    """

    min_range_m: float = 0.3
    max_range_m: float = 120.0
    occlusion_filter: bool = True
    epipolar_bin_deg: float = 1.25
    occlusion_tolerance_deg: float = 0.15
    confirm_occluders: bool = True
    view_margin_px: int = 16
    edge_window_px: int = 2
    max_edge_variation: float = 0.05
    interpolation: str = "bilinear"
    max_samples: int = 6000

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_range_m) and self.min_range_m >= 0.0):
            raise ValueError(f"min_range_m must be finite and >= 0, got {self.min_range_m!r}")
        if not (math.isfinite(self.max_range_m) and self.max_range_m > self.min_range_m):
            raise ValueError(
                f"max_range_m must be finite and > min_range_m={self.min_range_m!r}, "
                f"got {self.max_range_m!r}"
            )
        if not 0.01 <= self.epipolar_bin_deg <= 45.0:
            raise ValueError(
                f"epipolar_bin_deg must be in [0.01, 45], got {self.epipolar_bin_deg!r}"
            )
        if not (math.isfinite(self.occlusion_tolerance_deg) and self.occlusion_tolerance_deg >= 0):
            raise ValueError(
                f"occlusion_tolerance_deg must be >= 0, got {self.occlusion_tolerance_deg!r}"
            )
        for name in ("view_margin_px", "edge_window_px", "max_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not (math.isfinite(self.max_edge_variation) and self.max_edge_variation > 0.0):
            raise ValueError(
                f"max_edge_variation must be a positive number, got {self.max_edge_variation!r}"
            )
        if self.interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation must be 'bilinear' or 'nearest', got {self.interpolation!r}"
            )


@dataclass(frozen=True, eq=False)
class LidarProjection:
    """LiDAR points that the camera sees, in image coordinates.

    Attributes:
        u_px: [M] float32 column of each point in the image projected into (rectified or raw),
            pixels (pixel centres at integers).
        v_px: [M] float32 row, pixels.
        z_m: [M] float32 z-depth in the camera optical frame (for ``rectified=True``: in this
            camera's own rectified frame, ``w`` of ``P·[R·p; 1]``), metres.
        indices: [M] int64 row of each point in the input cloud (flattened row-major when
            organised).
        width_px: Width of the image projected into, pixels.
        height_px: Height of the image, pixels.
        num_points: Rows in the input cloud.
        num_in_view: Finite points inside the depth window and the image, before the occlusion
            test.
        num_occluded: Points of ``num_in_view`` removed as hidden from the camera.
    """

    u_px: np.ndarray
    v_px: np.ndarray
    z_m: np.ndarray
    indices: np.ndarray
    width_px: int
    height_px: int
    num_points: int
    num_in_view: int
    num_occluded: int

    def nearest_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, cols)``: [M] int32 indices of the pixel containing each point."""
        # u >= -0.5 inside the image, so truncation of u + 0.5 is the floor; the clip guards
        # against float32 rounding at the far border.
        rows = np.minimum((self.v_px + 0.5).astype(np.int32), self.height_px - 1)
        cols = np.minimum((self.u_px + 0.5).astype(np.int32), self.width_px - 1)
        return rows, cols


@dataclass(frozen=True, eq=False)
class DisparitySamples:
    """Predicted disparity paired with LiDAR depth at the points kept for the fit.

    Attributes:
        disparity: [K] float32 predicted (relative) disparity at each point (bilinear or
            nearest pixel, as configured).
        z_m: [K] float32 LiDAR z-depth, metres.
        indices: [K] int64 row of each point in the input cloud.
        num_edge_rejected: Points (of those sampled, see ``max_samples``) dropped by the
            depth-edge test or a non-finite prediction.
    """

    disparity: np.ndarray
    z_m: np.ndarray
    indices: np.ndarray
    num_edge_rejected: int


def _max_abs_difference(a: np.ndarray, b: np.ndarray) -> float:
    # Cheaper than np.allclose, which costs ~0.1 ms per call.
    return float(np.max(np.abs(np.subtract(a, b))))


def _is_rotation(R: np.ndarray) -> bool:
    (a, b, c), (d, e, f), (g, h, i) = R.tolist()  # plain floats: cheaper than numpy on 3x3
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return _max_abs_difference(R @ R.T, _IDENTITY) <= 1e-6 and det > 0.0


def _check_pose(T_camera_lidar: np.ndarray) -> np.ndarray:
    T = np.asarray(T_camera_lidar, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(
            f"T_camera_lidar must be a finite [4,4] matrix, got shape {np.shape(T_camera_lidar)}"
        )
    if _max_abs_difference(T[3], _HOMOGENEOUS_ROW) > 1e-9:
        raise ValueError(f"T_camera_lidar's last row must be (0, 0, 0, 1), got {T[3].tolist()}")
    if not _is_rotation(T[:3, :3]):
        raise ValueError(
            f"T_camera_lidar's rotation block must be a rotation, got {T[:3, :3].tolist()}"
        )
    return T


def _rectified_model(
    camera: PinholeCamera, P: np.ndarray | None, R: np.ndarray | None
) -> tuple[np.ndarray, tuple[float, float, float, float], np.ndarray]:
    """Rotation into the rectified frame, the rectified intrinsics (fx, fy, cx, cy) and the offset
    ``t = K'^-1 P[:, 3]`` of this camera (metres): pixels are ``K'·(R·p + t)``."""
    R_arr, K, t = decompose_projection(camera.P if P is None else P, R)
    return R_arr, (float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])), t


@functools.lru_cache(maxsize=16)
def _undistorted_bounds(camera: PinholeCamera) -> tuple[float, float, float, float]:
    """Bounding box (x_min, x_max, y_min, y_max) of the image border's undistorted directions."""
    W, H = camera.width_px, camera.height_px
    u = np.concatenate(
        [
            np.linspace(-0.5, W - 0.5, 64),
            np.full(64, W - 0.5),
            np.linspace(-0.5, W - 0.5, 64),
            np.full(64, -0.5),
        ]
    )
    v = np.concatenate(
        [
            np.full(64, -0.5),
            np.linspace(-0.5, H - 0.5, 64),
            np.full(64, H - 0.5),
            np.linspace(-0.5, H - 0.5, 64),
        ]
    )
    x, y = undistort_normalized((u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy, camera.D)
    mx = _DISTORTION_BORDER_MARGIN * (x.max() - x.min())
    my = _DISTORTION_BORDER_MARGIN * (y.max() - y.min())
    return float(x.min() - mx), float(x.max() + mx), float(y.min() - my), float(y.max() + my)


def _empty_projection(width_px: int, height_px: int, num_points: int) -> LidarProjection:
    empty = np.zeros(0, dtype=np.float32)
    return LidarProjection(
        u_px=empty,
        v_px=empty.copy(),
        z_m=empty.copy(),
        indices=np.zeros(0, dtype=np.int64),
        width_px=width_px,
        height_px=height_px,
        num_points=num_points,
        num_in_view=0,
        num_occluded=0,
    )


def project_lidar_points(
    points_lidar: np.ndarray,
    T_camera_lidar: np.ndarray,
    camera: PinholeCamera,
    *,
    rectified: bool,
    P: np.ndarray | Sequence[float] | None = None,
    R: np.ndarray | Sequence[float] | None = None,
    config: LidarProjectionConfig = LidarProjectionConfig(),
) -> LidarProjection:
    """Projects a LiDAR cloud into the camera image and keeps the points the camera sees.

    Keeps points that are finite, inside the z-depth window ``[min_range_m, max_range_m]`` (so in
    front of the camera), inside the image, and (with ``occlusion_filter``) not hidden from the
    camera by the baseline parallax (see the module docstring).

    Args:
        points_lidar: [N,3] (or organised [H,W,3]) float32 or float64 points in the LiDAR
            frame, metres; points with NaN or Inf are dropped.
        T_camera_lidar: [4,4] transform from the LiDAR frame to the camera optical frame.
        camera: The camera's ``K``, ``D`` and image size.
        rectified: True when the image (and so the prediction) is rectified: project with
            the full ``P`` after ``R``. False for a raw image: project with ``K`` and ``D``.
        P: [3,4] (or 12 values) ``camera_info.p``; None uses ``camera.P`` (``[K | 0]``). Its
            last column (``Tx``, ``Ty``, ``Tz``: a stereo camera's offset) applies; ``P[2, :3]``
            must be ``(0, 0, 1)``. The image size is ``camera``'s.
        R: [3,3] (or 9 values) ``camera_info.r``, rotation from the camera frame into the
            rectified frame; None is the identity. Only with ``rectified=True``.
        config: Depth window and occlusion settings.

    Returns:
        The kept points in image coordinates with their depths and input rows.
    """
    pts = np.asarray(points_lidar)
    if pts.ndim < 2 or pts.shape[-1] != 3:
        raise ValueError(f"points_lidar must have shape [N,3] or [H,W,3], got {pts.shape}")
    pts = pts.reshape(-1, 3)  # an organised cloud, row-major
    if pts.dtype not in (np.float32, np.float64):
        pts = pts.astype(np.float64)
    T = _check_pose(T_camera_lidar)
    if not isinstance(camera, PinholeCamera):
        raise ValueError(f"camera must be a PinholeCamera, got {type(camera).__name__}")
    W, H = camera.width_px, camera.height_px
    margin = float(config.view_margin_px)
    if pts.shape[0] == 0:
        return _empty_projection(W, H, 0)

    # 1. The projection frame: p' = M p + m is the camera frame, or the rectified frame. The
    #    LiDAR centre lands on m. Bounds on x/z, y/z select the points near the image before
    #    any distortion.
    if rectified and P is None and R is None:
        M, m = T[:3, :3], T[:3, 3]  # P = [K | 0], R = I
        fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
        distorted = False
    elif rectified:
        R_rect, (fx, fy, cx, cy), offset = _rectified_model(camera, P, R)
        M = R_rect @ T[:3, :3]
        m = R_rect @ T[:3, 3] + offset  # the LiDAR centre in this camera's own frame
        distorted = False
    else:
        if P is not None or R is not None:
            raise ValueError("P and R apply only to rectified=True; the raw image uses K and D")
        M, m = T[:3, :3], T[:3, 3]
        fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
        distorted = camera.has_distortion
    if distorted:
        x_lo, x_hi, y_lo, y_hi = _undistorted_bounds(camera)
    else:
        x_lo, x_hi = (-0.5 - margin - cx) / fx, (W - 0.5 + margin - cx) / fx
        y_lo, y_hi = (-0.5 - margin - cy) / fy, (H - 0.5 + margin - cy) / fy
    affine = np.hstack([M, m[:, None]])  # [3,4]

    # 2. Cull all points with single-row affine maps (cv2.transform: SIMD and BLAS-free; a
    #    threaded BLAS call costs milliseconds on a busy CPU) to the depth window and the view
    #    bounds x_lo·z <= x <= x_hi·z, y_lo·z <= y <= y_hi·z. Then the survivors' coordinates.
    source = np.ascontiguousarray(pts).reshape(-1, 1, 3)
    z_all = cv2.transform(source, affine[2:3]).reshape(-1)  # [N]
    with np.errstate(invalid="ignore"):
        keep = z_all >= config.min_range_m
        keep &= z_all <= config.max_range_m
        bound = np.empty_like(z_all)
        for axis, lo, hi in ((0, x_lo, x_hi), (1, y_lo, y_hi)):
            # |c - centre·z| <= half·z, with c - centre·z from one affine row.
            row = affine[axis] - 0.5 * (lo + hi) * affine[2]
            offset = np.abs(cv2.transform(source, row[None]).reshape(-1))  # [N]
            np.multiply(z_all, 0.5 * (hi - lo), out=bound)
            keep &= offset <= bound
    rows = np.flatnonzero(keep)
    if rows.size == 0:
        return _empty_projection(W, H, int(pts.shape[0]))
    taken = np.take(pts, rows, axis=0).reshape(-1, 1, 3)
    coordinates = cv2.transform(taken, affine)
    x, y, z = (np.ascontiguousarray(c) for c in coordinates.reshape(-1, 3).T)  # [K] each
    occlusion = config.occlusion_filter and rows.size > 1
    if occlusion:
        # The same points in a frame around the camera-LiDAR baseline (occlusion test).
        basis, baseline_m = _baseline_basis(m)
        around = cv2.transform(taken, basis @ affine).reshape(-1, 3).T
        along, c1, c2 = (np.ascontiguousarray(c) for c in around)  # [K] each
    inverse = 1.0 / z
    xn = x * inverse
    yn = y * inverse

    # 3. Pixels: pinhole, or plumb_bob distortion for the raw image.
    if distorted:
        xd, yd = distort_normalized(xn, yn, camera.D)
        u = (fx * xd + cx).astype(z.dtype)
        v = (fy * yd + cy).astype(z.dtype)
        with np.errstate(invalid="ignore"):
            near = (u >= -0.5 - margin) & (u < W - 0.5 + margin)
            near &= (v >= -0.5 - margin) & (v < H - 0.5 + margin)
        near_rows = np.flatnonzero(near)
        rows, z, u, v = (a[near_rows] for a in (rows, z, u, v))
        if occlusion:
            along, c1, c2 = (a[near_rows] for a in (along, c1, c2))
    else:
        u = xn * fx
        u += cx
        v = yn * fy
        v += cy
    inside = (u >= -0.5) & (u < W - 0.5) & (v >= -0.5) & (v < H - 0.5)
    num_in_view = int(np.count_nonzero(inside))

    # 4. Occlusion test on everything near the view (occluders may lie just outside it).
    if occlusion:
        hidden = _parallax_hidden(
            along,
            c1,
            c2,
            baseline_m,
            math.radians(config.epipolar_bin_deg),
            math.radians(config.occlusion_tolerance_deg),
            config.confirm_occluders,
        )
        inside &= ~hidden
    keep = np.flatnonzero(inside)
    return LidarProjection(
        u_px=u[keep].astype(np.float32, copy=False),
        v_px=v[keep].astype(np.float32, copy=False),
        z_m=z[keep].astype(np.float32, copy=False),
        indices=rows[keep].astype(np.int64, copy=False),
        width_px=W,
        height_px=H,
        num_points=int(pts.shape[0]),
        num_in_view=num_in_view,
        num_occluded=num_in_view - int(keep.size),
    )


# Sort keys of the occlusion test: bin (16 bits) | alpha_C (24 bits) | point index (24 bits).
_INDEX_BITS = 24
_ALPHA_LEVELS = float(2**24 - 1)
_INDEX_MASK = np.uint64(2**_INDEX_BITS - 1)


# A confirming ring mate is looked for this many places either side in (bin, alpha_C) order
# (hidden points of the next ring can interleave with the occluder's returns).
_RING_MATE_REACH = 2


def _flip_mask(
    bins: np.ndarray,
    base_keys: np.ndarray,
    alpha_c: np.ndarray,
    alpha_l: np.ndarray,
    tolerance_rad: float,
    confirm: bool,
) -> np.ndarray:
    """Points with an occluder of their bin before them in alpha_C but beyond them in alpha_L.

    Args:
        bins: [n] uint64 epipolar-plane bin per point (consumed).
        base_keys: [n] uint64 ``alpha_C`` (quantised) << 24 | point index.
        alpha_c: [n] angle from the baseline seen from the camera, radians.
        alpha_l: [n] angle from the baseline seen from the LiDAR, radians.
        tolerance_rad: Minimum flip of alpha_L.
        confirm: Only points with a ring mate (a point within ``_RING_MATE_REACH`` places in
            the sorted order with alpha_L within the tolerance and alpha_C within twice it)
            may occlude.
    """
    # One SIMD sort of packed keys orders by (bin, alpha_C) and carries the point index along
    # (several times faster than argsort).
    bins <<= np.uint64(48)
    bins |= base_keys
    keys = np.sort(bins)
    order = (keys & _INDEX_MASK).astype(np.intp)
    keys >>= np.uint64(48)
    # alpha_L lies in [0, pi]; offsetting by 4 per bin makes one running maximum restart at
    # every bin (earlier bins always hold smaller values).
    value = keys.astype(np.float64)
    value *= 4.0
    value += alpha_l[order]  # [n] sorted by (bin, alpha_C)
    candidates = value
    if confirm:
        camera_angle = alpha_c[order]
        confirmed = np.zeros(value.size, dtype=bool)
        for lag in range(1, _RING_MATE_REACH + 1):
            # |value difference| <= tolerance also means the same bin.
            mates = np.abs(value[lag:] - value[:-lag]) <= tolerance_rad
            mates &= np.abs(camera_angle[lag:] - camera_angle[:-lag]) <= 2.0 * tolerance_rad
            confirmed[lag:] |= mates
            confirmed[:-lag] |= mates
        candidates = np.where(confirmed, value, -1.0)
    best = np.empty(value.size)
    best[0] = -1.0
    np.maximum.accumulate(candidates[:-1], out=best[1:])  # max over the points before each one
    value += tolerance_rad
    flipped = np.empty(value.size, dtype=bool)
    flipped[order] = best > value
    return flipped


def _baseline_basis(lidar_origin: np.ndarray) -> tuple[np.ndarray, float]:
    """Rows (baseline direction, e1, e2) of an orthonormal frame around the baseline, and its
    length. e1 is near the optical axis, so that the plane angle of points in front of the
    camera stays away from the +-pi wrap."""
    origin = np.asarray(lidar_origin, dtype=np.float64).reshape(3)
    length = float(np.linalg.norm(origin))
    if length < _MIN_BASELINE_M:
        return np.eye(3), length
    axis = origin / length
    e1 = np.array([0.0, 0.0, 1.0]) - axis[2] * axis
    if np.linalg.norm(e1) < 0.1:
        e1 = np.array([1.0, 0.0, 0.0]) - axis[0] * axis
    e1 /= np.linalg.norm(e1)
    e2 = np.array(  # axis x e1 (np.cross is slow on 3-vectors)
        [
            axis[1] * e1[2] - axis[2] * e1[1],
            axis[2] * e1[0] - axis[0] * e1[2],
            axis[0] * e1[1] - axis[1] * e1[0],
        ]
    )
    return np.stack([axis, e1, e2]), length


def _parallax_hidden(
    along: np.ndarray,
    c1: np.ndarray,
    c2: np.ndarray,
    length: float,
    bin_rad: float,
    tolerance_rad: float,
    confirm: bool,
) -> np.ndarray:
    """:func:`parallax_occlusion_mask` on coordinates in the :func:`_baseline_basis` frame.

    Args:
        along: [n] coordinate along the baseline (camera -> LiDAR), metres (consumed).
        c1: [n] first coordinate across the baseline, metres.
        c2: [n] second coordinate across the baseline, metres.
        length: Baseline length, metres.
        bin_rad: Bin width, radians.
        tolerance_rad: Minimum flip, radians.
        confirm: Only ring-mate-confirmed points occlude.
    """
    n = along.size
    if n < 2 or length < _MIN_BASELINE_M:
        return np.zeros(n, dtype=bool)
    if n >= 2**_INDEX_BITS:
        raise ValueError(f"at most {2**_INDEX_BITS - 1} points fit the occlusion test, got {n}")
    radial = cv2.magnitude(c1, c2).reshape(-1) if c1.dtype == c2.dtype else np.hypot(c1, c2)
    plane_angle = np.arctan2(c2, c1)
    alpha_c = np.arctan2(radial, along)  # angle from the baseline, seen from the camera
    along -= length
    alpha_l = np.arctan2(radial, along)  # the same, seen from the LiDAR

    base_keys = (alpha_c * (_ALPHA_LEVELS / math.pi)).astype(np.uint64)
    base_keys <<= np.uint64(_INDEX_BITS)
    base_keys |= np.arange(n, dtype=np.uint64)
    scaled = plane_angle - plane_angle.min()
    scaled *= 1.0 / bin_rad
    return _flip_mask(scaled.astype(np.uint64), base_keys, alpha_c, alpha_l, tolerance_rad, confirm)


def parallax_occlusion_mask(
    points_camera: np.ndarray,
    lidar_origin: np.ndarray,
    *,
    bin_deg: float = 1.25,
    tolerance_deg: float = 0.15,
    confirm_occluders: bool = True,
) -> np.ndarray:
    """Marks points that the LiDAR sees but that are hidden from the camera centre.

    A point is hidden when another point of its epipolar-plane bin lies inside the triangle
    (camera centre, LiDAR centre, point): nearer to the baseline seen from the camera, farther
    from it seen from the LiDAR (see the module docstring).

    Args:
        points_camera: [M,3] points in the frame whose origin is the projection centre
            (the camera optical frame for a plain pinhole), metres.
        lidar_origin: [3] LiDAR centre in the same frame, metres.
        bin_deg: Width of the epipolar-plane bins, degrees.
        tolerance_deg: Minimum order flip seen from the LiDAR, degrees.
        confirm_occluders: Only points with a ring mate in their bin (same alpha_L, close
            alpha_C) count as occluders; isolated gross outliers do not.

    Returns:
        [M] bool, True for hidden points. All False when the baseline is shorter than 0.1 mm.
    """
    if not 0.01 <= bin_deg <= 45.0:
        raise ValueError(f"bin_deg must be in [0.01, 45], got {bin_deg!r}")
    p = np.asarray(points_camera, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points_camera must have shape [M,3], got {p.shape}")
    basis, length = _baseline_basis(lidar_origin)
    along, c1, c2 = (np.ascontiguousarray(c) for c in (p @ basis.T).T)
    return _parallax_hidden(
        along,
        c1,
        c2,
        length,
        math.radians(bin_deg),
        math.radians(tolerance_deg),
        bool(confirm_occluders),
    )


# cv2.remap takes maps smaller than 32767 in each dimension: points go in rows of this length.
_REMAP_ROW = 4096


def _remap_points(
    image: np.ndarray, u: np.ndarray, v: np.ndarray, interpolation: int
) -> np.ndarray:
    """Samples ``image`` at [..., n] float32 pixel coordinates (edges replicated) with OpenCV."""
    n = u.shape[-1]
    if n == 0:  # cv2.remap rejects empty maps (every point failed the edge test)
        return np.zeros(u.shape, dtype=image.dtype)
    rows = -(-n // _REMAP_ROW)
    padded = rows * _REMAP_ROW
    lead = u.shape[:-1]
    map_x = np.zeros((*lead, padded), dtype=np.float32)
    map_y = np.zeros((*lead, padded), dtype=np.float32)
    map_x[..., :n] = u
    map_y[..., :n] = v
    out = cv2.remap(
        image,
        map_x.reshape(-1, _REMAP_ROW),
        map_y.reshape(-1, _REMAP_ROW),
        interpolation,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(*lead, padded)[..., :n]


def sample_disparity(
    disparity: np.ndarray,
    projection: LidarProjection,
    config: LidarProjectionConfig = LidarProjectionConfig(),
) -> DisparitySamples:
    """Samples the predicted disparity at the projected LiDAR points, away from depth edges.

    A point is rejected when the predicted disparity varies by more than ``max_edge_variation``
    of the sampled disparities' spread over its window (see the module docstring), or when the
    prediction there is not finite. Kept points are sampled as ``config.interpolation`` says
    (bilinear with OpenCV's 1/32-pixel weights).

    Args:
        disparity: [H,W] predicted relative disparity (larger = nearer), same size as the
            image the points were projected into.
        projection: Result of :func:`project_lidar_points`.
        config: Edge-test and interpolation settings.

    Returns:
        Disparity / depth pairs for the fit.
    """
    d = np.asarray(disparity)
    expected = (projection.height_px, projection.width_px)
    if d.shape != expected:
        raise ValueError(f"disparity must have shape {expected} like the projection, got {d.shape}")
    if d.dtype != np.float32:
        d = d.astype(np.float32)
    u_px, v_px, z_m, indices = projection.u_px, projection.v_px, projection.z_m, projection.indices
    n = z_m.size
    if n == 0:
        return DisparitySamples(
            disparity=np.zeros(0, np.float32), z_m=z_m, indices=indices, num_edge_rejected=0
        )
    if 0 < config.max_samples < n:
        chosen = (np.arange(config.max_samples) * (n / config.max_samples)).astype(np.intp)
        u_px, v_px, z_m, indices = u_px[chosen], v_px[chosen], z_m[chosen], indices[chosen]
        n = chosen.size
    # Integer pixel centres (as floats, so that nearest-neighbour remap cannot round them).
    col = np.floor(u_px + np.float32(0.5))  # [n]
    row = np.floor(v_px + np.float32(0.5))
    w = np.float32(config.edge_window_px)
    # Probes [5,n]: the pixel, then the window's four corners (clipped by edge replication):
    # any edge crossing the window separates two of them.
    probe_u = np.stack([col, col - w, col + w, col - w, col + w])
    probe_v = np.stack([row, row - w, row - w, row + w, row + w])
    probes = _remap_points(d, probe_u, probe_v, cv2.INTER_NEAREST)
    centre = probes[0]
    with np.errstate(invalid="ignore"):
        keep = np.isfinite(centre)
        finite = centre[keep]
        if config.edge_window_px > 0 and finite.size > 1:
            spread = float(finite.max() - finite.min())
            variation = probes.max(axis=0) - probes.min(axis=0)  # NaN anywhere -> NaN: rejected
            keep &= variation <= config.max_edge_variation * spread
    kept = np.flatnonzero(keep)
    if config.interpolation == "bilinear":
        values = _remap_points(d, u_px[kept], v_px[kept], cv2.INTER_LINEAR)
        finite_values = np.isfinite(values)  # a NaN neighbour just outside the probed pixel
        kept, values = kept[finite_values], values[finite_values]
    else:
        values = centre[kept]
    return DisparitySamples(
        disparity=values,
        z_m=z_m[kept],
        indices=indices[kept],
        num_edge_rejected=int(n - kept.size),
    )
