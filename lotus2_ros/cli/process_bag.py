"""``lotus2 process-bag`` / ``ros2 run lotus2_ros process_bag``, and ``lotus2 process-bags`` for many bags.

``process-bag INPUT_BAG -o OUTPUT_BAG`` runs the live node's pipeline over a recorded bag and
writes a new bag with the input topics and the node's outputs (docs/BAGS.md). ``process-bags
BAG… -o OUTDIR`` does the same for a list of bags, sharing them between the processes a launcher
starts (``torchrun``, ``accelerate launch``, ``srun``), one GPU each.

Exit status: 0 done; 1 a processing failure (the partial output is kept for ``--resume``);
2 a bad request (missing or corrupt input, missing topic, existing output, bad config);
130 stopped by SIGINT/SIGTERM (resumable).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ..bag.errors import BagError, Interrupted
from ..bag.writer import COMPRESSIONS, STORAGES
from ..perception.config import ConfigError, PerceptionConfig
from .common import add_model_arguments, model_overrides

log = logging.getLogger("lotus2.process_bag")

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


# ---------------------------------------------------------------------------- arguments
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_bag", type=Path, metavar="INPUT_BAG",
                   help="ROS 2 bag folder (sqlite3 or mcap); never modified")
    p.add_argument("-o", "--output", dest="output_bag", type=Path, required=True, metavar="OUTPUT_BAG",
                   help="bag folder to create")
    _add_run_arguments(p)
    p.add_argument("--export-dir", type=Path, metavar="DIR",
                   help="also write per-frame .npy/.png/.ply/.json files, named by stamp")


def add_process_bags_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_bags", type=Path, nargs="+", metavar="BAG",
                   help="input bags (every process gets the same list)")
    p.add_argument("-o", "--output-dir", type=Path, required=True, metavar="OUTDIR",
                   help="output bags go to OUTDIR/<input bag name>")
    _add_run_arguments(p)
    p.add_argument("--export-dir", type=Path, metavar="DIR", help="per-frame files go to DIR/<input bag name>/")
    p.add_argument("--shard-index", type=int, metavar="I",
                   help="this process's share (default: $RANK from torchrun / accelerate, else 0)")
    p.add_argument("--num-shards", type=int, metavar="N",
                   help="number of processes sharing the list (default: $WORLD_SIZE, else 1)")


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="YAML",
                   help="the node's parameter file (config/perception.yaml); defaults otherwise")
    add_model_arguments(p, required=False, defaults=False)  # each overrides the --config value
    p.add_argument("--image-topic", metavar="T", help="Image or CompressedImage topic (default: the bag's only one)")
    p.add_argument("--camera-info-topic", metavar="T",
                   help="CameraInfo topic (default: the only one, or <image namespace>/camera_info)")
    reference = p.add_mutually_exclusive_group()
    reference.add_argument("--lidar-topic", metavar="T",
                           help="PointCloud2 topic for metric depth (implies metric_source lidar if the config has none)")
    reference.add_argument("--depth-ref-topic", metavar="T",
                           help="sparse metric depth Image registered to the camera (32FC1 m or 16UC1 mm, e.g. "
                                "RGB-D or stereo) as the metric reference (sets metric_source depth_image)")
    p.add_argument("--sharpen-every", type=_non_negative, default=1, metavar="K",
                   help="sharpen every K-th frame only (default 1: all; 0: none)")
    p.add_argument("--outputs", type=_outputs, default=None, metavar="LIST",
                   help="outputs to write, comma-separated: disparity, depth, normals, points, point_normals "
                        "(clouds with normals), colorized, depth_colorized, normals_colorized, scale_fit; "
                        "'default' (all of them, clouds without normals) or 'all' (as the node publishes)")
    core = p.add_mutually_exclusive_group()
    core.add_argument("--with-core", action="store_true",
                      help="also write the core (unsharpened) outputs of sharpened frames (default: refined only)")
    core.add_argument("--refined-only", action="store_true",
                      help="only the sharpened outputs of sharpened frames (the default; kept for old scripts)")
    p.add_argument("--compression", choices=COMPRESSIONS, default="zstd",
                   help="lossless output compression: zstd chunks (mcap) / zstd messages (sqlite3), as rosbag2 "
                        "reads them (default zstd)")
    p.add_argument("--compression-level", type=int, default=1, metavar="N",
                   help="zstd level (default 1; higher is smaller and slower; negative faster)")
    p.add_argument("--compression-threads", type=_non_negative, default=0, metavar="N",
                   help="zstd threads (default 0: the machine's cores, up to 8)")
    p.add_argument("--storage", choices=STORAGES, help="output storage (default: as the input)")
    p.add_argument("--no-copy-inputs", action="store_true", help="write only the outputs, not the input topics")
    p.add_argument("--output-prefix", default=None, metavar="NS",
                   help="namespace of the output topics (default /lotus2/lotus2_perception/, as the node)")
    p.add_argument("--force", action="store_true", help="replace an existing output (once the new one is complete)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run where it stopped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _outputs(text: str):
    from ..bag.selection import OutputSelection

    try:
        return OutputSelection.parse(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _non_negative(text: str) -> int:
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {n}")
    return n


# ---------------------------------------------------------------------------- shared pieces
def build_config(args: argparse.Namespace, device: str | None = None) -> PerceptionConfig:
    """The run's configuration: ``--config`` (or the defaults) with the command-line overrides."""
    from ..bag.config_file import load_perception_config

    overrides = model_overrides(args)
    if device is not None:
        overrides["device"] = device
    config = load_perception_config(args.config, **overrides) if args.config else PerceptionConfig(**overrides)
    if args.depth_ref_topic is not None:
        config = config.replace(metric_source="depth_image")
    if not config.weights or (config.backend == "lotus2" and not config.base_model):
        raise ConfigError("name the model with --base-model and --weights (or base_model / weights in --config)")
    return config


def options_for(args: argparse.Namespace, config: PerceptionConfig, input_bag: Path, output_bag: Path,
                export_dir: Path | None):
    from ..bag.processor import DEFAULT_OUTPUT_PREFIX, ProcessBagOptions
    from ..bag.selection import DEFAULT_SELECTION
    from ..bag.writer import BagCompression

    return ProcessBagOptions(
        input_bag=input_bag, output_bag=output_bag, config=config, image_topic=args.image_topic,
        camera_info_topic=args.camera_info_topic, reference_topic=args.lidar_topic or args.depth_ref_topic,
        sharpen_every=args.sharpen_every, write_core=args.with_core, storage=args.storage,
        outputs=args.outputs or DEFAULT_SELECTION,
        compression=BagCompression(args.compression, args.compression_level, args.compression_threads),
        copy_inputs=not args.no_copy_inputs, output_prefix=args.output_prefix or DEFAULT_OUTPUT_PREFIX,
        export_dir=export_dir, force=args.force, resume=args.resume,
        progress=not args.no_progress and sys.stderr.isatty())


class StopOnSignal:
    """SIGINT/SIGTERM ask the run to stop after the current frame; a second SIGINT aborts at once."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.event.is_set()

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.event.set()
        log.warning("%s: stopping after the current frame (the run can be resumed with --resume); "
                    "Ctrl-C again aborts at once", signal.Signals(signum).name)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _run_one(options, engine, stop: StopOnSignal) -> int:
    """Plan and run one bag; returns the exit status (errors are logged, not raised)."""
    from ..bag.processor import plan_bag_run, run_bag

    try:
        plan = plan_bag_run(options)
        stats = run_bag(plan, engine, should_stop=stop)
    except Interrupted as err:
        log.warning("%s", err)
        return EXIT_INTERRUPTED
    except BagError as err:
        log.error("%s", err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        log.error("aborted; the partial output was checkpointed where possible (--resume)")
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - the run checkpointed; report and keep the partial output
        log.exception("processing %s failed (%s); fix the cause and continue with --resume", options.input_bag,
                      type(err).__name__)
        return EXIT_FAILED
    print(f"{options.input_bag} -> {options.output_bag}\n{stats.summary()}", flush=True)
    return 0


# ---------------------------------------------------------------------------- process-bag
def command(args: argparse.Namespace) -> int:
    from ..bag.processor import plan_bag_run
    from ..perception.memory import retain_freed_memory
    from ..perception.pipeline import load_model

    retain_freed_memory()  # frame buffers reuse pages (perception/memory.py)
    try:
        config = build_config(args)
        options = options_for(args, config, args.input_bag, args.output_bag, args.export_dir)
        plan_bag_run(options)  # fail on a bad bag or topic before the (slow) model load
        engine = load_model(config)
    except (BagError, ConfigError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return EXIT_USAGE
    with StopOnSignal() as stop:
        return _run_one(options, engine, stop)


# ---------------------------------------------------------------------------- process-bags
def process_bags_command(args: argparse.Namespace) -> int:
    from ..bag.journal import partial_path
    from ..bag.shard import assign_bags, device_for, shard_from_env
    from ..perception.memory import retain_freed_memory
    from ..perception.pipeline import load_model

    retain_freed_memory()  # frame buffers reuse pages (perception/memory.py)
    try:
        shard = shard_from_env(index=args.shard_index, count=args.num_shards)
        device = device_for(args.device or _config_device(args), shard)
        config = build_config(args, device=device)
    except (ConfigError, ValueError) as err:
        log.error("%s", err)
        return EXIT_USAGE
    bags = assign_bags(args.input_bags, shard)
    names = [b.name for b in args.input_bags]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        log.error("input bags share names %s: their outputs in %s would collide", dupes, args.output_dir)
        return EXIT_USAGE
    log.info("shard %d of %d: %d of %d bags on %s", shard.index, shard.count, len(bags), len(args.input_bags),
             config.device)
    todo = []
    for bag in bags:
        out = args.output_dir / bag.name
        if args.resume and not args.force and out.exists() and not partial_path(out).exists():
            log.info("%s: done already (%s exists)", bag, out)
            continue
        todo.append((bag, out))
    if not todo:
        return 0
    try:
        engine = load_model(config)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return EXIT_USAGE
    args.output_dir.mkdir(parents=True, exist_ok=True)
    status = 0
    with StopOnSignal() as stop:
        for bag, out in todo:
            export = args.export_dir / bag.name if args.export_dir else None
            try:
                options = options_for(args, config, bag, out, export)
            except ValueError as err:
                log.error("%s: %s", bag, err)
                status = max(status, EXIT_USAGE)
                continue
            result = _run_one(options, engine, stop)
            if result == EXIT_INTERRUPTED:
                return EXIT_INTERRUPTED
            status = max(status, result)
    return status


def _config_device(args: argparse.Namespace) -> str:
    if args.config is None:
        return PerceptionConfig().device
    from ..bag.config_file import load_perception_config

    return load_perception_config(args.config).device
