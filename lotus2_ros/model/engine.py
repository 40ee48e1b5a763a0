"""The Lotus-2 backend: one FLUX transformer, per-task adapters, separately callable stages.

Stages (the :class:`~lotus2_ros.model.backend.ModelBackend` interface plus Lotus-2's own parts;
none turns off autograd — the perception pipeline's inference wrappers do):

1. :meth:`~Lotus2Engine.preprocess` uint8 RGB → ``[B,3,h,w]`` in ``[-1,1]`` at the processing size
2. :meth:`~Lotus2Engine.encode` VAE posterior **mode** → ``(z − shift) · scale`` ``[B,16,h/8,w/8]``
3. :meth:`~Lotus2Engine.core` pack 2×2 → one transformer forward with the task's core adapter
   (``timestep = 1/1000``, guidance 3.5 if the transformer embeds guidance) → unpack
4. :meth:`~Lotus2Engine.lcm` the task's Local Continuity Module
   (:meth:`~Lotus2Engine.predict` = 3 + 4 for each task: the per-frame prediction; with several
   tasks, 3 is **one** forward over a batch with one sample per task, each with its own adapter:
   :meth:`~Lotus2Engine.core_tasks`)
5. :meth:`~Lotus2Engine.iter_sharpen` N FlowMatch Euler steps with the sharpener adapter
   (:meth:`~Lotus2Engine.iter_refine`: the refinement, one forward per step — for all tasks
   together, :meth:`~Lotus2Engine.iter_sharpen_tasks`, unless ``batch_tasks`` is off)
6. :meth:`~Lotus2Engine.decode` unscale → VAE decode → ``[0,1]``
7. :meth:`~Lotus2Engine.to_depth` / :meth:`~Lotus2Engine.to_normals` → numpy at the output size

This follows the official Lotus-2 inference step by step, with one deliberate deviation: the
VAE encoder's posterior mode is used instead of a random sample, so a frame always gives the
same prediction. Depth and normal share the base transformer and VAE; each task adds two LoRA
adapters and an LCM. The base model is read by :func:`load_flux_base`, which the trainer uses too.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..geometry.normals import planar_model_to_optical
from .backend import DTYPES, BackendConfig, ModelBackend, ModelInfo, StageTimer, deliver
from .latents import FlowSchedule, image_position_ids, pack_latents, text_position_ids, unpack_latents
from .lcm import LocalContinuityModule
from .prompt_embeds import PromptEmbeds, load_prompt_embeds
from .resize import (decoded_to_unit, images_to_tensor, planar_model_to_optical_tensor, resize_bilinear,
                     resize_for_model, resize_planes_bilinear)
from .spec import MAX_REFINE_STEPS, ModelSettings, resolve_model_request
from .weights import TaskWeightFiles, WeightsError, activate_adapter, attach_lora, load_lcm, untrained_placeholder

log = logging.getLogger(__name__)

#: The official pipeline passes ``timestep_core_predictor / 1000`` with ``timestep_core_predictor = 1``.
CORE_TIMESTEP = 1
DEFAULT_GUIDANCE = 3.5
MAX_SHARPEN_STEPS = MAX_REFINE_STEPS


def _check_folder(path: Path, what: str, required: tuple[str, ...]) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {path}")
    missing = [r for r in required if not (path / r).exists()]
    if missing:
        raise FileNotFoundError(f"{what} folder {path} lacks {', '.join(missing)}")


@dataclass
class FluxBase:
    """The frozen parts of a FLUX.1-dev folder Lotus-2 builds on."""

    transformer: torch.nn.Module
    vae: torch.nn.Module
    schedule: FlowSchedule


def load_flux_base(base_model: Path, dtype: torch.dtype, device: torch.device | str = "cpu") -> FluxBase:
    """Load the transformer, VAE and flow schedule of a FLUX.1-dev folder (local only), frozen.

    The one loader of the base model: inference (:meth:`Lotus2Engine.load`) and training use it.

    Raises:
        FileNotFoundError: The folder or one of ``transformer/``, ``vae/``, ``scheduler/`` is missing.
        WeightsError: The transformer does not fit the VAE (``in_channels != 4 x latent_channels``).
    """
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    base = Path(base_model).expanduser()
    _check_folder(base, "base model (FLUX.1-dev, diffusers layout)", ("transformer", "vae", "scheduler"))
    transformer = FluxTransformer2DModel.from_pretrained(base / "transformer", torch_dtype=dtype,
                                                         local_files_only=True)
    vae = AutoencoderKL.from_pretrained(base / "vae", torch_dtype=dtype, local_files_only=True)
    if transformer.config.in_channels != 4 * vae.config.latent_channels:
        raise WeightsError(f"{base}: transformer in_channels {transformer.config.in_channels} != 4 x VAE "
                           f"latent_channels {vae.config.latent_channels}")
    transformer.requires_grad_(False).to(device)
    vae.requires_grad_(False).to(device)
    return FluxBase(transformer, vae, FlowSchedule.from_scheduler_dir(base / "scheduler"))


def load_flux_prompt(weights: Path, transformer: torch.nn.Module, base_model: Path | None = None) -> PromptEmbeds:
    """The cached empty-prompt embeddings in ``weights``, checked against ``transformer``'s widths (and,
    with ``base_model``, against the text encoders they must come from)."""
    return load_prompt_embeds(weights, joint_attention_dim=transformer.config.joint_attention_dim,
                              pooled_projection_dim=transformer.config.pooled_projection_dim, base_model=base_model)


class Lotus2Engine(ModelBackend):
    """Lotus-2 depth / normal prediction with a shared FLUX transformer.

    Build with :meth:`load` (or around training modules with the constructor). Stage methods take
    and return tensors on ``self.device`` and never disable autograd.
    """

    def __init__(self, transformer, vae, lcms: dict[str, LocalContinuityModule], prompt_embeds: PromptEmbeds,
                 schedule: FlowSchedule, *, info: ModelInfo, device: torch.device | str, dtype: torch.dtype,
                 guidance_scale: float = DEFAULT_GUIDANCE, batch_tasks: bool = True):
        self.info = info
        #: Several tasks share each transformer forward (a batch with one sample per task and its
        #: own adapter) in :meth:`predict` and :meth:`iter_refine`; False: one forward per task.
        self.batch_tasks = batch_tasks
        self.device = torch.device(device)
        self.dtype = dtype
        self.guidance_scale = guidance_scale
        self.transformer = transformer
        self.vae = vae
        self.lcms = lcms
        self.prompt = prompt_embeds
        self.schedule = schedule
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_channels = int(vae.config.latent_channels)
        self._active_adapter: str | None = None
        self._lora_layers: list[torch.nn.Module] | None = None
        self._txt_ids = text_position_ids(prompt_embeds.prompt_embeds.shape[1], self.device, self.dtype)

    @property
    def sharpener_tasks(self) -> tuple[str, ...]:
        return self.info.refine_tasks

    @property
    def process_res(self) -> int | None:
        return self.info.settings.process_res

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, config: BackendConfig) -> "Lotus2Engine":
        """Load the base model and the Lotus-2 files named by ``config`` (local folders only).

        Tasks, processing cap and sharpener steps left ``None`` come from the weights folder's
        ``model.json`` or, without one, the official defaults (:mod:`lotus2_ros.model.spec`).

        Raises:
            FileNotFoundError: A folder or file is missing (the message names it).
            WeightsError: A weight file does not fit the base model (names file, key, shapes).
            ValueError: A requested task has no weights in the folder.
        """
        if config.base_model is None:
            raise ValueError("the Lotus-2 backend needs the FLUX.1-dev folder (base_model / --base-model)")
        weights = config.weights
        defaults, settings = resolve_model_request(
            "lotus2", weights, tasks=config.tasks, process_res=config.process_res, no_cap=config.full_resolution,
            refine_steps=config.refine_steps)
        files = {task: TaskWeightFiles.in_folder(weights, task) for task in settings.tasks}
        load_refiner = config.load_refiner
        placeholders = [t for t, f in files.items() if f.detail_sharpener.is_file()
                        and untrained_placeholder(f.detail_sharpener)]  # a core-only export (see its manifest)
        if load_refiner and placeholders:
            if config.refine_steps is not None:
                f = files[placeholders[0]]
                raise WeightsError(f"{f.detail_sharpener} is an untrained placeholder (the official loader needs "
                                   f"the file): this model has no {f.task} detail sharpener; use sharpen steps 0 "
                                   "or train one with `lotus2 train-sharpener`")
            load_refiner = False  # the model's own default: no sharpener
            settings = ModelSettings(settings.tasks, settings.process_res, 0, settings.notes + (
                f"no detail sharpener (untrained placeholder for {placeholders})",), settings.depth_output,
                settings.refinement)
        for task, f in files.items():  # name every missing file of a task to load
            if load_refiner:
                f.check_exist()
            elif not (f.core_predictor.is_file() and f.lcm.is_file()):
                raise WeightsError(f"missing Lotus-2 {task} core predictor or LCM file in {weights}")
        dtype, device = DTYPES[config.dtype], torch.device(config.device)

        base = load_flux_base(config.base_model, dtype, device)
        transformer, vae = base.transformer, base.vae
        prompt = load_flux_prompt(weights, transformer, config.base_model).to(device, dtype)
        lcms = {}
        for task, f in files.items():
            attach_lora(transformer, f.core_predictor, f"{task}_core")
            if load_refiner:
                attach_lora(transformer, f.detail_sharpener, f"{task}_sharpener")
            lcms[task] = load_lcm(f.lcm, vae.config.latent_channels).to(device=device, dtype=dtype)
        transformer.eval()
        vae.eval()
        if not load_refiner:
            settings = ModelSettings(settings.tasks, settings.process_res, 0, settings.notes,
                                     settings.depth_output, settings.refinement)
        info = ModelInfo(family="lotus2", settings=settings, depth_output=defaults.depth_output,
                         refinement="sharpen", refine_tasks=settings.tasks if load_refiner else (),
                         source=defaults.source)
        for note in settings.notes:
            log.info("Lotus-2: %s", note)
        log.info("Lotus-2 engine ready: tasks=%s device=%s dtype=%s", settings.tasks, device, config.dtype)
        return cls(transformer, vae, lcms, prompt, base.schedule, info=info, device=device, dtype=dtype,
                   guidance_scale=config.guidance_scale, batch_tasks=config.batch_tasks)

    # ------------------------------------------------------------------ stages
    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``[H,W,3]`` / ``[B,H,W,3]`` → ``[B,3,h,w]`` in ``[-1,1]`` at the processing size."""
        rgb = images_to_tensor(images, self.device)  # [B,3,H,W] float32
        return resize_for_model(rgb, self.process_res).to(self.dtype)  # [B,3,h,w]

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

    def core_tasks(self, latents: torch.Tensor, tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """:meth:`core` of every task in **one** transformer forward: ``{task: [B,C,h,w]}``.

        The batch holds the packed latent once per task; each sample runs through the base weights
        together and through its own task's core adapter (peft's mixed-adapter batches).
        """
        b, _, h, w = latents.shape
        tokens = pack_latents(latents).repeat(len(tasks), 1, 1)  # [T*B,N,4C], task-major
        timestep = torch.tensor(CORE_TIMESTEP).expand(len(tasks) * b).to(device=self.device, dtype=self.dtype)
        with self._mixed_adapters([f"{task}_core" for task in tasks for _ in range(b)]):
            out = self._transformer(tokens, timestep / 1000, (h, w))  # [T*B,N,4C]
        return {task: unpack_latents(out[i * b:(i + 1) * b], (h, w)) for i, task in enumerate(tasks)}

    def iter_sharpen_tasks(self, latents: dict[str, torch.Tensor], num_steps: int) -> Iterator[dict[str, torch.Tensor]]:
        """:meth:`iter_sharpen` of every task at once: each Euler step is **one** transformer forward
        over all tasks' latents (each sample with its task's sharpener adapter); yields
        ``{task: [B,C,h,w]}`` after every step. The latents must have one shape."""
        tasks = tuple(latents)
        if not 0 <= num_steps <= MAX_SHARPEN_STEPS:
            raise ValueError(f"sharpen steps must be in 0..{MAX_SHARPEN_STEPS}, got {num_steps}")
        missing = [t for t in tasks if t not in self.sharpener_tasks]
        if missing:
            raise ValueError(f"the detail sharpener for {missing} is not loaded")
        if num_steps == 0:
            return
        shapes = {tuple(z.shape) for z in latents.values()}
        if len(shapes) != 1:
            raise ValueError(f"batched sharpening needs latents of one shape, got {sorted(shapes)}")
        b, _, h, w = next(iter(latents.values())).shape
        tokens = torch.cat([pack_latents(latents[t].to(self.dtype)) for t in tasks])  # [T*B,N,4C], task-major
        sigmas = torch.from_numpy(self.schedule.sigmas(num_steps, tokens.shape[1])).to(self.device)  # [N+1]
        timesteps = sigmas[:-1] * self.schedule.num_train_timesteps
        names = [f"{task}_sharpener" for task in tasks for _ in range(b)]
        for i, t in enumerate(timesteps):
            timestep = t.expand(tokens.shape[0]).to(self.dtype)
            with self._mixed_adapters(names):
                velocity = self._transformer(tokens, timestep / 1000, (h, w))  # [T*B,N,4C]
            # Euler step in float32, cast back to the model dtype (as in iter_sharpen).
            tokens = (tokens.to(torch.float32) + (sigmas[i + 1] - sigmas[i]) * velocity).to(velocity.dtype)
            yield {task: unpack_latents(tokens[j * b:(j + 1) * b], (h, w)) for j, task in enumerate(tasks)}

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

    def decode(self, latents: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """Scaled latent ``[B,C,h/8,w/8]`` → decoded image ``[B,3,h,w]`` float32 in ``[0,1]`` (one VAE for every task)."""
        z = latents.to(self.dtype) / self.vae.config.scaling_factor + self.vae.config.shift_factor
        return decoded_to_unit(self.vae.decode(z, return_dict=False)[0])

    def to_depth(self, decoded: torch.Tensor, out_hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        """``[B,3,h,w]`` in ``[0,1]`` → affine-invariant disparity ``[B,H,W]`` float32 (channel mean), into ``out`` if given."""
        return self.to_disparity(decoded, out_hw, out)

    @staticmethod
    def to_disparity(decoded: torch.Tensor, out_hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        """``[B,3,h,w]`` in ``[0,1]`` → affine-invariant disparity ``[B,H,W]`` float32 (channel mean).

        ``out``: a C-contiguous float32 ``[B,H,W]`` array to write to (default: a new one).
        """
        if _on_host(decoded):  # numpy + OpenCV: no torch kernels (and their thread pool) on the CPU path
            planes = decoded.detach().numpy()  # [B,3,h,w]
            at_size = tuple(planes.shape[-2:]) == tuple(out_hw)
            # At the output size the mean is written straight into ``out``.
            disparity = np.add(planes[:, 0], planes[:, 1], out=out if at_size else None)
            disparity += planes[:, 2]
            disparity /= 3  # torch's CPU mean over the channels, bit for bit
            return disparity if at_size else resize_planes_bilinear(disparity, out_hw, out)  # [B,H,W]
        disparity = decoded.mean(dim=1, keepdim=True)  # [B,1,h,w]
        return deliver(resize_bilinear(disparity, out_hw)[:, 0].cpu().numpy(), out)

    @staticmethod
    def to_normals(decoded: torch.Tensor, out_hw: tuple[int, int], out: np.ndarray | None = None,
                   colorized: np.ndarray | None = None) -> np.ndarray:
        """``[B,3,h,w]`` in ``[0,1]`` → unit normals ``[B,H,W,3]`` in the ROS optical frame (see the backend interface)."""
        return decoded_to_optical_normals(decoded, out_hw, out, colorized)

    def to_depth_tensor(self, decoded: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """:meth:`to_disparity` on the decoded tensor's device: ``[B,H,W]`` float32, not downloaded."""
        return resize_bilinear(decoded.mean(dim=1, keepdim=True), out_hw)[:, 0]  # [B,H,W]

    def to_normals_tensor(self, decoded: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """:meth:`to_normals` on the decoded tensor's device: ``[B,H,W,3]`` float32, not downloaded."""
        return planar_model_to_optical_tensor(resize_bilinear(decoded, out_hw))  # [B,H,W,3]

    # ------------------------------------------------------------------ the backend interface
    def predict(self, cond: torch.Tensor, tasks: tuple[str, ...],
                timer: StageTimer | None = None) -> dict[str, torch.Tensor]:
        """Core predictor + LCM per task on the encoded image: ``{task: [B,C,h/8,w/8]}``."""
        timer = timer or StageTimer(self.device)
        tasks = tuple(tasks)
        if self._batches(tasks):
            with timer(f"core_{'+'.join(tasks)}"):  # one forward for every task
                coarse = self.core_tasks(cond, tasks)
        else:
            coarse = {}
            for task in tasks:
                with timer(f"core_{task}"):
                    coarse[task] = self.core(cond, task)
        out = {}
        for task in tasks:
            with timer(f"lcm_{task}"):
                out[task] = self.lcm(coarse[task], task)
        return out

    def iter_refine(self, cond: torch.Tensor, latents: dict[str, torch.Tensor], num_steps: int,
                    timer: StageTimer | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The detail sharpener, one Euler step (one transformer forward) per item: all tasks in one
        batched forward per step (:attr:`batch_tasks`), else task after task."""
        timer = timer or StageTimer(self.device)
        current = dict(latents)
        tasks = tuple(current)
        if self._batches(tasks) and len({tuple(z.shape) for z in current.values()}) == 1:
            steps = self.iter_sharpen_tasks(current, num_steps)
            while True:
                with timer(f"sharpen_{'+'.join(tasks)}"):  # a forward stage
                    z = next(steps, None)
                if z is None:
                    return
                yield z
        for task in list(current):
            steps = self.iter_sharpen(current[task], task, num_steps)
            while True:
                with timer(f"sharpen_{task}"):  # a forward stage
                    z = next(steps, None)
                if z is None:
                    break
                current[task] = z
                yield dict(current)

    def refine_forwards(self, tasks: tuple[str, ...], num_steps: int) -> int:
        """Forwards :meth:`iter_refine` makes: one per step when the tasks are batched."""
        return num_steps if self._batches(tuple(tasks)) else num_steps * len(tasks)

    # ------------------------------------------------------------------ internals
    def _batches(self, tasks: tuple[str, ...]) -> bool:
        return self.batch_tasks and len(tasks) > 1

    @contextmanager
    def _mixed_adapters(self, adapter_names: list[str]):
        """Every LoRA layer applies ``adapter_names[i]`` to sample ``i`` during the block.

        peft's mixed-adapter batches: a LoRA layer called with ``adapter_names=`` runs its base
        layer on the whole batch and each adapter on its own samples. diffusers does not pass the
        argument through the transformer, so forward pre-hooks add it to every LoRA layer's call
        (as peft's own ``PeftModel`` does); they are removed on exit.
        """
        if self._lora_layers is None:
            from peft.tuners.lora import LoraLayer

            self._lora_layers = [m for m in self.transformer.modules() if isinstance(m, LoraLayer)]

        def add_names(module, args, kwargs):
            return args, {**kwargs, "adapter_names": adapter_names}

        handles = [layer.register_forward_pre_hook(add_names, with_kwargs=True) for layer in self._lora_layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _use_adapter(self, name: str) -> None:
        if self._active_adapter != name:
            activate_adapter(self.transformer, name)
            self._active_adapter = name

    def _transformer(self, tokens: torch.Tensor, timestep: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
        b = tokens.shape[0]
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full([1], self.guidance_scale, device=self.device, dtype=torch.float32).expand(b)
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
        return {**super().describe(), "transformer_params": sum(p.numel() for p in self.transformer.parameters())}


def decoded_to_optical_normals(decoded: torch.Tensor, out_hw: tuple[int, int], out: np.ndarray | None = None,
                               colorized: np.ndarray | None = None) -> np.ndarray:
    """``[B,3,h,w]`` in ``[0,1]`` (Lotus normal coding) → unit normals ``[B,H,W,3]``, ROS optical frame.

    ``out``, ``colorized``: as for :func:`~lotus2_ros.geometry.normals.planar_model_to_optical`.
    """
    # The decoder's channel planes go in as they are (resized plane by plane): 1 − 2u and the
    # normalisation run on contiguous plane rows, and only the final merge writes the interleaved
    # [B,H,W,3] result (geometry.normals).
    if _on_host(decoded):
        planes = resize_planes_bilinear(decoded.detach().numpy(), out_hw)  # [B,3,H,W]
        return planar_model_to_optical(planes, out, colorized)  # [B,H,W,3]
    unit = resize_bilinear(decoded, out_hw).cpu().numpy()  # [B,3,H,W]
    return planar_model_to_optical(unit, out, colorized)  # [B,H,W,3]


def _on_host(decoded: torch.Tensor) -> bool:
    """A float32 CPU tensor: post-processed with numpy/OpenCV on its memory."""
    return decoded.device.type == "cpu" and decoded.dtype == torch.float32 and decoded.ndim == 4
