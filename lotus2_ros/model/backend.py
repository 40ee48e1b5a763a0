"""The model-family seam: what the perception pipeline needs from a model, whatever its family.

A backend owns the networks of one model family and exposes its stages; only the perception
pipeline (``lotus2_ros.perception.pipeline``) chains them. The stages a frame goes through::

    preprocess  uint8 RGB [H,W,3] → [B,3,h,w] in [-1,1] at the processing size
    encode      → the conditioning latent shared by every task
    predict     the per-frame prediction: {task: latent}  (Lotus-2: core predictor + LCM; Lotus-1:
                one U-Net step)
    iter_refine the lower-rate refinement, one network forward per item
                (:meth:`~ModelBackend.refine_forwards` items), so a scheduler can interleave it
                with new frames (Lotus-2: the detail sharpener; Lotus-G: a seed ensemble whose
                members the pipeline reduces to a mean and an uncertainty)
    decode      latent → [B,3,h,w] in [0,1]
    to_depth / to_normals   → numpy at the output size

:class:`ModelInfo` says what the outputs mean (``depth_output``: affine-invariant disparity or
depth) and which settings the backend resolved from the user's choices and the model's own
defaults (:mod:`lotus2_ros.model.spec`). Every stage takes and returns tensors on the backend's
device and none disables autograd: inference wrappers decide ``no_grad``, so the trainer can
train the same stages.
"""

from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .spec import BACKENDS, DTYPE_NAMES, MAX_REFINE_STEPS, TASKS, ModelSettings

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
assert tuple(DTYPES) == DTYPE_NAMES


@dataclass(frozen=True, kw_only=True)
class BackendConfig:
    """How to load a model, for every family (fields a family does not use must stay at their defaults).

    Attributes:
        family: ``"lotus2"`` (FLUX.1-dev + the Lotus-2 files) or ``"lotus1"`` (the released
            diffusers pipeline folders, one per task).
        weights: The model's weights folder (Lotus-2: the official files + prompt embeddings;
            Lotus-1: a pipeline folder, or a folder holding one per task).
        base_model: Lotus-2: the FLUX.1-dev folder in diffusers layout (Lotus-1: None).
        tasks: Tasks to load; ``None``: the model's default (every task it has weights for).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        dtype: ``"fp32"``, ``"bf16"`` or ``"fp16"`` for every module.
        process_res: Cap on the long edge, px; ``None``: the model's default.
        full_resolution: Process at the input resolution (no cap; overrides ``process_res``).
        refine_steps: Refinement steps of a refined frame; ``None``: the model's default.
        load_refiner: Load the refinement weights (Lotus-2: the detail-sharpener adapters;
            Lotus-G: allow the seed ensemble).
        guidance_scale: Lotus-2: the guidance value fed to guidance-distilled transformers.
        seed: Lotus-G: the seed of the per-frame noise (the ensemble uses seed+1, seed+2, …).
        batch_tasks: Lotus-2: with several tasks, run each core / sharpener step as **one**
            transformer forward over a batch with one sample per task, each with its own adapter
            (the base weights are read once; numerically the separate forwards within float
            rounding); False: one forward per task (less activation memory).
    """

    weights: Path
    base_model: Path | None = None
    family: str = "lotus2"
    tasks: tuple[str, ...] | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    process_res: int | None = None
    full_resolution: bool = False
    refine_steps: int | None = None
    load_refiner: bool = True
    guidance_scale: float = 3.5
    seed: int = 0
    batch_tasks: bool = True

    def __post_init__(self):
        object.__setattr__(self, "weights", Path(self.weights).expanduser())
        if self.base_model is not None:
            object.__setattr__(self, "base_model", Path(self.base_model).expanduser())
        if self.family not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.family!r}")
        if self.tasks is not None:
            if (isinstance(self.tasks, str) or not self.tasks or any(t not in TASKS for t in self.tasks)
                    or len(set(self.tasks)) != len(self.tasks)):
                raise ValueError(f"tasks must be a non-empty subset of {TASKS} or None (the model's), "
                                 f"got {self.tasks!r}")
            object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {self.dtype!r}")
        if self.process_res is not None and self.process_res < 16:
            raise ValueError(f"process_res must be >= 16 or None, got {self.process_res}")
        if self.refine_steps is not None and not 0 <= self.refine_steps <= MAX_REFINE_STEPS:
            raise ValueError(f"refine_steps must be in 0..{MAX_REFINE_STEPS} or None, got {self.refine_steps}")
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded backend predicts and with which settings.

    Attributes:
        family: The backend family (``"lotus2"``).
        settings: Tasks, processing cap and refinement steps in use (user choice or model default).
        depth_output: ``"disparity"`` (larger = nearer; metric depth ``1/(s·d + t)``) or ``"depth"``
            (``s·d + t``): what the relative depth output is.
        refinement: What the lower-rate refinement does: ``"sharpen"`` (a chain of steps; the last
            latent is the result) or ``"ensemble"`` (each item holds every member so far, ``[K,…]``
            for one image; the pipeline reduces the decoded members), or None.
        refine_tasks: Tasks whose refinement weights are loaded.
        source: Where the model-intrinsic defaults came from.
    """

    family: str
    settings: ModelSettings
    depth_output: str
    refinement: str | None
    refine_tasks: tuple[str, ...]
    source: str

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.settings.tasks


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


def deliver(result: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``result``, or ``out`` holding a copy of it (for backends that cannot compute into ``out`` directly)."""
    if out is None:
        return result
    if out.shape != result.shape or out.dtype != result.dtype:
        raise ValueError(f"out must be {result.dtype} {result.shape}, got {out.dtype} {out.shape}")
    np.copyto(out, result)
    return out


class ModelBackend(ABC):
    """The stages of one model family (see the module docstring). Build with :func:`load_backend`."""

    info: ModelInfo
    device: torch.device
    dtype: torch.dtype

    @abstractmethod
    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``[H,W,3]`` / ``[B,H,W,3]`` → ``[B,3,h,w]`` in ``[-1,1]`` at the processing size."""

    @abstractmethod
    def encode(self, rgb: torch.Tensor):
        """The conditioning of ``[B,3,h,w]`` images, shared by every task (opaque to the pipeline)."""

    @abstractmethod
    def predict(self, cond: torch.Tensor, tasks: tuple[str, ...],
                timer: StageTimer | None = None) -> dict[str, torch.Tensor]:
        """The per-frame prediction of each task: ``{task: latent}`` ready for :meth:`decode`."""

    @abstractmethod
    def iter_refine(self, cond: torch.Tensor, latents: dict[str, torch.Tensor], num_steps: int,
                    timer: StageTimer | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Refine ``latents`` (from :meth:`predict`) with ``num_steps`` steps, one network forward per item.

        Each item is the whole ``{task: latent}`` after that forward; the last one is the result.
        Zero steps yields nothing.
        """

    @abstractmethod
    def decode(self, latents: torch.Tensor, task: str | None = None) -> torch.Tensor:
        """Latent of ``task`` → decoded image ``[B,3,h,w]`` float32 in ``[0,1]``."""

    @abstractmethod
    def to_depth(self, decoded: torch.Tensor, out_hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        """``[B,3,h,w]`` in ``[0,1]`` → relative depth output ``[B,H,W]`` float32 (``info.depth_output``).

        ``out``: a C-contiguous float32 ``[B,H,W]`` array the result is written to and returned
        (the pipeline passes its product storage, e.g. a message payload); None: a new array.
        """

    @abstractmethod
    def to_normals(self, decoded: torch.Tensor, out_hw: tuple[int, int], out: np.ndarray | None = None,
                   colorized: np.ndarray | None = None) -> np.ndarray:
        """``[B,3,h,w]`` in ``[0,1]`` → unit normals ``[B,H,W,3]`` float32 in the ROS optical frame.

        ``out``: as for :meth:`to_depth` (``[B,H,W,3]``). ``colorized``: a C-contiguous uint8
        ``[B,H,W,3]`` array to draw the normals' colour image into
        (:func:`~lotus2_ros.io.visualize.colorize_normals`), in the same pass where it can.
        """

    def refine_forwards(self, tasks: tuple[str, ...], num_steps: int) -> int:
        """How many items (network forwards) :meth:`iter_refine` yields for ``tasks`` and ``num_steps``.

        Default: one forward per step and task; a backend that batches tasks says fewer.
        """
        return num_steps * len(tasks)

    def to_depth_tensor(self, decoded: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor | None:
        """:meth:`to_depth` without the download: ``[B,H,W]`` float32 on the decoded tensor's device.

        Optional: lets the pipeline post-process on a GPU and download once. None (the default)
        means the backend has no device form and the pipeline uses :meth:`to_depth`.
        """
        return None

    def to_normals_tensor(self, decoded: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor | None:
        """:meth:`to_normals` without the download: ``[B,H,W,3]`` float32 on the decoded tensor's device.

        Optional, as :meth:`to_depth_tensor`.
        """
        return None

    def check_request(self, tasks: tuple[str, ...], refine_steps: int) -> None:
        """Raise ValueError unless ``tasks`` are loaded and ``refine_steps`` can be run."""
        unknown = [t for t in tasks if t not in self.info.tasks]
        if not tasks or unknown:
            raise ValueError(f"tasks {unknown or list(tasks)} are not loaded (loaded: {self.info.tasks})")
        if not 0 <= refine_steps <= MAX_REFINE_STEPS:
            raise ValueError(f"refinement steps must be in 0..{MAX_REFINE_STEPS}, got {refine_steps}")
        if refine_steps and any(t not in self.info.refine_tasks for t in tasks):
            raise ValueError(f"{refine_steps} refinement step(s) requested but the refinement "
                             f"({self.info.refinement or 'none'}) is not loaded for {list(tasks)}")

    def describe(self) -> dict:
        """Model facts for logs and diagnostics."""
        s = self.info.settings
        return {"backend": self.info.family, "tasks": list(s.tasks), "device": str(self.device),
                "dtype": {v: k for k, v in DTYPES.items()}[self.dtype], "process_res": s.process_res,
                "refine_steps": s.refine_steps, "refinement": self.info.refinement,
                "depth_output": self.info.depth_output}


def load_backend(config: BackendConfig) -> ModelBackend:
    """Load the model ``config`` names (local folders only).

    Raises:
        FileNotFoundError: A folder or file is missing (the message names it).
        ValueError: The weights do not fit (``WeightsError``, names file, key and shapes) or a
            request the model cannot serve (a task it has no weights for).
    """
    if config.family == "lotus2":
        from .engine import Lotus2Engine

        return Lotus2Engine.load(config)
    if config.family == "lotus1":
        from .lotus1 import Lotus1Engine

        return Lotus1Engine.load(config)
    raise ValueError(f"backend must be one of {BACKENDS}, got {config.family!r}")
