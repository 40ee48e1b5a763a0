"""Image ⇄ model-input conversions and the Lotus-2 resize policy.

Pure tensor functions, no model state. The policy is the one the official Lotus-2 inference
applies (see DESIGN.md):

1. if the long edge exceeds ``process_res`` (1024 by default), scale so it becomes
   ``process_res`` (both sides truncated to int); never upscale;
2. scale by ``(short // 16) * 16 / short`` (truncate) and floor both sides to multiples of 16;
3. bilinear, ``align_corners=False``, no antialiasing, on the ``[-1, 1]`` float image — in two
   resizes when the cap applies (first to the capped size, then to the multiples of 16), as the
   official code does; one resize otherwise.

Outputs are resized back to the input size with the same bilinear interpolation.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.normals import MIN_NORM

#: The model works on multiples of this many pixels (VAE factor 8 × 2×2 packing).
SIZE_MULTIPLE_PX = 16
#: Default cap on the long edge, as in the official inference.
DEFAULT_PROCESS_RES = 1024


def processing_size(height_px: int, width_px: int, process_res: int | None = DEFAULT_PROCESS_RES) -> tuple[int, int]:
    """Return the ``(height, width)`` the model processes an image of the given size at.

    Args:
        height_px: Input image height in pixels (≥ 16).
        width_px: Input image width in pixels (≥ 16).
        process_res: Cap on the long edge in pixels, or ``None`` for no cap. Never upscales.

    Returns:
        ``(h, w)``, both positive multiples of 16.

    Raises:
        ValueError: If the image is smaller than 16 px on a side or ``process_res`` < 16.
    """
    if height_px < SIZE_MULTIPLE_PX or width_px < SIZE_MULTIPLE_PX:
        raise ValueError(
            f"image size {height_px}x{width_px} (HxW) is too small: both sides must be at least "
            f"{SIZE_MULTIPLE_PX} px"
        )
    if process_res is not None and process_res < SIZE_MULTIPLE_PX:
        raise ValueError(f"process_res must be >= {SIZE_MULTIPLE_PX} or None, got {process_res}")
    h, w = capped_size(height_px, width_px, process_res)
    short = min(h, w)
    scale = (short // SIZE_MULTIPLE_PX) * SIZE_MULTIPLE_PX / short
    h, w = int(h * scale), int(w * scale)
    h, w = (h // SIZE_MULTIPLE_PX) * SIZE_MULTIPLE_PX, (w // SIZE_MULTIPLE_PX) * SIZE_MULTIPLE_PX
    if h < SIZE_MULTIPLE_PX or w < SIZE_MULTIPLE_PX:
        # Only reachable with extreme aspect ratios (e.g. 16x4000 capped to 1024).
        raise ValueError(
            f"image size {height_px}x{width_px} (HxW) has too extreme an aspect ratio for "
            f"process_res={process_res}: it would be processed at {h}x{w}"
        )
    return h, w


def capped_size(height_px: int, width_px: int, process_res: int | None) -> tuple[int, int]:
    """Size after step 1 of the policy only (the long-edge cap; unchanged if not exceeded)."""
    h, w = int(height_px), int(width_px)
    if process_res is not None and max(h, w) > process_res:
        scale = process_res / max(h, w)
        h, w = int(h * scale), int(w * scale)
    return h, w


def resize_for_model(x: torch.Tensor, process_res: int | None = DEFAULT_PROCESS_RES) -> torch.Tensor:
    """Resize ``[B,C,H,W]`` to its processing size with the official two-step resizing.

    The official inference resizes with torch. On the CPU a step runs on OpenCV only where both
    sample at exactly the same source positions (:func:`_opencv_samples_as_torch`, e.g.
    1280x720 -> 1024x576, or any power-of-two factor), where the two differ by the rounding of
    the interpolation arithmetic alone (a few ulp); otherwise torch's own kernel runs, so the
    model's input never moves by more than that.
    """
    final = processing_size(x.shape[-2], x.shape[-1], process_res)
    for size in (capped_size(x.shape[-2], x.shape[-1], process_res), final):
        exact = _opencv_samples_as_torch(x.shape[-2], size[0]) and _opencv_samples_as_torch(x.shape[-1], size[1])
        x = resize_bilinear(x, size) if exact else _resize_bilinear_torch(x, size)
    return x


@lru_cache(maxsize=64)
def _opencv_samples_as_torch(size_in: int, size_out: int) -> bool:
    """Whether OpenCV and torch sample an axis of ``size_in`` → ``size_out`` at the same positions.

    torch computes the source position ``scale·(i + 0.5) − 0.5`` in float32, OpenCV in double
    rounded to float32. They agree for every ``i`` when the exact value is a float32 number:
    ``scale = size_in/size_out`` = ``p/q`` with ``q`` a power of two, and the numerators
    ``(2i + 1)·p − q`` (over ``2q``) below 2**24. Then the indices and weights are the same too.
    """
    if size_in == size_out:
        return True
    g = math.gcd(size_in, size_out)
    p, q = size_in // g, size_out // g
    return q & (q - 1) == 0 and (2 * size_out + 1) * p + q < 2**24


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """Convert uint8 RGB images to a float32 tensor in ``[-1, 1]``.

    Args:
        images: ``uint8`` array ``[H,W,3]`` or ``[B,H,W,3]``, RGB.
        device: Where the tensor goes.

    Returns:
        ``float32`` tensor ``[B,3,H,W]`` in ``[-1, 1]``.

    Raises:
        ValueError: On a wrong dtype or shape.
    """
    if not isinstance(images, np.ndarray):
        raise ValueError(f"images must be a numpy array, got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 RGB, got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must have shape [H,W,3] or [B,H,W,3], got {tuple(images.shape)}")
    images = np.ascontiguousarray(images)
    if torch.device(device).type == "cpu" and images.size:
        # A uint8 has 256 values: one look-up pass through the table of the exact float32 results
        # instead of three passes (convert, divide, subtract); same values, same channels-last
        # strides as below. Other devices get the uint8 (4x fewer bytes to upload) and convert there.
        b, h, w, _ = images.shape
        unit = cv2.LUT(images.reshape(b * h, w, 3), _cpu_unit_lut())  # [B*H,W,3] float32
        return torch.from_numpy(unit.reshape(b, h, w, 3)).permute(0, 3, 1, 2)  # [B,3,H,W]
    return _uint8_to_unit(torch.from_numpy(images).to(device))


def _uint8_to_unit(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B,H,W,3]`` → float32 ``[B,3,H,W]`` in ``[-1, 1]`` (channels-last strides)."""
    rgb = rgb.permute(0, 3, 1, 2).to(torch.float32)  # [B,3,H,W]
    return rgb / 127.5 - 1.0


@lru_cache(maxsize=1)
def _cpu_unit_lut() -> np.ndarray:
    """``[256]`` float32: what :func:`_uint8_to_unit` gives for each uint8 value on the CPU."""
    values = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 256, 1).expand(1, 1, 256, 3)  # [1,1,256,3]
    return np.ascontiguousarray(_uint8_to_unit(values)[0, 0, 0].numpy())  # [256]


def resize_bilinear(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=False``, no antialias); identity if already that size.

    float32 CPU tensors outside autograd are resized by OpenCV (``INTER_LINEAR``, the same
    interpolation, 5-10x faster than torch's CPU kernel on camera-size images); the result keeps
    the input's memory format. The two agree within float32 rounding of the sample positions
    (torch computes them in float32, OpenCV in double: up to ~1e-4 relative at 1280 px).
    Everything else (GPU, half precision, tensors that need gradients) goes through torch.

    Args:
        x: ``[B,C,H,W]`` floating tensor.
        size_hw: Target ``(height, width)``.
    """
    size_hw = (int(size_hw[0]), int(size_hw[1]))
    if tuple(x.shape[-2:]) == size_hw:
        return x
    if _opencv_resizable(x):
        return _resize_bilinear_cv2(x, size_hw)
    return _resize_bilinear_torch(x, size_hw)


def _resize_bilinear_torch(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size_hw):
        return x
    return F.interpolate(x, size=tuple(size_hw), mode="bilinear", align_corners=False)


def _opencv_resizable(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.ndim == 4 and not x.requires_grad
            and x.numel() > 0 and min(x.shape[-2:]) > 0)


def _resize_bilinear_cv2(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """:func:`resize_bilinear` of a float32 CPU ``[B,C,H,W]`` tensor with ``cv2.resize``."""
    b, c, _, _ = x.shape
    h, w = size_hw
    if c <= 4 and x.permute(0, 2, 3, 1).is_contiguous():  # channels-last: resize HWC images as they are
        src = x.detach().permute(0, 2, 3, 1).numpy()  # [B,H,W,C] view
        out = np.empty((b, h, w, c), np.float32)
        for i in range(b):
            # cv2 drops a trailing single channel; resize into the [h,w] (or [h,w,C]) slice.
            cv2.resize(src[i] if c > 1 else src[i, ..., 0], (w, h), dst=out[i] if c > 1 else out[i, ..., 0],
                       interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(out).permute(0, 3, 1, 2)  # [B,C,h,w], channels-last strides
    return torch.from_numpy(resize_planes_bilinear(x.detach().contiguous().numpy(), size_hw))  # [B,C,h,w]


def resize_planes_bilinear(planes: np.ndarray, size_hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """:func:`resize_bilinear` for float32 numpy planes ``[..., H, W]`` → ``[..., h, w]`` (OpenCV, plane by plane).

    Identity (the same array) at the same size, unless ``out`` (a C-contiguous float32
    ``[..., h, w]`` array to write to) is given: then the planes are copied into it.
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    shape = (*planes.shape[:-2], h, w)
    if out is not None and (out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous float32 {shape} array, got {out.dtype} {out.shape}")
    if planes.shape[-2:] == (h, w):
        if out is None:
            return planes
        np.copyto(out, planes)
        return out
    src = np.ascontiguousarray(planes, dtype=np.float32)
    flat = src.reshape(-1, *src.shape[-2:])  # [N,H,W]
    dst = np.empty((flat.shape[0], h, w), np.float32) if out is None else out.reshape(-1, h, w)
    for i in range(flat.shape[0]):  # contiguous planes: no channel interleaving to undo
        cv2.resize(flat[i], (w, h), dst=dst[i], interpolation=cv2.INTER_LINEAR)
    return dst.reshape(shape)


def decoded_to_unit(decoded: torch.Tensor) -> torch.Tensor:
    """Map VAE output in ``[-1, 1]`` to ``[0, 1]`` float32 (clamped), as the official post-process."""
    return (decoded.to(torch.float32) / 2 + 0.5).clamp(0, 1)


def planar_model_to_optical_tensor(unit: torch.Tensor) -> torch.Tensor:
    """``[B,3,H,W]`` decoded normal image in ``[0,1]`` → ``[B,H,W,3]`` unit normals, ROS optical frame.

    The tensor form of :func:`~lotus2_ros.geometry.normals.planar_model_to_optical` (NaN where the
    decoded vector has no direction), on ``unit``'s device.
    """
    v = unit.to(torch.float32) * -2.0  # [B,3,H,W]
    v += 1.0  # 1 − 2u (2u is exact)
    x, y, z = v[:, 0], v[:, 1], v[:, 2]  # [B,H,W] each
    sq = x * x
    sq += y * y
    sq += z * z
    norm = sq.sqrt_()
    valid = (norm >= MIN_NORM) & (norm < torch.inf)  # NaN compares False
    out = torch.stack([x / norm, y / norm, z / norm], dim=-1)  # [B,H,W,3]
    return out.masked_fill_(~valid[..., None], torch.nan)
