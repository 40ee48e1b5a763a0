"""Arguments shared by the commands that load the engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..model.engine import DTYPES, MAX_SHARPEN_STEPS, EngineConfig
from ..model.resize import DEFAULT_PROCESS_RES


def add_engine_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--base-model", type=Path, required=required, metavar="DIR",
                   help="FLUX.1-dev folder in diffusers layout (transformer/, vae/, scheduler/)")
    p.add_argument("--weights", type=Path, required=required, metavar="DIR",
                   help="folder with the Lotus-2 files and the exported prompt embeddings")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="model precision (default fp32)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--process-res", type=int, default=DEFAULT_PROCESS_RES, metavar="R",
                   help=f"cap on the long edge in px, 0 = no cap; never upscales (default {DEFAULT_PROCESS_RES})")
    p.add_argument("--sharpen-steps", type=sharpen_steps, default=MAX_SHARPEN_STEPS, metavar="N",
                   help=f"detail-sharpener steps, 0 (off) to {MAX_SHARPEN_STEPS} (default {MAX_SHARPEN_STEPS})")


def sharpen_steps(text: str) -> int:
    n = int(text)
    if not 0 <= n <= MAX_SHARPEN_STEPS:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_SHARPEN_STEPS}, got {n}")
    return n


def engine_config(args: argparse.Namespace, tasks: tuple[str, ...]) -> EngineConfig:
    return EngineConfig(
        base_model=args.base_model, weights=args.weights, tasks=tasks, device=args.device,
        dtype=args.dtype, process_res=args.process_res or None, load_sharpener=args.sharpen_steps > 0,
    )
