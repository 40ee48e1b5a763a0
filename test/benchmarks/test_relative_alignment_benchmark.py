"""``benchmarks/relative_alignment.py``: issue #14's done-when on two indoor drives.

Done when the aligned outputs have a lower frame-to-frame scale jitter AND a lower AbsRel under one
scale and shift fitted for the whole sequence than the raw ones, on every synthetic trajectory.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from lotus2_ros.geometry import PinholeCamera
from lotus2_ros.synthetic import camera_trajectory, make_scene, render

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "relative_alignment.py"
CAMERA = PinholeCamera.from_fov(128, 96, 70.0)  # the benchmark's figures hold at this size (within 1 %)


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("relative_alignment_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def raw_and_aligned(bench, seed: int, frames: int) -> tuple[dict[str, float], dict[str, float]]:
    """The benchmark's simulated predictions of the indoor drive ``seed`` (same random stream as it)."""
    scene = make_scene("indoor", seed)
    depths = [render(scene, CAMERA, pose).depth_m.astype(np.float64) for pose in camera_trajectory(scene, frames)]
    rng = np.random.default_rng(1000 * seed)
    preds = [bench.simulate(z, rng) for z in depths]
    aligned, _ = bench.align(preds)
    return bench.scale_figures(preds, depths)[0], bench.scale_figures(aligned, depths)[0]


def test_a_3_s_indoor_drive_comes_out_steadier_and_closer_to_one_scale_aligned_than_raw(bench):
    raw, aligned = raw_and_aligned(bench, seed=1, frames=30)
    assert aligned["jitter_pct"] < 0.3 * raw["jitter_pct"]
    assert aligned["absrel_pct"] < 0.6 * raw["absrel_pct"]


def test_a_6_s_indoor_drive_towards_the_end_wall_comes_out_steadier_and_closer_to_one_scale_than_raw(bench):
    """The drive that ends 2 m from the room's end wall. Without the images the aligner takes the
    approach for a normalisation change and drifts (raw 18.6 %, aligned 23.3 % AbsRel); with the
    images it moves its reference with the camera (geometry/view_motion.py). At the benchmark's own
    size, 320x240: the corner tracking needs the detail. Measured: jitter 14.06 -> 6.51 %, AbsRel
    18.61 -> 11.95 %."""
    scene = make_scene("indoor", 1)
    frames = [render(scene, bench.CAMERA, pose) for pose in camera_trajectory(scene, 60)]
    depths = [f.depth_m.astype(np.float64) for f in frames]
    rng = np.random.default_rng(1000)
    preds = [bench.simulate(z, rng) for z in depths]
    aligned, _ = bench.align(preds, rgbs=[f.rgb for f in frames])
    raw, new = bench.scale_figures(preds, depths)[0], bench.scale_figures(aligned, depths)[0]
    assert new["jitter_pct"] < 0.6 * raw["jitter_pct"], (raw, new)
    assert new["absrel_pct"] < 0.8 * raw["absrel_pct"], (raw, new)
