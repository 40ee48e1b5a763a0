"""Pinhole camera model with plumb_bob distortion, and depth <-> point conversions.

Conventions (ROS / OpenCV, REP-103 optical frame):

* Camera frame: x right, y down, z forward (along the optical axis). Units: metres.
* Pixel centres lie at integer coordinates: pixel (u, v) = (column, row) covers
  [u - 0.5, u + 0.5) x [v - 0.5, v + 0.5). A W x H image spans [-0.5, W - 0.5) horizontally, so
  the principal point of a centred camera is ((W - 1) / 2, (H - 1) / 2).
* Depth is z-depth along the optical axis (not ray length); NaN marks invalid values.
* Distortion is ROS ``plumb_bob``: ``D = (k1, k2, p1, p2, k3)`` acting on normalised image
  coordinates (x / z, y / z), exactly as OpenCV's five-coefficient model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PinholeCamera",
    "depth_to_points",
    "distort_normalized",
    "points_to_pixels",
    "undistort_normalized",
]

_NUM_PLUMB_BOB = 5
_UNDISTORT_ITERATIONS = 20


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _finite_float(name: str, value: object, *, positive: bool = False) -> float:
    try:
        result = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a real number, got {value!r}") from err
    if not math.isfinite(result) or (positive and result <= 0.0):
        kind = "a positive finite" if positive else "a finite"
        raise ValueError(f"{name} must be {kind} number, got {value!r}")
    return result


def _plumb_bob(D: Sequence[float] | np.ndarray | None) -> tuple[float, ...]:
    """Normalises distortion coefficients to a 5-tuple (k1, k2, p1, p2, k3)."""
    if D is None:
        return (0.0,) * _NUM_PLUMB_BOB
    values = np.asarray(D, dtype=np.float64).reshape(-1)
    if values.size not in (0, 4, 5) or not np.all(np.isfinite(values)):
        raise ValueError(
            "D must hold 0, 4 or 5 finite plumb_bob coefficients (k1, k2, p1, p2[, k3]), "
            f"got {np.asarray(D).tolist()!r}"
        )
    padded = np.zeros(_NUM_PLUMB_BOB)
    padded[: values.size] = values
    return tuple(float(x) for x in padded)


@dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics of a pinhole camera (ROS ``camera_info`` K and D, no skew).

    Attributes:
        width_px: Image width in pixels.
        height_px: Image height in pixels.
        fx: Focal length along x, pixels.
        fy: Focal length along y, pixels.
        cx: Principal point column, pixels (pixel centres at integers).
        cy: Principal point row, pixels.
        D: plumb_bob distortion (k1, k2, p1, p2, k3); all zeros for a rectified image.
            Four coefficients are accepted and padded with k3 = 0.
    """

    width_px: int
    height_px: int
    fx: float
    fy: float
    cx: float
    cy: float
    D: tuple[float, ...] = (0.0,) * _NUM_PLUMB_BOB

    def __post_init__(self) -> None:
        # Normalise types once so equality, hashing and repr are predictable.
        object.__setattr__(self, "width_px", _positive_int("width_px", self.width_px))
        object.__setattr__(self, "height_px", _positive_int("height_px", self.height_px))
        object.__setattr__(self, "fx", _finite_float("fx", self.fx, positive=True))
        object.__setattr__(self, "fy", _finite_float("fy", self.fy, positive=True))
        object.__setattr__(self, "cx", _finite_float("cx", self.cx))
        object.__setattr__(self, "cy", _finite_float("cy", self.cy))
        object.__setattr__(self, "D", _plumb_bob(self.D))

    # ----------------------------------------------------------------------------------------
    # Constructors
    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_K(
        cls,
        K: np.ndarray | Sequence[Sequence[float]],
        width_px: int,
        height_px: int,
        D: Sequence[float] | np.ndarray | None = None,
    ) -> PinholeCamera:
        """Builds a camera from a 3x3 intrinsic matrix (e.g. ``camera_info.k`` reshaped).

        Args:
            K: [3,3] intrinsic matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``, pixels.
                A flat sequence of 9 values (ROS row-major layout) is accepted too.
            width_px: Image width, pixels.
            height_px: Image height, pixels.
            D: plumb_bob coefficients, or None for no distortion.

        Raises:
            ValueError: K has the wrong shape, a skew term, or a bad last row.
        """
        K_arr = np.asarray(K, dtype=np.float64)
        if K_arr.shape == (9,):
            K_arr = K_arr.reshape(3, 3)
        if K_arr.shape != (3, 3):
            raise ValueError(f"K must have shape (3, 3) or (9,), got {np.asarray(K).shape}")
        if not np.all(np.isfinite(K_arr)):
            raise ValueError(f"K must be finite, got {K_arr.tolist()!r}")
        fx, fy = K_arr[0, 0], K_arr[1, 1]
        if abs(K_arr[0, 1]) > 1e-9 * max(abs(fx), 1.0) or K_arr[1, 0] != 0.0:
            raise ValueError(f"K must have no skew (K[0,1] = K[1,0] = 0), got {K_arr.tolist()!r}")
        if not np.allclose(K_arr[2], (0.0, 0.0, 1.0)):
            raise ValueError(f"K's last row must be (0, 0, 1), got {K_arr[2].tolist()!r}")
        return cls(width_px, height_px, fx, fy, K_arr[0, 2], K_arr[1, 2], _plumb_bob(D))

    @classmethod
    def from_fov(cls, width_px: int, height_px: int, hfov_deg: float) -> PinholeCamera:
        """Builds a centred, square-pixel, undistorted camera from its horizontal field of view.

        The field of view spans the full image width (from the left edge of the first pixel to
        the right edge of the last one), so ``fx = fy = (W / 2) / tan(hfov / 2)``.

        Args:
            width_px: Image width, pixels.
            height_px: Image height, pixels.
            hfov_deg: Horizontal field of view, degrees, in (0, 180).
        """
        width_px = _positive_int("width_px", width_px)
        height_px = _positive_int("height_px", height_px)
        hfov = _finite_float("hfov_deg", hfov_deg)
        if not 0.0 < hfov < 180.0:
            raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg!r}")
        f = 0.5 * width_px / math.tan(math.radians(hfov) / 2.0)
        return cls(width_px, height_px, f, f, (width_px - 1) / 2.0, (height_px - 1) / 2.0)

    # ----------------------------------------------------------------------------------------
    # Derived quantities
    # ----------------------------------------------------------------------------------------
    @property
    def K(self) -> np.ndarray:
        """[3,3] float64 intrinsic matrix, pixels."""
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def P(self) -> np.ndarray:
        """[3,4] float64 projection matrix ``[K | 0]`` of a monocular camera, pixels."""
        return np.hstack([self.K, np.zeros((3, 1))])

    @property
    def has_distortion(self) -> bool:
        """True when any plumb_bob coefficient is non-zero."""
        return any(c != 0.0 for c in self.D)

    @property
    def hfov_deg(self) -> float:
        """Horizontal field of view over the full image width, degrees (centred camera)."""
        return math.degrees(2.0 * math.atan(0.5 * self.width_px / self.fx))

    def scaled(self, new_width_px: int, new_height_px: int) -> PinholeCamera:
        """Intrinsics of the same camera after resizing the image to a new size.

        Uses the half-pixel convention of ``cv2.resize`` and ``align_corners=False``: pixel
        edges map to pixel edges, so with ``s = new / old`` per axis ``fx' = fx·sx`` and
        ``cx' = (cx + 0.5)·sx − 0.5``. Distortion acts on normalised coordinates and is kept.

        Args:
            new_width_px: Width of the resized image, pixels.
            new_height_px: Height of the resized image, pixels.
        """
        new_w = _positive_int("new_width_px", new_width_px)
        new_h = _positive_int("new_height_px", new_height_px)
        sx = new_w / self.width_px
        sy = new_h / self.height_px
        return PinholeCamera(
            new_w,
            new_h,
            self.fx * sx,
            self.fy * sy,
            (self.cx + 0.5) * sx - 0.5,
            (self.cy + 0.5) * sy - 0.5,
            self.D,
        )

    def cropped(self, x0_px: int, y0_px: int, width_px: int, height_px: int) -> PinholeCamera:
        """Intrinsics of the sub-image ``image[y0:y0+height, x0:x0+width]``.

        Args:
            x0_px: First column of the crop, pixels.
            y0_px: First row of the crop, pixels.
            width_px: Crop width, pixels.
            height_px: Crop height, pixels.

        Raises:
            ValueError: The crop is empty or leaves the image.
        """
        for name, value in (("x0_px", x0_px), ("y0_px", y0_px)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        w = _positive_int("width_px", width_px)
        h = _positive_int("height_px", height_px)
        if x0_px + w > self.width_px or y0_px + h > self.height_px:
            raise ValueError(
                f"crop (x0_px={x0_px}, y0_px={y0_px}, width_px={w}, height_px={h}) leaves the "
                f"{self.width_px}x{self.height_px} image"
            )
        return PinholeCamera(w, h, self.fx, self.fy, self.cx - x0_px, self.cy - y0_px, self.D)

    def pixel_rays(self) -> np.ndarray:
        """Viewing rays of all pixel centres with unit z.

        Returns:
            [H,W,3] float32 ``(x/z, y/z, 1)`` in the optical frame; multiplying by a z-depth in
            metres gives the 3-D point. Distortion, if any, is removed.
        """
        x = (np.arange(self.width_px, dtype=np.float64) - self.cx) / self.fx  # [W]
        y = (np.arange(self.height_px, dtype=np.float64) - self.cy) / self.fy  # [H]
        xx, yy = np.meshgrid(x, y)  # [H,W] each
        if self.has_distortion:
            xx, yy = undistort_normalized(xx, yy, self.D)
        rays = np.empty((self.height_px, self.width_px, 3), dtype=np.float32)
        rays[..., 0] = xx
        rays[..., 1] = yy
        rays[..., 2] = 1.0
        return rays

    def contains_px(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Mask of pixel coordinates that fall inside the image (NaN -> False).

        Args:
            u: Columns, pixels, any shape.
            v: Rows, pixels, same shape as ``u``.

        Returns:
            bool array: ``-0.5 <= u < W - 0.5`` and ``-0.5 <= v < H - 0.5``.
        """
        u = np.asarray(u)
        v = np.asarray(v)
        with np.errstate(invalid="ignore"):
            return (
                (u >= -0.5) & (u < self.width_px - 0.5) & (v >= -0.5) & (v < self.height_px - 0.5)
            )


# --------------------------------------------------------------------------------------------
# Distortion
# --------------------------------------------------------------------------------------------
def distort_normalized(
    x: np.ndarray, y: np.ndarray, D: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Applies plumb_bob distortion to normalised image coordinates.

    Args:
        x: Undistorted x/z, any shape.
        y: Undistorted y/z, same shape.
        D: (k1, k2, p1, p2, k3).

    Returns:
        Distorted (x, y), float64, same shape.
    """
    k1, k2, p1, p2, k3 = _plumb_bob(D)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def undistort_normalized(
    xd: np.ndarray, yd: np.ndarray, D: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Inverts :func:`distort_normalized` by fixed-point iteration.

    Accurate to well below 1e-6 for lens distortion of ordinary strength inside the image; the
    iteration is not meant for points far outside the calibrated field of view.

    Args:
        xd: Distorted x/z, any shape.
        yd: Distorted y/z, same shape.
        D: (k1, k2, p1, p2, k3).

    Returns:
        Undistorted (x, y), float64, same shape.
    """
    k1, k2, p1, p2, k3 = _plumb_bob(D)
    xd = np.asarray(xd, dtype=np.float64)
    yd = np.asarray(yd, dtype=np.float64)
    x, y = xd.copy(), yd.copy()
    for _ in range(_UNDISTORT_ITERATIONS):
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        x = (xd - dx) / radial
        y = (yd - dy) / radial
    return x, y


# --------------------------------------------------------------------------------------------
# Depth <-> points
# --------------------------------------------------------------------------------------------
def depth_to_points(depth_m: np.ndarray, camera: PinholeCamera) -> np.ndarray:
    """Back-projects a z-depth image to 3-D points in the camera's optical frame.

    Args:
        depth_m: [H,W] z-depth along the optical axis, metres; NaN, inf and values <= 0 are
            invalid. Must match the camera's size.
        camera: Intrinsics of the depth image (distortion, if any, is removed).

    Returns:
        [H,W,3] float32 points (x right, y down, z forward), metres; all three NaN where the
        depth is invalid.
    """
    depth = np.asarray(depth_m)
    expected = (camera.height_px, camera.width_px)
    if depth.shape != expected:
        raise ValueError(
            f"depth_m must have shape (H, W) = {expected} to match the camera, got {depth.shape}"
        )
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth_m must be a float array in metres, got dtype {depth.dtype}")
    depth = depth.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(depth) & (depth > 0.0)
    z = np.where(valid, depth, np.float32(np.nan))  # [H,W]
    return camera.pixel_rays() * z[..., None]  # [H,W,3]


def points_to_pixels(
    points: np.ndarray, camera: PinholeCamera, *, apply_distortion: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projects 3-D points in the optical frame to pixel coordinates.

    Args:
        points: [...,3] points (x right, y down, z forward), metres.
        camera: Intrinsics to project with.
        apply_distortion: Apply the camera's plumb_bob distortion (to project into the raw,
            unrectified image). With False, ``D`` is ignored (rectified image).

    Returns:
        ``(u, v, z)``, each float64 with shape ``points.shape[:-1]``: column and row in pixels
        (NaN where ``z <= 0`` or the point is not finite) and the z-depth in metres. Points
        outside the image are not removed; use :meth:`PinholeCamera.contains_px`.
    """
    pts = np.asarray(points)
    if pts.ndim < 1 or pts.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3), got {pts.shape}")
    pts = pts.astype(np.float64, copy=False)
    x, y, z = pts[..., 0], pts[..., 1], pts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        in_front = z > 0.0
        xn = np.where(in_front, x / z, np.nan)
        yn = np.where(in_front, y / z, np.nan)
    if apply_distortion and camera.has_distortion:
        xn, yn = distort_normalized(xn, yn, camera.D)
    u = camera.fx * xn + camera.cx
    v = camera.fy * yn + camera.cy
    return u, v, z.copy()
