"""A randomly initialised tiny Lotus-2 model in exactly the official on-disk layout.

``make_tiny_model(OUTDIR)`` writes::

    OUTDIR/base_model/   FLUX.1-dev layout: model_index.json, scheduler/, transformer/, vae/,
                         text_encoder/ (CLIP), text_encoder_2/ (T5), tokenizer/, tokenizer_2/
    OUTDIR/weights/      lotus-2_core_predictor_{depth,normal}.safetensors,
                         lotus-2_detail_sharpener_{depth,normal}.safetensors (LoRA, rank 4 / 8),
                         lotus-2_lcm_{depth,normal}.safetensors, lotus-2_prompt_embeds.safetensors

so tests and the demo go through the same loading path as the real weights. The architecture
keeps every structural fact of the real model (16 latent channels, VAE factor 8, 2×2 packing,
guidance embedding, double and single blocks, the official LoRA targets) at toy widths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .lcm import LocalContinuityModule
from .prompt_embeds import export_prompt_embeds
from .tiny_text import write_tiny_text_stack
from .weights import OFFICIAL_LORA_TARGETS

#: LoRA ranks of the tiny model (the release uses 128 / 256; different here too, so rank inference is exercised).
TINY_LORA_RANKS = {"depth": 4, "normal": 8}
TINY_TEXT_DIM = 32

TINY_TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=64, num_layers=1, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=TINY_TEXT_DIM, pooled_projection_dim=TINY_TEXT_DIM,
    guidance_embeds=True, axes_dims_rope=(4, 6, 6),
)
TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, norm_num_groups=8,
    block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.3611, shift_factor=0.1159,
    use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True,
)
#: FLUX.1-dev's scheduler settings.
FLUX_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096,
)


@dataclass(frozen=True)
class TinyModel:
    """Folders written by :func:`make_tiny_model`."""

    base_model: Path
    weights: Path


def make_tiny_model(out_dir: Path, seed: int = 0, *, force: bool = False) -> TinyModel:
    """Write a seeded random tiny model (base model + Lotus-2 files + prompt embeddings).

    Args:
        out_dir: Folder to create; must not exist or be empty unless ``force``.
        seed: Seeds every random tensor; the same seed writes identical weights.
        force: Allow writing into a non-empty folder (overwrites the tiny model's own files).

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``force`` is false.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} is not empty; pass force=True (--force) to write into it")
    model = TinyModel(base_model=out_dir / "base_model", weights=out_dir / "weights")
    model.base_model.mkdir(parents=True, exist_ok=True)
    model.weights.mkdir(parents=True, exist_ok=True)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(**TINY_TRANSFORMER_CONFIG)
        transformer.save_pretrained(model.base_model / "transformer")
        vae = AutoencoderKL(**TINY_VAE_CONFIG)
        vae.save_pretrained(model.base_model / "vae")
        for i, task in enumerate(("depth", "normal")):
            gen = torch.Generator().manual_seed(seed * 1000 + 17 + i)
            for kind in ("core_predictor", "detail_sharpener"):
                sd = random_lora_state_dict(transformer, TINY_LORA_RANKS[task], gen)
                save_file(sd, str(model.weights / f"lotus-2_{kind}_{task}.safetensors"))
            lcm = random_lcm_state_dict(vae.config.latent_channels, gen)
            save_file(lcm, str(model.weights / f"lotus-2_lcm_{task}.safetensors"))
    FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG).save_pretrained(model.base_model / "scheduler")
    write_tiny_text_stack(model.base_model, t5_dim=TINY_TEXT_DIM, clip_dim=TINY_TEXT_DIM, seed=seed)
    (model.base_model / "model_index.json").write_text(json.dumps(_model_index(), indent=2) + "\n")
    export_prompt_embeds(model.base_model, model.weights, force=force)
    return model


def lora_target_modules(transformer: nn.Module, targets=OFFICIAL_LORA_TARGETS) -> list[tuple[str, nn.Linear]]:
    """The Linear layers the official LoRA adapts (suffix match, as peft does), in module order."""
    return [
        (name, m) for name, m in transformer.named_modules()
        if isinstance(m, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets)
    ]


def random_lora_state_dict(transformer: nn.Module, rank: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """A LoRA state dict in the release's key format with non-zero A and B (so it changes outputs)."""
    sd = {}
    for name, layer in lora_target_modules(transformer):
        a = torch.randn(rank, layer.in_features, generator=gen) / layer.in_features ** 0.5
        b = torch.randn(layer.out_features, rank, generator=gen) * (0.5 / rank ** 0.5)
        sd[f"transformer.{name}.lora_A.weight"] = a.contiguous()
        sd[f"transformer.{name}.lora_B.weight"] = b.contiguous()
    return sd


def random_lcm_state_dict(num_channels: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """An LCM state dict (``lcm.0.*``, ``lcm.2.*``) with small random weights."""
    module = LocalContinuityModule(num_channels)
    return {k: (torch.randn(v.shape, generator=gen) * 0.05).contiguous() for k, v in module.state_dict().items()}


def _model_index() -> dict:
    import diffusers

    return {
        "_class_name": "FluxPipeline",
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
