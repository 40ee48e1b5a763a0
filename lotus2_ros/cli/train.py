"""``lotus2 train-core`` and ``lotus2 train-sharpener`` (also ``ros2 run lotus2_ros train_core|train_sharpener``).

Single process: ``lotus2 train-core ...``. Several GPUs or machines: ``accelerate launch
[--config_file CFG] -m lotus2_ros.cli.main train-core ...`` (see docs/TRAINING.md).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..model.weights import OFFICIAL_LORA_TARGETS, TASKS

log = logging.getLogger("lotus2.train")

DATA_HELP = """\
data sources (--data / --val-data, repeatable): KIND[=PATH][@PROB]
  hypersim=DIR[@0.9]   Hypersim (official train split; held-out: val split)
  vkitti2=DIR[@0.1]    Virtual KITTI 2 (Scene02/06/18/20; held-out: Scene01)
  synthetic[@P]        procedural scenes rendered on the fly (held-out: other seeds)
  folder=DIR[@P]       your own data: DIR/rgb/<stem>.png|jpg with DIR/depth/<stem>.png (uint16 mm,
                       0 = none) or .npy (float32 m, NaN = none) and/or DIR/normal/<stem>.npy
                       (float32 unit normals, ROS optical frame) or .png ((n_model+1)/2 colours);
                       optional DIR/sky/<stem>.png and DIR/intrinsics.json {"fx","fy","cx","cy"}
                       (or DIR/intrinsics/<stem>.json) to derive normals from depth
Probabilities are normalised; one micro-batch comes from one source.
The paper's mix: --data hypersim=DIR@0.9 --data vkitti2=DIR@0.1
"""


def _hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW in pixels, e.g. 352x1216, got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"crop must be at least 16x16, got {text!r}")
    return h, w


def _wh(text: str) -> tuple[int, int]:
    """``WxH`` → ``(width, height)``: the same two numbers as :func:`_hw` reads, in the order given."""
    w, h = _hw(text)
    return w, h


def _data_source(text: str):
    from ..train.data import DataSource

    try:
        return DataSource.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_common(p: argparse.ArgumentParser, stage: str) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = DATA_HELP
    g = p.add_argument_group("model")
    g.add_argument("--backend", choices=("lotus2", "lotus1"), default="lotus2",
                   help="model family (default lotus2; lotus1: the SD2 U-Net, Lotus-D/G, train-core only)")
    g.add_argument("--base-model", type=Path, required=True, metavar="DIR",
                   help="lotus2: FLUX folder in diffusers layout (transformer/, vae/, scheduler/); lotus1: a Stable "
                        "Diffusion 2 folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/) or a Lotus-1 "
                        "pipeline folder to fine-tune")
    if stage == "core":
        g.add_argument("--mode", choices=("d", "g"),
                       help="lotus1: Lotus-D (image latent in) or Lotus-G (image latent + noisy target latent)")
        g.add_argument("--detail-preserver-ratio", type=float, default=1.0, metavar="R",
                       help="lotus1: reconstruction samples (task switcher [0,1], target = the input image) per "
                            "annotation sample, 0..1 (default 1: the official doubled batch; 0: off)")
        g.add_argument("--weights", type=Path, metavar="DIR",
                       help="Lotus-2 files to fine-tune (core predictor + LCM); default: start fresh")
    else:
        g.add_argument("--weights", type=Path, metavar="DIR",
                       help="Lotus-2 files with the trained core predictor + LCM (frozen); an existing "
                            "detail sharpener there is fine-tuned")
    g.add_argument("--prompt-embeds", type=Path, metavar="DIR",
                   help="folder with lotus-2_prompt_embeds.safetensors (default: --weights)")
    g.add_argument("--task", choices=TASKS, action="append", help="depth and/or normal (repeat; default depth)")
    g.add_argument("--lora-rank", type=int, metavar="R", help="LoRA rank (default: the release's, 128 depth / 256 normal; a smaller one is "
                        "zero-padded to it on export, exactly; a larger one is refused)")
    g.add_argument("--lora-alpha", type=float, metavar="A", help="LoRA alpha (default: = rank, as the release)")
    g.add_argument("--lora-targets", metavar="LIST",
                   help="comma-separated module-name suffixes (default: lotus2 the release's 12 (only those or a "
                        "subset load in the official inference); lotus1 the attention projections "
                        "to_q,to_k,to_v,to_out.0)")
    if stage == "core":
        g.add_argument("--full-finetune", action="store_true",
                       help="lotus2: train every transformer weight too (small models), exports a base_model/ "
                            "folder; lotus1: train the whole U-Net (the paper) instead of LoRA + task switcher + "
                            "conv_in")
    else:
        g.add_argument("--sigma-sampling", choices=("shifted", "grid", "rollout"), default="shifted",
                       help="flow times: the continuous shifted schedule family (default), the N-step grid, or "
                            "rollout: the states the N-step sampler visits from the coarse latent (see TRAINING.md)")
        g.add_argument("--grid-steps", type=int, default=10, metavar="N", help="steps of the grid (default 10)")
        g.add_argument("--sharpener-loss", choices=("mse", "relative"), default="mse",
                       help="mse (default): latent MSE over the batch; relative: each frame's loss over its "
                            "coarse error, so frames the core already gets nearly right count as much")

    g = p.add_argument_group("data")
    g.add_argument("--data", type=_data_source, action="append", metavar="SPEC", help="training source (see below)")
    g.add_argument("--val-data", type=_data_source, action="append", metavar="SPEC",
                   help="held-out source (default: the held-out part of every --data source)")
    g.add_argument("--val-samples", type=int, default=16, metavar="N", help="held-out frames (default 16)")
    g.add_argument("--resize-short", type=int, metavar="PX", help="override: resize the shorter side (0 = keep)")
    g.add_argument("--crop", type=_hw, metavar="HxW", help="override: crop size after resizing")
    g.add_argument("--flip-prob", type=float, metavar="P", help="override: horizontal flip probability (default 0.5)")
    g.add_argument("--synthetic-size", type=_wh, default=(160, 128), metavar="WxH",
                   help="synthetic frame size in px (default 160x128)")
    g.add_argument("--synthetic-scenes", type=int, default=1000, metavar="N", help="synthetic training scenes (default 1000)")
    g.add_argument("--num-workers", type=int, default=2, metavar="N", help="data loader workers (default 2)")

    g = p.add_argument_group("optimisation")
    g.add_argument("--max-steps", type=int, default=20000, metavar="N", help="optimizer steps (default 20000)")
    g.add_argument("--batch-size", type=int, default=1, metavar="B", help="frames per device and micro-batch (default 1)")
    g.add_argument("--grad-accum", type=int, default=1, metavar="N", help="micro-batches per optimizer step")
    g.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    g.add_argument("--lr-scheduler", default="constant_with_warmup",
                   choices=("constant", "constant_with_warmup", "linear", "cosine"))
    g.add_argument("--warmup-steps", type=int, default=0, metavar="N")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping, 0 = off (default 1)")
    g.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no",
                   help="autocast precision (default no; bf16 on GPUs)")
    g.add_argument("--base-dtype", choices=("fp32", "bf16"), default="fp32",
                   help="storage dtype of the frozen weights (bf16 halves the FLUX memory)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--cpu", action="store_true", help="train on the CPU even if a GPU is present")

    g = p.add_argument_group("run")
    g.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="run folder")
    g.add_argument("--resume", metavar="latest|DIR", help="continue from a checkpoint ('latest' in the run folder)")
    g.add_argument("--validate-every", type=int, default=500, metavar="N", help="steps between validations, 0 = never")
    if stage == "sharpener":
        g.add_argument("--val-sharpen-steps", type=int, default=10, metavar="N",
                       help="sharpener steps of the validation prediction (default 10)")
    g.add_argument("--checkpoint-every", type=int, default=1000, metavar="N", help="steps between checkpoints, 0 = end only")
    g.add_argument("--keep-checkpoints", type=int, default=3, metavar="N", help="checkpoints kept (0 = all)")
    g.add_argument("--log-every", type=int, default=10, metavar="N")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_train_core_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p, "core")


def add_train_sharpener_arguments(p: argparse.ArgumentParser) -> None:
    _add_common(p, "sharpener")


def config_from_args(args: argparse.Namespace, stage: str):
    from ..train.config import TrainConfig
    from ..train.data import DataSource, SyntheticOptions

    w, h = args.synthetic_size
    return TrainConfig(
        stage=stage, base_model=args.base_model, output_dir=args.output,
        tasks=tuple(dict.fromkeys(args.task or ["depth"])), weights=args.weights, prompt_embeds=args.prompt_embeds,
        data=tuple(args.data or [DataSource("synthetic")]), val_data=tuple(args.val_data or ()),
        val_samples=args.val_samples, resize_short_px=args.resize_short, crop_hw=args.crop, flip_prob=args.flip_prob,
        synthetic=SyntheticOptions(width_px=w, height_px=h, num_scenes=args.synthetic_scenes),
        full_finetune=getattr(args, "full_finetune", False), lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
        lora_targets=(tuple(t.strip() for t in args.lora_targets.split(",") if t.strip()) if args.lora_targets
                      else OFFICIAL_LORA_TARGETS),
        backend=args.backend, mode=getattr(args, "mode", None),
        detail_preserver_ratio=getattr(args, "detail_preserver_ratio", 1.0),
        sigma_sampling=getattr(args, "sigma_sampling", "shifted"), grid_steps=getattr(args, "grid_steps", 10),
        sharpener_loss=getattr(args, "sharpener_loss", "mse"),
        max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum, learning_rate=args.lr,
        lr_scheduler=args.lr_scheduler, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, mixed_precision=args.mixed_precision, base_dtype=args.base_dtype,
        gradient_checkpointing=args.gradient_checkpointing, seed=args.seed, num_workers=args.num_workers,
        validate_every=args.validate_every, val_sharpen_steps=getattr(args, "val_sharpen_steps", 10),
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, log_every=args.log_every,
        cpu=args.cpu, progress=not args.no_progress,
    )


def _run(args: argparse.Namespace, stage: str) -> int:
    from ..model.weights import WeightsError
    from ..train.trainer import Trainer

    try:
        cfg = config_from_args(args, stage)
        result = Trainer(cfg).run(resume=args.resume)
    except (FileNotFoundError, ValueError, WeightsError) as err:
        log.error("%s", err)
        return 2
    if result.stopped_by is not None:
        if result.main_process:
            print(f"stopped at step {result.step}; continue with the same command plus --resume latest")
        return 128 + result.stopped_by if result.stopped_by > 0 else 1
    if not result.main_process:
        return 0
    print(f"trained {stage} for {result.step} steps in {result.seconds / 60:.1f} min")
    if cfg.backend == "lotus1":
        print(f"exported: --backend lotus1 --weights {result.export_weights}")
        print(f"try it:   lotus2 predict --backend lotus1 --weights {result.export_weights} -o OUTDIR IMAGES")
        return 0
    base = result.export_base_model or cfg.base_model
    steps = "0" if stage == "core" else "10"
    tasks = " ".join(f"--task {t}" for t in cfg.tasks)
    print(f"exported: --base-model {base} --weights {result.export_weights}")
    print(f"try it:   lotus2 predict --base-model {base} --weights {result.export_weights} {tasks} "
          f"--sharpen-steps {steps} -o OUTDIR IMAGES")
    return 0


def train_core_command(args: argparse.Namespace) -> int:
    return _run(args, "core")


def train_sharpener_command(args: argparse.Namespace) -> int:
    return _run(args, "sharpener")
