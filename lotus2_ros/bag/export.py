"""Per-frame files for people and tools outside ROS (``--export-dir``), named by the image stamp.

For a frame stamped ``S`` (int nanoseconds, zero-padded to 19 digits so names sort by time)::

    S_disparity.npy   float32 [H,W] relative disparity in [0,1], larger = nearer (official scale)
    S_disparity.png   uint16 [H,W]: round(disparity · 65535)
    S_depth.npy       float32 [H,W] metric depth, metres, NaN invalid (frames with a metric fit only)
    S_depth.png       uint16 [H,W] millimetres, 0 invalid (REP-118 16UC1; beyond 65.535 m is 0)
    S_normal.npy      float32 [H,W,3] unit normals, ROS optical frame (x right, y down, z forward)
    S_normal.png      uint8 RGB, the usual normal colouring
    S.ply             metric point cloud (x y z, normals, colours), optical frame, metres
    S.json            stamp, frame_id, refined or not, image size, K, D, P, scale/shift and fit

Each file is written to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import cv2
import numpy as np

from ..io.image_msgs import depth_m_to_mm
from ..io.images import write_rgb
from ..io.ply import write_ply
from ..io.visualize import colorize_normals
from ..perception.pipeline import PerceptionOutput

_U16 = 65535


def frame_stem(stamp_ns: int) -> str:
    return f"{int(stamp_ns):019d}"


def disparity_to_u16(disparity: np.ndarray) -> np.ndarray:
    """Relative disparity in [0,1] as uint16 (0..65535); NaN becomes 0."""
    d = np.nan_to_num(np.asarray(disparity, dtype=np.float64), nan=0.0)
    return np.rint(np.clip(d, 0.0, 1.0) * _U16).astype(np.uint16)


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.ascontiguousarray(array, dtype=np.float32))
    os.replace(tmp, path)


def _save_png16(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    if not cv2.imwrite(str(tmp), image):
        raise OSError(f"cannot write {path}")
    os.replace(tmp, path)


def _save_rgb(path: Path, rgb: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    write_rgb(tmp, rgb)
    os.replace(tmp, path)


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def frame_metadata(out: PerceptionOutput) -> dict:
    """What ``S.json`` holds for ``out``."""
    meta: dict = {"stamp_ns": int(out.stamp_ns), "frame_id": out.frame_id, "refined": bool(out.refined),
                  "height_px": int(out.rgb.shape[0]), "width_px": int(out.rgb.shape[1])}
    if out.calibration is not None:
        meta["K"] = out.calibration.K.tolist()
        meta["D"] = list(out.calibration.D)
        meta["P"] = out.calibration.P.tolist()
    meta["depth_m"] = "1 / (scale * disparity + shift)"
    meta["scale_shift"] = list(out.scale_shift) if out.scale_shift is not None else None
    if out.scale_fit is not None:
        f = out.scale_fit
        meta["scale_fit"] = {"valid": bool(f.valid), "filtered": bool(f.filtered), "reason": f.reason,
                             "scale": _finite_or_none(f.scale), "shift": _finite_or_none(f.shift),
                             "num_points": int(f.num_points), "num_inliers": int(f.num_inliers),
                             "rmse_m": _finite_or_none(f.rmse_m), "abs_rel": _finite_or_none(f.abs_rel)}
    return meta


class FrameExporter:
    """Writes the files of each frame into one folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def export(self, out: PerceptionOutput) -> list[Path]:
        """Write the files of ``out`` (those of the products it has); returns their paths."""
        stem = self.folder / frame_stem(out.stamp_ns)
        written: list[Path] = []

        def path(suffix: str) -> Path:
            p = stem.with_name(stem.name + suffix)
            written.append(p)
            return p

        if out.disparity is not None:
            _save_npy(path("_disparity.npy"), out.disparity)
            _save_png16(path("_disparity.png"), disparity_to_u16(out.disparity))
        if out.depth_m is not None:
            _save_npy(path("_depth.npy"), out.depth_m)
            _save_png16(path("_depth.png"), depth_m_to_mm(out.depth_m))
        if out.normals is not None:
            _save_npy(path("_normal.npy"), out.normals)
            _save_rgb(path("_normal.png"), out.normals_colorized if out.normals_colorized is not None
                      else colorize_normals(out.normals))
        if out.points_m is not None:
            write_ply(path(".ply"), out.points_m, out.rgb, out.normals)
        meta = path(".json")
        tmp = meta.with_name(f".{meta.name}.tmp")
        tmp.write_text(json.dumps(frame_metadata(out), indent=1), encoding="utf-8")
        os.replace(tmp, meta)
        return written
