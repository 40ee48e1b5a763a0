"""The training loop shared by ``train_core`` and ``train_sharpener`` (accelerate-based).

One optimizer step = ``grad_accum`` micro-batches of ``batch_size`` frames per process. The
loop runs the engine's stages inside the prepared module's ``forward`` (so DDP/FSDP wrappers,
autocast and gradient checkpointing apply), logs losses and the learning rate, validates in
pixel space with the same ``predict`` path the node uses, writes checkpoints that resume
bit-for-bit, and finally exports the official Lotus-2 file layout.

Run folder (``TrainConfig.output_dir``)::

    config.json            the run's configuration
    metrics.jsonl          one JSON line per logged step / validation (main process)
    logs/                  TensorBoard (losses, learning rate, metrics, validation images)
    val/step_NNNNNNNN/     validation images (RGB | prediction | ground truth) as PNG
    checkpoints/step_NNNNNNNN/   trainable weights, optimizer, LR scheduler, RNG states, step
    export/weights/        Lotus-2 files (+ export/base_model/ for --full-finetune)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..io.images import write_rgb
from ..io.visualize import colorize_disparity, colorize_normals
from ..model.backend import DTYPES, ModelInfo
from ..model.engine import Lotus2Engine, load_flux_base, load_flux_prompt
from ..model.spec import ModelSettings
from ..model.weights import TaskWeightFiles, WeightsError, attach_lora, load_lcm, untrained_placeholder
from ..perception.pipeline import offline_pipeline
from .config import TrainConfig
from .data import BatchStream, heldout_samples, open_source
from .metrics import DepthMetricsAccumulator, NormalMetricsAccumulator
from .export import (
    adapted_modules,
    carry_weights_folder,
    check_carried_files,
    check_official_base_model,
    check_official_lora,
    copy_prompt_embeds,
    export_base_model,
    export_task_files,
    write_manifest,
)
from .model import (
    LoraSettings,
    Lotus2TrainModule,
    add_trainable_lora,
    load_trainable_lora,
    lora_ranks,
    lora_scalings,
    new_lcm,
    set_trainable,
)
from .objectives import core_losses, sharpener_losses
from .samples import depth_valid_mask

log = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "step_"
TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"


@dataclass
class RunResult:
    """What a run did: the final step, per-step losses, validation results and the export folders."""

    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    validations: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    export_weights: Path | None = None
    export_base_model: Path | None = None
    seconds: float = 0.0
    stopped_by: int | None = None  # the signal that stopped the run early (checkpoint saved, no export)
    main_process: bool = True  # False on the other ranks of a distributed run


class Trainer:
    """Builds the model, data, optimizer and accelerator for a :class:`TrainConfig`; :meth:`run` trains."""

    def __new__(cls, config: TrainConfig):
        if cls is Trainer and config.backend == "lotus1":  # the other model family, same loop
            from .lotus1_trainer import Lotus1Trainer

            return super().__new__(Lotus1Trainer)
        return super().__new__(cls)

    def _start_accelerator(self, config: TrainConfig):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        self.config = cfg = config
        out = Path(cfg.output_dir)
        log_with = _tensorboard_or_none()
        _allow_new_precision(cfg.mixed_precision)
        self.accelerator = acc = Accelerator(
            mixed_precision=cfg.mixed_precision, gradient_accumulation_steps=cfg.grad_accum, cpu=cfg.cpu,
            log_with=log_with, project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
        set_seed(cfg.seed)
        return cfg, acc

    def _prepare(self, module) -> None:
        """AdamW and the LR schedule on the trainable parameters; accelerate wraps all three."""
        from diffusers.optimization import get_scheduler

        cfg, acc = self.config, self.accelerator
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: no parameter requires gradients")
        self.num_trainable = sum(p.numel() for p in params)
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=cfg.adam_betas, eps=cfg.adam_eps,
                                      weight_decay=cfg.weight_decay)
        scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps * acc.num_processes,
                                  num_training_steps=cfg.max_steps * acc.num_processes)
        self.model, self.optimizer, self.scheduler = acc.prepare(module, optimizer, scheduler)
        self.module = acc.unwrap_model(self.model)

    def _open_data(self) -> None:
        """Training sources, held-out frames and the checkpoint hooks."""
        cfg, acc = self.config, self.accelerator
        kw = dict(resize_short_px=cfg.resize_short_px, crop_hw=cfg.crop_hw, flip_prob=cfg.flip_prob,
                  synthetic=cfg.synthetic)
        self.datasets = [open_source(s, **kw) for s in cfg.data]
        val_sources = cfg.val_data or cfg.data
        self.val_samples = heldout_samples([open_source(s, heldout=True, **kw) for s in val_sources],
                                           cfg.val_samples) if cfg.val_samples and cfg.validate_every else []
        acc.register_save_state_pre_hook(self._save_hook)
        acc.register_load_state_pre_hook(self._load_hook)

    def __init__(self, config: TrainConfig):
        cfg, acc = self._start_accelerator(config)
        if cfg.full_finetune and cfg.base_dtype != "fp32":
            raise ValueError("full_finetune trains every transformer weight: base_dtype must be fp32 "
                             "(mixed_precision bf16 still computes in bf16)")
        self.frozen_dtype = DTYPES[cfg.base_dtype]

        # 1. Modules: the base model, adapters and LCMs as the stage needs them.
        base = load_flux_base(cfg.base_model, self.frozen_dtype)
        transformer, vae, schedule = base.transformer, base.vae, base.schedule
        lcms = self._build_adapters(transformer, vae.config.latent_channels)
        module = Lotus2TrainModule(transformer, vae, lcms)
        # What trains is set once every adapter exists (peft freezes earlier adapters on each add).
        set_trainable(module, tuple(f"{task}_{cfg.stage}" for task in cfg.tasks), lcms=cfg.stage == "core",
                      base=cfg.full_finetune)
        if cfg.full_finetune:
            transformer.float()
        for p in [p for p in module.parameters() if p.requires_grad]:
            p.data = p.data.float()  # trainable weights stay float32 whatever the frozen dtype
        if cfg.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        vae.eval()
        self.scalings = lora_scalings(transformer)
        self.ranks = lora_ranks(transformer)
        self.transformer_config = dict(transformer.config)
        self._check_exportable(transformer)

        # 2. Optimizer and LR schedule (stepped once per process per optimizer step by accelerate).
        self._prepare(module)

        # 3. The inference engine on the trained modules.
        prompt = load_flux_prompt(cfg.prompt_embeds_dir, transformer, cfg.base_model)
        sharpening = cfg.stage == "sharpener"
        info = ModelInfo(family="lotus2", depth_output="disparity", refinement="sharpen",
                         settings=ModelSettings(tuple(cfg.tasks), None, cfg.val_sharpen_steps if sharpening else 0),
                         refine_tasks=tuple(cfg.tasks) if sharpening else (), source="the training run")
        self.engine = Lotus2Engine(self.module.transformer, self.module.vae, self.module.lcms,
                                   prompt.to(acc.device, self.frozen_dtype), schedule, info=info,
                                   device=acc.device, dtype=self.frozen_dtype)
        self.module.engine = self.engine
        # Validation runs the perception pipeline every front end uses, on these very modules (full
        # resolution: held-out frames are at the training size).
        self.val_pipeline = offline_pipeline(self.engine, process_res=-1, publish_colorized=False)
        self.loss_fn = (partial(core_losses, tasks=cfg.tasks) if cfg.stage == "core" else
                        partial(sharpener_losses, tasks=cfg.tasks, sigma_sampling=cfg.sigma_sampling,
                                grid_steps=cfg.grid_steps, loss=cfg.sharpener_loss))

        # 4. Data.
        self._open_data()

    # ------------------------------------------------------------------ building
    def _build_adapters(self, transformer, channels: int) -> dict:
        cfg = self.config
        lora = LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets)
        lcms = {}
        for task in cfg.tasks:
            files = TaskWeightFiles.in_folder(cfg.weights, task) if cfg.weights else None
            if cfg.stage == "core":
                if files is not None and files.core_predictor.is_file() and files.lcm.is_file():
                    rank = load_trainable_lora(transformer, files.core_predictor, f"{task}_core")
                    lcms[task] = load_lcm(files.lcm, channels).float()
                    log.info("%s: fine-tuning the core predictor (rank %d) and LCM of %s", task, rank, cfg.weights)
                else:
                    if files is not None:
                        log.info("%s: no core predictor in %s, starting a fresh one", task, cfg.weights)
                    add_trainable_lora(transformer, f"{task}_core", lora.rank_for(task), lora.alpha_for(task),
                                       lora.targets)
                    lcms[task] = new_lcm(channels)
            else:
                if not (files.core_predictor.is_file() and files.lcm.is_file()):
                    raise WeightsError(f"{cfg.weights} lacks the {task} core predictor or LCM the sharpener builds on")
                attach_lora(transformer, files.core_predictor, f"{task}_core")  # frozen
                lcms[task] = load_lcm(files.lcm, channels).float()  # frozen
                if files.detail_sharpener.is_file() and not untrained_placeholder(files.detail_sharpener):
                    rank = load_trainable_lora(transformer, files.detail_sharpener, f"{task}_sharpener")
                    log.info("%s: fine-tuning the detail sharpener (rank %d) of %s", task, rank, cfg.weights)
                else:  # none, or the untrained placeholder of a core-only export (all zero: it could not learn)
                    add_trainable_lora(transformer, f"{task}_sharpener", lora.rank_for(task), lora.alpha_for(task),
                                       lora.targets)
        return lcms

    def _check_exportable(self, transformer) -> None:
        """Refuse at the start, not after hours of training, what the official loader could not load."""
        cfg = self.config
        for task in cfg.tasks:
            name = f"{task}_{cfg.stage}"
            check_official_lora(task, self.ranks[name], adapted_modules(transformer, name), f"adapter {name}")
        if cfg.stage == "sharpener":
            check_carried_files(cfg.weights)
        if cfg.full_finetune:
            check_official_base_model(cfg.base_model)

    # ------------------------------------------------------------------ checkpoints
    def _fsdp(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.FSDP

    def _save_hook(self, models, weights, output_dir):
        # Only the trainable weights go into a checkpoint (the frozen base is the base model).
        if self._fsdp() or not weights:
            return
        from safetensors.torch import save_file

        if self.accelerator.is_main_process:
            sd = {k: v.float().cpu().contiguous() for k, v in self.module.trainable_state_dict().items()}
            save_file(sd, str(Path(output_dir) / TRAINABLE_FILE))
        weights.pop()

    def _load_hook(self, models, input_dir):
        if self._fsdp():
            return
        from safetensors.torch import load_file

        models.pop()
        sd = load_file(str(Path(input_dir) / TRAINABLE_FILE))
        params = dict(self.module.named_parameters())
        want = {n for n, p in params.items() if p.requires_grad}
        if set(sd) != want:
            missing, extra = sorted(want - set(sd)), sorted(set(sd) - want)
            raise ValueError(f"checkpoint {input_dir} does not fit this run: missing {missing[:5]}, unexpected {extra[:5]}")
        with torch.no_grad():
            for name, value in sd.items():
                params[name].copy_(value)

    def checkpoint_dir(self, step: int) -> Path:
        return Path(self.config.output_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:08d}"

    def save_checkpoint(self, step: int) -> Path:
        path = self.checkpoint_dir(step)
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            state = {"step": step, "fingerprint": self._fingerprint()}
            (path / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
            self._rotate_checkpoints()
        self.accelerator.wait_for_everyone()
        return path

    def _rotate_checkpoints(self) -> None:
        keep = self.config.keep_checkpoints
        if keep <= 0:
            return
        ckpts = sorted((Path(self.config.output_dir) / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"))
        for old in ckpts[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    def _fingerprint(self) -> dict:
        fp = self.config.schedule_fingerprint()
        if self.config.lr_scheduler.startswith("constant"):
            fp.pop("max_steps")  # a constant schedule does not depend on the run length
        return fp

    def resolve_resume(self, resume: str | Path | None) -> Path | None:
        if resume in (None, ""):
            return None
        if str(resume) == "latest":
            ckpts = sorted((Path(self.config.output_dir) / "checkpoints").glob(f"{CHECKPOINT_PREFIX}*"))
            ckpts = [c for c in ckpts if (c / STATE_FILE).is_file()]
            return ckpts[-1] if ckpts else None
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise FileNotFoundError(f"not a checkpoint folder (no {STATE_FILE}): {path}")
        return path

    def load_checkpoint(self, path: Path) -> int:
        state = json.loads((Path(path) / STATE_FILE).read_text())
        differ = {k: (state["fingerprint"].get(k), v) for k, v in self._fingerprint().items()
                  if state["fingerprint"].get(k) != v}
        if differ:
            raise ValueError(f"checkpoint {path} was written by a run with other settings; resuming would not "
                             f"continue it: {differ} (checkpoint value, this run)")
        self.accelerator.load_state(str(path))
        return int(state["step"])

    # ------------------------------------------------------------------ validation
    def validate(self, step: int) -> dict[str, float]:
        """Pixel-space metrics of the current model on the held-out frames (all processes run it)."""
        cfg, acc = self.config, self.accelerator
        steps_list = [0] if cfg.stage == "core" else sorted({0, cfg.val_sharpen_steps})
        results: dict[str, float] = {}
        images: dict[str, np.ndarray] = {}
        for steps in steps_list:
            depth_acc, normal_acc = DepthMetricsAccumulator(), NormalMetricsAccumulator()
            for i, sample in enumerate(self.val_samples):
                with torch.no_grad(), acc.autocast():
                    pred = self.model(sample, partial(_predict, pipeline=self.val_pipeline, sharpen_steps=steps))
                if "depth" in cfg.tasks and sample.depth_m is not None:
                    valid = depth_valid_mask(sample)
                    if valid.sum() >= 2:
                        depth_acc.add(pred.disparity, sample.depth_m, valid, 1e-3, np.inf)
                if "normal" in cfg.tasks and sample.normals is not None:
                    mask = np.isfinite(sample.normals).all(-1)
                    normal_acc.add(pred.normals, sample.normals, mask)
                if i < cfg.num_val_images and steps == steps_list[-1]:
                    images.update(_val_images(sample, pred, cfg.tasks, i))
            tag = "" if cfg.stage == "core" else f"_sharpen{steps}"
            if "depth" in cfg.tasks:
                r = depth_acc.result()
                results[f"depth_abs_rel{tag}"], results[f"depth_delta1{tag}"] = r["abs_rel"], r["delta1"]
            if "normal" in cfg.tasks:
                r = normal_acc.result()
                results[f"normal_mean_deg{tag}"], results[f"normal_a11.25{tag}"] = r["mean"], r["a11.25"]
        if acc.is_main_process:
            folder = Path(cfg.output_dir) / "val" / f"{CHECKPOINT_PREFIX}{step:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for name, img in images.items():
                write_rgb(folder / f"{name}.png", img)
            self._log_images(images, step)
        return results

    def _log_images(self, images: dict[str, np.ndarray], step: int) -> None:
        if not images:
            return
        try:
            writer = self.accelerator.get_tracker("tensorboard", unwrap=True)
        except (ValueError, AttributeError):
            return
        if hasattr(writer, "add_image"):
            for name, img in images.items():
                writer.add_image(f"val/{name}", img, step, dataformats="HWC")

    # ------------------------------------------------------------------ loop
    def run(self, resume: str | Path | None = None) -> RunResult:
        """Train to ``max_steps`` (continuing from ``resume``: a checkpoint folder or ``"latest"``), then export."""
        cfg, acc = self.config, self.accelerator
        out = Path(cfg.output_dir)
        t0 = time.perf_counter()
        step = 0
        ckpt = self.resolve_resume(resume)
        if ckpt is not None:
            step = self.load_checkpoint(ckpt)
            log.info("resumed from %s at step %d", ckpt, step)
        if acc.is_main_process:
            out.mkdir(parents=True, exist_ok=True)
            (out / "config.json").write_text(cfg.to_json() + "\n")
        acc.init_trackers(f"lotus2_{cfg.stage}", config=_flat_hparams(cfg))
        result = RunResult(step=step, main_process=acc.is_main_process)
        stream = BatchStream(self.datasets, [s.prob for s in cfg.data], cfg.batch_size, cfg.tasks, cfg.seed,
                             start=step * cfg.grad_accum, rank=acc.process_index, world_size=acc.num_processes)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg.num_workers,
                                             pin_memory=acc.device.type == "cuda")
        if acc.is_main_process:
            log.info("%s stage: tasks %s, %s trainable parameters, %d process(es), batch %d x %d accumulation",
                     cfg.stage, cfg.tasks, f"{self.num_trainable:,}", acc.num_processes, cfg.batch_size, cfg.grad_accum)
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.stage}", unit="step",
                   disable=not (cfg.progress and acc.is_local_main_process))
        pending: list[dict[str, float]] = []
        self._stop_signal = None
        previous_handlers = self._install_stop_handlers()
        try:
            if step < cfg.max_steps:
                for batch in loader:
                    batch = {k: v.to(acc.device, non_blocking=True) for k, v in batch.items()}
                    with acc.accumulate(self.model):
                        losses = self.model(batch, self.loss_fn)
                        loss = sum(losses.values())
                        acc.backward(loss)
                        if acc.sync_gradients and cfg.max_grad_norm > 0:
                            acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                    pending.append({k: v.detach() for k, v in losses.items()} | {"loss": loss.detach()})
                    if not acc.sync_gradients:
                        continue
                    step += 1
                    logs = self._reduce(pending)
                    pending = []
                    logs["lr"] = self.scheduler.get_last_lr()[0]
                    result.losses.append((step, logs["loss"]))
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs['loss']:.4f}")
                    if step % max(cfg.log_every, 1) == 0 or step == cfg.max_steps:
                        self._log(logs, step)
                    if cfg.validate_every and self.val_samples and (step % cfg.validate_every == 0 or step == cfg.max_steps):
                        metrics = self.validate(step)
                        result.validations.append((step, metrics))
                        self._log({f"val/{k}": v for k, v in metrics.items()}, step)
                        if acc.is_main_process:
                            log.info("step %d validation: %s", step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                    saved = cfg.checkpoint_every and (step % cfg.checkpoint_every == 0 or step == cfg.max_steps)
                    if saved:
                        self.save_checkpoint(step)
                    if self._stop_requested():
                        if not saved:
                            self.save_checkpoint(step)
                        log.warning("stopped by signal %s at step %d: checkpoint saved, resume with --resume latest",
                                    self._stop_signal, step)
                        result.step, result.stopped_by = step, self._stop_signal or -1
                        return result
                    if step >= cfg.max_steps:
                        break
        finally:
            bar.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        result.step = step
        acc.wait_for_everyone()
        result.export_weights, result.export_base_model = self.export(out / "export", step)
        acc.end_training()
        result.seconds = time.perf_counter() - t0
        return result

    def _install_stop_handlers(self) -> dict:
        """SIGINT/SIGTERM (Ctrl-C, cluster preemption) finish the current step, save a checkpoint and
        stop; a second signal aborts at once. Only possible from the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def handler(signum, frame):
            if self._stop_signal is not None:
                signal.signal(signum, previous.get(signum, signal.SIG_DFL))
                raise KeyboardInterrupt
            self._stop_signal = signum
            log.warning("%s received: finishing this step, then saving a checkpoint (again: abort now)",
                        signal.Signals(signum).name)

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    def _stop_requested(self) -> bool:
        """Whether any process was asked to stop (all processes agree, so they stop at the same step)."""
        flag = torch.tensor(0.0 if self._stop_signal is None else 1.0, device=self.accelerator.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="sum")
        return bool(flag.item() > 0)

    def _reduce(self, pending: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Mean over the micro-batches of this step and over processes."""
        keys = list(pending[0])
        local = torch.stack([torch.stack([p[k].float() for p in pending]).mean() for k in keys])
        total = self.accelerator.reduce(local, reduction="mean") if self.accelerator.num_processes > 1 else local
        return {k: float(v) for k, v in zip(keys, total.cpu())}

    def _log(self, logs: dict[str, float], step: int) -> None:
        named = {(k if "/" in k else f"train/{k}"): v for k, v in logs.items()}
        self.accelerator.log(named, step=step)
        if self.accelerator.is_main_process:
            with open(Path(self.config.output_dir) / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **named}) + "\n")

    # ------------------------------------------------------------------ export
    def export(self, export_dir: Path, step: int = 0) -> tuple[Path, Path | None]:
        """Write the official layout: ``export_dir/weights`` (+ ``export_dir/base_model`` if fully fine-tuned)."""
        cfg, acc = self.config, self.accelerator
        state = acc.get_state_dict(self.model) if self._fsdp() else self.module.state_dict()
        weights_dir = Path(export_dir) / "weights"
        base_dir = Path(export_dir) / "base_model" if cfg.full_finetune else None
        if acc.is_main_process:
            meta = {"format": "lotus2", "stage": cfg.stage, "tasks": ",".join(cfg.tasks), "trainer": "lotus2_ros"}
            if weights_dir.exists():
                shutil.rmtree(weights_dir)
            entries = {}
            if cfg.stage == "sharpener":  # the frozen core, LCM and the other files, in the official form
                entries |= carry_weights_folder(cfg.weights, weights_dir)
            entries |= export_task_files(weights_dir, state, self.scalings, self.ranks, cfg.tasks, cfg.stage, meta)
            entries |= copy_prompt_embeds(cfg.prompt_embeds_dir, weights_dir)
            if base_dir is not None:
                export_base_model(cfg.base_model, base_dir, self.transformer_config, state)
            write_manifest(weights_dir, entries, {"trainer": "lotus2_ros", "stage": cfg.stage, "tasks": list(cfg.tasks),
                                                  "steps": step, "full_finetune": cfg.full_finetune,
                                                  "base_model": "base_model/ beside this folder" if base_dir
                                                  else Path(cfg.base_model).name})
            log.info("exported %s%s", weights_dir, f" and {base_dir}" if base_dir else "")
        acc.wait_for_everyone()
        return weights_dir, base_dir


# ----------------------------------------------------------------------------- helpers
def _predict(engine, sample, pipeline, sharpen_steps):
    """Validation forward: the perception pipeline's ``predict`` on one held-out frame (``engine`` is
    the module's own, the one ``pipeline`` runs: the call goes through the wrapped module)."""
    assert pipeline.backend is engine
    return pipeline.predict(sample.rgb, refine_steps=sharpen_steps, wanted=set())


def _val_images(sample, pred, tasks, i: int) -> dict[str, np.ndarray]:
    out = {}
    for task in tasks:
        if task == "depth" and sample.depth_m is not None:
            with np.errstate(divide="ignore", invalid="ignore"):
                gt = colorize_disparity(1.0 / sample.depth_m)
            out[f"{i:02d}_depth"] = np.concatenate([sample.rgb, colorize_disparity(pred.disparity), gt], axis=1)
        elif task == "normal" and sample.normals is not None:
            out[f"{i:02d}_normal"] = np.concatenate(
                [sample.rgb, colorize_normals(pred.normals), colorize_normals(sample.normals)], axis=1)
    return out


def _allow_new_precision(mixed_precision: str) -> None:
    """accelerate keeps one precision per process; a library user (tests, notebooks) may run
    several trainers with different ones. Forget the old setting (the process group stays)."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("_mixed_precision") not in (None, mixed_precision):
        AcceleratorState._reset_state()


def _flat_hparams(cfg: TrainConfig) -> dict:
    flat = {}
    for k, v in json.loads(cfg.to_json()).items():
        flat[k] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return flat


def _tensorboard_or_none():
    try:
        import tensorboard  # noqa: F401

        return "tensorboard"
    except ImportError:
        log.warning("tensorboard is not installed: no TensorBoard logs (metrics.jsonl is still written)")
        return None


def steps_per_second(result: RunResult) -> float:
    return result.step / result.seconds if result.seconds > 0 else math.nan
