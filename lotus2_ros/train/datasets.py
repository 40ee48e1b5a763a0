"""Training-set readers: Hypersim, Virtual KITTI 2, synthetic scenes and a plain folder format.

Every reader gives :class:`~lotus2_ros.train.samples.Sample` objects in one convention (z-depth
in metres with NaN where unknown, unit normals in the ROS optical frame) and carries the
geometric policy of its dataset (how frames are resized/cropped before flipping). Files are
read lazily in :meth:`load`; nothing is read at construction except folder listings.

Public layouts read here:

* **Hypersim** (``apple/ml-hypersim``): ``ROOT/<scene>/images/scene_<cam>_final_preview/
  frame.NNNN.tonemap.jpg`` with ``scene_<cam>_geometry_hdf5/frame.NNNN.depth_meters.hdf5``
  (distance from the camera centre in metres, 1024x768, focal 886.81 px) and
  ``frame.NNNN.normal_cam.hdf5`` (camera frame x right, y up, z backward; not always facing the
  camera). The split comes from the official ``metadata_images_split_scene_v1.csv`` (public
  release, ``split_partition_name``). Frames with missing files are dropped at indexing; frames
  whose depth contains NaN are rejected at load time (:class:`InvalidSample`) and the sampler
  draws again, so training is uniform over the complete frames.
* **Virtual KITTI 2** (``vkitti_2.0.3_{rgb,depth,textgt}``): ``<SceneXX>/<variation>/frames/
  rgb/Camera_<c>/rgb_NNNNN.jpg`` and ``frames/depth/Camera_<c>/depth_NNNNN.png`` (uint16
  centimetres). Depth beyond the 80 m far plane is sky. Intrinsics from ``intrinsic.txt`` when
  present, else the published constants; normals are derived from depth.
* **synthetic**: :mod:`lotus2_ros.synthetic` scenes rendered on the fly (exact geometry).
* **folder** (users' own data), see :class:`FolderDataset`.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .samples import Sample, center_crop_to_multiple, crop, hflip, normals_from_depth, random_crop, resize_short_side

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class InvalidSample(Exception):
    """A frame exists but its labels are unusable (e.g. NaN depth); the sampler draws another."""


@dataclass(frozen=True)
class FramePolicy:
    """How a dataset's frames are brought to training size.

    Attributes:
        resize_short_px: Scale so the shorter side has this many pixels (None: keep).
        crop_hw: Crop ``(height, width)`` after resizing (None: keep the whole frame).
        crop_mode: ``"random"`` (uniform position) or ``"kitti"`` (bottom-centre, the KITTI
            benchmark crop).
        flip_prob: Probability of a horizontal flip.
    """

    resize_short_px: int | None = None
    crop_hw: tuple[int, int] | None = None
    crop_mode: str = "random"
    flip_prob: float = 0.5

    def __post_init__(self):
        if self.crop_mode not in ("random", "kitti"):
            raise ValueError(f"crop_mode must be 'random' or 'kitti', got {self.crop_mode!r}")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")

    def apply(self, sample: Sample, rng: np.random.Generator) -> Sample:
        """Resize, crop, flip, then centre-crop to multiples of 16 px."""
        if self.resize_short_px:
            sample = resize_short_side(sample, self.resize_short_px)
        if self.crop_hw:
            h, w = self.crop_hw
            if self.crop_mode == "kitti":
                H, W = sample.hw
                h, w = min(h, H), min(w, W)
                sample = crop(sample, H - h, (W - w) // 2, h, w)
            else:
                sample = random_crop(sample, h, w, rng)
        if rng.random() < self.flip_prob:
            sample = hflip(sample)
        return center_crop_to_multiple(sample, 16)


class FrameDataset(Protocol):
    """What the batch sampler needs from a reader."""

    name: str
    policy: FramePolicy

    def __len__(self) -> int: ...

    def load(self, index: int) -> Sample: ...


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_png16(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise FileNotFoundError(f"cannot read depth image {path}")
    if img.dtype != np.uint16 or img.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel 16-bit PNG, got {img.dtype} {img.shape}")
    return img


def _K(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


# ============================================================================= Hypersim
HYPERSIM_FOCAL_PX = 886.81  # for the 1024x768 images
HYPERSIM_SPLIT_CSV = "metadata_images_split_scene_v1.csv"


def hypersim_distance_to_depth(distance_m: np.ndarray, focal_px: float = HYPERSIM_FOCAL_PX) -> np.ndarray:
    """Hypersim's ``depth_meters`` (distance to the camera centre) → z-depth along the optical axis."""
    H, W = distance_m.shape
    x = np.arange(W) - (W - 1) / 2.0
    y = np.arange(H) - (H - 1) / 2.0
    ray = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + focal_px**2)
    return (distance_m * (focal_px / ray)).astype(np.float32)


class HypersimDataset:
    """Hypersim frames of one official split (see the module docstring for the layout)."""

    name = "hypersim"

    def __init__(self, root: Path, split: str = "train", split_csv: Path | None = None,
                 policy: FramePolicy = FramePolicy(resize_short_px=576)):
        self.root = Path(root)
        self.policy = policy
        if not self.root.is_dir():
            raise FileNotFoundError(f"Hypersim folder not found: {self.root}")
        csv_path = Path(split_csv) if split_csv else self.root / HYPERSIM_SPLIT_CSV
        if csv_path.is_file():
            frames = self._frames_from_csv(csv_path, split)
        else:
            if split_csv:
                raise FileNotFoundError(f"Hypersim split file not found: {csv_path}")
            log.warning("%s not found: using every Hypersim frame under %s (no split)", HYPERSIM_SPLIT_CSV, self.root)
            frames = self._frames_from_listing()
        self.frames = [f for f in frames if all(p.is_file() for p in self._paths(*f))]
        if not self.frames:
            raise FileNotFoundError(f"no complete Hypersim frames ({split}) under {self.root}")
        if len(self.frames) < len(frames):
            log.info("Hypersim: %d of %d %s frames have missing files and are skipped",
                     len(frames) - len(self.frames), len(frames), split)

    @staticmethod
    def _frames_from_csv(path: Path, split: str) -> list[tuple[str, str, int]]:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        need = {"scene_name", "camera_name", "frame_id", "included_in_public_release", "split_partition_name"}
        if rows and not need <= set(rows[0]):
            raise ValueError(f"{path}: missing columns {sorted(need - set(rows[0]))}")
        return [(r["scene_name"], r["camera_name"], int(r["frame_id"])) for r in rows
                if r["included_in_public_release"].strip().lower() == "true" and r["split_partition_name"] == split]

    def _frames_from_listing(self) -> list[tuple[str, str, int]]:
        frames = []
        for jpg in sorted(self.root.glob("*/images/scene_*_final_preview/frame.*.tonemap.jpg")):
            cam = jpg.parent.name[len("scene_"):-len("_final_preview")]
            frames.append((jpg.parents[2].name, cam, int(jpg.name.split(".")[1])))
        return frames

    def _paths(self, scene: str, cam: str, frame: int) -> tuple[Path, Path, Path]:
        images = self.root / scene / "images"
        geo = images / f"scene_{cam}_geometry_hdf5"
        return (images / f"scene_{cam}_final_preview" / f"frame.{frame:04d}.tonemap.jpg",
                geo / f"frame.{frame:04d}.depth_meters.hdf5", geo / f"frame.{frame:04d}.normal_cam.hdf5")

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> Sample:
        import h5py  # only needed for Hypersim

        scene, cam, frame = self.frames[index]
        rgb_path, depth_path, normal_path = self._paths(scene, cam, frame)
        with h5py.File(depth_path, "r") as f:
            distance = np.asarray(f["dataset"], dtype=np.float32)
        if not np.isfinite(distance).all():
            raise InvalidSample(f"{depth_path}: depth has NaN/Inf pixels")
        with h5py.File(normal_path, "r") as f:
            n_cam = np.asarray(f["dataset"], dtype=np.float32)  # x right, y up, z backward
        rgb = _read_rgb(rgb_path)
        H, W = distance.shape
        focal = HYPERSIM_FOCAL_PX * W / 1024.0
        depth = hypersim_distance_to_depth(distance, focal)
        K = _K(focal, focal, (W - 1) / 2.0, (H - 1) / 2.0)
        normals = np.stack([n_cam[..., 0], -n_cam[..., 1], -n_cam[..., 2]], axis=-1)
        normals = _face_camera(normals, depth, K)
        return Sample(rgb=rgb, depth_m=depth, normals=normals, K=K, name=f"{scene}/{cam}/{frame:04d}")


def _face_camera(normals: np.ndarray, depth_m: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Flip normals that point away from the camera (n · ray > 0); renormalise; NaN stays NaN."""
    H, W = depth_m.shape
    rays = np.stack(np.broadcast_arrays(((np.arange(W) - K[0, 2]) / K[0, 0])[None, :],
                                        ((np.arange(H) - K[1, 2]) / K[1, 1])[:, None], np.ones((1, 1))), -1)
    away = np.sum(normals * rays, axis=-1, keepdims=True) > 0
    n = np.where(away, -normals, normals)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return n.astype(np.float32)


# ============================================================================= Virtual KITTI 2
VKITTI2_SCENES = ("Scene01", "Scene02", "Scene06", "Scene18", "Scene20")
#: Lotus trains on these four and keeps Scene01 out.
VKITTI2_TRAIN_SCENES = ("Scene02", "Scene06", "Scene18", "Scene20")
VKITTI2_VARIATIONS = ("15-deg-left", "15-deg-right", "30-deg-left", "30-deg-right", "clone",
                      "fog", "morning", "overcast", "rain", "sunset")
VKITTI2_FAR_PLANE_M = 80.0
VKITTI2_K = (725.0087, 725.0087, 620.5, 187.0)  # fx, fy, cx, cy for 1242x375
KITTI_BENCHMARK_HW = (352, 1216)


class VirtualKitti2Dataset:
    """Virtual KITTI 2 frames; ``root`` holds ``vkitti_2.0.3_rgb/`` and ``vkitti_2.0.3_depth/``
    (and optionally ``vkitti_2.0.3_textgt/``), or the ``SceneXX/`` folders of all of them merged.
    """

    name = "vkitti2"

    def __init__(self, root: Path, scenes=VKITTI2_TRAIN_SCENES, variations=VKITTI2_VARIATIONS,
                 cameras=("Camera_0", "Camera_1"),
                 policy: FramePolicy = FramePolicy(crop_hw=KITTI_BENCHMARK_HW, crop_mode="kitti")):
        self.root = Path(root)
        self.policy = policy
        if not self.root.is_dir():
            raise FileNotFoundError(f"Virtual KITTI 2 folder not found: {self.root}")
        split = (self.root / "vkitti_2.0.3_rgb").is_dir()
        self.rgb_root = self.root / "vkitti_2.0.3_rgb" if split else self.root
        self.depth_root = self.root / "vkitti_2.0.3_depth" if split else self.root
        self.text_root = self.root / "vkitti_2.0.3_textgt" if split else self.root
        self.frames: list[tuple[str, str, str, int]] = []
        for scene in scenes:
            for var in variations:
                for cam in cameras:
                    folder = self.rgb_root / scene / var / "frames" / "rgb" / cam
                    for jpg in sorted(folder.glob("rgb_*.jpg")):
                        idx = int(jpg.stem.split("_")[1])
                        if self._depth_path(scene, var, cam, idx).is_file():
                            self.frames.append((scene, var, cam, idx))
        if not self.frames:
            raise FileNotFoundError(f"no Virtual KITTI 2 frames with depth under {self.root} (scenes {list(scenes)})")
        self._intrinsics: dict[tuple[str, str], dict[tuple[int, int], tuple[float, ...]]] = {}

    def _depth_path(self, scene, var, cam, idx) -> Path:
        return self.depth_root / scene / var / "frames" / "depth" / cam / f"depth_{idx:05d}.png"

    def _K(self, scene: str, var: str, cam: str, idx: int) -> np.ndarray:
        key = (scene, var)
        if key not in self._intrinsics:
            table = {}
            path = self.text_root / scene / var / "intrinsic.txt"
            if path.is_file():
                for line in path.read_text().splitlines()[1:]:  # "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]"
                    parts = line.split()
                    if len(parts) == 6:
                        table[(int(parts[0]), int(parts[1]))] = tuple(float(p) for p in parts[2:])
            self._intrinsics[key] = table
        values = self._intrinsics[key].get((idx, int(cam.split("_")[1])), VKITTI2_K)
        return _K(*values)

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> Sample:
        scene, var, cam, idx = self.frames[index]
        rgb = _read_rgb(self.rgb_root / scene / var / "frames" / "rgb" / cam / f"rgb_{idx:05d}.jpg")
        depth = _read_png16(self._depth_path(scene, var, cam, idx)).astype(np.float32) / 100.0  # cm → m
        sky = depth >= VKITTI2_FAR_PLANE_M
        depth[sky | (depth <= 0)] = np.nan
        K = self._K(scene, var, cam, idx)
        return Sample(rgb=rgb, depth_m=depth, normals=normals_from_depth(depth, K), sky=sky, K=K,
                      name=f"{scene}/{var}/{cam}/{idx:05d}")


# ============================================================================= synthetic
class SyntheticDataset:
    """Frames of :mod:`lotus2_ros.synthetic` scenes, rendered on demand with exact labels.

    Frame ``i`` is scene ``i // frames_per_scene`` (kind alternating over ``kinds``, seed
    ``seed_offset + scene``), pose ``i % frames_per_scene`` of a dolly along the scene's free
    path. Different ``seed_offset`` ranges give disjoint scenes (train vs held-out).
    """

    name = "synthetic"

    def __init__(self, kinds=("indoor", "street"), num_scenes: int = 1000, frames_per_scene: int = 20,
                 width_px: int = 160, height_px: int = 128, hfov_deg: float = 70.0, seed_offset: int = 0,
                 policy: FramePolicy = FramePolicy()):
        from ..geometry.camera import PinholeCamera

        self.kinds = tuple(kinds)
        self.num_scenes, self.frames_per_scene = int(num_scenes), int(frames_per_scene)
        if not self.kinds or self.num_scenes < 1 or self.frames_per_scene < 1:
            raise ValueError("synthetic data needs at least one kind, scene and frame per scene")
        self.camera = PinholeCamera.from_fov(width_px, height_px, hfov_deg=hfov_deg)
        self.seed_offset = int(seed_offset)
        self.policy = policy
        self._scenes: OrderedDict[int, object] = OrderedDict()

    def __len__(self) -> int:
        return self.num_scenes * self.frames_per_scene

    def _scene(self, scene_index: int):
        from ..synthetic import make_scene

        if scene_index not in self._scenes:
            kind = self.kinds[scene_index % len(self.kinds)]
            self._scenes[scene_index] = make_scene(kind, self.seed_offset + scene_index)
            while len(self._scenes) > 16:
                self._scenes.popitem(last=False)
        return self._scenes[scene_index]

    def load(self, index: int) -> Sample:
        from ..synthetic import camera_trajectory, render

        scene_index, frame = divmod(int(index), self.frames_per_scene)
        scene = self._scene(scene_index)
        step = 2.0 * scene.path_length_m / self.frames_per_scene  # forward and back along the path
        pose = camera_trajectory(scene, frame + 1, step_m=step)[-1]
        out = render(scene, self.camera, pose)
        sky = ~np.isfinite(out.depth_m) if scene.name == "street" else None
        return Sample(rgb=out.rgb, depth_m=out.depth_m, normals=out.normals, sky=sky, K=self.camera.K,
                      name=f"{scene.name}-{scene.seed}/{frame:03d}")


# ============================================================================= user folders
class FolderDataset:
    """Users' own data in a plain folder::

        ROOT/rgb/<stem>.png|.jpg            RGB images
        ROOT/depth/<stem>.png               uint16 depth in millimetres, 0 = unknown, or
        ROOT/depth/<stem>.npy               float32 [H,W] z-depth in metres, NaN/0/Inf = unknown
        ROOT/normal/<stem>.npy              float32 [H,W,3] unit normals, ROS optical frame, NaN = unknown, or
        ROOT/normal/<stem>.png              RGB = (n_model + 1) / 2 · 255 (DSINE/Lotus colours), black = unknown
        ROOT/sky/<stem>.png                 optional: non-zero where the view is sky (infinitely far)
        ROOT/intrinsics.json                {"fx": .., "fy": .., "cx": .., "cy": ..} for every frame, or
        ROOT/intrinsics/<stem>.json         the same per frame

    Each frame needs RGB plus depth and/or normals. Without normals but with depth and
    intrinsics, normals are derived from depth.
    """

    name = "folder"

    def __init__(self, root: Path, policy: FramePolicy = FramePolicy(), derive_normals: bool = True):
        self.root = Path(root)
        self.policy = policy
        self.derive_normals = derive_normals
        rgb_dir = self.root / "rgb"
        if not rgb_dir.is_dir():
            raise FileNotFoundError(f"{self.root} has no rgb/ folder (see `lotus2 train-core --help` for the layout)")
        self.stems = sorted(p.stem for p in rgb_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.stems = [s for s in self.stems if self._find("depth", s) or self._find("normal", s)]
        if not self.stems:
            raise FileNotFoundError(f"{self.root}: no rgb/<stem> image has a depth/ or normal/ file")
        shared = self.root / "intrinsics.json"
        self._shared_K = _read_intrinsics(shared) if shared.is_file() else None

    def _find(self, kind: str, stem: str, suffixes=(".npy", ".png", ".jpg", ".jpeg")) -> Path | None:
        for suffix in suffixes:
            p = self.root / kind / f"{stem}{suffix}"
            if p.is_file():
                return p
        return None

    def __len__(self) -> int:
        return len(self.stems)

    def load(self, index: int) -> Sample:
        stem = self.stems[index]
        rgb = _read_rgb(self._find("rgb", stem, IMAGE_SUFFIXES))
        K = self._shared_K
        per_frame = self.root / "intrinsics" / f"{stem}.json"
        if per_frame.is_file():
            K = _read_intrinsics(per_frame)
        depth = normals = sky = None
        if (p := self._find("depth", stem, (".npy", ".png"))) is not None:
            if p.suffix == ".npy":
                depth = np.load(p).astype(np.float32)
            else:
                depth = _read_png16(p).astype(np.float32) / 1000.0  # mm → m
            with np.errstate(invalid="ignore"):
                depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
        if (p := self._find("normal", stem, (".npy", ".png"))) is not None:
            if p.suffix == ".npy":
                normals = np.load(p).astype(np.float32)
            else:
                u = _read_rgb(p)
                unknown = (u == 0).all(axis=-1)
                normals = -(u.astype(np.float32) / 127.5 - 1.0)  # model colours → optical
                with np.errstate(invalid="ignore", divide="ignore"):
                    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
                normals[unknown] = np.nan
        elif depth is not None and K is not None and self.derive_normals:
            normals = normals_from_depth(depth, K)
        if (p := self._find("sky", stem, (".png",))) is not None:
            sky = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0
        return Sample(rgb=rgb, depth_m=depth, normals=normals, sky=sky, K=K, name=stem)


def _read_intrinsics(path: Path) -> np.ndarray:
    try:
        d = json.loads(Path(path).read_text())
        return _K(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]))
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: intrinsics must be JSON with fx, fy, cx, cy in pixels ({err})") from err
