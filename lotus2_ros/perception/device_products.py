"""Per-frame products on the model's device: the GPU path of post-processing and colourising.

With a CUDA model the decoded images are already on the GPU, so the pipeline computes there what
it would otherwise compute on the host — resizing back to the output size and the optical-frame
normals (the backend's ``to_depth_tensor`` / ``to_normals_tensor``), the colourised images (this
module) — and brings everything back with **one** download (:func:`download`); the input went up
once as uint8 (``images_to_tensor``). The colourisers give exactly what their numpy counterparts
in :mod:`lotus2_ros.io.visualize` give for the same input (the same float32 operations in the same
order; the tests check it on the CPU). On a CPU device the pipeline keeps the numpy/OpenCV forms,
which are faster there.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ..io.visualize import turbo_rgb_table

__all__ = ["colorize_disparity_tensor", "colorize_normals_tensor", "download"]


def colorize_disparity_tensor(disparity: torch.Tensor) -> torch.Tensor:
    """:func:`~lotus2_ros.io.visualize.colorize_disparity` (default range) of an ``[H,W]`` float32 tensor.

    Returns:
        ``uint8`` ``[H,W,3]`` RGB on the same device; NaN/Inf pixels black.
    """
    d = disparity.to(torch.float32)
    finite = torch.isfinite(d)
    lo = torch.where(finite, d, torch.inf).amin()
    hi = torch.where(finite, d, -torch.inf).amax()
    none_finite = ~finite.any()
    lo = torch.where(none_finite, 0.0, lo)  # the numpy form's (0, 1) for an image without a finite value
    hi = torch.where(none_finite, 1.0, hi)
    # numpy: 255.0 / (hi − lo) in Python (double) floats, applied as float32.
    lo64, hi64 = lo.to(torch.float64), hi.to(torch.float64)
    scale = torch.where(hi64 > lo64, 255.0 / (hi64 - lo64), 0.0).to(torch.float32)
    idx = (torch.where(finite, d, lo) - lo) * scale
    idx = idx.clamp_(0, 255).to(torch.uint8)  # truncation, as astype(np.uint8)
    rgb = _turbo_table(d.device)[idx.long()]  # [H,W,3]
    return rgb.masked_fill_(~finite[..., None], 0)


def colorize_normals_tensor(normals: torch.Tensor) -> torch.Tensor:
    """:func:`~lotus2_ros.io.visualize.colorize_normals` of ``[H,W,3]`` optical-frame unit normals.

    Returns:
        ``uint8`` ``[H,W,3]`` RGB on the same device; pixels with a NaN/Inf component black.
    """
    n = normals.to(torch.float32)
    x = (1.0 - n) * 127.5
    x += 0.5
    x = x.clamp_(0, 255)  # a no-op for unit normals ([0.5, 255.5] truncates the same)
    x = x.masked_fill_(~torch.isfinite(n).all(dim=-1, keepdim=True), 0.0)
    return x.to(torch.uint8)


def download(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Copy device tensors to host numpy arrays with one transfer (one byte buffer, split on the host).

    Args:
        tensors: Tensors on one device (any dtype numpy has, any shape).

    Returns:
        The same keys, C-contiguous numpy arrays with the tensors' dtypes and shapes (views of one buffer).
    """
    if not tensors:
        return {}
    parts = [t.contiguous().reshape(-1).view(torch.uint8) for t in tensors.values()]
    host = torch.cat(parts).cpu().numpy() if len(parts) > 1 else parts[0].cpu().numpy()
    out, offset = {}, 0
    for (key, t), part in zip(tensors.items(), parts, strict=True):
        n = part.numel()
        dtype = torch.empty((), dtype=t.dtype).numpy().dtype
        out[key] = host[offset: offset + n].view(dtype).reshape(tuple(t.shape))
        offset += n
    return out


@lru_cache(maxsize=8)
def _turbo_table(device: torch.device) -> torch.Tensor:
    """The RGB Turbo table ``[256,3]`` uint8 on ``device``."""
    return torch.from_numpy(turbo_rgb_table()).to(device)
