"""Lotus-1 training on the shared loop: ``lotus2 train-core --backend lotus1 --mode d|g``.

Everything but the model is the Lotus-2 trainer's (:class:`~lotus2_ros.train.trainer.Trainer`):
the data sources and the counter-based batch stream, accelerate (mixed precision, several
processes), checkpoints that resume bit-for-bit, SIGTERM handling, logs and validation through
the perception pipeline. What differs:

* the modules: the base SD2 U-Net made a Lotus-D / Lotus-G U-Net (:mod:`.lotus1_model`), trained
  fully (``full_finetune``, the paper) or as LoRA + task switcher + ``conv_in``;
* the objective: x0 prediction at timestep 999 with the detail preserver
  (:func:`~lotus2_ros.train.objectives.lotus1_losses`);
* the engine the loss and the validation run on: a :class:`~lotus2_ros.model.lotus1.Lotus1Engine`
  around the modules being trained (the one ``--backend lotus1`` loads);
* the export: one released-layout pipeline folder, ``export/lotus-<task>-<mode>[-disparity]/``.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import torch

from ..model.backend import DTYPES, ModelInfo
from ..model.lotus1 import Lotus1Engine
from ..model.lotus1_folders import Lotus1Folder
from ..model.spec import ModelSettings
from ..perception.pipeline import offline_pipeline
from .config import LOTUS1_LORA_RANK
from .lotus1_model import (
    Lotus1TrainModule,
    add_unet_lora,
    export_folder_name,
    export_lotus1_folder,
    load_lotus1_prompt,
    load_sd2_base,
    merged_unet_state_dict,
    set_lotus1_trainable,
)
from .objectives import lotus1_losses
from .trainer import Trainer

log = logging.getLogger(__name__)


class Lotus1Trainer(Trainer):
    """A :class:`Trainer` for ``TrainConfig(backend="lotus1")`` (``Trainer(config)`` builds this one)."""

    def __init__(self, config):
        cfg, acc = self._start_accelerator(config)
        if cfg.full_finetune and cfg.base_dtype != "fp32":
            raise ValueError("full_finetune trains every U-Net weight: base_dtype must be fp32 "
                             "(mixed_precision bf16 still computes in bf16)")
        if cfg.base_dtype != "fp32" and cfg.mixed_precision == "no":
            raise ValueError(f"base_dtype {cfg.base_dtype} (the frozen VAE) needs --mixed-precision bf16|fp16: the "
                             "trained U-Net stays float32 and autocast joins the two")
        self.frozen_dtype = DTYPES[cfg.base_dtype]
        task = self.task = cfg.tasks[0]

        # 1. Modules: the Lotus-1 U-Net (trainable, float32) and the frozen VAE.
        unet, vae, self.alphas_cumprod = load_sd2_base(cfg.base_model, cfg.mode, self.frozen_dtype, seed=cfg.seed)
        if not cfg.full_finetune:
            rank = int(cfg.lora_rank or LOTUS1_LORA_RANK)
            add_unet_lora(unet, rank, float(cfg.lora_alpha if cfg.lora_alpha is not None else rank), cfg.lora_targets)
        set_lotus1_trainable(unet, full=cfg.full_finetune)
        unet.float()
        if cfg.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        self.unet_config = {k: v for k, v in unet.config.items()}
        module = Lotus1TrainModule(unet, vae)
        prompt = load_lotus1_prompt(cfg.base_model, cfg.prompt_embeds, int(unet.config.cross_attention_dim))
        self.prompt = prompt

        # 2. Optimizer and LR schedule.
        self._prepare(module)

        # 3. The inference engine on the trained modules (the one --backend lotus1 loads).
        folder = Lotus1Folder(path=Path(cfg.base_model), task=task, mode=cfg.mode, depth_output="disparity")
        info = ModelInfo(family="lotus1", depth_output="disparity", refinement="ensemble",
                         settings=ModelSettings((task,), None, 0, depth_output="disparity", refinement="ensemble"),
                         refine_tasks=(), source="the training run")
        self.engine = Lotus1Engine({task: folder}, {task: self.module.unet}, {task: self.module.vae},
                                   {task: prompt.to(acc.device, self.frozen_dtype)}, info=info, device=acc.device,
                                   dtype=self.frozen_dtype, seed=cfg.seed)
        self.module.engine = self.engine
        self.val_pipeline = offline_pipeline(self.engine, process_res=-1, publish_colorized=False)
        self.loss_fn = partial(lotus1_losses, task=task, alphas_cumprod=self.alphas_cumprod.to(acc.device),
                               preserver_ratio=cfg.detail_preserver_ratio)

        # 4. Data.
        self._open_data()

    def export(self, export_dir: Path, step: int = 0) -> tuple[Path, None]:
        """Write ``export_dir/lotus-<task>-<mode>[-disparity]/`` in the released layout (LoRA merged)."""
        cfg, acc = self.config, self.accelerator
        if self._fsdp():
            raise NotImplementedError("Lotus-1 export under FSDP is not supported; use DDP (the default)")
        folder = Path(export_dir) / export_folder_name(self.task, cfg.mode)
        if acc.is_main_process:
            meta = {"trainer": "lotus2_ros", "steps": step, "full_finetune": cfg.full_finetune,
                    "detail_preserver_ratio": cfg.detail_preserver_ratio, "base_model": Path(cfg.base_model).name}
            with torch.no_grad():
                state = merged_unet_state_dict(self.module.unet)
            export_lotus1_folder(folder, base_model=cfg.base_model, unet_config=self.unet_config, unet_state=state,
                                 prompt_embeds=self.prompt, task=self.task, mode=cfg.mode,
                                 meta=meta)
            log.info("exported %s", folder)
        acc.wait_for_everyone()
        return folder, None
