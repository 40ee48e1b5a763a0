"""The base model the Lotus-1 demo is trained from: a small Stable-Diffusion-2-structured folder.

``python -m lotus2_ros.train.lotus1_demo OUTDIR`` writes ``OUTDIR/base_model/`` in the layout of
``stabilityai/stable-diffusion-2-base`` (what the official Lotus-1 training starts from)::

    unet/          UNet2DConditionModel, SD2's structure (cross-attention on CLIP states, linear
                   projections, 4 input channels, no class embedding) at toy widths, random init
    vae/           AutoencoderKL with 4 latent channels and factor 8, trained on synthetic RGB,
                   disparity and normal images (:mod:`lotus2_ros.train.vae`); SD-style latent
                   normalisation (no shift, ``scaling_factor`` = 1 / latent RMS)
    text_encoder/  tiny CLIP text encoder, tokenizer/ its tokenizer
    scheduler/     SD2's noise schedule (scaled-linear betas 0.00085 … 0.012, 1000 steps)
    model_index.json

``lotus2 train-core --backend lotus1 --mode d|g --base-model OUTDIR/base_model`` then turns it
into a Lotus-1 model exactly as the official training turns SD2 into one (task switcher, 8
input channels for Lotus-G). ``scripts/train_lotus1_demo_model.sh`` runs all of it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..model.tiny_text import CLIP_MAX_LENGTH, save_clip_text_model, write_clip_tokenizer
from .vae import VaeTrainConfig, reconstruction_error, synthetic_image_pool, train_autoencoder

log = logging.getLogger(__name__)

TEXT_DIM = 32
#: SD2's U-Net topology (cross-attention, linear projections) at two levels of width 32/64.
DEMO_UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(4, 8), cross_attention_dim=TEXT_DIM, norm_num_groups=16, use_linear_projection=True,
    flip_sin_to_cos=True, freq_shift=0,
)
#: SD2's VAE structure (4 latent channels, factor 8, quant convs, mid-block attention) at small widths.
DEMO_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=16,
    block_out_channels=(16, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64,
)
#: SD2-base's noise schedule (its scheduler folder holds a PNDMScheduler with these betas).
SD2_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False, prediction_type="epsilon",
                    timestep_spacing="leading")


@torch.no_grad()
def set_sd_latent_scaling(vae, pool: np.ndarray, max_images: int = 96) -> float:
    """SD-style normalisation: no shift, ``scaling_factor`` = 1 / RMS of the posterior-mode latents.

    (The Lotus-1 pipelines, like every SD pipeline, multiply by ``scaling_factor`` and never shift.)
    """
    sel = np.linspace(0, len(pool) - 1, min(max_images, len(pool))).round().astype(int)
    z = torch.cat([vae.encode(torch.from_numpy(pool[i:i + 1])).latent_dist.mode() for i in sel])
    scale = float(1.0 / z.pow(2).mean().sqrt())
    vae.register_to_config(shift_factor=None, scaling_factor=scale)
    return scale


def build_sd2_base(out_dir: Path, *, unet_config: dict = DEMO_UNET_CONFIG, vae_config: dict = DEMO_VAE_CONFIG,
                   vae_train: VaeTrainConfig | None = VaeTrainConfig(), seed: int = 0, progress: bool = True) -> Path:
    """Write ``out_dir/base_model`` (see the module docstring); returns it. Resumes an interrupted VAE training.

    ``vae_train=None`` keeps the VAE at its random init (``scaling_factor`` 0.18215; tests that only
    look at latents).
    """
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    base = out_dir / "base_model"
    base.mkdir(parents=True, exist_ok=True)
    vocab = write_clip_tokenizer(base / "tokenizer")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text_dim = int(unet_config["cross_attention_dim"])
        encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab, hidden_size=text_dim, intermediate_size=2 * text_dim, projection_dim=text_dim,
            num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=CLIP_MAX_LENGTH, hidden_act="gelu",
            bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1)).eval()
    unet.save_pretrained(base / "unet")
    save_clip_text_model(encoder, base / "text_encoder")
    PNDMScheduler(**SD2_SCHEDULE).save_pretrained(base / "scheduler")
    report = {}
    if vae_train is not None:
        pool = synthetic_image_pool(vae_train)
        losses = train_autoencoder(vae, vae_train, pool, progress=progress, checkpoint=out_dir / "vae_checkpoint.pt")
        scale = set_sd_latent_scaling(vae, pool)
        report = {"vae_train": asdict(vae_train), "vae_final_loss": float(np.mean(losses[-50:])),
                  "vae_reconstruction_mae": reconstruction_error(vae, pool), "vae_scaling_factor": scale}
    vae.save_pretrained(base / "vae")
    (base / "model_index.json").write_text(json.dumps(_model_index(), indent=2) + "\n")
    (out_dir / "base_model_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return base


def _model_index() -> dict:
    import diffusers

    return {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
        "feature_extractor": [None, None], "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lotus2_ros.train.lotus1_demo", description=__doc__.split("\n")[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--vae-steps", type=int, default=VaeTrainConfig.steps)
    p.add_argument("--vae-batch-size", type=int, default=VaeTrainConfig.batch_size)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    base = build_sd2_base(args.outdir, vae_train=VaeTrainConfig(steps=args.vae_steps, batch_size=args.vae_batch_size,
                                                                seed=args.seed), seed=args.seed)
    print(f"--base-model {base}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
