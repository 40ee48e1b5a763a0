"""Readers for the public evaluation sets, in the layouts the method is evaluated on.

Depth (Marigold's evaluation layout, as Lotus-2 evaluates: a folder or the distributed ``.tar``,
plus its file list; each line ``rgb depth [extra]`` relative to the folder):

============ ============ ================ ======================================================
name         range (m)    depth file       mask
============ ============ ================ ======================================================
``nyuv2``    1e-3 … 10    PNG, mm          Eigen crop rows 45:471, cols 41:601 (640x480)
``kitti``    1e-5 … 80    PNG, 1/256 m     KITTI benchmark crop 352x1216, then the Eigen crop;
                                           list lines whose depth is ``None`` are skipped
``eth3d``    1e-5 … ∞     raw float32      (4032x6048, ``inf`` = no depth)
``scannet``  1e-3 … 10    PNG, mm
``diode``    0.6 … 350    ``.npy``, m      the third column: the ``_depth_mask.npy`` validity mask
============ ============ ================ ======================================================

Normals (DSINE's evaluation layout: ``<root>/<scene>/<name>_img.png`` with
``<name>_normal.png`` — 8-bit ``(n + 1)/2``, black = no normal — for ``nyuv2`` and ``scannet``,
``<name>_normal.exr`` — float ``n``, length < 0.5 = no normal — for ``ibims`` and ``sintel``, or
``<name>_normal.pkl`` for ``oasis``; the split file lists the ``_img`` paths). DSINE stores
normals in the model's convention (x left, y up, z toward the viewer); readers return them in the
ROS optical frame like the engine's output.

OASIS (the validation split, ``val/<id>_img.png``, as the official Lotus-2 / DSINE evaluation
reads it): the ``.pkl`` holds a dict with a region of interest ``min_y, max_y, min_x, max_x``
(inclusive) and its normals ``normal`` ``[max_y − min_y + 1, max_x − min_x + 1, 3]``; pixels
outside the region and all-zero normals inside it have no ground truth. OASIS's x and y point the
other way: they are negated into the model convention (as the official reader does).

``synthetic`` evaluates on held-out synthetic scenes (exact depth and normals).
"""

from __future__ import annotations

import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # iBims-1 / Sintel normals are EXR
import cv2

DEPTH_DATASETS = ("nyuv2", "kitti", "eth3d", "scannet", "diode")
NORMAL_DATASETS = ("nyuv2", "scannet", "ibims", "sintel", "oasis")
ETH3D_HW = (4032, 6048)
KITTI_BENCHMARK_HW = (352, 1216)


@dataclass(frozen=True)
class DepthRange:
    min_m: float
    max_m: float


DEPTH_RANGES = {
    "nyuv2": DepthRange(1e-3, 10.0), "kitti": DepthRange(1e-5, 80.0), "eth3d": DepthRange(1e-5, np.inf),
    "scannet": DepthRange(1e-3, 10.0), "diode": DepthRange(0.6, 350.0),
}


@dataclass(frozen=True, eq=False)
class DepthEvalSample:
    """``rgb`` uint8 ``[H,W,3]``; ``depth_m`` float32 ``[H,W]``; ``valid`` bool ``[H,W]`` evaluation mask."""

    name: str
    rgb: np.ndarray
    depth_m: np.ndarray
    valid: np.ndarray


@dataclass(frozen=True, eq=False)
class NormalEvalSample:
    """``rgb`` uint8 ``[H,W,3]``; ``normals`` float32 ``[H,W,3]`` optical frame; ``valid`` bool ``[H,W]``."""

    name: str
    rgb: np.ndarray
    normals: np.ndarray
    valid: np.ndarray


class _Files:
    """Relative paths inside a folder or a ``.tar`` archive (members ``./<path>`` or ``<path>``)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.exists():
            raise FileNotFoundError(f"evaluation data not found: {self.root}")
        self.tar = tarfile.open(self.root) if self.root.is_file() and tarfile.is_tarfile(self.root) else None

    def read(self, rel: str) -> bytes:
        if self.tar is None:
            path = self.root / rel
            if not path.is_file():
                raise FileNotFoundError(f"{path} not found (is the file list for this folder?)")
            return path.read_bytes()
        for name in (f"./{rel}", rel):
            try:
                return self.tar.extractfile(name).read()
            except KeyError:
                continue
        raise FileNotFoundError(f"{rel} not found in {self.root}")

    def image(self, rel: str, flags=cv2.IMREAD_UNCHANGED) -> np.ndarray:
        img = cv2.imdecode(np.frombuffer(self.read(rel), np.uint8), flags)
        if img is None:
            raise ValueError(f"cannot decode {rel} in {self.root}")
        return img

    def rgb(self, rel: str) -> np.ndarray:
        return cv2.cvtColor(self.image(rel, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def listing(self, pattern: str) -> list[str]:
        if self.tar is not None:
            import fnmatch

            names = [n.removeprefix("./") for n in self.tar.getnames()]
            return sorted(n for n in names if fnmatch.fnmatch(n, pattern))
        return sorted(str(p.relative_to(self.root)) for p in self.root.glob(pattern))


def _read_list(path: Path) -> list[list[str]]:
    lines = [ln.split() for ln in Path(path).read_text().splitlines()]
    return [ln for ln in lines if ln]


def _discover_depth(files: _Files, name: str) -> list[list[str]]:
    if name == "nyuv2":
        return [[r, r.replace("/rgb_", "/depth_")] for r in files.listing("**/rgb_*.png")]
    if name == "scannet":
        return [[r, r.replace("/color/", "/depth/").rsplit(".", 1)[0] + ".png"] for r in files.listing("**/color/*.jpg")]
    if name == "diode":
        rows = []
        for r in files.listing("**/*.png"):
            stem = r[:-4]
            rows.append([r, stem + "_depth.npy", stem + "_depth_mask.npy"])
        return rows
    raise ValueError(f"{name}: give the file list (--filenames {name}=FILE; Marigold's data_split/{name}/…)")


def depth_eval_samples(name: str, root: Path, filenames: Path | None = None, max_images: int | None = None):
    """Iterate :class:`DepthEvalSample` of a Marigold-layout depth evaluation set."""
    if name not in DEPTH_DATASETS:
        raise ValueError(f"depth dataset must be one of {DEPTH_DATASETS}, got {name!r}")
    files = _Files(root)
    rows = _read_list(filenames) if filenames else _discover_depth(files, name)
    if name == "kitti":
        rows = [r for r in rows if len(r) > 1 and r[1] != "None"]
    rng = DEPTH_RANGES[name]
    for row in rows[:max_images]:
        rgb = files.rgb(row[0])
        if name in ("nyuv2", "scannet"):
            depth = files.image(row[1]).astype(np.float32) / 1000.0
        elif name == "kitti":
            depth = files.image(row[1]).astype(np.float32) / 256.0
        elif name == "eth3d":
            depth = np.frombuffer(files.read(row[1]), dtype=np.float32).copy()
            depth[~np.isfinite(depth)] = 0.0
            depth = depth.reshape(ETH3D_HW)
        else:  # diode
            depth = np.load(io.BytesIO(files.read(row[1]))).squeeze().astype(np.float32)
        if name == "kitti":
            rgb, depth = kitti_benchmark_crop(rgb), kitti_benchmark_crop(depth)
        valid = (depth > rng.min_m) & (depth < rng.max_m)
        if name == "nyuv2":
            valid &= nyu_eigen_mask(depth.shape)
        elif name == "kitti":
            valid &= kitti_eigen_mask(depth.shape)
        elif name == "diode":
            valid &= np.load(io.BytesIO(files.read(row[2]))).squeeze().astype(bool)
        yield DepthEvalSample(name=row[0], rgb=rgb, depth_m=depth, valid=valid)


def kitti_benchmark_crop(img: np.ndarray) -> np.ndarray:
    """Bottom-centre 352x1216 crop of a KITTI frame (the benchmark size)."""
    H, W = img.shape[:2]
    h, w = KITTI_BENCHMARK_HW
    top, left = H - h, (W - w) // 2
    return np.ascontiguousarray(img[top:top + h, left:left + w])


def kitti_eigen_mask(hw: tuple[int, int]) -> np.ndarray:
    """Eigen et al.'s evaluation crop as fractions of the (benchmark-cropped) image."""
    H, W = hw
    mask = np.zeros(hw, bool)
    mask[int(0.3324324 * H):int(0.91351351 * H), int(0.0359477 * W):int(0.96405229 * W)] = True
    return mask


def nyu_eigen_mask(hw: tuple[int, int]) -> np.ndarray:
    """Eigen crop of NYUv2 (rows 45:471, cols 41:601 of the 480x640 frame)."""
    mask = np.zeros(hw, bool)
    mask[45:471, 41:601] = True
    return mask


def normal_eval_samples(name: str, root: Path, filenames: Path | None = None, max_images: int | None = None):
    """Iterate :class:`NormalEvalSample` of a DSINE-layout normal evaluation set."""
    if name not in NORMAL_DATASETS:
        raise ValueError(f"normal dataset must be one of {NORMAL_DATASETS}, got {name!r}")
    files = _Files(root)
    rels = [r[0] for r in _read_list(filenames)] if filenames else files.listing("**/*_img.png")
    if not rels:
        raise FileNotFoundError(f"no <name>_img.png files under {root}")
    for rel in rels[:max_images]:
        stem = rel[: rel.rindex("_img")]
        rgb = files.rgb(rel)
        if name in ("nyuv2", "scannet"):
            u = cv2.cvtColor(files.image(stem + "_normal.png"), cv2.COLOR_BGR2RGB)
            valid = u.sum(axis=-1) > 0
            n_model = u.astype(np.float32) / 255.0 * 2.0 - 1.0
        elif name == "oasis":
            n_model, valid = oasis_normals(files.read(stem + "_normal.pkl"), rgb.shape[:2], stem)
        else:
            exr = files.image(stem + "_normal.exr", cv2.IMREAD_UNCHANGED)
            n_model = cv2.cvtColor(exr, cv2.COLOR_BGR2RGB).astype(np.float32)
            valid = np.linalg.norm(n_model, axis=-1) > 0.5
        yield NormalEvalSample(name=rel, rgb=rgb, normals=-n_model, valid=valid)


def oasis_normals(data: bytes, hw: tuple[int, int], name: str = "") -> tuple[np.ndarray, np.ndarray]:
    """An OASIS ``_normal.pkl`` → model-convention normals ``[H,W,3]`` float32 and their mask ``[H,W]``.

    The region's normals are placed at ``[min_y:max_y+1, min_x:max_x+1]``, x and y negated; a
    pixel has ground truth where its normal is not all zero.
    """
    record = _load_numpy_pickle(data, name)
    try:
        y0, y1, x0, x1 = (int(record[k]) for k in ("min_y", "max_y", "min_x", "max_x"))
        roi = np.asarray(record["normal"], dtype=np.float32)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{name}_normal.pkl: not an OASIS normal record ({err})") from err
    H, W = hw
    if roi.shape != (y1 - y0 + 1, x1 - x0 + 1, 3) or y0 < 0 or x0 < 0 or y1 >= H or x1 >= W:
        raise ValueError(f"{name}_normal.pkl: region rows {y0}..{y1}, cols {x0}..{x1} with normals "
                         f"{list(roi.shape)} does not fit the {W}x{H} image")
    n_model = np.zeros((H, W, 3), np.float32)
    n_model[y0:y1 + 1, x0:x1 + 1] = roi * np.array([-1.0, -1.0, 1.0], np.float32)
    valid = np.zeros((H, W), bool)
    valid[y0:y1 + 1, x0:x1 + 1] = (roi != 0).any(axis=-1)
    return n_model, valid


#: What an evaluation pickle may reference: numpy arrays and scalars (it must not run code).
_PICKLE_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                   ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                   ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


def _load_numpy_pickle(data: bytes, name: str):
    import importlib
    import pickle

    class Restricted(pickle.Unpickler):
        def find_class(self, module, attr):
            if (module, attr) not in _PICKLE_ALLOWED:
                raise pickle.UnpicklingError(f"{module}.{attr} is not allowed in an evaluation file")
            return getattr(importlib.import_module(module), attr)

    errors = []
    for encoding in ("ASCII", "latin1"):  # latin1: pickles written by Python 2
        try:
            return Restricted(io.BytesIO(data), encoding=encoding).load()
        except (pickle.UnpicklingError, UnicodeDecodeError, EOFError, ValueError, AttributeError) as err:
            errors.append(err)
    raise ValueError(f"{name}_normal.pkl: cannot read it: {errors[-1]}")


def synthetic_eval_samples(count: int = 50, width_px: int = 160, height_px: int = 128, seed_offset: int = 1_000_000,
                           kinds=("indoor", "street")):
    """Held-out synthetic frames (scene seeds from ``seed_offset``): depth and normal samples together."""
    from .datasets import SyntheticDataset

    ds = SyntheticDataset(kinds=kinds, num_scenes=max(1, count), frames_per_scene=5, width_px=width_px,
                          height_px=height_px, seed_offset=seed_offset)
    for i in range(count):
        s = ds.load(i * 5 + (i % 5))
        with np.errstate(invalid="ignore"):
            depth_valid = np.isfinite(s.depth_m) & (s.depth_m > 0)
        depth = np.where(depth_valid, s.depth_m, 0.0).astype(np.float32)
        yield (DepthEvalSample(name=s.name, rgb=s.rgb, depth_m=depth, valid=depth_valid),
               NormalEvalSample(name=s.name, rgb=s.rgb, normals=np.nan_to_num(s.normals),
                                valid=np.isfinite(s.normals).all(-1)))
