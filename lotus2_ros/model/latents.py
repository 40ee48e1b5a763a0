"""Latent-space helpers: 2×2 packing, position ids and the sharpener's flow-match schedule.

FLUX works on sequences of 2×2 latent patches: a ``[B,C,h,w]`` latent becomes
``[B,(h/2)(w/2),4C]`` tokens, each with a position id ``(0, row, col)``; text tokens all have
id ``(0, 0, 0)``.

The detail sharpener integrates a rectified flow with FlowMatch Euler steps. Its schedule is
the FLUX one: sigmas ``linspace(1, 1/N, N)`` moved by the resolution-dependent exponential
time shift ``mu`` (linear in the token count between the scheduler's base and max sequence
lengths), plus a terminal 0. The official Lotus-2 inference loads the scheduler with
``num_train_timesteps=10`` and passes ``timestep / 1000`` to the transformer, so the transformer
receives ``sigma * 10 / 1000`` (it multiplies by 1000 internally).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: ``num_train_timesteps`` the official Lotus-2 inference overrides the scheduler with.
LOTUS2_NUM_TRAIN_TIMESTEPS = 10


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """``[B,C,h,w]`` → ``[B,(h/2)(w/2),4C]`` (2×2 patches, channel-major inside a patch)."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise ValueError(f"latent height and width must be even to pack 2x2, got {h}x{w}")
    x = latents.view(b, c, h // 2, 2, w // 2, 2)  # [B,C,h/2,2,w/2,2]
    x = x.permute(0, 2, 4, 1, 3, 5)  # [B,h/2,w/2,C,2,2]
    return x.reshape(b, (h // 2) * (w // 2), c * 4)  # [B,N,4C]


def unpack_latents(tokens: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`pack_latents`: ``[B,N,4C]`` → ``[B,C,h,w]`` for latent size ``(h, w)``."""
    b, n, c4 = tokens.shape
    h, w = latent_hw
    if n != (h // 2) * (w // 2) or c4 % 4:
        raise ValueError(f"cannot unpack tokens of shape {tuple(tokens.shape)} to a {h}x{w} latent")
    x = tokens.view(b, h // 2, w // 2, c4 // 4, 2, 2)  # [B,h/2,w/2,C,2,2]
    x = x.permute(0, 3, 1, 4, 2, 5)  # [B,C,h/2,2,w/2,2]
    return x.reshape(b, c4 // 4, h, w)  # [B,C,h,w]


def image_position_ids(latent_hw: tuple[int, int], device, dtype) -> torch.Tensor:
    """Position ids ``[(h/2)(w/2), 3]`` of the packed grid: ``(0, row, col)``."""
    gh, gw = latent_hw[0] // 2, latent_hw[1] // 2
    ids = torch.zeros(gh, gw, 3)
    ids[..., 1] = torch.arange(gh)[:, None]
    ids[..., 2] = torch.arange(gw)[None, :]
    return ids.reshape(gh * gw, 3).to(device=device, dtype=dtype)


def text_position_ids(seq_len: int, device, dtype) -> torch.Tensor:
    """Text position ids ``[seq_len, 3]``, all zero."""
    return torch.zeros(seq_len, 3, device=device, dtype=dtype)


@dataclass(frozen=True)
class FlowSchedule:
    """The scheduler settings of a FLUX folder that the sharpener's schedule depends on."""

    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    base_shift: float = 0.5
    max_shift: float = 1.15
    use_dynamic_shifting: bool = True
    shift: float = 3.0
    num_train_timesteps: int = LOTUS2_NUM_TRAIN_TIMESTEPS

    @classmethod
    def from_scheduler_dir(cls, scheduler_dir: Path) -> "FlowSchedule":
        """Read ``scheduler_config.json``; ``num_train_timesteps`` is the Lotus-2 override (10)."""
        path = Path(scheduler_dir) / "scheduler_config.json"
        if not path.is_file():
            raise FileNotFoundError(f"scheduler config not found: {path}")
        cfg = json.loads(path.read_text())
        unsupported = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                                   "invert_sigmas", "shift_terminal", "stochastic_sampling") if cfg.get(k)]
        if unsupported or cfg.get("time_shift_type", "exponential") != "exponential":
            raise ValueError(f"{path}: unsupported scheduler settings {unsupported or cfg.get('time_shift_type')}")
        defaults = cls()
        return cls(
            base_image_seq_len=int(cfg.get("base_image_seq_len", defaults.base_image_seq_len)),
            max_image_seq_len=int(cfg.get("max_image_seq_len", defaults.max_image_seq_len)),
            base_shift=float(cfg.get("base_shift", defaults.base_shift)),
            max_shift=float(cfg.get("max_shift", defaults.max_shift)),
            use_dynamic_shifting=bool(cfg.get("use_dynamic_shifting", defaults.use_dynamic_shifting)),
            shift=float(cfg.get("shift", defaults.shift)),
        )

    def mu(self, image_seq_len: int) -> float:
        """Resolution-dependent shift: linear in the number of image tokens."""
        m = (self.max_shift - self.base_shift) / (self.max_image_seq_len - self.base_image_seq_len)
        b = self.base_shift - m * self.base_image_seq_len
        return image_seq_len * m + b

    def sigmas(self, num_steps: int, image_seq_len: int) -> np.ndarray:
        """Shifted sigmas for ``num_steps`` Euler steps, with the terminal 0 appended.

        Returns:
            ``float32`` array ``[num_steps + 1]``, decreasing from 1 to 0.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        s = np.linspace(1.0, 1.0 / num_steps, num_steps).astype(np.float32)
        if self.use_dynamic_shifting:
            s = math.exp(self.mu(image_seq_len)) / (math.exp(self.mu(image_seq_len)) + (1 / s - 1))
        else:
            s = self.shift * s / (1 + (self.shift - 1) * s)
        return np.concatenate([s.astype(np.float32), np.zeros(1, np.float32)])
