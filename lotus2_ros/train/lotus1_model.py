"""Trainable Lotus-1 modules: the SD2 U-Net turned into Lotus-D / Lotus-G, its VAE, and the export.

Set-up as the paper's training (official ``train_lotus_{d,g}.py``; facts, not code):

* the U-Net gets the **task switcher**: ``class_embed_type="projection"`` with a 4-dimensional
  input, i.e. a new ``class_embedding`` (Linear 4 → time width, SiLU, Linear) freshly
  initialised and **added** to the timestep embedding; every other weight comes from the base;
* Lotus-G takes 8 input channels ``[image latent, noisy target latent]``: its ``conv_in`` kernel is
  the base's 4-channel kernel copied to both halves and halved (``w.repeat(1,2,1,1) * 0.5``), the
  bias copied unchanged — so at the start the U-Net sees the mean of the two latents;
* the VAE (and the text encoder, used once for the empty-prompt embedding) stay frozen.

A base that already is a Lotus-1 U-Net (a released folder, or an earlier export) is fine-tuned as
it is (a Lotus-D U-Net can start a Lotus-G run: its ``conv_in`` is widened the same way).

Two ways to train the U-Net: all of it (the paper; ``full_finetune``) or LoRA on the attention
projections (``to_q``, ``to_k``, ``to_v``, ``to_out.0``) plus the task switcher and ``conv_in``,
which are new or reshaped and so cannot stay frozen. The export merges the LoRA into the weights
(``W + α/r · B A``): the released folders hold a plain U-Net.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch
from torch import nn

from ..model.lotus1 import PROMPT_EMBEDS_FILENAME, compute_prompt_embeds, load_prompt_embeds

log = logging.getLogger(__name__)

#: Parameters that train besides the LoRA in a LoRA run (new or reshaped by the Lotus-1 set-up).
LORA_EXTRA_PREFIXES = ("class_embedding.", "conv_in.")
SWITCH_DIM = 4


def lotus1_unet_from_base(unet, mode: str, seed: int = 0):
    """A Lotus-``mode`` U-Net from a base U-Net (see the module docstring); the input is left as it is.

    Raises:
        ValueError: The base cannot become that mode (a Lotus-G U-Net for a Lotus-D run, a task
            switcher of another width, input channels that are neither 4 nor 8).
    """
    from diffusers import UNet2DConditionModel

    cfg = dict(unet.config)
    want = 8 if mode == "g" else 4
    has_switch = cfg.get("class_embed_type") is not None
    if has_switch and (cfg.get("class_embed_type") != "projection"
                       or cfg.get("projection_class_embeddings_input_dim") != SWITCH_DIM):
        raise ValueError(f"the base U-Net has a class embedding ({cfg.get('class_embed_type')!r}, input "
                         f"{cfg.get('projection_class_embeddings_input_dim')}) that is not Lotus-1's task switcher "
                         f"('projection', {SWITCH_DIM})")
    channels = int(cfg["in_channels"])
    if channels not in (4, 8) or (channels == 8 and mode == "d"):
        raise ValueError(f"a {channels}-channel base U-Net cannot become Lotus-{mode.upper()} ({want} input channels)")
    if has_switch and channels == want:
        return unet  # already a Lotus-1 U-Net of this mode: fine-tune it
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    cfg.update(class_embed_type="projection", projection_class_embeddings_input_dim=SWITCH_DIM, in_channels=want)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        new = UNet2DConditionModel(**cfg)  # the fresh class embedding: torch's default init, seeded
    state = unet.state_dict()
    if channels != want:  # Lotus-G: [rgb, noisy target] halves, each the base kernel halved
        state["conv_in.weight"] = state["conv_in.weight"].repeat(1, 2, 1, 1) * 0.5  # [C,8,3,3]
    if has_switch:
        new.load_state_dict(state, strict=True)
    else:
        missing, unexpected = new.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("class_embedding.") for k in missing):
            raise ValueError(f"base U-Net does not fit the Lotus-1 U-Net: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    return new


def load_sd2_base(base_model: Path, mode: str, dtype: torch.dtype, seed: int = 0):
    """``(unet, vae, alphas_cumprod)`` of a base folder (the U-Net already a Lotus-``mode`` one).

    ``alphas_cumprod`` ``[1000]`` float64 is the base's training noise schedule (Lotus-G's noisy input).

    Raises:
        FileNotFoundError: A missing part of the folder (named).
        ValueError: Parts that do not fit (see :func:`lotus1_unet_from_base`; VAE latent channels ≠ 4).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    base_model = Path(base_model)
    for part in ("unet", "vae", "scheduler"):
        if not (base_model / part).is_dir():
            raise FileNotFoundError(f"Lotus-1 base model {base_model} lacks {part}/ (an SD2 folder has unet/, vae/, "
                                    "text_encoder/, tokenizer/, scheduler/)")
    unet = UNet2DConditionModel.from_pretrained(base_model / "unet", torch_dtype=torch.float32, local_files_only=True)
    vae = AutoencoderKL.from_pretrained(base_model / "vae", torch_dtype=dtype, local_files_only=True)
    if int(vae.config.latent_channels) != 4:
        raise ValueError(f"{base_model / 'vae'}: {vae.config.latent_channels} latent channels; the SD2 layout "
                         "(and the official Lotus-1 pipelines) need 4")
    if vae.config.get("shift_factor"):
        raise ValueError(f"{base_model / 'vae'}: shift_factor {vae.config.shift_factor}; SD2 pipelines never shift "
                         "latents (only scaling_factor applies)")
    schedule = DDPMScheduler.from_pretrained(base_model / "scheduler", local_files_only=True)
    unet = lotus1_unet_from_base(unet, mode, seed)
    return unet, vae.requires_grad_(False).eval(), schedule.alphas_cumprod.double()


def load_lotus1_prompt(base_model: Path, prompt_dir: Path | None, cross_attention_dim: int) -> torch.Tensor:
    """The empty-prompt embedding ``[1,2,D]``: the cached file in ``prompt_dir`` (or the base), else
    computed from the base's text encoder as the official code does."""
    for folder in (prompt_dir, base_model):
        if folder is not None and (Path(folder) / PROMPT_EMBEDS_FILENAME).is_file():
            return load_prompt_embeds(Path(folder), cross_attention_dim)
    if prompt_dir is not None:
        raise FileNotFoundError(f"no {PROMPT_EMBEDS_FILENAME} in {prompt_dir}")
    embeds = compute_prompt_embeds(Path(base_model))
    if embeds.shape[2] != cross_attention_dim:
        raise ValueError(f"{base_model}: text encoder width {embeds.shape[2]} != the U-Net's cross_attention_dim "
                         f"{cross_attention_dim}")
    return embeds


# ----------------------------------------------------------------------------- LoRA
def add_unet_lora(unet, rank: int, alpha: float, targets: tuple[str, ...]) -> None:
    """A fresh LoRA (B = 0: starts as the base) on the U-Net's ``targets``."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True))
    if not any(".lora_" in n for n, _ in unet.named_parameters()):
        raise ValueError(f"LoRA targets {list(targets)} match no layer of the U-Net")


def set_lotus1_trainable(unet, *, full: bool) -> None:
    """Full: every U-Net weight. LoRA: the LoRA matrices plus :data:`LORA_EXTRA_PREFIXES`."""
    for name, param in unet.named_parameters():
        param.requires_grad_(full or ".lora_" in name or name.startswith(LORA_EXTRA_PREFIXES))


def merged_unet_state_dict(unet) -> dict[str, torch.Tensor]:
    """The U-Net's weights with every LoRA folded in (``W + scaling · B A``), under plain module names."""
    from peft.tuners.lora import LoraLayer

    state = {}
    deltas = {}
    for name, module in unet.named_modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                a, b = module.lora_A[adapter].weight, module.lora_B[adapter].weight
                delta = module.scaling[adapter] * (b.float() @ a.float().flatten(1))  # [out, in]
                deltas[f"{name}.weight"] = deltas.get(f"{name}.weight", 0) + delta
    for key, value in unet.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        value = value.detach().float().cpu()
        if key in deltas:
            value = value + deltas[key].detach().cpu().reshape(value.shape)
        state[key] = value.contiguous()
    return state


class Lotus1TrainModule(nn.Module):
    """U-Net and VAE as one module (for data-parallel wrappers); ``forward(batch, loss_fn)`` calls
    ``loss_fn(engine, batch)`` on the :class:`~lotus2_ros.model.lotus1.Lotus1Engine` built on them."""

    def __init__(self, unet: nn.Module, vae: nn.Module):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.engine = None

    def forward(self, batch: dict, loss_fn) -> dict[str, torch.Tensor]:
        return loss_fn(self.engine, batch)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------- export
def export_folder_name(task: str, mode: str) -> str:
    """``lotus-depth-g-disparity`` / ``lotus-normal-d``: the release naming the loader reads."""
    return f"lotus-{task}-{mode}" + ("-disparity" if task == "depth" else "")


def export_lotus1_folder(folder: Path, *, base_model: Path, unet_config: dict, unet_state: dict[str, torch.Tensor],
                         prompt_embeds: torch.Tensor, task: str, mode: str, meta: dict) -> Path:
    """Write a released-layout Lotus-1 pipeline folder.

    ``model_index.json`` (``LotusGPipeline`` / ``LotusDPipeline``), ``unet/`` (the trained U-Net,
    float32), ``vae/``, ``text_encoder/`` + ``tokenizer/`` (the base's, so the official pipeline
    computes the same prompt embedding), ``scheduler/`` (the v1-0 releases' DDIM, prediction type
    ``sample``), ``feature_extractor/``, the package's prompt cache and ``model.json``
    (task, depth output: the package's targets are disparity) — loadable by ``--backend lotus1``
    and by the official pipelines unchanged.
    """
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    from ..model.lotus1 import PROMPT_FORMAT
    from ..model.tiny_lotus1 import write_pipeline_parts

    folder = Path(folder)
    if folder.exists():
        shutil.rmtree(folder)
    write_pipeline_parts(folder, mode)
    cfg = {k: v for k, v in unet_config.items() if not k.startswith("_")}
    unet = UNet2DConditionModel(**cfg)
    unet.load_state_dict(unet_state, strict=True)
    unet.save_pretrained(folder / "unet")
    shutil.copytree(Path(base_model) / "vae", folder / "vae")  # frozen: the base's files, bit for bit
    for part in ("text_encoder", "tokenizer"):
        if (Path(base_model) / part).is_dir():
            shutil.copytree(Path(base_model) / part, folder / part)
        else:
            log.warning("%s has no %s/: the export loads in lotus2_ros but not in the official pipeline", base_model,
                        part)
    save_file({"prompt_embeds": prompt_embeds.float().cpu().contiguous()}, str(folder / PROMPT_EMBEDS_FILENAME),
              metadata={"format": PROMPT_FORMAT, "prompt": "", "tokens": str(prompt_embeds.shape[1]),
                        "dim": str(prompt_embeds.shape[2]), "compute_dtype": "float32"})
    doc = {"tasks": [task], "depth_output": "disparity", "mode": mode} | meta
    (folder / "model.json").write_text(json.dumps(doc, indent=2) + "\n")
    return folder
