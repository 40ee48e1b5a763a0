"""Benchmark of the synthetic renderer and LiDAR simulator (prints figures; not a test).

Run with ``python -m lotus2_ros.synthetic.benchmark [--width 640 --height 480 --repeats 7]``.
Times are medians of CPU time per call; the ratio column compares with rendering a scene made
of a single plane at the same resolution in the same process (the fixed per-pixel cost).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.synthetic.generators import SCENE_KINDS, make_scene
from lotus2_ros.synthetic.lidar import LidarModel, simulate_lidar
from lotus2_ros.synthetic.poses import camera_trajectory
from lotus2_ros.synthetic.primitives import Plane
from lotus2_ros.synthetic.renderer import render
from lotus2_ros.synthetic.scene import Scene


def _median_ms(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        function()
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Prints render and LiDAR timings; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    camera = PinholeCamera.from_fov(args.width, args.height, hfov_deg=70.0)
    plane = Scene("plane", 0, (Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0)),))
    reference_ms = _median_ms(
        lambda: render(plane, camera, camera_trajectory(plane, 1)[0]), args.repeats
    )
    print(f"render {args.width}x{args.height}, one plane (reference): {reference_ms:7.1f} ms")
    lidar = LidarModel()
    for kind in SCENE_KINDS:
        scene = make_scene(kind, 0)
        pose = camera_trajectory(scene, 10, step_m=0.5)[-1]
        render_ms = _median_ms(partial(render, scene, camera, pose), args.repeats)
        lidar_ms = _median_ms(partial(simulate_lidar, scene, lidar, pose, 0), args.repeats)
        print(
            f"{kind:>6} ({len(scene.primitives):2d} primitives): render {render_ms:7.1f} ms "
            f"({render_ms / reference_ms:4.1f}x reference), LiDAR {lidar.num_beams} beams x "
            f"{lidar.azimuths_rad.size} columns {lidar_ms:6.1f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
