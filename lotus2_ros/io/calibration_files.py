"""Calibration and LiDAR files outside bags: ROS camera_info YAML, point clouds as ``.npy`` / ``.bin``.

For tools that run on a folder of recorded frames (``lotus2 lidar-overlay --images …``):

* Camera calibration: the YAML that ``camera_calibration`` and ``camera_info_manager`` write
  (``image_width``, ``image_height``, ``camera_matrix``, ``distortion_model``,
  ``distortion_coefficients``, ``rectification_matrix``, ``projection_matrix``; each matrix as
  ``{rows, cols, data}``), validated exactly as a ``sensor_msgs/CameraInfo``.
* Point clouds: ``.npy`` with ``[N,C]`` or ``[H,W,C]`` values, ``C >= 3`` (x, y, z first), or a
  KITTI Velodyne ``.bin`` (float32 x, y, z, reflectance per point). Metres, in the LiDAR frame.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import yaml

from ..geometry.calibration import CameraCalibration
from .camera_info import camera_info_to_calibration
from .errors import MessageError

__all__ = ["CLOUD_SUFFIXES", "read_camera_info_yaml", "read_cloud_file"]

#: Point-cloud file types :func:`read_cloud_file` reads.
CLOUD_SUFFIXES = (".npy", ".bin")


def _matrix(doc: dict, key: str, size: int, path: Path, required: bool = True) -> list[float]:
    value = doc.get(key)
    if value is None:
        if required:
            raise MessageError(f"{path}: no {key}")
        return [0.0] * size
    data = value.get("data") if isinstance(value, dict) else value
    values = np.asarray(data, dtype=np.float64).reshape(-1)
    if key != "distortion_coefficients" and values.size != size:
        raise MessageError(f"{path}: {key} must hold {size} values, got {values.size}")
    return values.tolist()


def read_camera_info_yaml(path: Path | str) -> CameraCalibration:
    """A camera calibration YAML (``camera_calibration`` format) as a validated calibration.

    Raises:
        MessageError: Unreadable file, a missing or malformed matrix, or a calibration that a
            ``sensor_msgs/CameraInfo`` with the same values would not pass (named).
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise MessageError(f"cannot read camera calibration {path}: {err}") from err
    if not isinstance(doc, dict):
        raise MessageError(f"{path} must hold a mapping (camera_calibration YAML)")
    try:
        msg = SimpleNamespace(
            width=int(doc["image_width"]), height=int(doc["image_height"]),
            k=_matrix(doc, "camera_matrix", 9, path), d=_matrix(doc, "distortion_coefficients", 5, path, False),
            r=_matrix(doc, "rectification_matrix", 9, path, False), p=_matrix(doc, "projection_matrix", 12, path, False),
            distortion_model=str(doc.get("distortion_model", "plumb_bob")), binning_x=0, binning_y=0, roi=None)
    except (KeyError, TypeError, ValueError) as err:
        raise MessageError(f"{path}: not a camera calibration YAML ({type(err).__name__}: {err})") from err
    try:
        return camera_info_to_calibration(msg)
    except MessageError as err:
        raise MessageError(f"{path}: {err}") from err


def read_cloud_file(path: Path | str) -> np.ndarray:
    """The ``[N,3]`` float32 points (x, y, z in metres) of a ``.npy`` or KITTI ``.bin`` file.

    Raises:
        ValueError: Another suffix, or an array that does not hold x, y, z columns (named).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".bin":
        raw = np.fromfile(path, dtype=np.float32)
        if raw.size % 4:
            raise ValueError(f"{path}: a KITTI .bin holds 4 float32 per point (x y z reflectance); "
                             f"{raw.size} values is not a multiple of 4")
        return np.ascontiguousarray(raw.reshape(-1, 4)[:, :3])
    if suffix == ".npy":
        values = np.load(path, allow_pickle=False)
        if values.ndim not in (2, 3) or values.shape[-1] < 3 or not np.issubdtype(values.dtype, np.number):
            raise ValueError(f"{path}: expected numbers of shape [N,C] or [H,W,C] with C >= 3 (x y z first), "
                             f"got {values.dtype} {values.shape}")
        return np.ascontiguousarray(values.reshape(-1, values.shape[-1])[:, :3], dtype=np.float32)
    raise ValueError(f"{path}: point clouds are read from {', '.join(CLOUD_SUFFIXES)} files")
