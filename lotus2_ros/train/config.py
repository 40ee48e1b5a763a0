"""Configuration of a training run (one frozen dataclass; the CLI maps onto it one-to-one)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..model.weights import OFFICIAL_LORA_TARGETS, TASKS
from .data import DataSource, SyntheticOptions
from .objectives import SHARPENER_LOSSES, SIGMA_SAMPLING

STAGES = ("core", "sharpener")
BACKENDS = ("lotus2", "lotus1")
LOTUS1_MODES = ("d", "g")
#: LoRA targets of a Lotus-1 U-Net: the attention projections of every transformer block.
LOTUS1_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
#: Default LoRA rank of a Lotus-1 U-Net (no release to match; alpha = rank).
LOTUS1_LORA_RANK = 32
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")
MIXED_PRECISION = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a ``train_core`` / ``train_sharpener`` run depends on.

    Attributes:
        stage: ``"core"`` (core predictor + LCM) or ``"sharpener"`` (detail sharpener).
        base_model: FLUX folder in diffusers layout to train on (Lotus-1: a Stable Diffusion 2
            folder — ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` — or a
            Lotus-1 pipeline folder to fine-tune).
        backend: ``"lotus2"`` (default) or ``"lotus1"`` (the SD2 U-Net, one task per run; the
            ``core`` stage only; see :mod:`lotus2_ros.train.lotus1_trainer`).
        mode: Lotus-1 only: ``"d"`` (the image latent in) or ``"g"`` (image latent + noisy target
            latent in, 8 channels).
        detail_preserver_ratio: Lotus-1 only: reconstruction samples (task switcher ``[0,1]``, the
            target is the input image) per annotation sample; 1 = the official doubled batch,
            0 = no detail preserver.
        output_dir: Run folder: ``checkpoints/``, ``logs/`` (TensorBoard), ``val/`` (images),
            ``metrics.jsonl``, ``config.json`` and, at the end, ``export/``.
        tasks: Tasks trained together (each has its own adapter and LCM).
        weights: Existing Lotus-2 files. ``core``: optional, fine-tunes that core predictor + LCM
            instead of starting fresh. ``sharpener``: required, the frozen core predictor + LCM.
        prompt_embeds: Folder holding ``lotus-2_prompt_embeds.safetensors`` (default: ``weights``).
        data / val_data: Training and held-out sources (``val_data`` empty: held-out parts of ``data``).
        full_finetune: Also train every transformer weight (small models; see docs/TRAINING.md).
        lora_rank / lora_alpha: ``None`` = the release's (128 depth / 256 normal, alpha = rank).
        base_dtype: Storage dtype of frozen weights (``fp32`` or ``bf16``).
        mixed_precision: ``no``, ``bf16`` or ``fp16`` autocast (trainable weights stay float32).
        sigma_sampling / grid_steps: Sharpener flow-time sampling (see ``objectives.sample_sigmas``).
        sharpener_loss: ``"mse"`` or ``"relative"``: each frame's sharpener loss over its coarse
            error (see ``objectives``).
        max_steps: Optimizer steps (0: export the untrained starting point); ``batch_size`` is
            per device and micro-batch.
        validate_every / checkpoint_every: In optimizer steps; 0 disables.
    """

    stage: str
    base_model: Path
    output_dir: Path
    backend: str = "lotus2"
    mode: str | None = None
    detail_preserver_ratio: float = 1.0
    tasks: tuple[str, ...] = ("depth",)
    weights: Path | None = None
    prompt_embeds: Path | None = None
    data: tuple[DataSource, ...] = (DataSource("synthetic"),)
    val_data: tuple[DataSource, ...] = ()
    val_samples: int = 16
    resize_short_px: int | None = None
    crop_hw: tuple[int, int] | None = None
    flip_prob: float | None = None
    synthetic: SyntheticOptions = field(default_factory=SyntheticOptions)
    full_finetune: bool = False
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = OFFICIAL_LORA_TARGETS
    sigma_sampling: str = "shifted"
    grid_steps: int = 10
    sharpener_loss: str = "mse"
    max_steps: int = 20000
    batch_size: int = 1
    grad_accum: int = 1
    learning_rate: float = 1e-4
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    base_dtype: str = "fp32"
    gradient_checkpointing: bool = False
    seed: int = 0
    num_workers: int = 0
    validate_every: int = 500
    val_sharpen_steps: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    num_val_images: int = 4
    cpu: bool = False
    progress: bool = True

    def __post_init__(self):
        def bad(name, value, allowed):
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")

        if self.stage not in STAGES:
            bad("stage", self.stage, STAGES)
        if self.backend not in BACKENDS:
            bad("backend", self.backend, BACKENDS)
        if self.backend == "lotus1":
            self._check_lotus1()
        elif self.mode is not None:
            raise ValueError(f"mode (--mode {self.mode}) is a Lotus-1 setting: use it with backend lotus1 "
                             "(--backend lotus1); Lotus-2 has no D/G modes")
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks!r}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            bad("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        if self.mixed_precision not in MIXED_PRECISION:
            bad("mixed_precision", self.mixed_precision, MIXED_PRECISION)
        if self.base_dtype not in ("fp32", "bf16"):
            bad("base_dtype", self.base_dtype, ("fp32", "bf16"))
        if self.sigma_sampling not in SIGMA_SAMPLING:
            bad("sigma_sampling", self.sigma_sampling, SIGMA_SAMPLING)
        if self.sharpener_loss not in SHARPENER_LOSSES:
            bad("sharpener_loss", self.sharpener_loss, SHARPENER_LOSSES)
        if self.stage == "sharpener" and self.weights is None:
            raise ValueError("the sharpener stage needs weights: the folder with the trained core predictor and LCM")
        if self.stage == "sharpener" and self.full_finetune:
            raise ValueError("full_finetune is for the core stage: the sharpener trains a LoRA on the frozen base")
        for name in ("batch_size", "grad_accum", "grid_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0 (0 exports the untrained start), got {self.max_steps}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not self.data:
            raise ValueError("at least one data source is needed")

    def _check_lotus1(self) -> None:
        if self.stage != "core":
            raise ValueError("the Lotus-1 backend has no detail sharpener: train it with train-core "
                             "(train-sharpener is Lotus-2 only)")
        if self.mode not in LOTUS1_MODES:
            raise ValueError(f"backend lotus1 needs mode 'd' or 'g' (--mode d|g), got {self.mode!r}")
        if len(self.tasks) != 1:
            raise ValueError(f"a Lotus-1 model has one task per U-Net: train one task per run, got {self.tasks!r}")
        if self.weights is not None:
            raise ValueError("backend lotus1 takes no weights folder: --base-model names the SD2 folder (or a "
                             "Lotus-1 pipeline folder to fine-tune)")
        if not 0.0 <= self.detail_preserver_ratio <= 1.0:
            raise ValueError(f"detail_preserver_ratio must be in [0, 1] (reconstruction samples per annotation "
                             f"sample; 1 = the official doubled batch), got {self.detail_preserver_ratio}")
        if self.lora_targets == OFFICIAL_LORA_TARGETS:  # the Lotus-2 default names FLUX modules
            object.__setattr__(self, "lora_targets", LOTUS1_LORA_TARGETS)

    @property
    def prompt_embeds_dir(self) -> Path:
        src = self.prompt_embeds or self.weights
        if src is None:
            raise ValueError("prompt_embeds is needed when no weights folder is given")
        return Path(src)

    def to_json(self) -> str:
        def conv(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, DataSource):
                return str(v)
            if dataclasses.is_dataclass(v):
                return {k: conv(x) for k, x in dataclasses.asdict(v).items()}
            if isinstance(v, (tuple, list)):
                return [conv(x) for x in v]
            return v

        return json.dumps({f.name: conv(getattr(self, f.name)) for f in dataclasses.fields(self)}, indent=2)

    def schedule_fingerprint(self) -> dict:
        """Settings a resumed run must share with the run it continues (else it is not a continuation)."""
        keep = ("stage", "tasks", "full_finetune", "lora_rank", "lora_alpha", "lora_targets", "batch_size",
                "grad_accum", "seed", "learning_rate", "lr_scheduler", "warmup_steps", "max_steps",
                "sigma_sampling", "grid_steps", "synthetic", "resize_short_px", "crop_hw", "flip_prob")
        if self.backend == "lotus1":  # (absent from Lotus-2 fingerprints, so their checkpoints still resume)
            keep += ("backend", "mode", "detail_preserver_ratio")
        if self.sharpener_loss != "mse":  # (likewise: checkpoints of runs before the option still resume)
            keep += ("sharpener_loss",)
        full = json.loads(self.to_json())
        return {k: full[k] for k in keep} | {"data": full["data"]}
