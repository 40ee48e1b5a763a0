"""LiDAR points drawn on the camera image: the check of a LiDAR–camera calibration.

For each frame, :class:`LidarOverlay` does what the metric fit does before it looks at the
prediction — the image the model would see and the calibration the outputs are aligned with
(:func:`~lotus2_ros.perception.pipeline.aligned_input`: rectified with ``rectify``, the camera
model ``camera_model`` names), then the fit's own projection
(:meth:`~lotus2_ros.perception.metric.MetricFitter.project`: the camera model, the extrinsic the
frame came with, the depth window and the camera–LiDAR parallax-occlusion test) — and writes:

* ``S_overlay.png``: the image with every kept point drawn, coloured by depth (near red, far
  blue); depth edges of a good calibration line up with colour changes.
* ``S_lidar_uvz.npy``: ``float32 [M,3]``, per point ``(u, v, depth_m)`` — column and row in the
  image's pixels (centres at integers) and the depth seen from the camera, metres: exactly the
  points the fit samples (before its depth-edge test, which needs the prediction).
* ``overlay.json``: per frame the stamp, frame ids, camera model, ``T_camera_lidar`` and where
  it came from, and how many points were in view and hidden.

Pixel coordinates are those of the camera image (``output_resolution: camera``); at processing
resolution the fit uses the same model scaled to that size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry.calibration import CameraCalibration
from ..geometry.camera_model import CameraModel
from ..geometry.lidar_projection import LidarProjection
from ..geometry.rectify import Rectifier
from ..io.calibration_files import CLOUD_SUFFIXES, read_camera_info_yaml, read_cloud_file
from ..io.images import IMAGE_SUFFIXES, read_rgb, write_rgb
from ..io.visualize import draw_depth_points
from .config import ConfigError, PerceptionConfig
from .metric import MetricFitter, MetricReference
from .pipeline import Frame, aligned_input

__all__ = ["LidarOverlay", "OverlayResult", "folder_frames"]


@dataclass
class OverlayResult:
    """One frame's projection as the fit sees it.

    Attributes:
        stem: File-name stem of the frame's files.
        frame: The input frame (with its LiDAR reference).
        rgb: ``uint8 [H,W,3]`` the image the model would see (rectified with ``rectify``).
        calibration: The calibration it is aligned with.
        projection: The kept points (``u_px``, ``v_px``, ``z_m``, cloud rows).
        extrinsic_source: Where ``T_camera_lidar`` came from (``"tf"``, ``"parameter"``, ``"file"``).
    """

    stem: str
    frame: Frame
    rgb: np.ndarray
    calibration: CameraCalibration
    projection: LidarProjection
    extrinsic_source: str = ""

    @property
    def uvz(self) -> np.ndarray:
        """``float32 [M,3]``: ``(u, v, depth_m)`` per kept point."""
        p = self.projection
        return np.stack([p.u_px, p.v_px, p.z_m], axis=1).astype(np.float32, copy=False)

    def metadata(self) -> dict:
        p, ref = self.projection, self.frame.reference
        model = CameraModel.from_calibration(self.calibration)
        return {"stem": self.stem, "stamp_ns": int(self.frame.stamp_ns), "frame_id": self.frame.frame_id,
                "lidar_stamp_ns": int(ref.stamp_ns), "camera_model": "rectified" if model.rectified else "raw",
                "P": self.calibration.P.tolist(), "R": self.calibration.R.tolist(), "K": self.calibration.K.tolist(),
                "D": list(self.calibration.D), "T_camera_lidar": np.asarray(ref.T_camera_lidar).tolist(),
                "extrinsic_source": self.extrinsic_source, "points": p.num_points, "in_view": p.num_in_view,
                "hidden_by_parallax": p.num_occluded, "drawn": int(p.z_m.size)}


class LidarOverlay:
    """The fit's projection of each frame's LiDAR sweep, written as an image overlay and an array."""

    def __init__(self, config: PerceptionConfig):
        """Args:
            config: The node's parameters: ``rectify``, ``camera_model``, ``lidar_min_range_m``,
                ``lidar_max_range_m`` (and the extrinsic settings, used by the frame source).
        """
        self.config = config.replace(metric_source="lidar") if config.metric_source != "lidar" else config
        self.fitter = MetricFitter(self.config)
        self.rectifier = Rectifier()

    def project(self, frame: Frame, stem: str, extrinsic_source: str = "") -> OverlayResult:
        """The points the fit of ``frame`` would sample.

        Raises:
            ValueError: The frame has no camera_info or no LiDAR reference.
        """
        if frame.calibration is None or frame.reference is None or frame.reference.points_lidar_m is None:
            raise ValueError(f"frame {stem}: a LiDAR overlay needs a camera_info and a LiDAR sweep")
        rgb, calibration = aligned_input(frame.rgb, frame.calibration, self.config, self.rectifier)
        projection = self.fitter.project(frame.reference, calibration)
        return OverlayResult(stem, frame, rgb, calibration, projection, extrinsic_source)

    @staticmethod
    def write(result: OverlayResult, folder: Path, radius_px: int = 1) -> list[Path]:
        """Write ``<stem>_overlay.png`` and ``<stem>_lidar_uvz.npy`` (each under a temporary name, renamed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        p = result.projection
        png = folder / f"{result.stem}_overlay.png"
        tmp = folder / f".{result.stem}_overlay.tmp.png"
        write_rgb(tmp, draw_depth_points(result.rgb, p.u_px, p.v_px, p.z_m, radius_px=radius_px))
        os.replace(tmp, png)
        npy = folder / f"{result.stem}_lidar_uvz.npy"
        tmp = folder / f".{result.stem}_lidar_uvz.tmp.npy"
        with open(tmp, "wb") as f:
            np.save(f, result.uvz)
        os.replace(tmp, npy)
        return [png, npy]


def write_summary(folder: Path, results: Iterable[dict], skipped: dict[str, int]) -> Path:
    """``overlay.json``: the per-frame metadata and the frames skipped, by reason."""
    path = Path(folder) / "overlay.json"
    doc = {"files": {"<stem>_overlay.png": "the image with the fit's LiDAR points, coloured by depth "
                                            "(near red, far blue)",
                     "<stem>_lidar_uvz.npy": "float32 [M,3]: u, v (pixels, centres at integers), depth_m"},
           "frames": list(results), "skipped": skipped}
    tmp = path.with_name(".overlay.json.tmp")
    tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


@dataclass
class FolderFrames:
    """Frames of a folder: images and clouds paired by file stem, one calibration, one extrinsic."""

    images: list[Path]
    clouds: dict[str, Path]
    calibration: CameraCalibration
    T_camera_lidar: np.ndarray
    frame_id: str = "camera"
    skipped: dict[str, int] = field(default_factory=dict)

    def __iter__(self) -> Iterator[tuple[Frame, str]]:
        for i, image in enumerate(self.images):
            cloud = self.clouds.get(image.stem)
            if cloud is None:
                self.skipped["no cloud with the image's stem"] = self.skipped.get("no cloud with the image's stem", 0) + 1
                continue
            rgb = read_rgb(image)
            if rgb.shape[:2] != (self.calibration.height_px, self.calibration.width_px):
                raise ValueError(f"{image} is {rgb.shape[1]}x{rgb.shape[0]} but the calibration is "
                                 f"{self.calibration.width_px}x{self.calibration.height_px}")
            reference = MetricReference(points_lidar_m=read_cloud_file(cloud), T_camera_lidar=self.T_camera_lidar,
                                        stamp_ns=i)
            yield Frame(rgb=rgb, stamp_ns=i, frame_id=self.frame_id, calibration=self.calibration,
                        reference=reference), image.stem


def folder_frames(images_dir: Path, clouds_dir: Path, camera_info_yaml: Path, T_camera_lidar: np.ndarray) -> FolderFrames:
    """Images (``.png``, ``.jpg``, …) and clouds (``.npy``, KITTI ``.bin``) with the same stem, sorted by name.

    Raises:
        ConfigError: A folder is missing or has no images; the calibration is unreadable.
    """
    for what, d in (("images", images_dir), ("clouds", clouds_dir)):
        if not Path(d).is_dir():
            raise ConfigError(f"the {what} folder {d} does not exist")
    images = sorted(p for p in Path(images_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    clouds = {p.stem: p for p in sorted(Path(clouds_dir).iterdir()) if p.suffix.lower() in CLOUD_SUFFIXES}
    if not images:
        raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    try:
        calibration = read_camera_info_yaml(camera_info_yaml)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return FolderFrames(images, clouds, calibration, np.asarray(T_camera_lidar, dtype=np.float64))
