"""Trainable Lotus-2 modules and their export to the official file layout.

Training uses the inference engine itself: the trainer builds a
:class:`~lotus2_ros.model.engine.Lotus2Engine` around the modules it trains, so the forward
pass that is optimised is the one ``predict``, the node and the bag tool run.

Export layout (what :meth:`Lotus2Engine.load` reads):

* ``weights/lotus-2_core_predictor_{task}.safetensors`` and
  ``lotus-2_detail_sharpener_{task}.safetensors``: LoRA, keys ``transformer.<module>.lora_A.weight``
  ``[r, in]`` / ``lora_B.weight`` ``[out, r]``. The release loads them with ``alpha = r``, so a
  LoRA trained with another alpha is exported with ``B·alpha/r`` (the same function).
* ``weights/lotus-2_lcm_{task}.safetensors``: ``lcm.0.*`` / ``lcm.2.*``.
* ``weights/lotus-2_prompt_embeds.safetensors``: copied from the run's prompt embeddings.
* ``base_model/`` (``--full-finetune`` only): the source base-model folder with ``transformer/``
  replaced by the fine-tuned weights (other sub-folders hard-linked or copied unchanged).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..model.latents import FlowSchedule
from ..model.lcm import LocalContinuityModule
from ..model.prompt_embeds import PROMPT_EMBEDS_FILENAME
from ..model.weights import OFFICIAL_LORA_TARGETS, TaskWeightFiles, WeightsError, attach_lora

log = logging.getLogger(__name__)

#: LoRA ranks of the release (alpha = rank).
OFFICIAL_LORA_RANKS = {"depth": 128, "normal": 256}


@dataclass(frozen=True)
class LoraSettings:
    """LoRA of a trained adapter; ``None`` means the release's value (rank 128/256, alpha = rank)."""

    rank: int | None = None
    alpha: float | None = None
    targets: tuple[str, ...] = OFFICIAL_LORA_TARGETS

    def rank_for(self, task: str) -> int:
        return int(self.rank or OFFICIAL_LORA_RANKS[task])

    def alpha_for(self, task: str) -> float:
        return float(self.alpha if self.alpha is not None else self.rank_for(task))


def load_base_modules(base_model: Path, dtype: torch.dtype):
    """Load the FLUX transformer, the VAE and the flow schedule of a base-model folder (local only)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    base_model = Path(base_model)
    for sub in ("transformer", "vae", "scheduler"):
        if not (base_model / sub).is_dir():
            raise FileNotFoundError(f"base model folder {base_model} lacks {sub}/")
    transformer = FluxTransformer2DModel.from_pretrained(base_model / "transformer", torch_dtype=dtype,
                                                         local_files_only=True)
    vae = AutoencoderKL.from_pretrained(base_model / "vae", torch_dtype=dtype, local_files_only=True)
    if transformer.config.in_channels != 4 * vae.config.latent_channels:
        raise WeightsError(f"{base_model}: transformer in_channels {transformer.config.in_channels} != 4 x VAE "
                           f"latent_channels {vae.config.latent_channels}")
    transformer.requires_grad_(False)
    vae.requires_grad_(False)
    return transformer, vae, FlowSchedule.from_scheduler_dir(base_model / "scheduler")


def adapter_parameters(transformer: nn.Module, adapter_name: str) -> list[nn.Parameter]:
    """The LoRA parameters of one adapter."""
    return [p for n, p in transformer.named_parameters() if f".{adapter_name}." in n and ".lora_" in n]


def add_trainable_lora(transformer: nn.Module, adapter_name: str, rank: int, alpha: float,
                       targets: tuple[str, ...] = OFFICIAL_LORA_TARGETS) -> None:
    """Add a fresh LoRA adapter (A random, B zero: starts as the base model).

    Which parameters train is decided once every adapter exists (:func:`set_trainable`): peft's
    ``add_adapter`` activates the new adapter and freezes every adapter added before it.
    """
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=True)
    transformer.add_adapter(config, adapter_name=adapter_name)
    if not adapter_parameters(transformer, adapter_name):
        raise ValueError(f"LoRA targets {list(targets)} match no Linear layer of the transformer")


def load_trainable_lora(transformer: nn.Module, path: Path, adapter_name: str) -> int:
    """Attach an official LoRA file as an adapter to fine-tune (a release); returns its rank.

    Made trainable by :func:`set_trainable`, like a fresh adapter.
    """
    return attach_lora(transformer, path, adapter_name).rank


def set_trainable(module: "Lotus2TrainModule", adapters: tuple[str, ...], *, lcms: bool, base: bool) -> None:
    """Make exactly these parameters trainable, and freeze everything else.

    Called once, after every adapter exists: each peft ``add_adapter`` / ``set_adapter`` makes
    the adapter it names the only trainable one, so flags set while adding adapters do not last
    (a two-task run would train only the last task's adapter).

    Args:
        module: The transformer, VAE (always frozen) and LCMs.
        adapters: LoRA adapters that train, e.g. ``("depth_core", "normal_core")``.
        lcms: Train every task's LCM (the core stage).
        base: Train every weight of the transformer itself (a full fine-tune).

    Raises:
        ValueError: An adapter name has no parameters.
    """
    missing = [a for a in adapters if not adapter_parameters(module.transformer, a)]
    if missing:
        raise ValueError(f"no LoRA adapter named {missing} on the transformer")
    module.requires_grad_(False)
    for name, param in module.transformer.named_parameters():
        if ".lora_" in name:
            param.requires_grad_(any(f".{a}." in name for a in adapters))
        else:
            param.requires_grad_(base)
    module.lcms.requires_grad_(lcms)


def new_lcm(num_channels: int) -> LocalContinuityModule:
    """An LCM that starts as the identity (last convolution zero), so training begins from the core's output."""
    lcm = LocalContinuityModule(num_channels)
    nn.init.zeros_(lcm.lcm[2].weight)
    nn.init.zeros_(lcm.lcm[2].bias)
    return lcm


class Lotus2TrainModule(nn.Module):
    """Transformer, VAE and LCMs as one module, so data-parallel wrappers see every parameter.

    ``forward(batch, loss_fn)`` calls ``loss_fn(engine, batch)`` where ``engine`` is the inference
    engine built on these very modules; the engine is not a submodule.
    """

    def __init__(self, transformer: nn.Module, vae: nn.Module, lcms: dict[str, LocalContinuityModule]):
        super().__init__()
        self.transformer = transformer
        self.vae = vae
        self.lcms = nn.ModuleDict(lcms)
        self.engine = None

    def forward(self, batch: dict, loss_fn) -> dict[str, torch.Tensor]:
        return loss_fn(self.engine, batch)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter that trains, by name (what a checkpoint must hold besides the optimizer)."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------- export
# Export works on a state dict of :class:`Lotus2TrainModule` (``transformer.*``, ``lcms.<task>.*``):
# the plain module's own, or the full state dict gathered from a sharded (FSDP) run.
def lora_scalings(transformer: nn.Module) -> dict[str, float]:
    """``alpha / r`` of every LoRA adapter (read before any sharding; it is not a tensor)."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for module in transformer.modules():
        if isinstance(module, LoraLayer):
            for name, value in module.scaling.items():
                out.setdefault(name, float(value))
    return out


def lora_state_dict(state: dict[str, torch.Tensor], adapter_name: str, scaling: float) -> dict[str, torch.Tensor]:
    """One adapter in the release's key format, folded to ``alpha = rank`` (float32, CPU)."""
    sd = {}
    for key, value in state.items():
        for part in ("lora_A", "lora_B"):
            tail = f".{part}.{adapter_name}.weight"
            if key.startswith("transformer.") and key.endswith(tail):
                module = key[len("transformer."):-len(tail)]
                t = value.detach().float().cpu()
                sd[f"transformer.{module}.{part}.weight"] = (t * scaling if part == "lora_B" else t).contiguous()
    if not sd:
        raise ValueError(f"the state dict has no LoRA adapter named {adapter_name!r}")
    return sd


def lcm_state_dict(state: dict[str, torch.Tensor], task: str) -> dict[str, torch.Tensor]:
    prefix = f"lcms.{task}."
    sd = {k[len(prefix):]: v.detach().float().cpu().contiguous() for k, v in state.items() if k.startswith(prefix)}
    if not sd:
        raise ValueError(f"the state dict has no LCM for {task!r}")
    return sd


def base_transformer_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The transformer's own weights without any LoRA (peft's ``base_layer`` names undone)."""
    out = {}
    for key, value in state.items():
        if key.startswith("transformer.") and ".lora_" not in key:
            out[key[len("transformer."):].replace(".base_layer.", ".")] = value.detach().cpu()
    return out


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def export_task_files(weights_dir: Path, state: dict[str, torch.Tensor], scalings: dict[str, float],
                      tasks: tuple[str, ...], kind: str, metadata: dict[str, str]) -> list[Path]:
    """Write the core-predictor + LCM or the detail-sharpener files of ``tasks`` into ``weights_dir``."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in tasks:
        files = TaskWeightFiles.in_folder(weights_dir, task)
        if kind == "core":
            name = f"{task}_core"
            _save_safetensors(lora_state_dict(state, name, scalings[name]), files.core_predictor, metadata)
            _save_safetensors(lcm_state_dict(state, task), files.lcm, metadata)
            written += [files.core_predictor, files.lcm]
        elif kind == "sharpener":
            name = f"{task}_sharpener"
            _save_safetensors(lora_state_dict(state, name, scalings[name]), files.detail_sharpener, metadata)
            written.append(files.detail_sharpener)
        else:
            raise ValueError(f"kind must be 'core' or 'sharpener', got {kind!r}")
    return written


def copy_weights_folder(src: Path, dst: Path, skip: set[str] = frozenset()) -> None:
    """Copy the Lotus-2 files and prompt embeddings of ``src`` into ``dst`` (names in ``skip`` left out)."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(Path(src).glob("lotus-2_*.safetensors")):
        if p.name not in skip:
            shutil.copy2(p, dst / p.name)


def copy_prompt_embeds(src_dir: Path, dst_dir: Path) -> None:
    src = Path(src_dir) / PROMPT_EMBEDS_FILENAME
    if not src.is_file():
        raise FileNotFoundError(f"prompt embeddings not found: {src} (create them with `lotus2 export-prompt-embeds`)")
    dst_dir.mkdir(parents=True, exist_ok=True)
    if src.resolve() != (dst_dir / PROMPT_EMBEDS_FILENAME).resolve():
        shutil.copy2(src, dst_dir / PROMPT_EMBEDS_FILENAME)


def export_base_model(src_base: Path, dst_base: Path, transformer_config: dict,
                      state: dict[str, torch.Tensor]) -> None:
    """Write a base-model folder: ``src_base`` with ``transformer/`` holding the fine-tuned weights.

    Unchanged sub-folders are hard-linked where the file system allows (no extra space: files
    are never modified in place), else copied.
    """
    from diffusers import FluxTransformer2DModel

    src_base, dst_base = Path(src_base), Path(dst_base)
    if dst_base.resolve() == src_base.resolve():
        raise ValueError(f"refusing to export the base model onto its source {src_base}")
    if dst_base.exists():
        shutil.rmtree(dst_base)
    dst_base.mkdir(parents=True)
    for entry in sorted(src_base.iterdir()):
        if entry.name == "transformer":
            continue
        if entry.is_dir():
            shutil.copytree(entry, dst_base / entry.name, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dst_base / entry.name)
    # Without the source path diffusers records on load: an export must not carry the training
    # machine's folders.
    config = {k: v for k, v in dict(transformer_config).items() if k != "_name_or_path"}
    fresh = FluxTransformer2DModel.from_config(config)
    fresh.load_state_dict(base_transformer_state_dict(state), strict=True)
    fresh.save_pretrained(dst_base / "transformer")
    if not (dst_base / "model_index.json").exists():
        (dst_base / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}, indent=2) + "\n")


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
