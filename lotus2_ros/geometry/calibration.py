"""The calibration of one published image stream: intrinsics, distortion, ``R``, ``P``, binning, ROI.

:class:`CameraCalibration` is what ``sensor_msgs/CameraInfo`` describes once validated (see
``lotus2_ros.io.camera_info`` for the message side): frozen and hashable, so derived data
(rectification maps, pixel rays) can be cached by it. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import PinholeCamera

__all__ = ["CameraCalibration", "Roi"]

PLUMB_BOB = "plumb_bob"
IDENTITY9 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Roi:
    """``sensor_msgs/RegionOfInterest`` in full-resolution sensor pixels."""

    x_offset: int
    y_offset: int
    width: int
    height: int
    do_rectify: bool = False


@dataclass(frozen=True)
class CameraCalibration:
    """The calibration of one published image stream (after any ROI and binning).

    Frozen and hashable: equal messages give equal calibrations, so callers can cache derived
    data (rectification maps, pixel rays) keyed by it.

    Attributes:
        camera: Intrinsics ``K`` and plumb_bob ``D`` of the published (raw) image, pixels.
        r: Rectification rotation ``R``, 9 floats row-major (identity for a monocular camera).
        p: Projection ``P`` of the rectified image, 12 floats row-major, pixels.
        distortion_model: ``distortion_model`` as published (``"plumb_bob"``,
            ``"rational_polynomial"`` or ``""``).
        binning_x: Binning of the published image relative to the calibration (1 = none).
        binning_y: Same, vertically.
        roi: The region of interest, or None for the full sensor.
    """

    camera: PinholeCamera
    r: tuple[float, ...] = IDENTITY9
    p: tuple[float, ...] | None = None
    distortion_model: str = PLUMB_BOB
    binning_x: int = 1
    binning_y: int = 1
    roi: Roi | None = None

    def __post_init__(self) -> None:
        r = tuple(float(v) for v in np.asarray(self.r, dtype=np.float64).reshape(-1))
        if len(r) != 9:
            raise ValueError(f"r must hold 9 values (3x3 row-major), got {len(r)}")
        p = self.camera.P if self.p is None else self.p
        p = tuple(float(v) for v in np.asarray(p, dtype=np.float64).reshape(-1))
        if len(p) != 12:
            raise ValueError(f"p must hold 12 values (3x4 row-major), got {len(p)}")
        object.__setattr__(self, "r", r)
        object.__setattr__(self, "p", p)

    @property
    def width_px(self) -> int:
        """Width of the published image, pixels."""
        return self.camera.width_px

    @property
    def height_px(self) -> int:
        """Height of the published image, pixels."""
        return self.camera.height_px

    @property
    def K(self) -> np.ndarray:
        """[3,3] float64 intrinsic matrix of the published image."""
        return self.camera.K

    @property
    def D(self) -> tuple[float, ...]:
        """plumb_bob coefficients (k1, k2, p1, p2, k3)."""
        return self.camera.D

    @property
    def R(self) -> np.ndarray:
        """[3,3] float64 rectification rotation."""
        return np.array(self.r, dtype=np.float64).reshape(3, 3)

    @property
    def P(self) -> np.ndarray:
        """[3,4] float64 projection matrix of the rectified image."""
        return np.array(self.p, dtype=np.float64).reshape(3, 4)

    @property
    def rectified_camera(self) -> PinholeCamera:
        """The undistorted camera of the rectified image (``P[:, :3]``, no distortion)."""
        p = self.P
        return PinholeCamera(self.width_px, self.height_px, p[0, 0], p[1, 1], p[0, 2], p[1, 2])

    def as_rectified(self) -> CameraCalibration:
        """The calibration of the rectified image: ``K = P[:, :3]``, no distortion; ``R`` and the full
        ``P`` (``Tx``, ``Ty``, ``Tz``) kept, so the camera_info rule reads it as rectified whenever
        ``P``'s last column or ``R`` matter (see :mod:`~lotus2_ros.geometry.camera_model`)."""
        return CameraCalibration(self.rectified_camera, r=self.r, p=self.p)

    def as_raw(self) -> CameraCalibration:
        """The calibration of a raw image with ``R = I`` and ``P = [K | 0]``: what an image that
        follows ``K`` and ``D`` alone is aligned with."""
        return CameraCalibration(self.camera, distortion_model=self.distortion_model)

    def scaled(self, new_width_px: int, new_height_px: int) -> CameraCalibration:
        """The calibration after resizing the image (half-pixel convention for K and P).

        ``R`` and ``D`` are unchanged; ``P``'s translation column (stereo baseline ``Tx``,
        pixels x metres) scales with ``fx``. Binning and ROI are folded into the result.
        """
        camera = self.camera.scaled(new_width_px, new_height_px)
        return CameraCalibration(
            camera=camera,
            r=self.r,
            p=scale_projection(self.P, camera.width_px / self.width_px, camera.height_px / self.height_px),
            distortion_model=self.distortion_model,
        )


def scale_projection(P: np.ndarray, sx: float, sy: float) -> np.ndarray:
    out = P.copy()
    # Rows 0 and 1 of [K'|t'] scale like pixel coordinates; the +0.5/-0.5 shift of the principal
    # point (pixel centres) acts through the third row, i.e. on the (0, 2) and (1, 2) entries.
    out[0] *= sx
    out[1] *= sy
    out[0] += (0.5 * sx - 0.5) * P[2]
    out[1] += (0.5 * sy - 0.5) * P[2]
    return out


def crop_projection(P: np.ndarray, x0: int, y0: int) -> np.ndarray:
    out = P.copy()
    out[0] -= x0 * P[2]
    out[1] -= y0 * P[2]
    return out
