"""``lotus2 make-tiny-model`` and ``lotus2 export-prompt-embeds``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..model.spec import DTYPE_NAMES

log = logging.getLogger("lotus2.models")


def add_make_tiny_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", type=Path, metavar="OUTDIR", help="folder to create (base_model/ and weights/)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random tensor (default 0)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")


def make_tiny_model_command(args: argparse.Namespace) -> int:
    from ..model.tiny import make_tiny_model

    try:
        model = make_tiny_model(args.outdir, seed=args.seed, force=args.force)
    except FileExistsError as err:
        log.error("%s", err)
        return 2
    print(f"--base-model {model.base_model} --weights {model.weights}")
    return 0


def add_export_prompt_embeds_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-model", type=Path, required=True, metavar="DIR",
                   help="FLUX.1-dev folder with text_encoder*/ and tokenizer*/")
    p.add_argument("--weights", type=Path, required=True, metavar="DIR", help="Lotus-2 weights folder to write into")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32",
                   help="encoder precision (bf16 as the official inference runs; fp32 default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--force", action="store_true", help="overwrite an existing, different file")


def export_prompt_embeds_command(args: argparse.Namespace) -> int:
    from ..model.backend import DTYPES
    from ..model.prompt_embeds import export_prompt_embeds

    try:
        path = export_prompt_embeds(args.base_model, args.weights, dtype=DTYPES[args.dtype],
                                    device=args.device, force=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        log.error("%s", err)
        return 2
    print(path)
    return 0
