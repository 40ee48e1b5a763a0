"""The Local Continuity Module (LCM) of Lotus-2.

A small residual convolution applied to the core predictor's unpacked latent: it smooths the
2×2-patch seams that a single-step transformer prediction leaves. The layout matches the
official state dict (``lcm.0.*`` and ``lcm.2.*``): conv3×3 C→2C, GELU, conv3×3 2C→C, residual.
"""

from __future__ import annotations

import torch
from torch import nn


class LocalContinuityModule(nn.Module):
    """``x + conv(gelu(conv(x)))`` on a ``[B,C,h,w]`` latent (C = 16 for FLUX)."""

    def __init__(self, num_channels: int = 16):
        super().__init__()
        self.num_channels = num_channels
        self.lcm = nn.Sequential(
            nn.Conv2d(num_channels, num_channels * 2, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(num_channels * 2, num_channels, kernel_size=3, padding=1),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Args: latents ``[B,C,h,w]``. Returns ``[B,C,h,w]`` in the module's dtype."""
        x = latents.to(self.lcm[0].weight.dtype)
        return x + self.lcm(x)
