"""Robust disparity scale/shift fit and metric depth, against synthetic scenes with ground truth."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lotus2_ros.geometry import (
    FitReason,
    LidarProjectionConfig,
    PinholeCamera,
    ScaleFitConfig,
    fit_disparity_affine,
    metric_depth_from_disparity,
    project_lidar_points,
    sample_disparity,
)
from lotus2_ros.synthetic import LidarModel, camera_trajectory, make_scene, render, simulate_lidar

# Half a KITTI camera (1242x375, f = 721.5 px).
CAMERA = PinholeCamera(621, 188, 360.77, 360.77, 310.0, 93.5)
TRUE_SCALE, TRUE_SHIFT = 1.7, 0.02  # 1/z = s·d + t of the simulated prediction


def _prediction(
    depth_m: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: float = 0.0,
    bias: float = 0.0,
    edges: bool = False,
) -> np.ndarray:
    """An affine-invariant disparity from the true depth, with a network's typical errors.

    Args:
        depth_m: [H,W] true depth (NaN = sky, disparity 0 after the affine map's inverse).
        rng: Noise generator.
        noise: Per-pixel Gaussian relative error of the inverse depth (0.02 = 2 %).
        bias: Amplitude of a smooth multiplicative low-frequency error (0.05 = ±5 %).
        edges: Fatten the foreground by 2 px and blur across depth edges (a network's
            "flying" values next to discontinuities).
    """
    # Errors act on the true inverse depth, relative to it (a network's depth errors grow with
    # depth); then the unknown affine map. Sky (NaN) has inverse depth 0.
    inverse = np.where(np.isfinite(depth_m), 1.0 / depth_m, 0.0).astype(np.float32)
    if edges:
        kernel = np.ones((5, 5), np.uint8)
        spread = float(inverse.max() - inverse.min())
        band = cv2.dilate(inverse, kernel) - cv2.erode(inverse, kernel) > 0.05 * spread
        smeared = cv2.GaussianBlur(cv2.dilate(inverse, kernel), (0, 0), 1.5)
        inverse = np.where(band, smeared, inverse)
    factor = np.ones_like(inverse)
    if bias:
        H, W = inverse.shape
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        field = np.sin(2 * np.pi * (0.8 * xx / W + 0.1)) * np.cos(2 * np.pi * (0.6 * yy / H + 0.2))
        factor += bias * field
    if noise:
        factor += rng.normal(0.0, noise, inverse.shape).astype(np.float32)
    d = (inverse * factor - TRUE_SHIFT) / TRUE_SCALE
    return d.astype(np.float32)


def _oracle(disparity: np.ndarray, depth_m: np.ndarray) -> tuple[float, float]:
    """Least-squares ``1/z ≈ s·d + t`` on every pixel with ground truth."""
    valid = np.isfinite(depth_m)
    A = np.stack([disparity[valid], np.ones(valid.sum())], axis=1).astype(np.float64)
    s, t = np.linalg.lstsq(A, 1.0 / depth_m[valid].astype(np.float64), rcond=None)[0]
    return float(s), float(t)


def _abs_rel(depth_m: np.ndarray, truth_m: np.ndarray) -> tuple[float, float]:
    """AbsRel over the ground-truth pixels and the fraction of them with a metric value."""
    valid = np.isfinite(truth_m)
    estimate, truth = depth_m[valid], truth_m[valid]
    has_value = np.isfinite(estimate)
    error = np.abs(estimate[has_value] - truth[has_value]) / truth[has_value]
    return float(error.mean()), float(has_value.mean())


@pytest.fixture(scope="module", params=[("indoor", 0), ("street", 0), ("street", 1)])
def scene_frame(request):
    kind, seed = request.param
    scene = make_scene(kind, seed)
    pose = camera_trajectory(scene, 1)[0]
    return scene, pose, render(scene, CAMERA, pose)


def _fit_lidar(scene, pose, frame, disparity, lidar: LidarModel, seed: int = 0):
    scan = simulate_lidar(scene, lidar, pose, seed)
    projection = project_lidar_points(scan.points_m, lidar.T_camera_lidar, CAMERA, rectified=True)
    samples = sample_disparity(disparity, projection)
    return fit_disparity_affine(samples.disparity, samples.z_m), scan, samples


def test_fitted_metric_depth_is_within_5_percent_of_the_oracle_with_noisy_sparse_lidar(
    scene_frame,
):
    scene, pose, frame = scene_frame
    disparity = _prediction(
        frame.depth_m, np.random.default_rng(1), noise=0.02, bias=0.05, edges=True
    )
    lidar = LidarModel(num_beams=16, range_noise_std_m=0.02, outlier_fraction=0.10)
    fit, scan, samples = _fit_lidar(scene, pose, frame, disparity, lidar)
    assert fit.valid, fit.reason
    assert scan.is_outlier.mean() > 0.08
    s_oracle, t_oracle = _oracle(disparity, frame.depth_m)
    oracle_abs_rel, oracle_coverage = _abs_rel(
        metric_depth_from_disparity(disparity, s_oracle, t_oracle), frame.depth_m
    )
    abs_rel, coverage = _abs_rel(
        metric_depth_from_disparity(disparity, fit.scale, fit.shift), frame.depth_m
    )
    assert 0.01 < oracle_abs_rel < 0.1  # the errors are real
    assert abs_rel <= 1.05 * oracle_abs_rel
    assert coverage >= oracle_coverage - 0.001
    # The outliers the simulator injected are not inliers of the fit.
    outlier = scan.is_outlier[samples.indices]
    far_off = outlier & (np.abs(samples.z_m / scan.true_range_m[samples.indices] - 1) > 0.5)
    assert far_off.sum() > 10 and not fit.inliers[far_off].any()


def test_a_clean_affine_prediction_gives_back_the_true_scale_and_shift(scene_frame):
    scene, pose, frame = scene_frame
    disparity = _prediction(frame.depth_m, np.random.default_rng(0))
    lidar = LidarModel(
        num_beams=16, range_noise_std_m=0.0, dropout_probability=0.0, outlier_fraction=0.0
    )
    fit, _, _ = _fit_lidar(scene, pose, frame, disparity, lidar)
    assert fit.valid, fit.reason
    assert fit.scale == pytest.approx(TRUE_SCALE, rel=2e-3)
    assert fit.shift == pytest.approx(TRUE_SHIFT, abs=2e-3 * TRUE_SCALE * 0.1)
    assert fit.abs_rel < 1e-3
    abs_rel, coverage = _abs_rel(
        metric_depth_from_disparity(disparity, fit.scale, fit.shift), frame.depth_m
    )
    assert abs_rel < 1e-3 and coverage == 1.0


def _line(n: int, rng: np.random.Generator, noise: float = 0.01):
    """Pairs on ``1/z = 0.8·d + 0.05`` with ``noise`` relative depth noise."""
    z = rng.uniform(1.0, 40.0, n)
    d = (1.0 / z - 0.05) / 0.8
    return d, z * (1.0 + noise * rng.standard_normal(n))


def test_quality_figures_describe_the_inliers():
    rng = np.random.default_rng(3)
    d, z = _line(2000, rng)
    z[:300] = rng.uniform(0.5, 80.0, 300)  # 15 % gross outliers
    fit = fit_disparity_affine(d.astype(np.float32), z.astype(np.float32))
    assert fit.valid and fit.reason == "" and fit.reason_code == FitReason.OK and fit.fit_space == "disparity"
    assert fit.scale == pytest.approx(0.8, rel=0.02)
    assert fit.shift == pytest.approx(0.05, abs=0.002)
    assert fit.num_points == 2000
    inliers = fit.inliers
    assert inliers[300:].mean() > 0.99 and inliers[:300].mean() < 0.2
    assert fit.num_inliers == inliers.sum()
    z_hat = 1.0 / (fit.scale * d[inliers] + fit.shift)
    assert fit.rmse_m == pytest.approx(np.sqrt(np.mean((z_hat - z[inliers]) ** 2)), rel=1e-4)
    assert fit.abs_rel == pytest.approx(np.mean(np.abs(z_hat - z[inliers]) / z[inliers]), rel=1e-4)
    assert fit.abs_rel == pytest.approx(0.008, abs=0.002)
    lo, hi = fit.disparity_range
    assert np.quantile(d[inliers], 0.03) < lo < hi < np.quantile(d[inliers], 0.97)


def test_the_fit_is_deterministic_and_ignores_nan_pairs():
    rng = np.random.default_rng(4)
    d, z = _line(500, rng)
    z[:40] = rng.uniform(0.5, 80.0, 40)
    d_nan, z_nan = np.append(d, [np.nan, 0.3, 0.4]), np.append(z, [5.0, np.nan, -2.0])
    first = fit_disparity_affine(d_nan, z_nan)
    second = fit_disparity_affine(d_nan, z_nan)
    assert (first.scale, first.shift) == (second.scale, second.shift)
    assert first.num_points == 500 and not first.inliers[500:].any()
    other_seed = fit_disparity_affine(d_nan, z_nan, ScaleFitConfig(seed=7))
    assert other_seed.scale == pytest.approx(first.scale, rel=1e-3)


@pytest.mark.parametrize(
    "case, reason, code",
    [
        ("no points", "too few points", FitReason.TOO_FEW_POINTS),
        ("nan points", "too few points", FitReason.TOO_FEW_POINTS),
        ("all outliers", "too few inliers", FitReason.TOO_FEW_INLIERS),
        ("one depth", "no depth spread", FitReason.NO_DEPTH_SPREAD),
        ("constant prediction", "no spread in predicted disparity", FitReason.NO_DISPARITY_SPREAD),
        ("noise prediction", "too few inliers", FitReason.TOO_FEW_INLIERS),
        ("negative scale", "negative scale", FitReason.NEGATIVE_SCALE),
    ],
)
def test_degenerate_inputs_give_an_invalid_fit_and_no_metric_depth(case, reason, code):
    rng = np.random.default_rng(5)
    d, z = _line(1000, rng)
    if case == "no points":
        d, z = d[:0], z[:0]
    elif case == "nan points":
        d = np.full_like(d, np.nan)
    elif case == "all outliers":
        z = rng.uniform(0.3, 100.0, z.size)
    elif case == "one depth":
        z = np.full_like(z, 7.0) * (1.0 + 0.003 * rng.standard_normal(z.size))
    elif case == "constant prediction":
        d = np.full_like(d, 0.4)
    elif case == "noise prediction":
        d = rng.uniform(0.0, 1.0, d.size)
    elif case == "negative scale":
        d = -d  # a depth-like map passed as disparity: larger = farther
    fit = fit_disparity_affine(d, z)
    assert not fit.valid
    assert reason in fit.reason and fit.reason_code == code
    assert math.isnan(fit.scale) and math.isnan(fit.shift)
    with pytest.raises(ValueError, match="scale"):
        metric_depth_from_disparity(np.ones((2, 2)), fit.scale, fit.shift)


def test_metric_depth_is_nan_where_the_inverse_depth_is_not_positive_or_outside_the_window():
    disparity = np.array([[-0.5, -0.1, 0.0, 0.05], [0.1, 0.5, 1.0, np.nan]], dtype=np.float32)
    depth = metric_depth_from_disparity(disparity, 2.0, 0.1, min_depth_m=0.5, max_depth_m=4.0)
    assert depth.dtype == np.float32
    inverse = 2.0 * disparity + 0.1  # [-0.9, -0.1, 0.1, 0.2], [0.3, 1.1, 2.1, nan]
    expected = np.where((inverse >= 0.25) & (inverse <= 2.0), 1.0 / inverse, np.nan)
    np.testing.assert_allclose(depth, expected, rtol=1e-6)
    assert np.isnan(depth[0, :3]).all() and np.isnan(depth[1, 2:]).all()
    unbounded = metric_depth_from_disparity(disparity, 2.0, 0.1)
    assert np.isnan(unbounded[0, :2]).all() and unbounded[0, 2] == pytest.approx(10.0)
    # An infinite disparity would be depth 0, which a float depth image treats as valid.
    infinite = metric_depth_from_disparity(np.array([np.inf, -np.inf], np.float32), 2.0, 0.1)
    assert np.isnan(infinite).all()
    with pytest.raises(ValueError, match="scale"):
        metric_depth_from_disparity(disparity, -1.0, 0.1)
    with pytest.raises(ValueError, match="min_depth_m"):
        metric_depth_from_disparity(disparity, 1.0, 0.1, min_depth_m=5.0, max_depth_m=1.0)


def _reference_metric_depth(disparity, scale, shift, min_depth_m=0.0, max_depth_m=math.inf):
    """Mask form: 1 / (s·d + t) in float32, NaN outside the window, for non-positive or NaN."""
    inverse = disparity.astype(np.float32) * np.float32(scale) + np.float32(shift)
    lo = np.float32(1.0 / max_depth_m if math.isfinite(max_depth_m) else 0.0)
    hi = np.float32(1.0 / min_depth_m if min_depth_m > 0.0 else np.finfo(np.float32).max)
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = (inverse > 0.0 if lo == 0.0 else inverse >= lo) & (inverse <= hi)
        return np.where(valid, np.float32(1.0) / inverse, np.float32(np.nan))


@pytest.mark.parametrize("window", [(0.0, math.inf), (0.5, 4.0), (0.0, 4.0), (0.5, math.inf)])
@pytest.mark.parametrize("case", ["all valid", "some invalid", "NaN"])
def test_metric_depth_is_bit_identical_to_the_mask_form(window, case):
    rng = np.random.default_rng(7)
    disparity = rng.uniform(0.1, 0.9, (30, 40)).astype(np.float32)  # inverse in [0.3, 1.9]: inside every window
    if case == "some invalid":
        disparity[0, :4] = [-1.0, 0.0, 5.0, -0.05]
    elif case == "NaN":
        disparity[2, 3] = np.nan
    depth = metric_depth_from_disparity(disparity, 2.0, 0.1, *window)
    expected = _reference_metric_depth(disparity, 2.0, 0.1, *window)
    assert depth.dtype == np.float32 and depth.shape == disparity.shape
    assert np.array_equal(depth, expected, equal_nan=True)
    assert np.array_equal(depth[np.isfinite(depth)].view(np.uint32), expected[np.isfinite(expected)].view(np.uint32))


def test_the_edge_test_is_what_keeps_edge_errors_out_of_the_fit(scene_frame):
    scene, pose, frame = scene_frame
    disparity = _prediction(frame.depth_m, np.random.default_rng(2), edges=True)
    lidar = LidarModel(num_beams=16, range_noise_std_m=0.0, outlier_fraction=0.0)
    scan = simulate_lidar(scene, lidar, pose, 0)
    projection = project_lidar_points(scan.points_m, lidar.T_camera_lidar, CAMERA, rectified=True)
    with_test = sample_disparity(disparity, projection)
    without = sample_disparity(disparity, projection, LidarProjectionConfig(edge_window_px=0))

    def wrong(samples) -> int:
        """Samples whose prediction is off by more than 5 % in depth (with the true s, t)."""
        z_pred = 1.0 / (TRUE_SCALE * samples.disparity + TRUE_SHIFT)
        return int(np.count_nonzero(np.abs(z_pred / samples.z_m - 1.0) > 0.05))

    assert wrong(without) > 3 * max(wrong(with_test), 1)


def test_the_depth_space_fit_recovers_z_equals_s_d_plus_t_through_outliers():
    """For models that predict affine-invariant depth: z ≈ s·d + t, same robustness as in disparity space."""
    from lotus2_ros.geometry.scale_fit import fit_depth_affine, metric_depth_from_depth

    rng = np.random.default_rng(3)
    d = rng.uniform(0.1, 0.9, 4000)
    z = 8.0 * d + 0.5  # metres
    z_noisy = z * (1 + rng.normal(0, 0.01, z.size))
    bad = rng.random(z.size) < 0.2
    z_noisy[bad] *= rng.uniform(1.5, 3.0, bad.sum())  # 20 % gross outliers
    fit = fit_depth_affine(d, z_noisy)
    assert fit.valid and fit.fit_space == "depth"
    assert fit.scale == pytest.approx(8.0, rel=0.01) and fit.shift == pytest.approx(0.5, abs=0.05)
    assert not fit.inliers[bad].any() or fit.inliers[bad].mean() < 0.05
    depth = metric_depth_from_depth(np.array([0.1, 0.5, -1.0, np.nan], np.float32), 8.0, 0.5, 0.1, 4.0)
    np.testing.assert_allclose(depth[:1], [1.3], rtol=1e-6)
    assert np.isnan(depth[1:]).all()  # 4.5 m beyond max, negative, NaN
    # The same data fitted in disparity space is refused or poor: the space is the model's, not a guess.
    inverse = fit_disparity_affine(d, z)
    assert not inverse.valid or inverse.abs_rel > 0.02


@pytest.mark.parametrize("space", ["disparity", "depth"])
def test_metric_depth_is_written_into_a_given_array(space):
    from lotus2_ros.geometry.scale_fit import metric_depth_from_relative

    relative = np.random.default_rng(8).uniform(0.1, 0.9, (30, 40)).astype(np.float32)
    relative[0, :3] = [-5.0, np.nan, 50.0]  # invalid: NaN in the result as without out
    out = np.full(relative.shape, 7.0, np.float32)
    got = metric_depth_from_relative(relative, space, 2.0, 0.1, 0.5, 4.0, out=out)
    assert got is out
    assert np.array_equal(out, metric_depth_from_relative(relative, space, 2.0, 0.1, 0.5, 4.0), equal_nan=True)
    with pytest.raises(ValueError, match=r"out must be float32 \(30, 40\)"):
        metric_depth_from_relative(relative, space, 2.0, 0.1, out=np.empty((30, 40), np.float64))
