"""Per-frame files of a :class:`PerceptionOutput`: the one exporter of ``predict``, the bag tool,
the demo and training validation.

For a stem ``S`` (the image's name for ``predict``; the stamp as 19-digit nanoseconds, so names
sort by time, for bags) it writes whichever products the result has::

    S_depth.npy     float32 [H,W] the depth task's output as the official code gives it: relative
                    (affine-invariant) disparity in [0,1], larger = nearer (Lotus-2, Lotus-1
                    ``*-disparity``), or relative depth, larger = farther (Lotus-1 ``v1-0``) — NOT metres
    S_depth.png     that output colour-mapped for viewing (near is red, far is blue)
    S_depth_std.npy float32 [H,W] its per-pixel standard deviation over a Lotus-G ensemble (same units)
    S_depth_m.npy   float32 [H,W] metric depth, metres, NaN invalid (results with a metric fit only)
    S_depth_m.png   uint16 [H,W] metric depth in millimetres, 0 invalid (REP-118 16UC1; > 65.535 m is 0)
    S_normal.npy    float32 [H,W,3] unit normals in the ROS optical frame (x right, y down, z forward)
    S_normal.png    the usual normal colouring
    S.ply           metric point cloud (x y z, normals, colours), optical frame, metres
    S.json          what each file holds, and stamp, frame_id, refined or not, sizes, K, D, R, P, the camera
                    model (raw or rectified), scale/shift, fit (with its reason)

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
from ..io.visualize import colorize_normals, colorize_relative
from .pipeline import PerceptionOutput

#: What each file holds (written into ``S.json`` too); ``_depth.npy`` depends on the model (:data:`RELATIVE_MEANINGS`).
FILE_MEANINGS = {
    "_depth_std.npy": "float32 [H,W] per-pixel standard deviation of _depth.npy over the Lotus-G ensemble "
                      "(same units), NaN invalid",
    "_depth.npy": "float32 [H,W] relative (affine-invariant) disparity in [0,1], larger = nearer "
                  "(the official Lotus scale, or the sequence's with relative_alignment); not metres",
    "_depth.png": "colour-mapped relative depth output (near red, far blue), for viewing",
    "_depth_m.npy": "float32 [H,W] metric depth in metres, NaN invalid",
    "_depth_m.png": "uint16 [H,W] metric depth in millimetres, 0 invalid (REP-118 16UC1)",
    "_normal.npy": "float32 [H,W,3] unit surface normals, ROS optical frame (x right, y down, z forward), "
                   "facing the camera, NaN invalid",
    "_normal.png": "RGB normal colouring, for viewing",
    ".ply": "metric point cloud (x y z in metres, normals, colours), camera optical frame",
    ".json": "this description and the frame's metadata",
}


RELATIVE_MEANINGS = {
    "disparity": FILE_MEANINGS["_depth.npy"],
    "depth": "float32 [H,W] relative (affine-invariant) depth in [0,1], larger = farther (the official Lotus-1 "
             "v1-0 output); not metres",
}


def stamp_stem(stamp_ns: int) -> str:
    """The stem of a frame exported by stamp: 19-digit nanoseconds (names sort by time)."""
    return f"{int(stamp_ns):019d}"


def planned_files(folder: Path, stem: str, tasks: tuple[str, ...], *, metric: bool = False,
                  points: bool = False, uncertainty: bool = False) -> list[Path]:
    """The files :meth:`FrameExporter.export` writes for a result of ``tasks`` (to check before a run)."""
    suffixes = []
    if "depth" in tasks:
        suffixes += ["_depth.npy", "_depth.png"] + (["_depth_std.npy"] if uncertainty else [])
        suffixes += ["_depth_m.npy", "_depth_m.png"] if metric else []
    if "normal" in tasks:
        suffixes += ["_normal.npy", "_normal.png"]
    if points:
        suffixes.append(".ply")
    suffixes.append(".json")
    return [Path(folder) / f"{stem}{s}" for s in suffixes]


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


def frame_metadata(out: PerceptionOutput, files: list[str] | None = None) -> dict:
    """What ``S.json`` holds for ``out`` (``files``: the names written, described by :data:`FILE_MEANINGS`)."""
    meta: dict = {"stamp_ns": int(out.stamp_ns), "frame_id": out.frame_id, "refined": bool(out.refined),
                  "refine_steps": int(out.refine_steps), "height_px": int(out.rgb.shape[0]),
                  "width_px": int(out.rgb.shape[1]), "process_hw_px": [int(v) for v in out.process_hw]}
    if files is not None:
        meanings = dict(FILE_MEANINGS, **{"_depth.npy": RELATIVE_MEANINGS[out.relative_kind or "disparity"]})
        meta["files"] = {name: next(m for s, m in meanings.items() if name.endswith(s)) for name in files}
    if out.calibration is not None:
        meta["K"] = out.calibration.K.tolist()
        meta["D"] = list(out.calibration.D)
        meta["R"] = out.calibration.R.tolist()
        meta["P"] = out.calibration.P.tolist()
        meta["camera_model"] = ("rectified: [u v w]' = P [R p; 1]" if out.camera_model.rectified
                                else "raw: K and plumb_bob D")
    alignment = getattr(out, "alignment", None)
    if alignment is not None:
        meta["relative_alignment"] = {
            "meaning": "relative output = scale * model output + shift: on the scale of the sequence's first frame "
                       "since the last reset", "scale": float(alignment.scale), "shift": float(alignment.shift),
            "reset": bool(alignment.reset), "reset_reason": alignment.reason}
    meta["depth_m"] = ("scale * relative_depth + shift" if out.relative_kind == "depth"
                       else "1 / (scale * disparity + shift)")
    meta["scale_shift"] = list(out.scale_shift) if out.scale_shift is not None else None
    if out.scale_fit is not None:
        f = out.scale_fit
        meta["scale_fit"] = {"valid": bool(f.valid), "filtered": bool(f.filtered), "reason": f.reason,
                             "reason_code": int(f.reason_code), "reason_name": f.reason_label,
                             "scale": _finite_or_none(f.scale), "shift": _finite_or_none(f.shift),
                             "num_points": int(f.num_points), "num_inliers": int(f.num_inliers),
                             "rmse_m": _finite_or_none(f.rmse_m), "abs_rel": _finite_or_none(f.abs_rel)}
    return meta


class FrameExporter:
    """Writes the files of each result into one folder."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def export(self, out: PerceptionOutput, stem: str | None = None) -> list[Path]:
        """Write the files of ``out`` (those of the products it has) as ``stem…``; returns their paths.

        Args:
            out: The result.
            stem: File-name stem; default: the stamp (:func:`stamp_stem`).
        """
        base = self.folder / (stem if stem is not None else stamp_stem(out.stamp_ns))
        written: list[Path] = []

        def path(suffix: str) -> Path:
            p = base.with_name(base.name + suffix)
            written.append(p)
            return p

        if out.relative is not None:
            _save_npy(path("_depth.npy"), out.relative)
            _save_rgb(path("_depth.png"), out.depth_colorized if out.depth_colorized is not None
                      else colorize_relative(out.relative, out.relative_kind,
                                             *((0.0, 1.0) if out.alignment is not None else (None, None))))
        if out.depth_uncertainty is not None:
            _save_npy(path("_depth_std.npy"), out.depth_uncertainty)
        if out.depth_m is not None:
            _save_npy(path("_depth_m.npy"), out.depth_m)
            _save_png16(path("_depth_m.png"), depth_m_to_mm(out.depth_m))
        if out.normals is not None:
            _save_npy(path("_normal.npy"), out.normals)
            _save_rgb(path("_normal.png"), out.normals_colorized if out.normals_colorized is not None
                      else colorize_normals(out.normals))
        if out.points_m is not None:
            write_ply(path(".ply"), out.points_m, out.rgb, out.normals)
        meta = path(".json")
        tmp = meta.with_name(f".{meta.name}.tmp")
        doc = frame_metadata(out, [p.name for p in written])
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        os.replace(tmp, meta)
        return written
