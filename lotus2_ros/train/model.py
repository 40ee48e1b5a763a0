"""Trainable Lotus-2 modules: the base model, the adapters and LCMs a run trains.

Training uses the inference engine itself: the trainer loads the base model with the same loader
(:func:`~lotus2_ros.model.engine.load_flux_base`) and builds a
:class:`~lotus2_ros.model.engine.Lotus2Engine` around the modules it trains, so the forward pass
that is optimised is the one ``predict``, the node and the bag tool run. The export to the
official file layout is :mod:`lotus2_ros.train.export`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..model.lcm import LocalContinuityModule
from ..model.weights import OFFICIAL_LORA_TARGETS, attach_lora

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


# ----------------------------------------------------------------------------- adapter facts
def lora_scalings(transformer: nn.Module) -> dict[str, float]:
    """``alpha / r`` of every LoRA adapter (read before any sharding; it is not a tensor)."""
    from peft.tuners.lora import LoraLayer

    out = {}
    for module in transformer.modules():
        if isinstance(module, LoraLayer):
            for name, value in module.scaling.items():
                out.setdefault(name, float(value))
    return out


def lora_ranks(transformer: nn.Module) -> dict[str, int]:
    """Rank of every LoRA adapter on the transformer, by adapter name."""
    return {name: int(cfg.r) for name, cfg in getattr(transformer, "peft_config", {}).items()}
