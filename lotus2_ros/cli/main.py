"""The ``lotus2`` command: one executable with the product's subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: subcommand → module in ``lotus2_ros.cli`` providing ``add_arguments(parser)`` and ``command(args) -> int``.
SUBCOMMANDS = {
    "predict": ("predict", "depth / normals for image files"),
    "process-bag": ("process_bag", "run the perception pipeline over a ROS 2 bag into a new bag"),
    "process-bags": ("process_bag", "process many bags, shared between launcher processes (one GPU each)"),
    "lidar-overlay": ("lidar_overlay", "LiDAR points drawn on the camera images of a bag or folder, with the metric "
                                       "fit's projection: checks the LiDAR-camera calibration"),
    "demo": ("demo", "the product on a synthetic camera + LiDAR: the node graph (or --engine-only, the pipeline "
                     "alone) with a model folder or a tiny random model"),
    "make-tiny-model": ("models", "write a random tiny model in the official layout"),
    "export-prompt-embeds": ("models", "compute the empty-prompt embeddings once"),
    "train-core": ("train", "train the core predictor + LCM (LoRA or full fine-tune)"),
    "train-sharpener": ("train", "train the detail sharpener on a frozen core predictor"),
    "evaluate": ("evaluate", "depth / normal metrics on evaluation sets"),
}


#: ROS node subcommands: ``lotus2 <name> [--ros-args …]`` runs ``main(argv)`` of the module in
#: ``lotus2_ros.ros`` with the remaining arguments untouched (they belong to rclpy).
ROS_SUBCOMMANDS = {
    "perception-node": ("perception_node", "the live perception node (rclpy)"),
    "synthetic-camera": ("synthetic_camera", "a synthetic camera + LiDAR publisher node (rclpy)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lotus2", description="Lotus-2 monocular depth and normals.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    for name, (_, help_text) in ROS_SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text + "; arguments go to rclpy (--ros-args …)")
    for name, (module, help_text) in SUBCOMMANDS.items():
        mod = importlib.import_module(f"lotus2_ros.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(mod, f"add_{name.replace('-', '_')}_arguments", getattr(mod, "add_arguments", None))(p)
        p.set_defaults(_command=getattr(mod, f"{name.replace('-', '_')}_command",
                                        getattr(mod, "command", None)))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the subcommand, return its exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ROS_SUBCOMMANDS:
        return _ros_node(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    quiet_third_party()
    return int(args._command(args))


class _Interrupted(BaseException):
    """SIGINT/SIGTERM while a node's modules were still being imported."""


def _ros_node(name: str, rest: list[str]) -> int:
    """Run a ROS node subcommand; a signal before the node took over its signals ends it quietly.

    Importing the node's modules (torch, diffusers) takes seconds; a launch file shut down in
    that time must not print a KeyboardInterrupt traceback. The node's ``main`` installs its
    own handlers.
    """
    import signal

    def interrupted(*_):
        raise _Interrupted()

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        # Not quiet_third_party() here: importing diffusers/transformers takes seconds, and a node
        # with a bad parameter should say so at once. Nodes quieten them before loading a model.
        module = importlib.import_module(f"lotus2_ros.ros.{ROS_SUBCOMMANDS[name][0]}")
        if {"-h", "--help"} & set(rest[: rest.index("--ros-args")] if "--ros-args" in rest else rest):
            print(f"usage: lotus2 {name} [--ros-args ...]\n\n{module.__doc__}")
            return 0
    except _Interrupted:
        print(f"lotus2 {name}: stopped while starting", file=sys.stderr)
        return 0
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    return int(module.main(rest))


def quiet_third_party() -> None:
    """Silence progress bars and advisory warnings of diffusers/transformers/peft in CLI output."""
    from ..model.quiet import quiet_third_party as quiet

    quiet()


if __name__ == "__main__":
    sys.exit(main())
