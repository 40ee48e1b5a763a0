"""Rectification of raw (distorted) camera images with the camera_info model (D, K, R, P).

A raw image is remapped so that it follows the ideal pinhole camera ``P[:, :3]`` (no
distortion), as ``image_proc`` does; the model then sees straight lines straight, and every
output is aligned with the rectified camera. The remap tables are built once per calibration.
"""

from __future__ import annotations

import cv2
import numpy as np

from .camera import PinholeCamera


def needs_remap(camera: PinholeCamera, R: np.ndarray, P: np.ndarray) -> bool:
    """False when the raw image already is the rectified one (no distortion, R = I, K = P[:, :3])."""
    return camera.has_distortion or not np.allclose(R, np.eye(3)) or not np.allclose(P[:, :3], camera.K)


class Rectifier:
    """Remaps raw images to the rectified camera; caches the maps of the last calibration."""

    def __init__(self):
        self._key: tuple | None = None
        self._maps: tuple[np.ndarray, np.ndarray] | None = None

    def maps(self, camera: PinholeCamera, R: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fixed-point remap tables (rebuilt only when the calibration changes)."""
        key = (camera, tuple(np.ravel(R)), tuple(np.ravel(P)))
        if key != self._key:
            self._maps = cv2.initUndistortRectifyMap(
                camera.K, np.asarray(camera.D, dtype=np.float64), np.asarray(R, dtype=np.float64),
                np.asarray(P, dtype=np.float64)[:, :3], (camera.width_px, camera.height_px), cv2.CV_16SC2)
            self._key = key
        return self._maps

    def rectify(self, image: np.ndarray, camera: PinholeCamera, R: np.ndarray, P: np.ndarray) -> np.ndarray:
        """Rectify ``image`` ``[H,W,C]`` (bilinear, black outside) to the camera ``P[:, :3]``.

        Args:
            image: Raw image from ``camera``.
            camera: Raw intrinsics K and plumb_bob D.
            R: ``[3,3]`` rectification rotation; P: ``[3,4]`` rectified projection.

        Raises:
            ValueError: The image size differs from the calibration's.
        """
        if image.shape[:2] != (camera.height_px, camera.width_px):
            raise ValueError(f"image is {image.shape[1]}x{image.shape[0]} but the calibration is "
                             f"{camera.width_px}x{camera.height_px}")
        if not needs_remap(camera, R, P):
            return image
        m1, m2 = self.maps(camera, R, P)
        return cv2.remap(image, m1, m2, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
