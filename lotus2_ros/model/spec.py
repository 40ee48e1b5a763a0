"""What a model folder is and what it defaults to — without importing torch.

The configuration (``perception/config.py``), the command-line parsers and the bag planner need
these facts before (or without) loading a model, so they live here, importable on any machine.

Model-intrinsic defaults live with the model (as in diffusers' Marigold): a weights folder may
carry :data:`MODEL_DEFAULTS_FILE` (``model.json``)::

    {"process_res": 160, "sharpen_steps": 4, "tasks": ["depth", "normal"], "depth_output": "disparity"}

Every key is optional. Without the file (the official Lotus-2 release) the family's published
defaults apply (:data:`FAMILY_DEFAULTS`). A front end passes ``None`` for "the model's default"
and reports which value it used and where it came from (:attr:`ModelDefaults.source`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .lotus1_folders import find_lotus1_folders

TASKS = ("depth", "normal")
#: Precision names accepted everywhere (``--dtype``, the ``dtype`` parameter).
DTYPE_NAMES = ("fp32", "bf16", "fp16")
#: Model families behind the backend interface (``--backend``, the ``backend`` parameter).
BACKENDS = ("lotus2", "lotus1")
#: Most refinement steps a request may ask for (the official Lotus-2 sharpener default is 10).
MAX_REFINE_STEPS = 10
#: What a depth model's relative output is: affine-invariant disparity (larger = nearer) or depth.
DEPTH_OUTPUTS = ("disparity", "depth")
MODEL_DEFAULTS_FILE = "model.json"


class WeightsError(ValueError):
    """A weight file is missing, unreadable or does not fit the model; the message says which."""


@dataclass(frozen=True)
class TaskWeightFiles:
    """Paths of one task's three Lotus-2 files inside a weights folder."""

    task: str
    core_predictor: Path
    detail_sharpener: Path
    lcm: Path

    @classmethod
    def in_folder(cls, weights_dir: Path, task: str) -> "TaskWeightFiles":
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        d = Path(weights_dir)
        return cls(
            task=task,
            core_predictor=d / f"lotus-2_core_predictor_{task}.safetensors",
            detail_sharpener=d / f"lotus-2_detail_sharpener_{task}.safetensors",
            lcm=d / f"lotus-2_lcm_{task}.safetensors",
        )

    def check_exist(self) -> None:
        """Raise :class:`WeightsError` naming every missing file."""
        missing = [p for p in (self.core_predictor, self.detail_sharpener, self.lcm) if not p.is_file()]
        if missing:
            names = ", ".join(str(p) for p in missing)
            raise WeightsError(f"missing Lotus-2 {self.task} weight file(s): {names}")


def available_tasks(family: str, weights_dir: str | Path) -> tuple[str, ...]:
    """Tasks a weights folder has weights for (Lotus-2: any of the task's files).

    A task with only some of its files counts: loading it then names the missing ones, rather
    than quietly dropping the task.
    """
    if family == "lotus2":
        return tuple(t for t in TASKS if any(
            p.is_file() for p in (TaskWeightFiles.in_folder(weights_dir, t).core_predictor,
                                  TaskWeightFiles.in_folder(weights_dir, t).lcm,
                                  TaskWeightFiles.in_folder(weights_dir, t).detail_sharpener)))
    if family == "lotus1":
        return tuple(t for t in TASKS if t in find_lotus1_folders(weights_dir))
    raise ValueError(f"backend must be one of {BACKENDS}, got {family!r}")


class ModelSpecError(ValueError):
    """A model folder's ``model.json`` is unreadable or holds a bad value (the message names it)."""


@dataclass(frozen=True)
class ModelDefaults:
    """A model's own defaults, used wherever the user gives no value.

    Attributes:
        process_res: The long edge the model sees, px (Lotus-2: a cap, never upscaling; Lotus-1: the
            official resize to exactly this long edge, up or down); ``None``: the input size.
        refine_steps: Refinement steps (Lotus-2: detail-sharpener Euler steps; Lotus-G: seeds in
            the ensemble, 0 = none).
        tasks: Tasks the model offers by default (a subset of :data:`TASKS`), or ``None`` for
            "every task whose weights are in the folder".
        depth_output: ``"disparity"`` or ``"depth"`` (what the relative depth output is).
        source: Where these came from, for messages (a file path or "official Lotus-2 defaults").
    """

    process_res: int | None
    refine_steps: int
    tasks: tuple[str, ...] | None
    depth_output: str
    source: str


#: Published defaults of each family, used when a folder has no ``model.json`` (or lacks a key).
FAMILY_DEFAULTS = {
    "lotus2": ModelDefaults(process_res=1024, refine_steps=10, tasks=None, depth_output="disparity",
                            source="official Lotus-2 defaults"),
    # The official Lotus-1 inference: 768 px, one prediction (no ensemble).
    "lotus1": ModelDefaults(process_res=768, refine_steps=0, tasks=None, depth_output="disparity",
                            source="official Lotus-1 defaults"),
}


def read_model_defaults(family: str, weights_dir: str | Path) -> ModelDefaults:
    """The defaults of the model in ``weights_dir``: its ``model.json`` over the family's published ones.

    Raises:
        ModelSpecError: ``model.json`` exists but is not valid JSON or holds a bad value.
        ValueError: Unknown ``family``.
    """
    if family not in FAMILY_DEFAULTS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {family!r}")
    base = FAMILY_DEFAULTS[family]
    if family == "lotus1":  # the depth release's name (or model.json) says what its output is
        depth = find_lotus1_folders(weights_dir).get("depth")
        if depth is not None:
            base = ModelDefaults(base.process_res, base.refine_steps, base.tasks, depth.depth_output,
                                 base.source + f" ({depth.path.name}: affine-invariant {depth.depth_output})")
    path = Path(weights_dir) / MODEL_DEFAULTS_FILE
    if not path.is_file():
        return base
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelSpecError(f"{path}: not readable JSON ({err})") from err
    if not isinstance(doc, dict):
        raise ModelSpecError(f"{path}: expected a JSON object, got {type(doc).__name__}")
    process_res = doc.get("process_res", base.process_res)
    if process_res is not None and (not isinstance(process_res, int) or isinstance(process_res, bool)
                                    or process_res < 16):
        raise ModelSpecError(f"{path}: process_res must be an integer >= 16 or null, got {process_res!r}")
    steps = doc.get("sharpen_steps", doc.get("refine_steps", base.refine_steps))
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= MAX_REFINE_STEPS:
        raise ModelSpecError(f"{path}: sharpen_steps must be an integer in 0..{MAX_REFINE_STEPS}, got {steps!r}")
    tasks = doc.get("tasks", base.tasks)
    if tasks is not None:
        if (not isinstance(tasks, list) or not tasks or any(t not in TASKS for t in tasks)
                or len(set(tasks)) != len(tasks)):
            raise ModelSpecError(f"{path}: tasks must be a non-empty list of distinct values from {TASKS}, "
                                 f"got {tasks!r}")
        tasks = tuple(tasks)
    depth_output = doc.get("depth_output", base.depth_output)
    if depth_output not in DEPTH_OUTPUTS:
        raise ModelSpecError(f"{path}: depth_output must be one of {DEPTH_OUTPUTS}, got {depth_output!r}")
    return ModelDefaults(process_res=process_res, refine_steps=steps, tasks=tasks, depth_output=depth_output,
                         source=str(path))


@dataclass(frozen=True)
class ModelSettings:
    """The values a run uses once user choices and model defaults are combined.

    Attributes:
        tasks: Tasks to load and predict.
        process_res: Cap on the long edge, px, or ``None`` (no cap).
        refine_steps: Refinement steps per refined frame (0: none).
        notes: One human-readable line per value that came from the model (for logs).
        depth_output: What the depth output is: ``"disparity"`` or ``"depth"`` (affine-invariant).
        refinement: ``"sharpen"`` (Lotus-2), ``"ensemble"`` (Lotus-1: Lotus-G seeds).
    """

    tasks: tuple[str, ...]
    process_res: int | None
    refine_steps: int
    notes: tuple[str, ...] = ()
    depth_output: str = "disparity"
    refinement: str = "sharpen"


def resolve_settings(defaults: ModelDefaults, available_tasks: tuple[str, ...], *,
                     tasks: tuple[str, ...] | None = None, process_res: int | None = None,
                     no_cap: bool = False, refine_steps: int | None = None) -> ModelSettings:
    """Combine the user's choices (``None``: the model's default) with ``defaults``.

    Args:
        defaults: The model's defaults.
        available_tasks: Tasks whose weights the folder holds.
        tasks: Requested tasks, or None for the model's default.
        process_res: Requested cap, px, or None for the model's default.
        no_cap: Process at full resolution (overrides ``process_res``).
        refine_steps: Requested refinement steps, or None for the model's default.

    Raises:
        ValueError: A requested task the folder does not hold (named), or bad values.
    """
    notes = []
    if tasks is None:
        tasks = tuple(t for t in (defaults.tasks or TASKS) if t in available_tasks)
        if not tasks:
            raise ValueError(f"the model offers none of its default tasks {defaults.tasks} "
                             f"(weights found for: {available_tasks or 'no task'})")
        notes.append(f"tasks {list(tasks)} (the model's, {defaults.source})")
    else:
        tasks = tuple(dict.fromkeys(tasks))
        missing = [t for t in tasks if t not in available_tasks]
        if missing:
            raise ValueError(f"task(s) {missing} requested but the model has weights only for "
                             f"{list(available_tasks) or 'no task'}")
    if no_cap:
        cap = None
    elif process_res is None:
        cap = defaults.process_res
        notes.append(f"process_res {cap if cap is not None else 'no cap'} (the model's, {defaults.source})")
    else:
        if process_res < 16:
            raise ValueError(f"process_res must be >= 16, got {process_res}")
        cap = int(process_res)
    if refine_steps is None:
        steps = defaults.refine_steps
        notes.append(f"refinement steps {steps} (the model's, {defaults.source})")
    else:
        if not 0 <= refine_steps <= MAX_REFINE_STEPS:
            raise ValueError(f"refinement steps must be in 0..{MAX_REFINE_STEPS}, got {refine_steps}")
        steps = int(refine_steps)
    return ModelSettings(tasks=tasks, process_res=cap, refine_steps=steps, notes=tuple(notes))


def resolve_model_request(family: str, weights_dir: str | Path, *, tasks: tuple[str, ...] | None = None,
                          process_res: int | None = None, no_cap: bool = False,
                          refine_steps: int | None = None) -> tuple[ModelDefaults, ModelSettings]:
    """The settings a model folder gives a request, from its files alone (no model is loaded).

    Raises:
        FileNotFoundError: ``weights_dir`` does not exist.
        WeightsError: The folder holds no task's weights, or not a requested task's.
        ModelSpecError: A bad ``model.json``.
    """
    weights_dir = Path(weights_dir)
    if not weights_dir.is_dir():
        raise FileNotFoundError(f"weights folder not found: {weights_dir}")
    defaults = read_model_defaults(family, weights_dir)
    have = available_tasks(family, weights_dir)
    if not have:
        raise WeightsError(f"{weights_dir} holds no {family} model weights for any task")
    try:
        settings = resolve_settings(defaults, have, tasks=tasks, process_res=process_res, no_cap=no_cap,
                                    refine_steps=refine_steps)
    except ValueError as err:
        raise WeightsError(f"{weights_dir}: {err}") from None
    settings = ModelSettings(settings.tasks, settings.process_res, settings.refine_steps, settings.notes,
                             depth_output=defaults.depth_output,
                             refinement="ensemble" if family == "lotus1" else "sharpen")
    return defaults, settings
