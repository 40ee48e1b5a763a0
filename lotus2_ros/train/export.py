"""Export of a trained model to the official Lotus-2 file layout, loadable unchanged by the official code.

The official inference (``infer.py`` of EnVision-Research/Lotus-2) loads, per task, three files
and nothing else, with fixed settings; an export must satisfy each of them:

* ``lotus-2_core_predictor_{task}.safetensors`` and ``lotus-2_detail_sharpener_{task}.safetensors``:
  LoRA with keys ``transformer.<module>.lora_A.weight`` ``[R, in]`` / ``lora_B.weight`` ``[out, R]``
  at the **release rank** R (128 depth, 256 normal: hard-coded, any other rank fails with a size
  mismatch), ``alpha = R``, on the release's 12 target modules (a LoRA on another module is
  dropped by its loader). A LoRA trained at rank ``r < R`` is zero-padded (``A' = [A; 0]``,
  ``B' = [B·alpha/r, 0]``: ``B'·A' = B·A·alpha/r``, the same function, exactly); ``r > R``
  cannot be exported and is refused. Both files are required, so a core-only export holds an
  untrained placeholder sharpener (all zero: the base transformer) and says so in the manifest.
* ``lotus-2_lcm_{task}.safetensors``: the LCM state dict (``lcm.0.*``, ``lcm.2.*``) read with
  ``torch.load(weights_only=True)`` — a torch (zip) pickle under this name, as released; the
  official code's pinned torch (2.5) cannot read a safetensors file with ``torch.load``.
* ``--full-finetune``: ``base_model/``, a FLUX folder in diffusers layout with every component the
  official pipeline loads (``model_index.json``, ``text_encoder*/``, ``tokenizer*/``, ``vae/``,
  ``scheduler/``; it computes the prompt embeddings itself) and the fine-tuned ``transformer/``.

Tensors are float32 (the official loader copies them into the model's own dtype). This package
also reads ``lotus-2_prompt_embeds.safetensors`` (copied from the run) and
:data:`~lotus2_ros.model.weights.EXPORT_MANIFEST_FILENAME`, which records for every file what it
holds and whether it was trained.

Export works on a state dict of :class:`~lotus2_ros.train.model.Lotus2TrainModule`
(``transformer.*``, ``lcms.<task>.*``): the plain module's own, or the full state dict gathered
from a sharded (FSDP) run.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import torch

from ..model.prompt_embeds import PROMPT_EMBEDS_FILENAME, TEXT_SUBFOLDERS
from ..model.weights import (
    EXPORT_MANIFEST_FILENAME,
    OFFICIAL_LORA_TARGETS,
    TASKS,
    TaskWeightFiles,
    WeightsError,
    normalise_lora_keys,
    read_export_manifest,
    read_state_dict,
)
from .model import OFFICIAL_LORA_RANKS

MANIFEST_FORMAT = "lotus2_ros-export"
#: The loader the layout is checked against (for the manifest).
OFFICIAL_LOADER = ("EnVision-Research/Lotus-2 infer.py: LoRA rank 128 (depth) / 256 (normal), alpha = rank, "
                   "the 12 release target modules, LCM read with torch.load")
PLACEHOLDER_NOTE = (
    "untrained placeholder: an all-zero LoRA at the release rank (no effect: the base transformer). "
    "The official inference requires this file and always runs the detail sharpener, so there it gives the "
    "core prediction moved by the untrained base transformer; lotus2_ros refuses --sharpen-steps > 0 with it. "
    "Train a sharpener with `lotus2 train-sharpener --weights <this folder>`.")


class ExportError(WeightsError):
    """The export would not load unchanged in the official Lotus-2 inference; the message says why."""


# ----------------------------------------------------------------------------- checks
def is_official_target(module: str) -> bool:
    """Whether the official loader puts a LoRA on ``module`` (suffix match, as peft does)."""
    return any(module == t or module.endswith("." + t) for t in OFFICIAL_LORA_TARGETS)


def check_official_lora(task: str, rank: int, modules, what: str) -> None:
    """Refuse a LoRA the official loader would reject or load differently.

    Raises:
        ExportError: ``rank`` exceeds the release rank, or a module is not an official target.
    """
    release = OFFICIAL_LORA_RANKS[task]
    if rank > release:
        raise ExportError(f"{what}: LoRA rank {rank} exceeds the release rank {release} the official {task} loader "
                          f"hard-codes; train at rank <= {release} (an export is zero-padded to {release})")
    outside = sorted(m for m in modules if not is_official_target(m))
    if outside:
        raise ExportError(f"{what}: LoRA on modules the official loader does not adapt (it would drop them): "
                          f"{outside[:5]}{' ...' if len(outside) > 5 else ''}; train on the release targets "
                          f"{list(OFFICIAL_LORA_TARGETS)} or a subset of them")


def adapted_modules(transformer, adapter_name: str) -> list[str]:
    """The transformer's modules that carry ``adapter_name`` (full names; peft may store the
    adapter's ``target_modules`` as shortened suffixes such as ``proj``)."""
    return sorted({n.split(".lora_A.")[0] for n, _ in transformer.named_parameters()
                   if f".lora_A.{adapter_name}." in n})


def check_official_base_model(base_model: Path) -> None:
    """Refuse a base-model folder the official pipeline cannot load (it loads every FLUX component).

    Raises:
        ExportError: ``model_index.json`` or a component folder is missing (names them).
    """
    base_model = Path(base_model)
    missing = [name for name in ("model_index.json", "scheduler", "vae", *TEXT_SUBFOLDERS)
               if not (base_model / name).exists()]
    if not missing:
        index = json.loads((base_model / "model_index.json").read_text())
        missing = [f"model_index.json entry {c!r}" for c in ("transformer", "vae", "scheduler", *TEXT_SUBFOLDERS)
                   if c not in index]
    if missing:
        raise ExportError(f"a full fine-tune exports a base model the official pipeline loads whole, but {base_model} "
                          f"lacks {', '.join(missing)} (use the complete FLUX.1-dev folder)")


def lora_file_summary(path: Path) -> tuple[int, list[str]]:
    """Rank and adapted modules of a LoRA file, from its header only (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            shapes = {k: handle.get_slice(k).get_shape() for k in handle.keys()}
    except Exception as err:  # noqa: BLE001 - a pickle or a corrupt file: read it the slow way
        shapes = {k: list(v.shape) for k, v in read_state_dict(path).items()}
        del err
    modules = normalise_lora_keys({k: torch.empty(0) for k in shapes}, path)
    ranks = {shapes[k][0] for k in shapes if k.endswith((".lora_A.weight", ".lora_down.weight", ".down.weight"))}
    return (max(ranks) if ranks else 0), sorted(modules)


def check_carried_files(src: Path) -> None:
    """Check that the Lotus-2 LoRA files of ``src`` can be carried into an official export."""
    for task in TASKS:
        files = TaskWeightFiles.in_folder(src, task)
        for path in (files.core_predictor, files.detail_sharpener):
            if path.is_file():
                rank, modules = lora_file_summary(path)
                check_official_lora(task, rank, modules, str(path))


# ----------------------------------------------------------------------------- tensors
def lora_state_dict(state: dict[str, torch.Tensor], adapter_name: str, scaling: float,
                    rank: int | None = None) -> dict[str, torch.Tensor]:
    """One adapter in the release's key format, folded to ``alpha = rank`` (float32, CPU).

    Args:
        state: Module state dict with peft names (``….lora_A.<adapter>.weight``).
        adapter_name: The adapter to export.
        scaling: Its ``alpha / r``, folded into ``lora_B`` (the release loads with alpha = rank).
        rank: Zero-pad to this rank (the release rank); ``None`` keeps the trained rank.

    Raises:
        ValueError: No such adapter. ExportError: ``rank`` is below the trained rank.
    """
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
    return pad_lora_rank(sd, rank) if rank is not None else sd


def pad_lora_rank(sd: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Zero-pad every ``lora_A`` ``[r, in]`` to ``[rank, in]`` and ``lora_B`` ``[out, r]`` to ``[out, rank]``.

    ``B'·A' = B·A`` exactly (the added products are zero).
    """
    out = {}
    for key, t in sd.items():
        r = t.shape[0] if key.endswith("lora_A.weight") else t.shape[1]
        if r > rank:
            raise ExportError(f"{key}: rank {r} cannot be padded to the smaller rank {rank}")
        if key.endswith("lora_A.weight"):
            padded = torch.zeros(rank, t.shape[1], dtype=t.dtype)
            padded[:r] = t
        else:
            padded = torch.zeros(t.shape[0], rank, dtype=t.dtype)
            padded[:, :r] = t
        out[key] = padded
    return out


def placeholder_lora_state_dict(state: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """An all-zero LoRA at ``rank`` on every official target Linear of the transformer in ``state``."""
    shapes = {}
    for key, value in state.items():
        if not key.startswith("transformer.") or ".lora_" in key or not key.endswith(".weight") or value.ndim != 2:
            continue
        module = key[len("transformer."):-len(".weight")].removesuffix(".base_layer")
        if is_official_target(module):
            shapes[module] = tuple(value.shape)  # [out, in]
    if not shapes:
        raise ValueError("the state dict has no Linear layer of the official LoRA targets")
    sd = {}
    for module, (out_features, in_features) in sorted(shapes.items()):
        sd[f"transformer.{module}.lora_A.weight"] = torch.zeros(rank, in_features)
        sd[f"transformer.{module}.lora_B.weight"] = torch.zeros(out_features, rank)
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


# ----------------------------------------------------------------------------- files
def save_safetensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_lcm(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write an LCM state dict as the release does: a torch (zip) pickle, whatever the file is named."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # a file object: torch.save must not pick a format from the name
        torch.save({k: v.contiguous() for k, v in tensors.items()}, f)
    os.replace(tmp, path)


def export_task_files(weights_dir: Path, state: dict[str, torch.Tensor], scalings: dict[str, float],
                      ranks: dict[str, int], tasks: tuple[str, ...], kind: str,
                      metadata: dict[str, str]) -> dict[str, dict]:
    """Write the trained files of ``tasks`` into ``weights_dir``; returns their manifest entries.

    ``kind`` ``"core"``: core predictor + LCM, and an untrained placeholder sharpener where the
    folder has none (the official loader requires it). ``"sharpener"``: the detail sharpener.
    ``ranks``: the trained rank of each adapter (for the manifest and the checks).
    """
    if kind not in ("core", "sharpener"):
        raise ValueError(f"kind must be 'core' or 'sharpener', got {kind!r}")
    weights_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for task in tasks:
        files = TaskWeightFiles.in_folder(weights_dir, task)
        release = OFFICIAL_LORA_RANKS[task]
        name = f"{task}_{kind}"
        sd = lora_state_dict(state, name, scalings[name])
        check_official_lora(task, ranks[name], {k.rsplit(".lora_", 1)[0][len("transformer."):] for k in sd},
                            f"adapter {name}")
        path = files.core_predictor if kind == "core" else files.detail_sharpener
        save_safetensors(pad_lora_rank(sd, release), path, metadata)
        entries[path.name] = _lora_entry(task, "core_predictor" if kind == "core" else "detail_sharpener",
                                         ranks[name], release, trained=True)
        if kind == "core":
            save_lcm(lcm_state_dict(state, task), files.lcm)
            entries[files.lcm.name] = {"task": task, "stage": "lcm", "trained": True,
                                       "holds": "the trained local continuity module (torch pickle, float32)"}
            if not files.detail_sharpener.is_file():
                save_safetensors(placeholder_lora_state_dict(state, release), files.detail_sharpener, metadata)
                entries[files.detail_sharpener.name] = {"task": task, "stage": "detail_sharpener", "trained": False,
                                                        "rank": release, "holds": PLACEHOLDER_NOTE}
    return entries


def carry_weights_folder(src: Path, dst: Path) -> dict[str, dict]:
    """Carry the Lotus-2 files of ``src`` into ``dst`` in the official form; returns manifest entries.

    Files already in the official form are copied byte for byte with their manifest entries. A
    LoRA at another rank is zero-padded to the release rank and an LCM stored as safetensors is
    rewritten as a torch pickle (both exact). The prompt embeddings are left to
    :func:`copy_prompt_embeds`.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    known = read_export_manifest(src).get("files", {})
    entries = {}
    for task in TASKS:
        files = TaskWeightFiles.in_folder(src, task)
        for stage in ("core_predictor", "detail_sharpener", "lcm"):
            path = getattr(files, stage)
            if not path.is_file():
                continue
            target = dst / path.name
            note = known.get(path.name) or {"task": task, "stage": stage, "trained": True,
                                            "holds": f"carried from {src.name}/ (trained before this run)"}
            if stage == "lcm":
                if zipfile.is_zipfile(path):
                    shutil.copy2(path, target)
                else:
                    save_lcm(read_state_dict(path), target)
                    note = dict(note, converted="rewritten as a torch pickle (the official loader uses torch.load)")
            else:
                rank, modules = lora_file_summary(path)
                check_official_lora(task, rank, modules, str(path))
                release = OFFICIAL_LORA_RANKS[task]
                if rank == release and all(k.endswith((".lora_A", ".lora_B")) for k in _lora_key_stems(path)):
                    shutil.copy2(path, target)
                else:
                    pairs = normalise_lora_keys(read_state_dict(path), path)
                    sd = {}
                    for module, pair in pairs.items():
                        sd[f"transformer.{module}.lora_A.weight"] = pair["A"].float()
                        sd[f"transformer.{module}.lora_B.weight"] = pair["B"].float()
                    save_safetensors(pad_lora_rank(sd, release), target, {"format": "lotus2"})
                    note = dict(note, converted=f"zero-padded from rank {rank} to the release rank {release}")
            entries[path.name] = note
    return entries


def _lora_key_stems(path: Path) -> list[str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return [k.removesuffix(".weight") for k in handle.keys()]
    except Exception:  # noqa: BLE001 - not a safetensors file: not in the official form
        return ["?"]


def _lora_entry(task: str, stage: str, trained_rank: int, release: int, trained: bool) -> dict:
    padded = f", zero-padded to the release rank {release} (B·A unchanged)" if trained_rank < release else ""
    return {"task": task, "stage": stage, "trained": trained, "rank": release, "trained_rank": trained_rank,
            "holds": f"LoRA trained at rank {trained_rank}{padded}; alpha = rank (float32)"}


def copy_prompt_embeds(src_dir: Path, dst_dir: Path) -> dict[str, dict]:
    src = Path(src_dir) / PROMPT_EMBEDS_FILENAME
    if not src.is_file():
        raise FileNotFoundError(f"prompt embeddings not found: {src} (create them with `lotus2 export-prompt-embeds`)")
    dst_dir.mkdir(parents=True, exist_ok=True)
    if src.resolve() != (dst_dir / PROMPT_EMBEDS_FILENAME).resolve():
        shutil.copy2(src, dst_dir / PROMPT_EMBEDS_FILENAME)
    return {PROMPT_EMBEDS_FILENAME: {
        "stage": "prompt_embeds",
        "holds": "the empty prompt's official embeddings (512 T5 tokens + pooled CLIP) from the base model's text "
                 "encoders, for lotus2_ros (the official inference computes them itself)"}}


def write_manifest(weights_dir: Path, entries: dict[str, dict], run: dict) -> Path:
    """Write :data:`EXPORT_MANIFEST_FILENAME`: what every file of the export holds."""
    manifest = {"format": MANIFEST_FORMAT, "format_version": 1, "official_loader": OFFICIAL_LOADER,
                "run": run, "files": dict(sorted(entries.items()))}
    path = Path(weights_dir) / EXPORT_MANIFEST_FILENAME
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return path


def export_base_model(src_base: Path, dst_base: Path, transformer_config: dict,
                      state: dict[str, torch.Tensor]) -> None:
    """Write a base-model folder: ``src_base`` with ``transformer/`` holding the fine-tuned weights.

    Unchanged sub-folders are hard-linked where the file system allows (no extra space: files
    are never modified in place), else copied.
    """
    from diffusers import FluxTransformer2DModel

    src_base, dst_base = Path(src_base), Path(dst_base)
    check_official_base_model(src_base)
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


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
