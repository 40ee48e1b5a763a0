"""Benchmark of the message converters (prints figures; not a test).

Run with ``python benchmarks/message_converters.py [--repeats 15]``. Times are wall-clock medians (and
minima) per call; the ``x memcpy`` column compares with copying the message's data bytes once
(``ndarray.copy``) in the same process, the floor for anything that produces a new message. The
rclpy rows need the ROS 2 Python packages and are skipped without them; they also compare ways
of filling an rclpy ``uint8[]`` field (see ``lotus2_ros/ros/msg_types.py``).
"""

from __future__ import annotations

import argparse
import array
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lotus2_ros.io.image_msgs import build_compressed_image, build_image, compressed_msg_to_rgb, image_msg_to_rgb
from lotus2_ros.io.msg_types import MessageTypes, rosbags_types
from lotus2_ros.io.pointcloud import build_pointcloud2, pointcloud2_to_xyz
from lotus2_ros.io.stamps import build_header

SIZES = ((640, 480), (1280, 720))


def _time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median, min) wall time of one call, ms, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, min(times) * 1e3


def _row(label: str, fn: Callable[[], Any], repeats: int, nbytes: int) -> None:
    median, fastest = _time(fn, repeats)
    reference = np.zeros(nbytes, dtype=np.uint8)
    copy_ms, _ = _time(reference.copy, repeats)
    print(f"  {label:<56s} {median:8.2f} ms  (min {fastest:7.2f})  {median / copy_ms:6.1f} x memcpy")


def _providers() -> list[MessageTypes]:
    providers: list[MessageTypes] = [rosbags_types()]
    try:  # the ROS shell's provider; optional so the benchmark runs without ROS
        from lotus2_ros.ros.msg_types import rclpy_types

        providers.append(rclpy_types())
    except ImportError as err:
        print(f"(rclpy rows skipped: {err})")
    return providers


def bench_images(types: MessageTypes, repeats: int) -> None:
    rng = np.random.default_rng(0)
    header = build_header(types, 1, "camera")
    for width, height in SIZES:
        rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        for encoding in ("rgb8", "bgr8"):
            msg = build_image(types, header, rgb, encoding)
            label = f"image_msg_to_rgb {encoding} {width}x{height}"
            _row(label, lambda m=msg: image_msg_to_rgb(m), repeats, rgb.nbytes)
    width, height = SIZES[0]
    yy, xx = np.mgrid[0:height, 0:width]
    photo = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)  # compressible
    jpeg = build_compressed_image(types, header, photo, codec="jpeg")
    _row(f"compressed_msg_to_rgb jpeg {width}x{height}", lambda: compressed_msg_to_rgb(jpeg), repeats, photo.nbytes)
    depth = rng.uniform(0.5, 10, size=(height, width)).astype(np.float32)
    normals = rng.normal(size=(height, width, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    for array_, encoding in ((depth, "32FC1"), (normals, "32FC3"), (rgb, "rgb8")):
        _row(
            f"build_image {encoding} {width}x{height}",
            lambda a=array_, e=encoding: build_image(types, header, a, e),
            repeats,
            array_.nbytes,
        )


def bench_pointcloud(types: MessageTypes, repeats: int) -> None:
    rng = np.random.default_rng(0)
    header = build_header(types, 1, "camera")
    width, height = SIZES[0]
    points = rng.uniform(-5, 5, size=(height, width, 3)).astype(np.float32)
    points[::7, ::5] = np.nan
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    normals = rng.normal(size=(height, width, 3)).astype(np.float32)
    nbytes = height * width * 32
    _row(
        f"build_pointcloud2 xyz+rgb+normals {width}x{height}",
        lambda: build_pointcloud2(types, header, points, rgb, normals),
        repeats,
        nbytes,
    )
    cloud = build_pointcloud2(types, header, points, rgb, normals)
    _row(f"pointcloud2_to_xyz {width}x{height} (32 B/point)", lambda: pointcloud2_to_xyz(cloud), repeats, nbytes)


def bench_rclpy_assignment(repeats: int) -> None:
    """Ways of putting a numpy buffer into an rclpy ``uint8[]`` field (new message + data)."""
    try:
        from sensor_msgs.msg import Image

        from lotus2_ros.ros.msg_types import rclpy_types as make_rclpy_types

        rclpy_types = make_rclpy_types()
    except ImportError:
        return

    def frombytes(data: np.ndarray) -> array.array:
        packed = array.array("B")
        packed.frombytes(memoryview(data))
        return packed

    packs: dict[str, Callable[[np.ndarray], Any]] = {
        "array.frombytes(memoryview)": frombytes,
        "bytes (ndarray.tobytes)": lambda data: data.tobytes(),
        "bytearray(ndarray)": bytearray,
        "array.array('B', ndarray.tobytes())": lambda data: array.array("B", data.tobytes()),
        "memoryview(ndarray)": memoryview,
        "ndarray": lambda data: data,
    }
    element_wise = {  # the setter walks these element by element (seconds per call at 10 MB)
        False: ("memoryview(ndarray)", "ndarray"),
        True: ("memoryview(ndarray)", "ndarray", "bytes (ndarray.tobytes)", "bytearray(ndarray)"),
    }
    for label, nbytes in (("640x480 rgba8 image", 640 * 480 * 4), ("640x480 cloud, 32 B/point", 640 * 480 * 32)):
        data = np.random.default_rng(0).integers(0, 256, size=nbytes, dtype=np.uint8)
        print(f"  rclpy uint8[] fill, {label}:")
        used = "    RclpyTypes.create(Image, data=ndarray) [used]"
        _row(used, lambda: rclpy_types.create(Image, data=data), repeats, nbytes)
        _row("    Image(data=array.frombytes(...)) (constructor)", lambda: Image(data=frombytes(data)), repeats, nbytes)
        # Without the check_fields argument (Humble) checks are on, as they are under __debug__.
        for checks in (False, True) if rclpy_types.supports_check_fields else (True,):
            for name, pack in packs.items():
                row = f"    checks {'on ' if checks else 'off'}: msg.data = {name}"
                if name in element_wise[checks] and nbytes > 2_000_000:
                    print(f"  {row:<56s}  skipped (element-wise, seconds per call)")
                    continue

                def assign(pack=pack, checks=checks) -> None:
                    msg = Image(check_fields=checks) if rclpy_types.supports_check_fields else Image()
                    msg.data = pack(data)

                try:
                    _row(row, assign, 2 if name in element_wise[checks] else repeats, nbytes)
                except (AssertionError, TypeError) as err:
                    print(f"  {row:<56s}  rejected ({type(err).__name__})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per row (after one warm-up)")
    args = parser.parse_args(argv)
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs; median wall ms per call")
    for types in _providers():
        print(f"[{types.name}]")
        bench_images(types, args.repeats)
        bench_pointcloud(types, args.repeats)
    bench_rclpy_assignment(args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
