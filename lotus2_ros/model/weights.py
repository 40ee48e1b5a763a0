"""Reading the official Lotus-2 weight files and attaching them to a FLUX transformer.

The release has, per task ``depth`` / ``normal``:

- ``lotus-2_core_predictor_{task}.safetensors`` and ``lotus-2_detail_sharpener_{task}.safetensors``:
  LoRA state dicts, keys ``transformer.<module>.lora_A.weight`` ``[r, in]`` and
  ``transformer.<module>.lora_B.weight`` ``[out, r]``; rank 128 (depth) / 256 (normal),
  ``lora_alpha = r``.
- ``lotus-2_lcm_{task}.safetensors``: the LCM state dict, keys ``lcm.0.*`` / ``lcm.2.*``. The
  official loader reads it with ``torch.load``, so a torch pickle is accepted too (always with
  ``weights_only=True``); the format is recognised by content, not by the file name.

Loading is strict: every error names the file, the key and the shapes involved.

Exports of this package's trainer are zero-padded to the release ranks (the official inference
hard-codes them); :func:`attach_lora` drops rank components whose A row and B column are both
zero, so a padded file runs at the rank it was trained at (the same function, less compute).
An export also carries :data:`EXPORT_MANIFEST_FILENAME`, which says what each file holds — in
particular which files are untrained placeholders the official loader needs (see
:func:`untrained_placeholder`).
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .lcm import LocalContinuityModule
from .spec import TASKS, TaskWeightFiles, WeightsError

__all__ = ["TASKS", "OFFICIAL_LORA_TARGETS", "TaskWeightFiles", "WeightsError", "LoraSpec", "activate_adapter",
           "attach_lora", "load_lcm", "read_state_dict"]


#: Modules the official release puts LoRA on (matched as name suffixes, as peft does).
OFFICIAL_LORA_TARGETS = (
    "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0",
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2",
)


#: The export's manifest in a weights folder (what each file holds, and whether it was trained).
EXPORT_MANIFEST_FILENAME = "lotus-2_export_manifest.json"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file or a torch state dict (``weights_only=True``) onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}")
    try:
        if zipfile.is_zipfile(path) or _starts_with_pickle(path):
            # A file object, not the path: torch.load hands any path ending in ".safetensors" to
            # the safetensors reader, and the official LCM is a torch pickle under that name.
            with open(path, "rb") as f:
                sd = torch.load(f, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            sd = load_file(str(path), device="cpu")
    except Exception as err:  # noqa: BLE001 - every reader error becomes one clear message
        raise WeightsError(f"cannot read weight file {path}: {err}") from err
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError(f"{path} does not hold a flat state dict of tensors")
    return sd


def _starts_with_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    # A safetensors file starts with its header length (8 bytes, little endian, so its first byte
    # can be 0x80 too) followed by the JSON header's "{".
    return head[:1] == b"\x80" and head[8:9] != b"{"


_LORA_SUFFIXES = (
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
    (".lora_down.weight", ".lora_up.weight"),
    (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
)


def normalise_lora_keys(sd: dict[str, torch.Tensor], path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Group a LoRA state dict by module: ``{module: {"A": [r,in], "B": [out,r]}}``.

    Keys must carry the ``transformer.`` prefix of the release; the common down/up spellings
    are accepted for ``lora_A`` / ``lora_B``.
    """
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in sd.items():
        if not key.startswith("transformer."):
            raise WeightsError(f"{path}: unexpected key {key!r} (LoRA keys must start with 'transformer.')")
        name = key[len("transformer."):]
        for a_suffix, b_suffix in _LORA_SUFFIXES:
            if name.endswith(a_suffix):
                modules.setdefault(name[: -len(a_suffix)], {})["A"] = tensor
                break
            if name.endswith(b_suffix):
                modules.setdefault(name[: -len(b_suffix)], {})["B"] = tensor
                break
        else:
            raise WeightsError(f"{path}: unexpected key {key!r} (not a LoRA A/B weight)")
    for module, pair in modules.items():
        for part in ("A", "B"):
            if part not in pair:
                raise WeightsError(f"{path}: module {module!r} has no lora_{part} weight")
    if not modules:
        raise WeightsError(f"{path}: no LoRA weights found")
    return modules


@dataclass(frozen=True)
class LoraSpec:
    """What a LoRA file holds: its rank and the modules it adapts."""

    rank: int
    modules: tuple[str, ...]


def adaptable_linears(transformer: nn.Module) -> dict[str, nn.Linear]:
    """The transformer's own Linear layers by name, seen through any LoRA wrappers already attached."""
    linears = {}
    for name, module in transformer.named_modules():
        if ".lora_" in name or name.endswith(".base_layer"):
            continue  # adapter internals, and the wrapped layer reached below
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        if isinstance(base, nn.Linear):
            linears[name] = base
    return linears


def check_lora_against_model(
    modules: dict[str, dict[str, torch.Tensor]], transformer: nn.Module, path: Path
) -> LoraSpec:
    """Check every LoRA pair against the transformer's Linear layers; infer the rank."""
    linears = adaptable_linears(transformer)
    ranks = set()
    for module, pair in sorted(modules.items()):
        layer = linears.get(module)
        if layer is None:
            raise WeightsError(f"{path}: key 'transformer.{module}.lora_A.weight' names no Linear layer "
                               "of the transformer (is the base model the right one?)")
        a, b = pair["A"], pair["B"]
        r = a.shape[0]
        want_a, want_b = (r, layer.in_features), (layer.out_features, r)
        if a.ndim != 2 or tuple(a.shape) != want_a:
            raise WeightsError(f"{path}: 'transformer.{module}.lora_A.weight' has shape {tuple(a.shape)}, "
                               f"expected {want_a} for Linear({layer.in_features}->{layer.out_features})")
        if b.ndim != 2 or tuple(b.shape) != want_b:
            raise WeightsError(f"{path}: 'transformer.{module}.lora_B.weight' has shape {tuple(b.shape)}, "
                               f"expected {want_b}")
        ranks.add(r)
    if len(ranks) != 1:
        raise WeightsError(f"{path}: LoRA ranks differ between modules: {sorted(ranks)}")
    return LoraSpec(rank=ranks.pop(), modules=tuple(sorted(modules)))


def drop_zero_rank_padding(modules: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """Drop the rank components whose A row and B column are zero in every module (zero padding).

    Such a component adds ``B[:, k] · (A[k] · x) = 0``, so the result is the same function at a
    lower rank. A component with a non-zero A row but a zero B column (a fresh adapter's start)
    is kept: it is not padding, and it trains. At least one component is always kept.
    """
    used = []
    for pair in modules.values():
        a, b = pair["A"], pair["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            return modules  # malformed: left to check_lora_against_model to report
        used.append((a != 0).any(dim=1) | (b != 0).any(dim=0))  # [r]
    if not used or len({u.shape for u in used}) != 1:
        return modules  # ranks differ between modules: reported by check_lora_against_model
    keep = torch.stack(used).any(dim=0)  # [r]
    if bool(keep.all()):
        return modules
    if not bool(keep.any()):
        keep = torch.zeros_like(keep)
        keep[0] = True
    index = keep.nonzero().flatten()
    return {m: {"A": p["A"][index].contiguous(), "B": p["B"][:, index].contiguous()} for m, p in modules.items()}


def attach_lora(transformer: nn.Module, path: Path, adapter_name: str) -> LoraSpec:
    """Add a LoRA adapter named ``adapter_name`` to ``transformer`` from an official file.

    Rank comes from the tensors (after dropping zero padding, :func:`drop_zero_rank_padding`);
    ``lora_alpha = rank`` as in the release. The adapter is left frozen (``requires_grad=False``);
    call ``transformer.set_adapter(name)`` to use it.
    """
    from peft import LoraConfig, set_peft_model_state_dict

    path = Path(path)
    modules = drop_zero_rank_padding(normalise_lora_keys(read_state_dict(path), path))
    spec = check_lora_against_model(modules, transformer, path)
    # Exact module names (not suffixes) so a file trained on other targets loads as it is.
    config = LoraConfig(r=spec.rank, lora_alpha=spec.rank, target_modules=list(spec.modules),
                        init_lora_weights=False)
    transformer.add_adapter(config, adapter_name=adapter_name)
    peft_sd = {}
    for module, pair in modules.items():
        peft_sd[f"{module}.lora_A.weight"] = pair["A"]
        peft_sd[f"{module}.lora_B.weight"] = pair["B"]
    result = set_peft_model_state_dict(transformer, peft_sd, adapter_name=adapter_name)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise WeightsError(f"{path}: keys not used by the model: {unexpected[:5]}")
    for name, param in transformer.named_parameters():
        if f".{adapter_name}." in name:
            param.requires_grad_(False)
    return spec


def activate_adapter(transformer: nn.Module, adapter_name: str) -> None:
    """Make ``adapter_name`` the one active LoRA adapter without changing any ``requires_grad``.

    peft's ``set_adapter`` also marks the activated adapter trainable (and every other one
    frozen). Switching adapters is a routing decision, not a training one: inference keeps all
    adapters frozen, and the trainer decides itself which parameters learn (a frozen core
    predictor stays frozen while its sharpener trains on the same transformer).
    """
    flags = [(p, p.requires_grad) for n, p in transformer.named_parameters() if ".lora_" in n]
    transformer.set_adapter(adapter_name)
    for param, flag in flags:
        param.requires_grad_(flag)


_LCM_KEY = re.compile(r"^lcm\.(0|2)\.(weight|bias)$")


def load_lcm(path: Path, num_channels: int) -> LocalContinuityModule:
    """Build the LCM for ``num_channels`` latent channels and load it strictly from ``path``."""
    path = Path(path)
    sd = read_state_dict(path)
    module = LocalContinuityModule(num_channels)
    expected = module.state_dict()
    unexpected = sorted(k for k in sd if k not in expected)
    missing = sorted(k for k in expected if k not in sd)
    if unexpected or missing:
        hint = "" if all(_LCM_KEY.match(k) for k in sd) else " (LCM keys look like 'lcm.0.weight')"
        raise WeightsError(f"{path}: LCM state dict mismatch: missing {missing}, unexpected {unexpected}{hint}")
    for key, want in expected.items():
        if tuple(sd[key].shape) != tuple(want.shape):
            raise WeightsError(f"{path}: '{key}' has shape {tuple(sd[key].shape)}, expected "
                               f"{tuple(want.shape)} for {num_channels} latent channels")
    module.load_state_dict(sd, strict=True)
    module.requires_grad_(False)
    return module


def read_export_manifest(weights_dir: Path) -> dict:
    """The export manifest of a weights folder (``{}`` for a folder without one, e.g. the release)."""
    path = Path(weights_dir) / EXPORT_MANIFEST_FILENAME
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"cannot read the export manifest {path}: {err}") from err
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise WeightsError(f"{path} is not an export manifest (no 'files' mapping)")
    return manifest


def untrained_placeholder(path: Path) -> bool:
    """Whether the manifest beside ``path`` marks it as an untrained placeholder.

    A core-only export holds such a detail-sharpener file: the official loader requires the file,
    so it is written as a zero LoRA (the base transformer unchanged), but it is no sharpener.
    """
    entry = read_export_manifest(Path(path).parent).get("files", {}).get(Path(path).name, {})
    return isinstance(entry, dict) and entry.get("trained") is False
