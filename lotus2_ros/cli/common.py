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
    """``--backend --base-model --weights --device --dtype --process-res --sharpen-steps``.

    Args:
        required: ``--weights`` (and, for Lotus-2, ``--base-model``) must be given.
        defaults: Give ``--device``/``--dtype`` the offline defaults (cpu, fp32); False leaves them
            None (the bag tool takes them from its ``--config`` then).
    """
    p.add_argument("--backend", choices=BACKENDS, default=None if not defaults else "lotus2",
                   help="model family (default lotus2)")
    p.add_argument("--base-model", type=Path, metavar="DIR",
                   help="Lotus-2: the FLUX.1-dev folder in diffusers layout (transformer/, vae/, scheduler/)")
    p.add_argument("--weights", type=Path, required=required, metavar="DIR",
                   help="the model's weights folder (Lotus-2: the official files + exported prompt embeddings)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32" if defaults else None,
                   help="model precision" + (" (default fp32)" if defaults else ""))
    p.add_argument("--device", default="cpu" if defaults else None,
                   help="cpu, cuda or cuda:N" + (" (default cpu)" if defaults else ""))
    p.add_argument("--process-res", type=_process_res, default=None, metavar="R",
                   help="cap on the long edge in px (never upscales); 0 = no cap (full resolution); "
                        "default: the model's (1024 for the Lotus-2 release, model.json for other models)")
    p.add_argument("--sharpen-steps", type=sharpen_steps, default=None, metavar="N",
                   help=f"detail-sharpener steps, 0 (off) to {MAX_REFINE_STEPS}; default: the model's "
                        "(10 for the Lotus-2 release)")


def add_task_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=TASKS, action="append",
                   help="depth or normal; repeat for both (default: every task the model has)")


def sharpen_steps(text: str) -> int:
    n = int(text)
    if not 0 <= n <= MAX_REFINE_STEPS:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_REFINE_STEPS}, got {n}")
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
    if getattr(args, "sharpen_steps", None) is not None:
        n = args.sharpen_steps
        out["sharpen_enabled"] = n > 0
        if n > 0:
            out["sharpen_steps"] = n
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
