"""Which camera model an image follows, and points ⇄ pixels with it (the ROS CameraInfo rule).

A ``sensor_msgs/CameraInfo`` describes two images of one camera, and each has its own model:

* **Raw** image (``image_raw``): ``K`` and the plumb_bob ``D``. A point ``p`` (metres, in the
  frame the camera_info's ``frame_id`` names) lands at ``K·distort(p_x/p_z, p_y/p_z)``.
* **Rectified** image (``image_rect``, or a raw image remapped with ``D, K, R, P``): the full 3×4
  ``P`` after the rectification rotation ``R``::

      [u' v' w]ᵀ = P · [R·p ; 1],    u = u'/w,  v = v'/w

  which is ``image_geometry``'s ``project3dToPixel`` (it takes ``R·p``) and the KITTI devkit's
  ``P_rect_02 · R_rect_00 · T_velo_to_cam``. With ``K' = P[:, :3]`` and ``t = K'⁻¹·P[:, 3]``,
  ``P = K'·[I | t]``: ``q = R·p + t`` is the point in this camera's own frame, ``−t`` its
  centre. For the right camera of a horizontal stereo pair with baseline ``B``,
  ``Tx = P[0,3] = −fx'·B`` and ``t = (−B, 0, 0)``; KITTI's cam-2 also has small ``Ty`` and
  ``Tz = P[2,3]`` (2.7 mm). ``w = q_z`` is the depth seen from this camera's own centre; depth
  images aligned with a rectified image hold ``w``.

  **Assumption** (ROS's own, for stereo pairs): ``P``'s last column is relative to the frame the
  camera_info's ``frame_id`` names (after ``R``). A stereo driver whose right camera_info names
  the right camera's *own* frame and also carries ``Tx`` counts the baseline twice; the
  ``lidar-overlay`` tool shows that at once as a horizontal shift of ``fx'·B / z`` pixels.
  ``P[2, :3]`` must be ``(0, 0, 1)``.

Back-projection is the exact inverse: a depth ``w`` at pixel ``(u, v)`` is
``q = w·((u − cx')/fx', (v − cy')/fy', 1)`` and ``p = Rᵀ·(q − t)``; for ``R = I`` and ``Tz = 0``
that is ``x = ((u − cx')·w − Tx)/fx'``, ``depth_image_proc``'s registration formula.

Which model an image follows (:func:`is_rectified_calibration`, for a camera_info alone):
rectified when ``D`` is all zero and ``R`` or ``P`` differs from ``I`` / ``[K | 0]``; raw
otherwise. With ``D = 0``, ``R = I`` and ``P = [K | 0]`` the two models are the same. A
configuration may say which it is instead (a rectified stream whose camera_info still carries the
raw ``D``, as KITTI's published calibration does).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from .calibration import IDENTITY9, CameraCalibration
from .camera import PinholeCamera, depth_to_points, points_to_pixels

__all__ = ["CameraModel", "decompose_projection", "is_rectified_calibration"]

_ZERO3 = (0.0, 0.0, 0.0)
_TOLERANCE = 1e-9


def _is_identity(R: np.ndarray) -> bool:
    return float(np.max(np.abs(R - np.eye(3)))) <= _TOLERANCE


def decompose_projection(P, R=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(R, K', t)`` of a rectified camera: ``P = K'·[I | t]``, ``K' = P[:, :3]``.

    Args:
        P: ``[3,4]`` (or 12 values) projection of the rectified image, pixels; ``P[2, :3]`` must
            be ``(0, 0, 1)`` and ``K'`` a pinhole (positive focal lengths, no skew). ``P[:, 3]``
            (``Tx``, ``Ty``, ``Tz``) is any finite column.
        R: ``[3,3]`` (or 9 values) rotation from the camera_info frame into the rectified frame;
            None is the identity.

    Returns:
        ``R`` ``[3,3]``, ``K'`` ``[3,3]`` and ``t`` ``[3]`` in metres (this camera's own frame is
        the rectified frame shifted by ``t``: ``q = R·p + t``), all float64.

    Raises:
        ValueError: A malformed ``P`` or ``R`` (the message shows it).
    """
    P_arr = np.asarray(P, dtype=np.float64)
    if P_arr.shape == (12,):
        P_arr = P_arr.reshape(3, 4)
    if P_arr.shape != (3, 4) or not np.all(np.isfinite(P_arr)):
        raise ValueError(f"P must be a finite [3,4] matrix (or 12 values), got shape {P_arr.shape}")
    fx, fy = P_arr[0, 0], P_arr[1, 1]
    if fx <= 0.0 or fy <= 0.0 or P_arr[0, 1] != 0.0 or P_arr[1, 0] != 0.0:
        raise ValueError(f"P must have positive focal lengths and no skew, got {P_arr.tolist()}")
    if float(np.max(np.abs(P_arr[2, :3] - (0.0, 0.0, 1.0)))) > _TOLERANCE:
        raise ValueError(f"P's last row must start with (0, 0, 1), got {P_arr[2].tolist()}")
    R_arr = np.eye(3) if R is None else np.asarray(R, dtype=np.float64)
    if R_arr.shape == (9,):
        R_arr = R_arr.reshape(3, 3)
    if (R_arr.shape != (3, 3) or not np.all(np.isfinite(R_arr))
            or float(np.max(np.abs(R_arr @ R_arr.T - np.eye(3)))) > 1e-6 or np.linalg.det(R_arr) <= 0.0):
        raise ValueError(f"R must be a [3,3] rotation (or 9 values), got {np.asarray(R).tolist()}")
    cx, cy = P_arr[0, 2], P_arr[1, 2]
    Tx, Ty, Tz = P_arr[:, 3]
    t = np.array([(Tx - cx * Tz) / fx, (Ty - cy * Tz) / fy, Tz])  # K'^-1 · P[:, 3]
    return R_arr, P_arr[:, :3].copy(), t


def is_rectified_calibration(calibration: CameraCalibration) -> bool:
    """The rule for a camera_info alone: rectified when ``D`` is all zero and ``R ≠ I`` or ``P ≠ [K | 0]``."""
    if calibration.camera.has_distortion:
        return False
    P, K = calibration.P, calibration.K
    return not _is_identity(calibration.R) or float(np.max(np.abs(P - np.hstack([K, np.zeros((3, 1))])))) > (
        _TOLERANCE * max(1.0, float(np.max(np.abs(K)))))


@dataclass(frozen=True)
class CameraModel:
    """How points in the camera_info's frame map to one image's pixels, and back.

    Attributes:
        camera: The image's pinhole: raw ``K`` and ``D``, or the rectified ``K' = P[:, :3]``
            (no distortion), with the image size.
        rectified: True for the rectified model (``P`` after ``R``).
        R: Rotation from the camera_info frame into the rectified frame, 9 floats row-major
            (identity for raw).
        t: This camera's offset ``K'⁻¹·P[:, 3]``, metres (zeros for raw).
    """

    camera: PinholeCamera
    rectified: bool = False
    R: tuple[float, ...] = IDENTITY9
    t: tuple[float, float, float] = _ZERO3

    # ----------------------------------------------------------------------------- constructors
    @classmethod
    def from_projection(cls, P, width_px: int, height_px: int, R=None) -> CameraModel:
        """The rectified model of ``P`` (and ``R``) for a ``width_px`` × ``height_px`` image."""
        R_arr, K, t = decompose_projection(P, R)
        camera = PinholeCamera(width_px, height_px, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        return cls(camera, True, tuple(float(v) for v in R_arr.reshape(-1)), tuple(float(v) for v in t))

    @classmethod
    def from_calibration(cls, calibration: CameraCalibration, rectified: bool | None = None) -> CameraModel:
        """The model an image with this calibration follows.

        Args:
            calibration: The image's camera_info.
            rectified: True / False say which image it is (rectified: ``P`` after ``R``; raw:
                ``K`` and ``D``); None applies :func:`is_rectified_calibration`.
        """
        return _model_of(calibration, is_rectified_calibration(calibration) if rectified is None else bool(rectified))

    # ----------------------------------------------------------------------------- properties
    @property
    def width_px(self) -> int:
        return self.camera.width_px

    @property
    def height_px(self) -> int:
        return self.camera.height_px

    @property
    def R_matrix(self) -> np.ndarray:
        """``[3,3]`` float64 rotation into the rectified frame."""
        return np.array(self.R, dtype=np.float64).reshape(3, 3)

    @property
    def P(self) -> np.ndarray:
        """``[3,4]`` float64 ``K'·[I | t]`` (``[K | 0]`` for raw)."""
        return self.camera.K @ np.hstack([np.eye(3), np.array(self.t)[:, None]])

    @property
    def is_plain(self) -> bool:
        """True when ``R = I`` and ``t = 0``: the image is the pinhole ``camera`` of the frame itself."""
        return self.t == _ZERO3 and self.R == IDENTITY9

    # ----------------------------------------------------------------------------- points ⇄ pixels
    def to_camera_frame(self, points: np.ndarray) -> np.ndarray:
        """``q = R·p + t``: ``[...,3]`` points of the camera_info frame in this camera's own frame (float64)."""
        p = np.asarray(points, dtype=np.float64)
        if self.is_plain:
            return p.copy()
        return p @ self.R_matrix.T + np.array(self.t)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pixels of ``[...,3]`` points given in the camera_info frame, metres.

        Returns:
            ``(u, v, depth_m)`` float64 with shape ``points.shape[:-1]``: column and row (NaN
            behind the camera) and the depth seen from this camera (``w``). Points outside the
            image are kept (see :meth:`PinholeCamera.contains_px`).
        """
        pts = np.asarray(points)
        if pts.ndim < 1 or pts.shape[-1] != 3:
            raise ValueError(f"points must have shape (..., 3), got {pts.shape}")
        return points_to_pixels(self.to_camera_frame(pts), self.camera, apply_distortion=not self.rectified)

    def from_camera_frame(self, points: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``p = Rᵀ·(q − t)``: ``[...,3]`` points of this camera's own frame in the camera_info frame.

        NaN stays NaN. ``out`` may be ``points`` itself (float32 ``[H,W,3]`` clouds are converted
        in place with OpenCV, without a float64 copy).
        """
        q = np.asarray(points)
        if out is None:
            out = np.empty_like(q)
        if self.is_plain:
            out[...] = q
            return out
        R_t = self.R_matrix.T
        affine = np.hstack([R_t, (-R_t @ np.array(self.t))[:, None]])  # [3,4]: p = Rᵀq − Rᵀt
        flat = np.ascontiguousarray(q).reshape(-1, 1, 3)
        out.reshape(-1, 1, 3)[...] = cv2.transform(flat, affine)
        return out

    def points_from_depth(self, depth_m: np.ndarray) -> np.ndarray:
        """Back-projects a depth image aligned with this image into the camera_info frame.

        Args:
            depth_m: ``[H,W]`` depth seen from this camera (raw: z-depth; rectified: ``w``),
                metres; NaN, inf and ``<= 0`` are invalid.

        Returns:
            ``[H,W,3]`` float32 points in the camera_info frame, metres; NaN where invalid.
        """
        points = depth_to_points(depth_m, self.camera)  # [H,W,3] in this camera's own frame
        return self.from_camera_frame(points, out=points)


@functools.lru_cache(maxsize=16)
def _model_of(calibration: CameraCalibration, rectified: bool) -> CameraModel:
    if not rectified:
        return CameraModel(calibration.camera)
    return CameraModel.from_projection(calibration.P, calibration.width_px, calibration.height_px, calibration.R)
