"""A small ``AutoencoderKL`` trained on synthetic RGB, disparity and normal images.

At demo and test sizes the FLUX VAE (84 M parameters) is out of reach on a CPU, and a random
VAE cannot reconstruct anything, so pixel-space results of a random-VAE model mean nothing. This
trains a small stand-in with FLUX's structure (16 latent channels, factor 8) on the three kinds
of images the model encodes: RGB frames, normalised disparity targets replicated to 3 channels,
and normal targets. Objective: ``‖D(z) − x‖² + β·KL`` with ``z`` sampled from the posterior
(the engine encodes with the posterior mode); afterwards ``shift_factor`` / ``scaling_factor``
are set to the latent mean and 1/std, as for the FLUX VAE, so the transformer sees unit-scale
latents.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import sample_to_arrays
from .datasets import SyntheticDataset
from .samples import hflip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VaeTrainConfig:
    steps: int = 2000
    batch_size: int = 16
    crop_px: int = 64
    learning_rate: float = 1e-3
    kl_weight: float = 1e-6
    num_frames: int = 256
    frame_width_px: int = 160
    frame_height_px: int = 128
    seed: int = 0


def synthetic_image_pool(cfg: VaeTrainConfig) -> np.ndarray:
    """``[3N,3,H,W]`` float32 in [−1, 1]: RGB, disparity and normal images of N training frames."""
    ds = SyntheticDataset(num_scenes=max(1, cfg.num_frames // 8), frames_per_scene=8,
                          width_px=cfg.frame_width_px, height_px=cfg.frame_height_px)
    images = []
    for i in range(min(cfg.num_frames, len(ds))):
        sample = ds.load(i)
        if i % 2:
            sample = hflip(sample)
        a = sample_to_arrays(sample, ("depth", "normal"))
        images += [a["rgb"], a["depth"], a["normal"]]
    return np.stack(images).astype(np.float32)


def train_autoencoder(vae, cfg: VaeTrainConfig, pool: np.ndarray | None = None, progress: bool = True,
                      checkpoint: Path | None = None, checkpoint_every: int = 250) -> list[float]:
    """Train ``vae`` in place on random crops of the pool; sets its shift/scale factors; returns losses.

    With ``checkpoint`` (a file path), the weights, optimizer, schedule, RNG states and losses are
    saved every ``checkpoint_every`` steps and an existing file is resumed from, exactly.
    """
    from tqdm.auto import tqdm

    pool = synthetic_image_pool(cfg) if pool is None else pool
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.learning_rate * 0.05)
    losses: list[float] = []
    if checkpoint is not None and Path(checkpoint).is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own file
        vae.load_state_dict(state["vae"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        gen.set_state(state["torch_rng"])
        losses = list(state["losses"])
        log.info("VAE: resumed from %s at step %d", checkpoint, len(losses))
    vae.train()
    _, _, H, W = pool.shape
    c = min(cfg.crop_px, H, W)
    t0 = time.perf_counter()
    for step in tqdm(range(len(losses), cfg.steps), desc="train VAE", disable=not progress, unit="step",
                     initial=len(losses), total=cfg.steps):
        idx = rng.integers(len(pool), size=cfg.batch_size)
        ys, xs = rng.integers(H - c + 1, size=cfg.batch_size), rng.integers(W - c + 1, size=cfg.batch_size)
        x = torch.from_numpy(np.stack([pool[i, :, y:y + c, x_:x_ + c] for i, y, x_ in zip(idx, ys, xs)]))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = torch.mean((rec - x) ** 2) + cfg.kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == cfg.steps):
            tmp = Path(str(checkpoint) + ".tmp")
            torch.save({"vae": vae.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "numpy_rng": rng.bit_generator.state, "torch_rng": gen.get_state(), "losses": losses}, tmp)
            os.replace(tmp, checkpoint)
    vae.eval()
    set_latent_normalisation(vae, pool)
    log.info("VAE: %d steps (%.0f s in this run), final loss %.4f", cfg.steps, time.perf_counter() - t0,
             np.mean(losses[-50:]))
    return losses


@torch.no_grad()
def set_latent_normalisation(vae, pool: np.ndarray, max_images: int = 96) -> tuple[float, float]:
    """Set ``shift_factor`` = latent mean and ``scaling_factor`` = 1 / latent std (posterior mode)."""
    sel = np.linspace(0, len(pool) - 1, min(max_images, len(pool))).round().astype(int)
    z = torch.cat([vae.encode(torch.from_numpy(pool[i:i + 1])).latent_dist.mode() for i in sel])
    shift, scale = float(z.mean()), float(1.0 / z.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return shift, scale


@torch.no_grad()
def reconstruction_error(vae, pool: np.ndarray, max_images: int = 48) -> float:
    """Mean absolute error of ``D(mode(E(x)))`` in [−1, 1] units over (part of) the pool."""
    sel = np.linspace(0, len(pool) - 1, min(max_images, len(pool))).round().astype(int)
    err = []
    for i in sel:
        x = torch.from_numpy(pool[i:i + 1])
        err.append(float((vae.decode(vae.encode(x).latent_dist.mode()).sample - x).abs().mean()))
    return float(np.mean(err))
