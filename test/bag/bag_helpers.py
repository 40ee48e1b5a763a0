"""Helpers of the bag tests: reading bags back, hashing folders, expected outputs from the pipeline."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import cv2
import numpy as np

from lotus2_ros.bag import ALL_OUTPUTS, BagPlan, ProcessBagOptions, RunStats, plan_bag_run, run_bag
from lotus2_ros.bag.synthetic import CAMERA_FRAME, SyntheticBag
from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.io.msg_types import rosbags_types
from lotus2_ros.model.spec import ModelSettings
from lotus2_ros.perception import Frame, PerceptionConfig, PerceptionPipeline
from lotus2_ros.perception.messages import output_messages
from lotus2_ros.perception.metric import MetricFitter, MetricReference

NUM_FRAMES = 3
#: What the tiny test model runs with (``tiny_engine.info.settings``), for plans made without loading it.
TINY_SETTINGS = ModelSettings(tasks=("depth", "normal"), process_res=1024, refine_steps=10)


def lidar_config(**changes) -> PerceptionConfig:
    return PerceptionConfig(**{"device": "cpu", "dtype": "fp32", "sharpen_steps": 1, "metric_source": "lidar",
                               "fit_min_points": 10, **changes})


def fixed_config(**changes) -> PerceptionConfig:
    return PerceptionConfig(**{"device": "cpu", "dtype": "fp32", "tasks": ["depth"], "sharpen_enabled": False,
                               "metric_source": "fixed", "fixed_scale": 1.0, "fixed_shift": 0.1, **changes})


@dataclass
class Run:
    """A processed bag."""

    source: SyntheticBag
    plan: BagPlan
    stats: RunStats
    output: Path
    export: Path
    input_digest: dict


def process_into(bag: SyntheticBag, engine, config: PerceptionConfig, tmp: Path) -> Run:
    """Process ``bag`` into ``tmp/out`` (and ``tmp/export``), remembering the input's digest.

    Every output the node publishes (core and refined, clouds with normals), so the tests can hold
    the bag to the node's messages; the default, leaner selection has tests of its own.
    """
    before = folder_digest(bag.path)
    options = ProcessBagOptions(bag.path, tmp / "out", config, export_dir=tmp / "export", write_core=True,
                                outputs=ALL_OUTPUTS)
    plan = plan_bag_run(options, engine.info.settings)
    stats = run_bag(plan, engine)
    return Run(bag, plan, stats, tmp / "out", tmp / "export", before)


def read_bag(path: Path) -> list[tuple[str, str, int, bytes]]:
    """``(topic, type, log time, raw)`` of every message, in the reader's order."""
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        return [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in reader.messages()]


def canonical(messages: list[tuple[str, str, int, bytes]]) -> list[tuple[str, str, int, bytes]]:
    """Messages in an order independent of how they were written."""
    return sorted(messages, key=lambda m: (m[2], m[0], m[3]))


def folder_digest(path: Path) -> dict[str, str]:
    """``{relative file: sha256}`` of everything under ``path`` (to prove it was not touched)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(path).rglob("*")) if p.is_file()}


def deserialize(raw: bytes, msgtype: str):
    return rosbags_types().typestore.deserialize_cdr(raw, msgtype)


def input_rgb(bag: SyntheticBag, compressed_raw: list[bytes] | None = None) -> list[np.ndarray]:
    """The images the pipeline must see: as rendered, or the bag's JPEGs decoded with OpenCV."""
    if compressed_raw is None:
        return bag.rgb
    out = []
    for raw in compressed_raw:
        msg = deserialize(raw, "sensor_msgs/msg/CompressedImage")
        bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def expected_outputs(engine, config: PerceptionConfig, bag: SyntheticBag, rgb: list[np.ndarray],
                     sharpen_steps: int, write_core: bool = True,
                     T_camera_lidar: np.ndarray | None = None) -> dict[tuple[str, int], object]:
    """``{(relative topic, stamp): message}`` from the node's code path, frame by frame.

    The frames are built here from the synthetic ground truth (not by the bag tool): raw
    calibration, the LiDAR sweep taken with each image (float64, as PointCloud2 readers give
    it) and the mount's extrinsic (``T_camera_lidar``, default the simulated mount's).
    """
    T = bag.T_camera_lidar if T_camera_lidar is None else T_camera_lidar
    fitter = MetricFitter(config) if config.metric_source == "lidar" else None
    pipeline = PerceptionPipeline(config, engine, metric=fitter)
    types = rosbags_types()
    expected: dict[tuple[str, int], object] = {}
    for i, stamp in enumerate(bag.stamps_ns):
        ref = None
        if config.metric_source == "lidar":
            ref = MetricReference(points_lidar_m=bag.lidar_points_m[i].astype(np.float64), T_camera_lidar=T,
                                  stamp_ns=bag.lidar_stamps_ns[i])
        frame = Frame(rgb=rgb[i], stamp_ns=stamp, frame_id=CAMERA_FRAME, calibration=CameraCalibration(bag.camera),
                      reference=ref)
        core, ctx = pipeline.process(frame)
        outs = [core]
        if sharpen_steps:
            outs = ([core] if write_core else []) + [pipeline.start_refinement(ctx, sharpen_steps).result()]
        for out in outs:
            for topic, msg in output_messages(types, out).items():
                expected[(topic, stamp)] = msg
    return expected


def _float_view(msg) -> np.ndarray | None:
    enc = getattr(msg, "encoding", None)
    if enc in ("32FC1", "32FC3"):
        return np.frombuffer(bytes(msg.data), np.float32)
    if hasattr(msg, "point_step"):
        return np.frombuffer(bytes(msg.data), np.float32)
    return None


def assert_same_message(actual, expected, where: str, rtol: float = 1e-6) -> None:
    """Field by field; float payloads (32FC images, clouds, floats) within ``rtol`` (NaN equal), the rest exact."""
    assert type(actual).__name__ == type(expected).__name__, where
    view_a, view_e = _float_view(actual), _float_view(expected)
    for f in fields(expected):
        a, e = getattr(actual, f.name), getattr(expected, f.name)
        here = f"{where}.{f.name}"
        if f.name == "data" and view_e is not None:
            assert view_a.shape == view_e.shape, here
            np.testing.assert_allclose(view_a, view_e, rtol=rtol, atol=1e-7, equal_nan=True, err_msg=here)
        elif is_dataclass(e):
            assert_same_message(a, e, here, rtol)
        elif isinstance(e, np.ndarray):
            np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64),
                                       rtol=rtol, equal_nan=True, err_msg=here)
        elif isinstance(e, list):
            assert len(a) == len(e), here
            for k, (x, y) in enumerate(zip(a, e, strict=True)):
                assert_same_message(x, y, f"{here}[{k}]", rtol)
        elif isinstance(e, float):
            assert (math.isnan(a) and math.isnan(e)) or math.isclose(a, e, rel_tol=rtol, abs_tol=1e-12), \
                f"{here}: {a} != {e}"
        else:
            assert a == e, f"{here}: {a!r} != {e!r}"
