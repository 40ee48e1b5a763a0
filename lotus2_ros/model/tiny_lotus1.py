"""Randomly initialised tiny Lotus-1 models in exactly the released diffusers pipeline layout.

``make_tiny_lotus1(OUTDIR, mode="g")`` writes one folder per task::

    OUTDIR/lotus-depth-g-tiny[-disparity]/   model_index.json, unet/, vae/, scheduler/,
    OUTDIR/lotus-normal-g-tiny/              text_encoder/, tokenizer/, feature_extractor/,
                                             lotus-1_prompt_embeds.safetensors

so ``--backend lotus1 --weights OUTDIR`` loads both tasks through the same code as the releases.
The architecture keeps every structural fact of the real model — SD2's U-Net topology (four
levels, linear-projection transformers, cross-attention on CLIP states), the ``projection``
class embedding of the task switcher (4 → time-embedding width), 8 input channels for Lotus-G
(4 for Lotus-D), a 4-channel VAE with factor 8 and scaling 0.18215, a CLIP text encoder, the
release's DDIM scheduler (``prediction_type: sample``) — at toy widths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .tiny_text import CLIP_MAX_LENGTH, save_clip_text_model, write_clip_tokenizer

TINY_CROSS_DIM = 32
TINY_UNET_CONFIG = dict(
    sample_size=64, out_channels=4, layers_per_block=1, block_out_channels=(16, 16, 32, 32),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(2, 2, 4, 4), cross_attention_dim=TINY_CROSS_DIM, norm_num_groups=8,
    use_linear_projection=True, flip_sin_to_cos=True, freq_shift=0,
    class_embed_type="projection", projection_class_embeddings_input_dim=4,
)
TINY_VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
    block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215, sample_size=64,
)
#: The scheduler of the ``lotus-depth-g-v1-0`` release (unused by one-step inference, kept for the layout).
RELEASE_SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="sample",
    timestep_spacing="leading",
)
PIPELINE_CLASS = {"g": "LotusGPipeline", "d": "LotusDPipeline"}


@dataclass(frozen=True)
class TinyLotus1:
    """Folders written by :func:`make_tiny_lotus1`: the parent and one pipeline folder per task."""

    root: Path
    folders: dict[str, Path]


def model_index(mode: str) -> dict:
    """``model_index.json`` of a released Lotus-1 folder (class name by mode)."""
    return {
        "_class_name": PIPELINE_CLASS[mode], "_diffusers_version": "0.28.0",
        "feature_extractor": ["transformers", "CLIPImageProcessor"], "image_encoder": [None, None],
        "requires_safety_checker": False, "safety_checker": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }


def write_pipeline_parts(folder: Path, mode: str, *, tokenizer_from: Path | None = None,
                         text_encoder=None) -> None:
    """``model_index.json``, ``scheduler/``, ``feature_extractor/`` and (tiny or given) text stack."""
    from diffusers import DDIMScheduler

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(model_index(mode), indent=2) + "\n")
    DDIMScheduler(**RELEASE_SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    fe = folder / "feature_extractor"
    fe.mkdir(exist_ok=True)
    (fe / "preprocessor_config.json").write_text(json.dumps({
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_processor_type": "CLIPImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "rescale_factor": 0.00392156862745098,
        "size": {"shortest_edge": 224}}, indent=2) + "\n")


def make_tiny_lotus1(out_dir: Path, *, mode: str = "g", seed: int = 0, depth_output: str = "disparity",
                     tasks: tuple[str, ...] = ("depth", "normal"), force: bool = False) -> TinyLotus1:
    """Write seeded random tiny Lotus-1 pipeline folders (and their prompt caches).

    Args:
        out_dir: Folder to create; must not exist or be empty unless ``force``.
        mode: ``"g"`` (8-channel U-Net, noise input) or ``"d"`` (4 channels).
        seed: Seeds every random tensor; the same seed writes identical weights.
        depth_output: ``"disparity"`` names the depth folder ``…-disparity`` (as the v2 releases),
            ``"depth"`` not (as v1-0).
        tasks: Which task folders to write.
        force: Allow writing into a non-empty folder.

    Raises:
        FileExistsError: ``out_dir`` is not empty and ``force`` is false.
        ValueError: A bad ``mode`` / ``depth_output`` / task.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from .lotus1 import export_prompt_embeds

    if mode not in PIPELINE_CLASS:
        raise ValueError(f"mode must be g or d, got {mode!r}")
    if depth_output not in ("disparity", "depth"):
        raise ValueError(f"depth_output must be disparity or depth, got {depth_output!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise FileExistsError(f"{out_dir} is not empty; pass force=True (--force) to write into it")
    folders = {}
    for i, task in enumerate(tasks):
        if task not in ("depth", "normal"):
            raise ValueError(f"task must be depth or normal, got {task!r}")
        suffix = "-disparity" if task == "depth" and depth_output == "disparity" else ""
        folder = out_dir / f"lotus-{task}-{mode}-tiny{suffix}"
        write_pipeline_parts(folder, mode)
        vocab = write_clip_tokenizer(folder / "tokenizer")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1000 + 31 + i)
            unet = UNet2DConditionModel(in_channels=8 if mode == "g" else 4, **TINY_UNET_CONFIG)
            vae = AutoencoderKL(**TINY_VAE_CONFIG)
            encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=vocab, hidden_size=TINY_CROSS_DIM, intermediate_size=2 * TINY_CROSS_DIM,
                projection_dim=TINY_CROSS_DIM, num_hidden_layers=2, num_attention_heads=2,
                max_position_embeddings=CLIP_MAX_LENGTH, hidden_act="gelu", bos_token_id=vocab - 2,
                eos_token_id=vocab - 1, pad_token_id=vocab - 1)).eval()
        unet.save_pretrained(folder / "unet")
        vae.save_pretrained(folder / "vae")
        save_clip_text_model(encoder, folder / "text_encoder")
        export_prompt_embeds(folder, force=True)
        folders[task] = folder
    return TinyLotus1(root=out_dir, folders=folders)
