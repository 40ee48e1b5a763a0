"""The base model the demo is trained from: a small FLUX-structured transformer and a trained small VAE.

``python -m lotus2_ros.train.demo_model OUTDIR`` writes::

    OUTDIR/base_model/   FLUX layout: transformer/ (random init, to be fully fine-tuned),
                         vae/ (a small AutoencoderKL trained on synthetic RGB/disparity/normal
                         images, see :mod:`lotus2_ros.train.vae`), scheduler/ (FLUX's), tiny
                         text encoders + tokenizers, model_index.json
    OUTDIR/prompt/       lotus-2_prompt_embeds.safetensors of the empty prompt (512 T5 tokens, official)

``scripts/train_demo_model.sh`` then trains it with ``lotus2 train-core --full-finetune`` and
``lotus2 train-sharpener`` and evaluates it with ``lotus2 evaluate`` — the product's own commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..model.prompt_embeds import export_prompt_embeds
from ..model.tiny import FLUX_SCHEDULER_CONFIG
from ..model.tiny_text import write_tiny_text_stack
from .vae import VaeTrainConfig, reconstruction_error, synthetic_image_pool, train_autoencoder

log = logging.getLogger(__name__)

TEXT_DIM = 32
#: Two double-stream and four single-stream FLUX blocks at width 128 (4 heads of 32): 1.4 M parameters.
DEMO_TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=64, num_layers=2, num_single_layers=4, attention_head_dim=32,
    num_attention_heads=4, joint_attention_dim=TEXT_DIM, pooled_projection_dim=TEXT_DIM,
    guidance_embeds=True, axes_dims_rope=(8, 12, 12),
)
#: FLUX's VAE structure (16 latent channels, factor 8) at small widths.
DEMO_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=16,
    block_out_channels=(16, 32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False,
    mid_block_add_attention=False,
)


@dataclass(frozen=True)
class BaseModelFolders:
    base_model: Path
    prompt: Path


def build_base_model(out_dir: Path, *, transformer_config: dict = DEMO_TRANSFORMER_CONFIG,
                     vae_config: dict = DEMO_VAE_CONFIG, vae_train: VaeTrainConfig = VaeTrainConfig(),
                     seed: int = 0, progress: bool = True,
                     pretrained_vae: Path | None = None) -> BaseModelFolders:
    """Write a base model in FLUX layout with a trained small VAE and a random transformer.

    ``pretrained_vae``: reuse that already trained ``vae/`` folder instead of training one.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    out_dir = Path(out_dir)
    folders = BaseModelFolders(out_dir / "base_model", out_dir / "prompt")
    folders.base_model.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        FluxTransformer2DModel(**transformer_config).save_pretrained(folders.base_model / "transformer")
        vae = AutoencoderKL(**vae_config) if pretrained_vae is None else None
    report = {}
    if pretrained_vae is not None:
        shutil.copytree(pretrained_vae, folders.base_model / "vae")
        report["vae"] = f"copied from {Path(pretrained_vae).name}"
    else:
        pool = synthetic_image_pool(vae_train)
        losses = train_autoencoder(vae, vae_train, pool, progress=progress, checkpoint=out_dir / "vae_checkpoint.pt")
        vae.save_pretrained(folders.base_model / "vae")
        report = {"vae_train": asdict(vae_train), "vae_final_loss": float(sum(losses[-50:]) / len(losses[-50:])),
                  "vae_reconstruction_mae": reconstruction_error(vae, pool),
                  "vae_shift_factor": vae.config.shift_factor, "vae_scaling_factor": vae.config.scaling_factor}
    FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG).save_pretrained(folders.base_model / "scheduler")
    write_tiny_text_stack(folders.base_model, t5_dim=transformer_config["joint_attention_dim"],
                          clip_dim=transformer_config["pooled_projection_dim"], seed=seed)
    (folders.base_model / "model_index.json").write_text(json.dumps(_model_index(), indent=2) + "\n")
    # The official embeddings (512 T5 tokens from these text encoders), as the official inference computes them.
    export_prompt_embeds(folders.base_model, folders.prompt, force=True)
    (out_dir / "base_model_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return folders


def _model_index() -> dict:
    import diffusers

    return {
        "_class_name": "FluxPipeline", "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"], "vae": ["diffusers", "AutoencoderKL"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lotus2_ros.train.demo_model", description=__doc__.split("\n")[0])
    p.add_argument("outdir", type=Path)
    p.add_argument("--vae-steps", type=int, default=VaeTrainConfig.steps)
    p.add_argument("--vae-batch-size", type=int, default=VaeTrainConfig.batch_size)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    folders = build_base_model(args.outdir, vae_train=VaeTrainConfig(steps=args.vae_steps, batch_size=args.vae_batch_size,
                                                                     seed=args.seed), seed=args.seed)
    print(f"--base-model {folders.base_model} --prompt-embeds {folders.prompt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
