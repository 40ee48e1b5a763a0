"""The Lotus-2 inference engine: one FLUX transformer, per-task adapters, separately callable stages.

Stages (each a method; none of them turns off autograd — :meth:`Lotus2Engine.predict` does):

1. :meth:`~Lotus2Engine.preprocess` uint8 RGB → ``[B,3,h,w]`` in ``[-1,1]`` at the processing size
2. :meth:`~Lotus2Engine.encode` VAE posterior **mode** → ``(z − shift) · scale`` ``[B,16,h/8,w/8]``
3. :meth:`~Lotus2Engine.core` pack 2×2 → one transformer forward with the task's core adapter
   (``timestep = 1/1000``, guidance 3.5 if the transformer embeds guidance) → unpack
4. :meth:`~Lotus2Engine.lcm` the task's Local Continuity Module
5. :meth:`~Lotus2Engine.sharpen` (optional) N FlowMatch Euler steps with the sharpener adapter
6. :meth:`~Lotus2Engine.decode` unscale → VAE decode → ``[0,1]``
7. :meth:`~Lotus2Engine.to_disparity` / :meth:`~Lotus2Engine.to_normals` → numpy at input size

This follows the official Lotus-2 inference step by step, with one deliberate deviation: the
VAE encoder's posterior mode is used instead of a random sample, so a frame always gives the
same prediction. Depth and normal share the base transformer and VAE; each task adds two LoRA
adapters and an LCM.
"""

from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..geometry.normals import planar_model_to_optical
from ..prediction import Prediction
from .latents import FlowSchedule, image_position_ids, pack_latents, text_position_ids, unpack_latents
from .lcm import LocalContinuityModule
from .prompt_embeds import load_prompt_embeds
from .resize import DEFAULT_PROCESS_RES, decoded_to_unit, images_to_tensor, resize_bilinear, resize_for_model
from .weights import (
    TASKS,
    TaskWeightFiles,
    WeightsError,
    activate_adapter,
    attach_lora,
    load_lcm,
    untrained_placeholder,
)

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The official pipeline passes ``timestep_core_predictor / 1000`` with ``timestep_core_predictor = 1``.
CORE_TIMESTEP = 1
DEFAULT_GUIDANCE = 3.5
MAX_SHARPEN_STEPS = 10


@dataclass(frozen=True)
class EngineConfig:
    """How to build a :class:`Lotus2Engine`.

    Attributes:
        base_model: FLUX.1-dev folder in diffusers layout (``transformer/``, ``vae/``, ``scheduler/``).
        weights: Folder with the official Lotus-2 files and the exported prompt embeddings.
        tasks: Which of ``("depth", "normal")`` to load (each adds two adapters and an LCM).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` for every module.
        process_res: Cap on the long edge in pixels (``None``: no cap); never upscales.
        load_sharpener: Load the detail-sharpener adapters (skip to save memory if never sharpening).
        guidance_scale: Guidance value fed to guidance-distilled transformers (FLUX.1-dev).
    """

    base_model: Path
    weights: Path
    tasks: tuple[str, ...] = ("depth",)
    device: str = "cpu"
    dtype: str = "fp32"
    process_res: int | None = DEFAULT_PROCESS_RES
    load_sharpener: bool = True
    guidance_scale: float = DEFAULT_GUIDANCE

    def __post_init__(self):
        if not self.tasks or any(t not in TASKS for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got {self.tasks!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.process_res is not None and self.process_res < 16:
            raise ValueError(f"process_res must be >= 16 or None, got {self.process_res}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")


def _check_folder(path: Path, what: str, required: tuple[str, ...]) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    missing = [r for r in required if not (path / r).exists()]
    if missing:
        raise FileNotFoundError(f"{what} folder {path} lacks {', '.join(missing)}")


@dataclass
class StageTimer:
    """Wall-clock stage timings in ms; synchronises CUDA so GPU time is attributed correctly."""

    device: torch.device
    timings_ms: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings_ms[name] = self.timings_ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3


class Lotus2Engine:
    """Lotus-2 depth / normal prediction with a shared FLUX transformer.

    Build with :meth:`load`. Stage methods take and return tensors on ``self.device`` and never
    disable autograd, so the trainer can call them; :meth:`predict` is the inference wrapper.
    """

    def __init__(self, config: EngineConfig, transformer, vae, lcms: dict[str, LocalContinuityModule],
                 prompt_embeds, schedule: FlowSchedule, sharpener_tasks: tuple[str, ...]):
        self.config = config
        self.device = torch.device(config.device)
        self.dtype = DTYPES[config.dtype]
        self.transformer = transformer
        self.vae = vae
        self.lcms = lcms
        self.prompt = prompt_embeds
        self.schedule = schedule
        self.sharpener_tasks = sharpener_tasks
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        self._active_adapter: str | None = None
        self._txt_ids = text_position_ids(prompt_embeds.prompt_embeds.shape[1], self.device, self.dtype)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, config: EngineConfig) -> "Lotus2Engine":
        """Load the base model and the Lotus-2 files named by ``config`` (local folders only).

        Raises:
            FileNotFoundError: A folder or file is missing (the message names it).
            WeightsError: A weight file does not fit the base model (names file, key, shapes).
        """
        from diffusers import AutoencoderKL, FluxTransformer2DModel

        base, weights = Path(config.base_model), Path(config.weights)
        _check_folder(base, "base model (FLUX.1-dev, diffusers layout)", ("transformer", "vae", "scheduler"))
        if not weights.is_dir():
            raise FileNotFoundError(f"Lotus-2 weights folder not found: {weights}")
        files = {task: TaskWeightFiles.in_folder(weights, task) for task in config.tasks}
        for f in files.values():
            if config.load_sharpener:
                f.check_exist()
                if untrained_placeholder(f.detail_sharpener):  # a core-only export (see its manifest)
                    raise WeightsError(f"{f.detail_sharpener} is an untrained placeholder (the official loader needs "
                                       f"the file): this model has no {f.task} detail sharpener; use sharpen steps 0 "
                                       "or train one with `lotus2 train-sharpener`")
            elif not (f.core_predictor.is_file() and f.lcm.is_file()):
                raise WeightsError(f"missing Lotus-2 {f.task} core predictor or LCM file in {weights}")
        dtype, device = DTYPES[config.dtype], torch.device(config.device)

        transformer = FluxTransformer2DModel.from_pretrained(
            base / "transformer", torch_dtype=dtype, local_files_only=True)
        transformer.requires_grad_(False).to(device)
        vae = AutoencoderKL.from_pretrained(base / "vae", torch_dtype=dtype, local_files_only=True)
        vae.requires_grad_(False).to(device)
        if transformer.config.in_channels != 4 * vae.config.latent_channels:
            raise WeightsError(f"{base}: transformer in_channels {transformer.config.in_channels} != 4 x VAE "
                               f"latent_channels {vae.config.latent_channels}")
        prompt = load_prompt_embeds(
            weights, joint_attention_dim=transformer.config.joint_attention_dim,
            pooled_projection_dim=transformer.config.pooled_projection_dim, base_model=base).to(device, dtype)
        schedule = FlowSchedule.from_scheduler_dir(base / "scheduler")

        lcms = {}
        for task, f in files.items():
            attach_lora(transformer, f.core_predictor, f"{task}_core")
            if config.load_sharpener:
                attach_lora(transformer, f.detail_sharpener, f"{task}_sharpener")
            lcms[task] = load_lcm(f.lcm, vae.config.latent_channels).to(device=device, dtype=dtype)
        transformer.eval()
        vae.eval()
        sharpener_tasks = config.tasks if config.load_sharpener else ()
        log.info("Lotus-2 engine ready: tasks=%s device=%s dtype=%s", config.tasks, device, config.dtype)
        return cls(config, transformer, vae, lcms, prompt, schedule, sharpener_tasks)

    # ------------------------------------------------------------------ stages
    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``[H,W,3]`` / ``[B,H,W,3]`` → ``[B,3,h,w]`` in ``[-1,1]`` at the processing size."""
        rgb = images_to_tensor(images, self.device)  # [B,3,H,W] float32
        return resize_for_model(rgb, self.config.process_res).to(self.dtype)  # [B,3,h,w]

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """``[B,3,h,w]`` in ``[-1,1]`` → scaled latent ``[B,C,h/8,w/8]`` (posterior mode)."""
        latents = self.vae.encode(rgb.to(self.dtype)).latent_dist.mode()  # [B,C,h/8,w/8]
        return (latents - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def core(self, latents: torch.Tensor, task: str) -> torch.Tensor:
        """One transformer forward with the core predictor adapter: image latent → coarse target latent."""
        self._use_adapter(f"{task}_core")
        b, _, h, w = latents.shape
        tokens = pack_latents(latents)  # [B,N,4C]
        timestep = torch.tensor(CORE_TIMESTEP).expand(b).to(device=self.device, dtype=self.dtype)
        out = self._transformer(tokens, timestep / 1000, (h, w))  # [B,N,4C]
        return unpack_latents(out, (h, w))  # [B,C,h,w]

    def lcm(self, latents: torch.Tensor, task: str) -> torch.Tensor:
        """The task's Local Continuity Module on an unpacked latent ``[B,C,h,w]``."""
        return self.lcms[task](latents)

    def sharpen(self, latents: torch.Tensor, task: str, num_steps: int) -> torch.Tensor:
        """``num_steps`` (0–10) Euler steps of the detail sharpener; 0 returns ``latents`` unchanged."""
        for latents in self.iter_sharpen(latents, task, num_steps):
            pass
        return latents

    def iter_sharpen(self, latents: torch.Tensor, task: str, num_steps: int) -> Iterator[torch.Tensor]:
        """Like :meth:`sharpen` but yields the unpacked latent after every step (for interleaving)."""
        if not 0 <= num_steps <= MAX_SHARPEN_STEPS:
            raise ValueError(f"sharpen steps must be in 0..{MAX_SHARPEN_STEPS}, got {num_steps}")
        if num_steps == 0:
            return
        if task not in self.sharpener_tasks:
            raise ValueError(f"the detail sharpener for {task!r} is not loaded")
        self._use_adapter(f"{task}_sharpener")
        b, _, h, w = latents.shape
        tokens = pack_latents(latents.to(self.dtype))  # [B,N,4C]
        sigmas = torch.from_numpy(self.schedule.sigmas(num_steps, tokens.shape[1])).to(self.device)  # [N+1]
        timesteps = sigmas[:-1] * self.schedule.num_train_timesteps
        for i, t in enumerate(timesteps):
            self._use_adapter(f"{task}_sharpener")  # another caller may have switched in between
            timestep = t.expand(b).to(self.dtype)
            velocity = self._transformer(tokens, timestep / 1000, (h, w))  # [B,N,4C]
            # Euler step in float32, cast back to the model dtype (as the FlowMatch scheduler does).
            tokens = (tokens.to(torch.float32) + (sigmas[i + 1] - sigmas[i]) * velocity).to(velocity.dtype)
            yield unpack_latents(tokens, (h, w))

    def velocity(self, latents: torch.Tensor, task: str, sigmas: torch.Tensor | float) -> torch.Tensor:
        """The detail sharpener's velocity at flow time ``sigmas``: ``[B,C,h,w]`` → ``[B,C,h,w]``.

        The same transformer call :meth:`iter_sharpen` makes at each Euler step
        (``x ← x + (σ_next − σ)·v``, σ from 1 to 0), for any σ: the trainer fits it.

        Args:
            latents: Unpacked latent ``[B,C,h,w]`` on the flow path at ``sigmas``.
            task: Whose ``{task}_sharpener`` adapter to use.
            sigmas: Flow time in ``[0, 1]``, a scalar or one per sample ``[B]``.
        """
        if task not in self.sharpener_tasks:
            raise ValueError(f"the detail sharpener for {task!r} is not loaded")
        self._use_adapter(f"{task}_sharpener")
        b, _, h, w = latents.shape
        tokens = pack_latents(latents.to(self.dtype))  # [B,N,4C]
        sigma = torch.as_tensor(sigmas, dtype=torch.float32, device=self.device).expand(b)  # [B]
        timestep = (sigma * self.schedule.num_train_timesteps).to(self.dtype)
        out = self._transformer(tokens, timestep / 1000, (h, w))  # [B,N,4C]
        return unpack_latents(out, (h, w))  # [B,C,h,w]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latent ``[B,C,h/8,w/8]`` → decoded image ``[B,3,h,w]`` float32 in ``[0,1]``."""
        z = latents.to(self.dtype) / self.vae.config.scaling_factor + self.vae.config.shift_factor
        return decoded_to_unit(self.vae.decode(z, return_dict=False)[0])

    @staticmethod
    def to_disparity(decoded: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
        """``[B,3,h,w]`` in ``[0,1]`` → affine-invariant disparity ``[B,H,W]`` float32 (channel mean)."""
        disparity = decoded.mean(dim=1, keepdim=True)  # [B,1,h,w]
        return resize_bilinear(disparity, out_hw)[:, 0].cpu().numpy()

    @staticmethod
    def to_normals(decoded: torch.Tensor, out_hw: tuple[int, int]) -> np.ndarray:
        """``[B,3,h,w]`` in ``[0,1]`` → unit normals ``[B,H,W,3]`` in the ROS optical frame."""
        # The decoder's channel planes go in as they are: the arithmetic runs plane by plane on
        # contiguous memory and only the final divide writes the interleaved [B,H,W,3] result.
        unit = resize_bilinear(decoded, out_hw).cpu().numpy()  # [B,3,H,W]
        return planar_model_to_optical(unit)  # [B,H,W,3]

    # ------------------------------------------------------------------ composite stages
    def check_request(self, tasks: tuple[str, ...], sharpen_steps: int) -> None:
        """Raise ValueError if ``tasks`` are not loaded or ``sharpen_steps`` cannot be run."""
        unknown = [t for t in tasks if t not in self.lcms]
        if not tasks or unknown:
            raise ValueError(f"tasks {unknown or list(tasks)} are not loaded (loaded: {tuple(self.lcms)})")
        if not 0 <= sharpen_steps <= MAX_SHARPEN_STEPS:
            raise ValueError(f"sharpen_steps must be in 0..{MAX_SHARPEN_STEPS}, got {sharpen_steps}")
        if sharpen_steps and any(t not in self.sharpener_tasks for t in tasks):
            raise ValueError("sharpen_steps > 0 but the detail sharpener was not loaded")

    def coarse_latents(self, rgb: torch.Tensor, tasks: tuple[str, ...],
                       timer: "StageTimer | None" = None) -> dict[str, torch.Tensor]:
        """Encode once, then core predictor + LCM per task: ``{task: [B,C,h/8,w/8]}``."""
        timer = timer or StageTimer(self.device)
        with timer("encode"):
            latents = self.encode(rgb)  # [B,C,h/8,w/8]
        coarse = {}
        for task in tasks:
            with timer(f"core_{task}"):
                out = self.core(latents, task)
            with timer(f"lcm_{task}"):
                coarse[task] = self.lcm(out, task)
        return coarse

    def finish(self, latents: dict[str, torch.Tensor], out_hw: tuple[int, int],
               timer: "StageTimer | None" = None) -> dict[str, np.ndarray]:
        """Decode and post-process per task: depth → ``[B,H,W]`` disparity, normal → ``[B,H,W,3]``."""
        timer = timer or StageTimer(self.device)
        outputs = {}
        for task, z in latents.items():
            with timer(f"decode_{task}"):
                decoded = self.decode(z)  # [B,3,h,w]
            with timer(f"postprocess_{task}"):
                conv = self.to_disparity if task == "depth" else self.to_normals
                outputs[task] = conv(decoded, out_hw)
        return outputs

    # ------------------------------------------------------------------ inference
    def predict(self, images: np.ndarray, tasks: tuple[str, ...] | None = None,
                sharpen_steps: int = MAX_SHARPEN_STEPS) -> list[Prediction]:
        """Run the whole chain on a batch of same-size images without autograd.

        Args:
            images: uint8 RGB ``[H,W,3]`` or ``[B,H,W,3]``.
            tasks: Subset of the loaded tasks (default: all loaded).
            sharpen_steps: Detail-sharpener steps, 0 (off) to 10 (the official default).

        Returns:
            One :class:`~lotus2_ros.prediction.Prediction` per image, at the input size.
        """
        if isinstance(tasks, str):
            raise ValueError(f"tasks must be a tuple of task names, got the string {tasks!r}")
        tasks = tuple(tasks or self.config.tasks)
        self.check_request(tasks, sharpen_steps)
        timer = StageTimer(self.device)
        with torch.inference_mode():
            with timer("preprocess"):
                rgb = self.preprocess(images)  # [B,3,h,w]
            latents = self.coarse_latents(rgb, tasks, timer)
            for task in tasks:
                with timer(f"sharpen_{task}"):
                    latents[task] = self.sharpen(latents[task], task, sharpen_steps)
            outputs = self.finish(latents, tuple(images.shape[-3:-1]), timer)
        return [
            Prediction(
                disparity=outputs["depth"][i] if "depth" in outputs else None,
                normals=outputs["normal"][i] if "normal" in outputs else None,
                sharpen_steps={t: sharpen_steps for t in tasks},
                process_hw=tuple(rgb.shape[-2:]),
                timings_ms=dict(timer.timings_ms),
            )
            for i in range(rgb.shape[0])
        ]

    # ------------------------------------------------------------------ internals
    def _use_adapter(self, name: str) -> None:
        if self._active_adapter != name:
            activate_adapter(self.transformer, name)
            self._active_adapter = name

    def _transformer(self, tokens: torch.Tensor, timestep: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
        b = tokens.shape[0]
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([1], self.config.guidance_scale, device=self.device, dtype=torch.float32).expand(b)
        return self.transformer(
            hidden_states=tokens,
            timestep=timestep,
            guidance=guidance,
            pooled_projections=self.prompt.pooled_prompt_embeds.expand(b, -1),
            encoder_hidden_states=self.prompt.prompt_embeds.expand(b, -1, -1),
            txt_ids=self._txt_ids,
            img_ids=image_position_ids(latent_hw, self.device, self.dtype),
            joint_attention_kwargs={},
            return_dict=False,
        )[0]

    def describe(self) -> dict:
        """Model facts for logs and diagnostics."""
        return {
            "tasks": list(self.config.tasks), "device": str(self.device), "dtype": self.config.dtype,
            "sharpener": list(self.sharpener_tasks), "process_res": self.config.process_res,
            "transformer_params": sum(p.numel() for p in self.transformer.parameters()),
        }

