"""Model arguments shared by the commands that run the perception pipeline, and their one mapping.

``--process-res`` and ``--sharpen-steps`` left out mean "the model's default" (its ``model.json``,
else the family's published values); ``--task`` left out means the model's tasks.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from ..model.spec import BACKENDS, DTYPE_NAMES, MAX_REFINE_STEPS, TASKS
from ..perception.config import PROCESS_RES_NO_CAP, PerceptionConfig

log = logging.getLogger("lotus2")


def add_model_arguments(p: argparse.ArgumentParser, *, required: bool = True, defaults: bool = True) -> None:
    """``--backend --base-model --weights --device --dtype --process-res --sharpen-steps --seed --ensemble``.

    Args:
        required: ``--weights`` (and, for Lotus-2, ``--base-model``) must be given.
        defaults: Give ``--device``/``--dtype`` the offline defaults (cpu, fp32); False leaves them
            None (the bag tool takes them from its ``--config`` then).
    """
    p.add_argument("--backend", choices=BACKENDS, default=None if not defaults else "lotus2",
                   help="model family: lotus2 (FLUX.1-dev, a data-centre GPU) or lotus1 (Stable Diffusion 2 "
                        "Lotus-D/G, a small GPU)" + (" (default lotus2)" if defaults else ""))
    p.add_argument("--base-model", type=Path, metavar="DIR",
                   help="lotus2: the FLUX.1-dev folder in diffusers layout (transformer/, vae/, scheduler/)")
    p.add_argument("--weights", type=Path, required=required, metavar="DIR",
                   help="the model's weights: lotus2: the official files + exported prompt embeddings; lotus1: a "
                        "released pipeline folder (lotus-depth-g-v1-0, …) or a folder holding one per task")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32" if defaults else None,
                   help="model precision" + (" (default fp32)" if defaults else ""))
    p.add_argument("--device", default="cpu" if defaults else None,
                   help="cpu, cuda or cuda:N" + (" (default cpu)" if defaults else ""))
    p.add_argument("--process-res", type=_process_res, default=None, metavar="R",
                   help="cap on the long edge in px (never upscales); 0 = no cap (full resolution); "
                        "default: the model's (1024 for the Lotus-2 release, model.json for other models)")
    p.add_argument("--sharpen-steps", type=sharpen_steps, default=None, metavar="N",
                   help=f"lotus2: detail-sharpener steps, 0 (off) to {MAX_REFINE_STEPS}; default: the model's "
                        "(10 for the Lotus-2 release)")
    p.add_argument("--seed", type=int, default=None, metavar="N",
                   help="lotus1 Lotus-G: the noise seed, drawn as the official pipeline draws it (default 0)")
    p.add_argument("--ensemble", type=_ensemble, default=None, metavar="K",
                   help="lotus1 Lotus-G: predict with K seeds (2..10) and give their mean and per-pixel standard "
                        "deviation (the uncertainty); default: the model's (none)")


def add_task_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=TASKS, action="append",
                   help="depth or normal; repeat for both (default: every task the model has)")


def sharpen_steps(text: str) -> int:
    n = int(text)
    if not 0 <= n <= MAX_REFINE_STEPS:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_REFINE_STEPS}, got {n}")
    return n


def _ensemble(text: str) -> int:
    n = int(text)
    if not (n == 0 or 2 <= n <= MAX_REFINE_STEPS):
        raise argparse.ArgumentTypeError(f"must be 0 (none) or 2..{MAX_REFINE_STEPS}, got {n}")
    return n


def _process_res(text: str) -> int:
    n = int(text)
    if n != 0 and n < 16:
        raise argparse.ArgumentTypeError(f"must be 0 (no cap) or >= 16, got {n}")
    return n


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`PerceptionConfig` fields the model arguments set (only those given)."""
    out: dict[str, Any] = {}
    if getattr(args, "backend", None) is not None:
        out["backend"] = args.backend
    for name in ("base_model", "weights"):
        if getattr(args, name, None) is not None:
            out[name] = str(getattr(args, name))
    for name in ("device", "dtype"):
        if getattr(args, name, None) is not None:
            out[name] = getattr(args, name)
    if getattr(args, "process_res", None) is not None:
        out["process_res"] = PROCESS_RES_NO_CAP if args.process_res == 0 else args.process_res
    lotus1 = out.get("backend") == "lotus1"
    if getattr(args, "sharpen_steps", None) is not None:
        if lotus1:
            raise ValueError("--sharpen-steps is for lotus2 (the detail sharpener); Lotus-G refines with --ensemble K")
        n = args.sharpen_steps
        out["sharpen_enabled"] = n > 0
        if n > 0:
            out["sharpen_steps"] = n
    if getattr(args, "ensemble", None) is not None:
        if not lotus1 and out.get("backend") is not None:
            raise ValueError("--ensemble is for lotus1 (Lotus-G seeds); Lotus-2 refines with --sharpen-steps")
        out["sharpen_enabled"] = args.ensemble > 0
        if args.ensemble > 0:
            out["ensemble_size"] = args.ensemble
    if getattr(args, "seed", None) is not None:
        out["seed"] = args.seed
    if getattr(args, "task", None):
        out["tasks"] = list(dict.fromkeys(args.task))
    return out


def offline_config(args: argparse.Namespace, **fields: Any) -> PerceptionConfig:
    """The pipeline configuration of an offline command (``predict``, ``evaluate``, the demo).

    Relative outputs only (no metric reference, no camera_info needed), every image at its own
    size; the model arguments as given, the rest from ``fields``.
    """
    from ..perception.pipeline import OFFLINE_FIELDS

    values = dict(OFFLINE_FIELDS, device="cpu", dtype="fp32")
    values.update(fields)
    values.update(model_overrides(args))
    return PerceptionConfig(**values)


def report_settings(pipeline) -> None:
    """Log which model settings are in use and which came from the model itself."""
    info = pipeline.backend.info
    s = info.settings
    cap = f"{s.process_res} px" if s.process_res is not None else "none (full resolution)"
    log.info("model %s: tasks %s, long edge capped at %s, %d refinement step(s)%s", info.family, list(s.tasks), cap,
             pipeline.refine_steps, f" — model defaults from {info.source}" if s.notes else "")
