"""Finding the Lotus-1 pipeline folders a ``--weights`` path names — from their files alone, no torch.

A released Lotus-1 model is a diffusers pipeline folder per task and mode
(``lotus-depth-g-v1-0``, ``lotus-normal-d-v1-1``, …: ``model_index.json``, ``unet/``, ``vae/``,
``scheduler/``, ``text_encoder/``, ``tokenizer/``). ``--weights`` is either one such folder or a
folder holding one per task (depth and/or normal). For each folder:

* the **task** comes from its ``model.json`` (``{"tasks": ["depth"]}``) or its name
  (``lotus-depth-…`` / ``lotus-normal-…``); nothing else in a release says it;
* the **mode** from ``unet/config.json``: 8 input channels (image latent + noise) is Lotus-G,
  4 is Lotus-D — what the official pipelines depend on (``model_index.json``'s class name varies
  between releases: ``LotusGPipeline``/``DirectDiffusionY0Pipeline`` are G,
  ``LotusDPipeline``/``DirectRegressionPipeline`` are D);
* the **depth output** from ``model.json`` (``"depth_output"``) or its name: the ``*-disparity``
  releases predict affine-invariant disparity, the others (``v1-0``) affine-invariant depth.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

LOTUS1_PARTS = ("unet", "vae", "scheduler")
_NAME = re.compile(r"lotus-(depth|normal)", re.IGNORECASE)


class Lotus1FolderError(ValueError):
    """The weights path is not a usable Lotus-1 model; the message names the folder and what is wrong."""


@dataclass(frozen=True)
class Lotus1Folder:
    """One Lotus-1 pipeline folder.

    Attributes:
        path: The folder.
        task: ``"depth"`` or ``"normal"``.
        mode: ``"g"`` (generative: noise input, seeded) or ``"d"`` (discriminative).
        depth_output: ``"disparity"`` or ``"depth"`` (depth task; ``"disparity"`` for normals).
    """

    path: Path
    task: str
    mode: str
    depth_output: str


def _looks_like_pipeline(path: Path) -> bool:
    return (path / "model_index.json").is_file() or (path / "unet").is_dir()


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise Lotus1FolderError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(doc, dict):
        raise Lotus1FolderError(f"{path}: expected a JSON object")
    return doc


def describe_folder(path: Path) -> Lotus1Folder:
    """Task, mode and depth output of one pipeline folder (checks its layout).

    Raises:
        Lotus1FolderError: A missing part (``unet/``, ``vae/``, ``scheduler/``), a U-Net whose
            input channels are neither 4 nor 8, or a task that cannot be told.
    """
    missing = [p for p in LOTUS1_PARTS if not (path / p).is_dir()]
    if missing:
        raise Lotus1FolderError(f"Lotus-1 folder {path} lacks {', '.join(p + '/' for p in missing)} "
                                "(a released pipeline folder has model_index.json, unet/, vae/, scheduler/, "
                                "text_encoder/, tokenizer/)")
    if not (path / "scheduler" / "scheduler_config.json").is_file():
        raise Lotus1FolderError(f"Lotus-1 folder {path}: scheduler/scheduler_config.json is missing")
    unet_config = path / "unet" / "config.json"
    if not unet_config.is_file():
        raise Lotus1FolderError(f"Lotus-1 folder {path}: unet/config.json is missing")
    unet = _read_json(unet_config)
    channels = unet.get("in_channels")
    if channels not in (4, 8):
        raise Lotus1FolderError(f"{unet_config}: in_channels is {channels!r}; a Lotus-1 U-Net takes 8 (Lotus-G: "
                                "image latent + noise) or 4 (Lotus-D: image latent)")
    if unet.get("class_embed_type") != "projection" or unet.get("projection_class_embeddings_input_dim") != 4:
        raise Lotus1FolderError(f"{unet_config}: no task switcher (class_embed_type 'projection' with "
                                "projection_class_embeddings_input_dim 4); not a Lotus-1 U-Net")
    own = _read_json(path / "model.json") if (path / "model.json").is_file() else {}
    tasks = own.get("tasks")
    if tasks is not None:
        if not (isinstance(tasks, list) and len(tasks) == 1 and tasks[0] in ("depth", "normal")):
            raise Lotus1FolderError(f"{path / 'model.json'}: a Lotus-1 folder has one task, e.g. "
                                    f'"tasks": ["depth"], got {tasks!r}')
        task = tasks[0]
    else:
        match = _NAME.search(path.name)
        if match is None:
            raise Lotus1FolderError(f"cannot tell the task of {path}: name it lotus-depth-… / lotus-normal-… (as the "
                                    'releases are) or add model.json with {"tasks": ["depth"]}')
        task = match.group(1).lower()
    depth_output = own.get("depth_output", "disparity" if "disparity" in path.name.lower() else "depth")
    if depth_output not in ("disparity", "depth"):
        raise Lotus1FolderError(f"{path / 'model.json'}: depth_output must be disparity or depth, "
                                f"got {depth_output!r}")
    return Lotus1Folder(path=path, task=task, mode="g" if channels == 8 else "d",
                        depth_output=depth_output if task == "depth" else "disparity")


def find_lotus1_folders(weights: str | Path) -> dict[str, Lotus1Folder]:
    """The pipeline folder of each task under ``weights`` (itself one, or a folder of them).

    Raises:
        FileNotFoundError: ``weights`` does not exist.
        Lotus1FolderError: No Lotus-1 folder, a Lotus-2 folder, two folders for one task, or a
            bad folder (see :func:`describe_folder`).
    """
    weights = Path(weights)
    if not weights.is_dir():
        raise FileNotFoundError(f"Lotus-1 weights folder not found: {weights}")
    if any(weights.glob("lotus-2_*.safetensors")):
        raise Lotus1FolderError(f"{weights} holds Lotus-2 files (lotus-2_*.safetensors): use --backend lotus2 "
                                "(backend: lotus2) with --base-model for it")
    if _looks_like_pipeline(weights):
        folder = describe_folder(weights)
        return {folder.task: folder}
    found: dict[str, Lotus1Folder] = {}
    for child in sorted(p for p in weights.iterdir() if p.is_dir() and _looks_like_pipeline(p)):
        folder = describe_folder(child)
        if folder.task in found:
            raise Lotus1FolderError(f"{weights} holds two Lotus-1 {folder.task} folders ({found[folder.task].path.name}, "
                                    f"{child.name}); name one pipeline folder per task")
        found[folder.task] = folder
    if not found:
        raise Lotus1FolderError(f"{weights} is not a Lotus-1 pipeline folder (model_index.json, unet/, vae/, "
                                "scheduler/) and holds none")
    return found
