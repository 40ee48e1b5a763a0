"""``lotus2 lidar-overlay``: LiDAR points drawn on the camera images, to check a LiDAR–camera calibration.

Two sources::

    lotus2 lidar-overlay BAG -o OUTDIR [--image-topic T] [--camera-info-topic T] [--lidar-topic T]
    lotus2 lidar-overlay --images DIR --clouds DIR --camera-info CAMERA.yaml -o OUTDIR [--extrinsic V…]

Per frame ``S`` (the stamp in 19-digit nanoseconds for bags, the file stem for folders):
``S_overlay.png`` (points coloured by depth, near red, far blue) and ``S_lidar_uvz.npy``
(``float32 [M,3]``: u, v in pixels, depth in metres); ``overlay.json`` lists every frame's
calibration, extrinsic and point counts. The projection, extrinsic lookup (the bag's TF or
``lidar_extrinsic``) and occlusion test are the metric fit's own
(:mod:`lotus2_ros.perception.overlay`). No model is loaded.

Exit status: 0 done (at least one frame); 2 a bad request (missing input, topic, calibration,
extrinsic or no usable frame).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..perception.config import ConfigError, PerceptionConfig

log = logging.getLogger("lotus2.lidar_overlay")
EXIT_USAGE = 2


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bag", type=Path, nargs="?", metavar="BAG", help="ROS 2 bag folder (sqlite3 or mcap); read only")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="folder for the files")
    p.add_argument("--config", type=Path, metavar="YAML",
                   help="the node's parameter file: rectify, camera_model, extrinsic_source, lidar_extrinsic, "
                        "lidar_min_range_m / lidar_max_range_m, metric_max_offset_ms apply")
    p.add_argument("--image-topic", metavar="T", help="bag: Image or CompressedImage topic (default: the only one)")
    p.add_argument("--camera-info-topic", metavar="T", help="bag: CameraInfo topic (default: the only one)")
    p.add_argument("--lidar-topic", metavar="T", help="bag: PointCloud2 topic (default: the only one)")
    p.add_argument("--images", type=Path, metavar="DIR", help="folder: images (.png, .jpg, …)")
    p.add_argument("--clouds", type=Path, metavar="DIR",
                   help="folder: point clouds with the images' file stems (.npy [N,>=3] or KITTI .bin), LiDAR frame")
    p.add_argument("--camera-info", type=Path, metavar="YAML",
                   help="folder: the camera calibration (camera_calibration / camera_info_manager YAML)")
    p.add_argument("--extrinsic", type=float, nargs="+", metavar="V",
                   help="T_camera_lidar: x y z qx qy qz qw or 16 values row-major (sets lidar_extrinsic; for "
                        "bags also extrinsic_source parameter)")
    p.add_argument("--camera-model", choices=("auto", "raw", "rectified"),
                   help="camera model of the images (overrides the config's camera_model)")
    p.add_argument("--every", type=int, default=1, metavar="K", help="every K-th image (default 1)")
    p.add_argument("--max-frames", type=int, metavar="N", help="at most N frames")
    p.add_argument("--point-radius", type=int, default=1, metavar="PX", help="drawn point radius (default 1)")


def _config(args: argparse.Namespace) -> PerceptionConfig:
    from ..bag.config_file import load_perception_config

    overrides: dict = {"metric_source": "lidar", "device": "cpu", "dtype": "fp32"}
    if args.extrinsic is not None:
        overrides["lidar_extrinsic"] = list(args.extrinsic)
        overrides["extrinsic_source"] = "parameter"
    if args.camera_model is not None:
        overrides["camera_model"] = args.camera_model
    return load_perception_config(args.config, **overrides) if args.config else PerceptionConfig(**overrides)


def command(args: argparse.Namespace) -> int:
    from ..bag.errors import BagError
    from ..bag.overlay import BagOverlayFrames
    from ..perception.overlay import LidarOverlay, folder_frames, write_summary

    folder_mode = args.images is not None or args.clouds is not None or args.camera_info is not None
    if folder_mode == (args.bag is not None):
        log.error("give either a BAG or --images DIR --clouds DIR --camera-info YAML")
        return EXIT_USAGE
    if args.every < 1 or (args.max_frames is not None and args.max_frames < 1):
        log.error("--every and --max-frames must be >= 1")
        return EXIT_USAGE
    try:
        config = _config(args)
        if folder_mode:
            if None in (args.images, args.clouds, args.camera_info):
                raise ConfigError("a folder needs --images DIR, --clouds DIR and --camera-info YAML")
            source = folder_frames(args.images, args.clouds, args.camera_info, config.T_camera_lidar)
            frames = ((f, stem, "parameter") for k, (f, stem) in enumerate(source)
                      if k % args.every == 0 and (args.max_frames is None or k // args.every < args.max_frames))
            skipped = source.skipped
        else:
            source = BagOverlayFrames(args.bag, config, args.image_topic, args.camera_info_topic, args.lidar_topic,
                                      every=args.every, max_frames=args.max_frames)
            frames, skipped = iter(source), source.skipped
        overlay = LidarOverlay(config)
        summary = []
        for frame, stem, extrinsic in frames:
            result = overlay.project(frame, stem, extrinsic)
            LidarOverlay.write(result, args.output, args.point_radius)
            summary.append(result.metadata())
            log.info("%s: %d points drawn (%d in view, %d hidden by parallax), %s extrinsic", stem,
                     result.projection.z_m.size, result.projection.num_in_view, result.projection.num_occluded,
                     extrinsic)
    except (BagError, ConfigError, OSError, ValueError) as err:
        log.error("%s", err)
        return EXIT_USAGE
    args.output.mkdir(parents=True, exist_ok=True)
    write_summary(args.output, summary, dict(skipped))
    if skipped:
        log.warning("frames skipped: %s", "; ".join(f"{n}× {why}" for why, n in skipped.items()))
    if not summary:
        log.error("no frame with an image, a camera_info and a LiDAR sweep")
        return EXIT_USAGE
    print(f"{len(summary)} frames -> {args.output} (<stem>_overlay.png, <stem>_lidar_uvz.npy, overlay.json)")
    return 0
