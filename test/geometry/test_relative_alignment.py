"""Relative outputs on one scale through a sequence: analytic affine maps, motion, resets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lotus2_ros.geometry import PinholeCamera
from lotus2_ros.geometry.relative_alignment import RelativeAligner, RelativeAlignmentConfig, fit_affine_robust
from lotus2_ros.synthetic import camera_trajectory, make_scene, render

CAMERA = PinholeCamera.from_fov(128, 96, 70.0)
PERIOD_NS = 100_000_000


@pytest.fixture(scope="module")
def sequence():
    scene = make_scene("indoor", 3)
    return [1.0 / render(scene, CAMERA, pose).depth_m for pose in camera_trajectory(scene, 8)]


def test_the_robust_fit_recovers_an_affine_map_through_30_percent_outliers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 2000)
    y = 1.7 * x - 0.2
    bad = rng.random(2000) < 0.3
    y[bad] = rng.uniform(-3, 3, bad.sum())
    a, b = fit_affine_robust(x, y)
    assert a == pytest.approx(1.7, rel=1e-6) and b == pytest.approx(-0.2, abs=1e-6)
    assert all(math.isnan(v) for v in fit_affine_robust(np.ones(50), y[:50]))


@pytest.mark.parametrize("space", ["disparity", "depth"])
def test_a_still_scene_under_per_frame_affine_maps_comes_out_on_the_first_frames_scale(sequence, space):
    truth = sequence[0] if space == "disparity" else 1.0 / sequence[0]
    rng = np.random.default_rng(1)
    aligner = RelativeAligner(RelativeAlignmentConfig(space=space))
    first = None
    for k in range(6):
        a, b = math.exp(rng.normal(0, 0.3)), rng.normal(0, 0.2)
        out = aligner.update((a * truth + b).astype(np.float32), k * PERIOD_NS)
        if first is None:
            first, (a0, b0) = out.values, (a, b)
            assert out.reset and out.reason == "first frame" and (out.scale, out.shift) == (1.0, 0.0)
            continue
        assert not out.reset and out.inlier_fraction == 1.0
        np.testing.assert_allclose(out.values, first, rtol=1e-4, atol=1e-4 * float(np.ptp(first)))
        # a0·D + b0 = α·(a·D + b) + β  ⇒  α = a0/a, β = b0 − α·b
        assert out.scale == pytest.approx(a0 / a, rel=1e-4)
        assert out.shift == pytest.approx(b0 - a0 / a * b, abs=1e-4)


def test_a_moving_camera_with_jittering_scale_is_steadied(sequence):
    """Per-frame affine maps of the true disparity of a moving camera: the aligned frames need nearly
    one (s, t) — the per-frame least-squares scale varies far less than before."""
    rng = np.random.default_rng(2)
    aligner = RelativeAligner()
    raw_scales, aligned_scales = [], []
    for k, disparity in enumerate(sequence):
        a, b = math.exp(rng.normal(0, 0.1)), rng.normal(0, 0.05)
        pred = (a * disparity + b).astype(np.float32)
        out = aligner.update(pred, k * PERIOD_NS)
        for values, scales in ((pred, raw_scales), (out.values, aligned_scales)):
            A = np.stack([values.ravel(), np.ones(values.size)], 1).astype(np.float64)
            scales.append(np.linalg.lstsq(A, disparity.ravel(), rcond=None)[0][0])
    jitter = [float(np.std(np.diff(np.log(s)))) for s in (raw_scales, aligned_scales)]
    assert jitter[1] < 0.2 * jitter[0]


def test_a_new_scene_a_gap_and_time_going_back_reset_the_reference(sequence):
    aligner = RelativeAligner(RelativeAlignmentConfig(max_gap_ns=500_000_000))
    aligner.update(sequence[0], 0)
    assert not aligner.update(sequence[1], PERIOD_NS).reset
    other = 1.0 / render(make_scene("street", 5), CAMERA, camera_trajectory(make_scene("street", 5), 1)[0]).depth_m
    other = np.where(np.isfinite(other), other, 0.0)
    reference = aligner._reference.copy()
    cut = aligner.update(other, 2 * PERIOD_NS)
    assert cut.reset and "scene change" in cut.reason and cut.inlier_fraction < 0.5
    # No geometric tie to the old scene: the output keeps its range (median and IQR of the reference).
    q = np.percentile(aligner._grid(cut.values), (25, 50, 75))
    q_ref = np.percentile(reference, (25, 50, 75))
    assert q[1] == pytest.approx(q_ref[1], abs=1e-5) and q[2] - q[0] == pytest.approx(q_ref[2] - q_ref[0], rel=1e-4)
    np.testing.assert_allclose(cut.values, cut.scale * other + cut.shift, rtol=1e-5)
    gap = aligner.update(other, 9 * PERIOD_NS)
    assert gap.reason.startswith("gap") and (gap.scale, gap.shift) == (1.0, 0.0)  # the model's own scale again
    assert aligner.update(other, 8 * PERIOD_NS).reason == "time jumped back"


def test_invalid_pixels_stay_invalid_and_do_not_steer_the_fit(sequence):
    aligner = RelativeAligner()
    aligner.update(sequence[0], 0)
    pred = 2.0 * sequence[1] + 0.1
    pred[10:30, 20:60] = np.nan
    out = aligner.update(pred.astype(np.float32), PERIOD_NS)
    assert np.isnan(out.values[10:30, 20:60]).all() and np.isfinite(out.values[40:]).all()
    assert out.scale == pytest.approx(0.5, rel=0.05)


def test_bad_settings_are_refused_naming_them():
    with pytest.raises(ValueError, match="space"):
        RelativeAlignmentConfig(space="metres")
    with pytest.raises(ValueError, match="reference_weight"):
        RelativeAlignmentConfig(reference_weight=0.0)


def test_the_fits_median_is_numpys_bit_for_bit():
    from lotus2_ros.geometry.relative_alignment import _median

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 17, 2304, 2305):
        v = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6)
        assert _median(v) == float(np.median(v)), n
    v = np.array([1.0, 1.0 + 2.0 ** -52, 3.0, 3.0 + 2.0 ** -51])  # mean of two neighbours that round
    assert _median(v) == float(np.median(v))


def _grid_checking_every_pixel(v: np.ndarray, gh: int, gw: int) -> np.ndarray:
    """The grid as first written: the full-size finiteness check before anything else."""
    import cv2

    finite = np.isfinite(v)
    if finite.all():
        return cv2.resize(v, (gw, gh), interpolation=cv2.INTER_AREA)
    total = cv2.resize(np.where(finite, v, 0.0).astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    count = cv2.resize(finite.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0.25, total / count, np.nan).astype(np.float32)


@pytest.mark.parametrize("shape", [(97, 131), (60, 200), (36, 64), (31, 45)])
def test_one_invalid_pixel_anywhere_gives_the_grid_of_the_full_check(shape):
    """The grid skips the full-size finiteness check when the area-averaged grid is finite: right
    only if every pixel (borders and pixels shared by two cells included) weighs in some cell. One
    NaN (every position) or Inf (every 7th) anywhere gives the grid the full check gives, bit for bit."""
    aligner = RelativeAligner()
    rng = np.random.default_rng(1)
    base = rng.random(shape, dtype=np.float32)
    gh, gw = aligner._grid(base).shape
    np.testing.assert_array_equal(aligner._grid(base), _grid_checking_every_pixel(base, gh, gw))
    for i in range(shape[0] * shape[1]):
        for bad in (np.nan,) + ((np.inf, -np.inf) if i % 7 == 0 else ()):
            v = base.copy()
            v.flat[i] = bad
            grid = aligner._grid(v)
            np.testing.assert_array_equal(grid, _grid_checking_every_pixel(v, gh, gw), err_msg=f"{bad} at {i}")
            if grid.size * 4 <= v.size:  # a cell of several pixels: one invalid pixel never empties it
                assert np.isfinite(grid).all(), (bad, i)
    huge = np.full(shape, 3e38, np.float32)  # finite, but area sums overflow: as the full check gives it
    np.testing.assert_array_equal(aligner._grid(huge), _grid_checking_every_pixel(huge, gh, gw))


def test_frames_aligned_in_place_equal_frames_aligned_into_new_arrays(sequence):
    """``out=prediction`` (what the pipeline does) gives the values of the default, restarts included."""
    rng = np.random.default_rng(5)
    frames = [(math.exp(rng.normal(0, 0.2)) * d + rng.normal(0, 0.1)).astype(np.float32) for d in sequence]
    frames.insert(4, np.where(np.isfinite(frames[0]), 0.3, np.nan).astype(np.float32)[::-1].copy())  # a cut
    fresh, in_place = RelativeAligner(), RelativeAligner()
    stamps = [k * PERIOD_NS for k in range(len(frames))]
    stamps[6] += 5 * 10**9  # a gap: restart with the model's own scale (values unchanged)
    for frame, stamp in zip(frames, stamps, strict=True):
        want = fresh.update(frame, stamp)
        work = frame.copy()
        got = in_place.update(work, stamp, out=work)
        assert got.values is work and (got.scale, got.shift, got.reset) == (want.scale, want.shift, want.reset)
        assert np.array_equal(got.values, want.values, equal_nan=True)
    with pytest.raises(ValueError, match=r"out must be float32 \(96, 128\)"):
        in_place.update(frames[0], stamps[-1] + PERIOD_NS, out=np.empty((96, 128), np.float64))
