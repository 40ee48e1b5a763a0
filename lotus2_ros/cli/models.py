"""``lotus2 make-tiny-model`` and ``lotus2 export-prompt-embeds`` (both model families)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..model.spec import BACKENDS, DTYPE_NAMES

log = logging.getLogger("lotus2.models")


def add_make_tiny_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("outdir", type=Path, metavar="OUTDIR",
                   help="folder to create (lotus2: base_model/ and weights/; lotus1: one pipeline folder per task)")
    p.add_argument("--backend", choices=BACKENDS, default="lotus2", help="model family (default lotus2)")
    p.add_argument("--mode", choices=("g", "d"), default="g", help="lotus1: Lotus-G or Lotus-D (default g)")
    p.add_argument("--depth-output", choices=("disparity", "depth"), default="disparity",
                   help="lotus1: the depth folder predicts disparity (…-disparity, as the v2 releases) or depth "
                        "(as v1-0); default disparity")
    p.add_argument("--seed", type=int, default=0, help="seed of every random tensor (default 0)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")


def make_tiny_model_command(args: argparse.Namespace) -> int:
    try:
        if args.backend == "lotus1":
            from ..model.tiny_lotus1 import make_tiny_lotus1

            tiny = make_tiny_lotus1(args.outdir, mode=args.mode, seed=args.seed, depth_output=args.depth_output,
                                    force=args.force)
            print(f"--backend lotus1 --weights {tiny.root}")
            return 0
        from ..model.tiny import make_tiny_model

        model = make_tiny_model(args.outdir, seed=args.seed, force=args.force)
    except FileExistsError as err:
        log.error("%s", err)
        return 2
    print(f"--base-model {model.base_model} --weights {model.weights}")
    return 0


def add_export_prompt_embeds_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="lotus2", help="model family (default lotus2)")
    p.add_argument("--base-model", type=Path, metavar="DIR",
                   help="lotus2: the FLUX.1-dev folder with text_encoder*/ and tokenizer*/")
    p.add_argument("--weights", type=Path, required=True, metavar="DIR",
                   help="lotus2: the weights folder to write into; lotus1: the pipeline folder(s) (each gets its "
                        "lotus-1_prompt_embeds.safetensors, from its own text_encoder/ and tokenizer/)")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="fp32",
                   help="encoder precision (bf16 as the official inference runs; fp32 default)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--force", action="store_true", help="overwrite an existing, different file")


def export_prompt_embeds_command(args: argparse.Namespace) -> int:
    from ..model.backend import DTYPES

    try:
        if args.backend == "lotus1":
            from ..model.lotus1 import export_prompt_embeds as export_lotus1
            from ..model.lotus1_folders import find_lotus1_folders

            for folder in find_lotus1_folders(args.weights).values():
                print(export_lotus1(folder.path, device=args.device, dtype=DTYPES[args.dtype], force=args.force))
            return 0
        from ..model.prompt_embeds import export_prompt_embeds

        if args.base_model is None:
            log.error("lotus2 needs --base-model (the FLUX.1-dev folder with the text encoders)")
            return 2
        path = export_prompt_embeds(args.base_model, args.weights, dtype=DTYPES[args.dtype],
                                    device=args.device, force=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        log.error("%s", err)
        return 2
    print(path)
    return 0
