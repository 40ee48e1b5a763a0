"""One labelled training frame, its geometric transforms, and the targets the model learns.

A :class:`Sample` holds what the readers load, in one convention whatever the dataset:
uint8 RGB, z-depth in metres (NaN where unknown), unit normals in the ROS optical frame (NaN
where unknown), an optional sky mask (known to be infinitely far) and the intrinsics. The
transforms (resize, crop, horizontal flip) keep all of them consistent: a flip mirrors the
normals' x component and moves the principal point.

Targets (what the VAE encodes and the core predictor learns):

* depth → affine-invariant disparity normalised per image: ``d = 1/z`` over valid pixels,
  ``lo``/``hi`` its 2nd/98th percentiles, ``t = clip(2·(d − lo)/(hi − lo) − 1, −1, 1)``;
  sky and pixels without depth become the far plane ``−1``; replicated to 3 channels.
  Decoded, the channel mean ``(t + 1)/2`` is the engine's ``[0, 1]`` disparity (larger = nearer).
* normals → the model convention (x left, y up, z toward the viewer): ``n_model = −n_optical``,
  ``[−1, 1]`` per channel; pixels without a normal become ``(0, 0, 0)``. Decoded, the engine's
  ``model_to_optical`` inverts this exactly.

Each target comes with a weight mask: 1 where the target value is known (valid pixels, and sky
for depth), 0 where the data has holes, so the loss ignores what the labels do not say.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

#: Robust percentiles of the per-image disparity normalisation (Marigold / Lotus "truncnorm": 2 %).
DISPARITY_PERCENTILES = (2.0, 98.0)
#: Relative depth jump between neighbours above which a depth-derived normal is not trusted.
MAX_RELATIVE_DEPTH_STEP = 0.1


@dataclass(frozen=True, eq=False)
class Sample:
    """One labelled frame.

    Attributes:
        rgb: ``uint8`` ``[H,W,3]`` RGB.
        depth_m: ``float32`` ``[H,W]`` z-depth along the optical axis in metres, NaN where
            unknown; ``None`` if the frame has no depth.
        normals: ``float32`` ``[H,W,3]`` unit normals in the ROS optical frame (x right, y down,
            z forward), facing the camera, NaN where unknown; ``None`` if the frame has none.
        sky: ``bool`` ``[H,W]``, True where the scene is known to be infinitely far (its depth is
            NaN/invalid but its disparity is 0); ``None`` if the dataset does not say.
        K: ``float64`` ``[3,3]`` pinhole intrinsics in pixels of this image; ``None`` if unknown.
        name: Identifier of the frame (relative path), for logs.
    """

    rgb: np.ndarray
    depth_m: np.ndarray | None = None
    normals: np.ndarray | None = None
    sky: np.ndarray | None = None
    K: np.ndarray | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 3 or self.rgb.shape[2] != 3:
            raise ValueError(f"{self.name}: rgb must be uint8 [H,W,3], got {self.rgb.dtype} {self.rgb.shape}")
        hw = self.rgb.shape[:2]
        for field, want in (("depth_m", hw), ("normals", (*hw, 3)), ("sky", hw)):
            value = getattr(self, field)
            if value is not None and tuple(value.shape) != tuple(want):
                raise ValueError(f"{self.name}: {field} has shape {value.shape}, expected {want} (rgb {self.rgb.shape})")
        if self.K is not None and np.asarray(self.K).shape != (3, 3):
            raise ValueError(f"{self.name}: K must be [3,3], got {np.asarray(self.K).shape}")

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.rgb.shape[0]), int(self.rgb.shape[1])


# ----------------------------------------------------------------------------- transforms
def hflip(sample: Sample) -> Sample:
    """Mirror left-right: images flip, normals' x changes sign, ``cx → W − 1 − cx``."""
    normals = None
    if sample.normals is not None:
        normals = sample.normals[:, ::-1].copy()
        normals[..., 0] *= -1.0
    K = None
    if sample.K is not None:
        K = np.array(sample.K, dtype=np.float64)
        K[0, 2] = sample.hw[1] - 1 - K[0, 2]
    return replace(
        sample,
        rgb=sample.rgb[:, ::-1].copy(),
        depth_m=None if sample.depth_m is None else sample.depth_m[:, ::-1].copy(),
        normals=normals,
        sky=None if sample.sky is None else sample.sky[:, ::-1].copy(),
        K=K,
    )


def crop(sample: Sample, top: int, left: int, height: int, width: int) -> Sample:
    """Crop a window (pixels); the principal point moves with it."""
    H, W = sample.hw
    if not (0 <= top and 0 <= left and height > 0 and width > 0 and top + height <= H and left + width <= W):
        raise ValueError(f"{sample.name}: crop {height}x{width} at ({top},{left}) outside a {H}x{W} image")
    rows, cols = slice(top, top + height), slice(left, left + width)
    K = None
    if sample.K is not None:
        K = np.array(sample.K, dtype=np.float64)
        K[0, 2] -= left
        K[1, 2] -= top
    return replace(
        sample,
        rgb=np.ascontiguousarray(sample.rgb[rows, cols]),
        depth_m=None if sample.depth_m is None else np.ascontiguousarray(sample.depth_m[rows, cols]),
        normals=None if sample.normals is None else np.ascontiguousarray(sample.normals[rows, cols]),
        sky=None if sample.sky is None else np.ascontiguousarray(sample.sky[rows, cols]),
        K=K,
    )


def resize(sample: Sample, height: int, width: int) -> Sample:
    """Resize to ``height`` x ``width``: RGB area/bilinear, labels nearest (never mixes valid and invalid)."""
    H, W = sample.hw
    if (H, W) == (height, width):
        return sample
    interp = cv2.INTER_AREA if height < H and width < W else cv2.INTER_LINEAR
    K = None
    if sample.K is not None:
        # Pixel centres map as (u + 0.5)·s − 0.5.
        sx, sy = width / W, height / H
        K = np.array(sample.K, dtype=np.float64)
        K[0, 0] *= sx
        K[1, 1] *= sy
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5

    def nearest(a):
        return None if a is None else cv2.resize(a, (width, height), interpolation=cv2.INTER_NEAREST)

    sky = None if sample.sky is None else nearest(sample.sky.astype(np.uint8)).astype(bool)
    return replace(sample, rgb=cv2.resize(sample.rgb, (width, height), interpolation=interp),
                   depth_m=nearest(sample.depth_m), normals=nearest(sample.normals), sky=sky, K=K)


def resize_short_side(sample: Sample, short_px: int) -> Sample:
    """Scale so the shorter side is ``short_px`` (aspect kept, sides truncated)."""
    H, W = sample.hw
    s = short_px / min(H, W)
    return resize(sample, max(1, int(H * s)), max(1, int(W * s)))


def random_crop(sample: Sample, height: int, width: int, rng: np.random.Generator) -> Sample:
    """A uniformly placed ``height`` x ``width`` window (the whole image side if it is smaller)."""
    H, W = sample.hw
    h, w = min(height, H), min(width, W)
    return crop(sample, int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1)), h, w)


def center_crop_to_multiple(sample: Sample, multiple: int = 16) -> Sample:
    """Crop the centre so both sides are multiples of ``multiple`` (VAE ×8 and 2×2 packing need 16)."""
    H, W = sample.hw
    h, w = (H // multiple) * multiple, (W // multiple) * multiple
    if h == 0 or w == 0:
        raise ValueError(f"{sample.name}: image {H}x{W} is smaller than {multiple} px")
    return crop(sample, (H - h) // 2, (W - w) // 2, h, w) if (h, w) != (H, W) else sample


# ----------------------------------------------------------------------------- geometry
def normals_from_depth(depth_m: np.ndarray, K: np.ndarray, max_step: float = MAX_RELATIVE_DEPTH_STEP) -> np.ndarray:
    """Surface normals of a z-depth map from central differences of the back-projected points.

    Args:
        depth_m: ``[H,W]`` z-depth in metres, NaN/≤0 where unknown.
        K: ``[3,3]`` intrinsics in pixels.
        max_step: Largest relative depth change between the two neighbours along a direction;
            larger steps are depth discontinuities, where no normal is defined.

    Returns:
        ``float32`` ``[H,W,3]`` unit normals in the optical frame facing the camera; NaN on the
        image border, next to unknown depth and across discontinuities.
    """
    z = np.where(np.isfinite(depth_m) & (depth_m > 0), depth_m, np.nan).astype(np.float64)
    H, W = z.shape
    u = (np.arange(W) - K[0, 2]) / K[0, 0]
    v = (np.arange(H) - K[1, 2]) / K[1, 1]
    P = np.stack([z * u[None, :], z * v[:, None], z], axis=-1)  # [H,W,3] metres
    du = np.full_like(P, np.nan)
    dv = np.full_like(P, np.nan)
    du[:, 1:-1] = P[:, 2:] - P[:, :-2]
    dv[1:-1] = P[2:] - P[:-2]
    n = np.cross(dv, du)  # (down) x (right) points toward the camera for a fronto-parallel plane
    with np.errstate(invalid="ignore"):
        jump_u = np.full_like(z, np.inf)
        jump_v = np.full_like(z, np.inf)
        jump_u[:, 1:-1] = np.abs(z[:, 2:] - z[:, :-2]) / z[:, 1:-1]
        jump_v[1:-1] = np.abs(z[2:] - z[:-2]) / z[1:-1]
        ok = (jump_u <= 2 * max_step) & (jump_v <= 2 * max_step)
        norm = np.linalg.norm(n, axis=-1, keepdims=True)
        n = n / norm
        facing = np.sum(n * P, axis=-1, keepdims=True) > 0
    n = np.where(facing, -n, n)
    n[~(ok & np.isfinite(norm[..., 0]) & (norm[..., 0] > 0))] = np.nan
    return n.astype(np.float32)


# ----------------------------------------------------------------------------- targets
def depth_valid_mask(sample: Sample) -> np.ndarray:
    """Pixels with a finite, positive depth."""
    if sample.depth_m is None:
        return np.zeros(sample.hw, bool)
    d = sample.depth_m
    with np.errstate(invalid="ignore"):
        return np.isfinite(d) & (d > 0)


def disparity_target(depth_m: np.ndarray, valid: np.ndarray, sky: np.ndarray | None = None,
                     percentiles: tuple[float, float] = DISPARITY_PERCENTILES) -> tuple[np.ndarray, np.ndarray]:
    """Per-image normalised disparity in ``[−1, 1]`` and its weight mask (see the module docstring).

    Args:
        depth_m: ``[H,W]`` z-depth in metres.
        valid: ``[H,W]`` bool, pixels whose depth is trusted.
        sky: ``[H,W]`` bool or None, pixels known to be infinitely far (target −1, weight 1).
        percentiles: Lower/upper percentile of the valid disparities mapped to −1 / +1.

    Returns:
        ``(target [H,W] float32, weight [H,W] float32)``. With fewer than 2 distinct valid
        disparities the whole target is 0 and the weight 0 (nothing to learn from the frame).
    """
    target = np.full(depth_m.shape, -1.0, np.float32)
    weight = np.zeros(depth_m.shape, np.float32)
    if valid.any():
        disp = 1.0 / depth_m[valid].astype(np.float64)
        lo, hi = np.percentile(disp, percentiles)
        if hi - lo > 1e-12 * max(abs(hi), 1.0):
            target[valid] = np.clip(2.0 * (disp - lo) / (hi - lo) - 1.0, -1.0, 1.0)
            weight[valid] = 1.0
            if sky is not None:
                weight[sky & ~valid] = 1.0
            return target, weight
    return np.zeros(depth_m.shape, np.float32), weight


def normal_target(normals_optical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Model-convention normals ``[H,W,3]`` in ``[−1, 1]`` (``−n_optical``; 0 where unknown) and weight."""
    valid = np.isfinite(normals_optical).all(axis=-1)
    target = np.where(valid[..., None], -normals_optical, 0.0).astype(np.float32)
    return np.clip(target, -1.0, 1.0), valid.astype(np.float32)
