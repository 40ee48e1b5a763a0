"""Metric-depth fit to LiDAR: per-frame cost and accuracy against an oracle (prints figures).

    python benchmarks/metric_fit.py [--repeats 200] [--seeds 3] [--only timing]

Timing: a 120 000-point scan (64 beams x 1875 azimuth steps, 2 cm noise, 1 % outliers, all
returns from a closed room) projected into a 1242x375 KITTI-like image (f = 721.5 px). Median
and fastest wall time per call, and median CPU time, of each stage: projection with the
baseline-occlusion test, disparity sampling with the depth-edge test, the robust fit, the
metric depth image, and the whole per-frame overhead (those plus the temporal filter). The
ratio compares with one float32 multiply-add over the 1242x375 image in the same process. On a
shared machine the median follows the load (printed); the fastest call approximates an idle CPU.

Occlusions: LiDAR points hidden from the camera (ray-cast ground truth) that survive projection
and the depth-edge test, with and without the baseline-occlusion test.

Accuracy: 16-beam LiDAR, KITTI-like image, indoor and street scenes (several seeds). The
prediction is the true disparity under an affine map (1/z = 1.7·d + 0.02) plus a network's
typical errors; the oracle is the least-squares fit 1/z ≈ s·d + t on every pixel with ground
truth. Both are scored by AbsRel of the metric depth over all ground-truth pixels.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np

from lotus2_ros.geometry import (
    LidarProjectionConfig,
    PinholeCamera,
    ScaleShiftFilter,
    fit_disparity_affine,
    metric_depth_from_disparity,
    project_lidar_points,
    sample_disparity,
)
from lotus2_ros.synthetic import (
    LidarModel,
    camera_trajectory,
    make_scene,
    render,
    simulate_lidar,
    transform_points,
)
from lotus2_ros.synthetic.scene import cast_rays

KITTI = PinholeCamera(1242, 375, 721.5377, 721.5377, 609.5593, 172.854)
TRUE_SCALE, TRUE_SHIFT = 1.7, 0.02
MIN_DEPTH_M, MAX_DEPTH_M = 0.3, 120.0

# Conditions: (name, LiDAR settings, prediction errors).
PREDICTION_ERRORS = dict(noise=0.02, bias=0.05)
CONDITIONS = (
    ("clean", dict(range_noise_std_m=0.0, outlier_fraction=0.0, dropout_probability=0.0), {}),
    ("pred. errors", dict(range_noise_std_m=0.0, outlier_fraction=0.0), PREDICTION_ERRORS),
    ("+2 cm noise", dict(range_noise_std_m=0.02, outlier_fraction=0.0), PREDICTION_ERRORS),
    ("+10 % outliers", dict(range_noise_std_m=0.02, outlier_fraction=0.1), PREDICTION_ERRORS),
    (
        "+edge errors",
        dict(range_noise_std_m=0.02, outlier_fraction=0.1),
        dict(PREDICTION_ERRORS, edges=True),
    ),
)


def prediction(
    depth_m: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: float = 0.0,
    bias: float = 0.0,
    edges: bool = False,
) -> np.ndarray:
    """Affine-invariant disparity from the true depth, with a per-pixel Gaussian relative error
    of the inverse depth (``noise``), a smooth multiplicative bias (±``bias``) and, with
    ``edges``, foreground fattened by 2 px and blurred across depth edges."""
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


def abs_rel(depth_m: np.ndarray, truth_m: np.ndarray) -> float:
    valid = np.isfinite(truth_m)
    estimate = depth_m[valid]
    has_value = np.isfinite(estimate)
    truth = truth_m[valid][has_value]
    return float(np.mean(np.abs(estimate[has_value] - truth) / truth))


def oracle_fit(disparity: np.ndarray, depth_m: np.ndarray) -> tuple[float, float]:
    valid = np.isfinite(depth_m)
    A = np.stack([disparity[valid], np.ones(valid.sum())], axis=1).astype(np.float64)
    s, t = np.linalg.lstsq(A, 1.0 / depth_m[valid].astype(np.float64), rcond=None)[0]
    return float(s), float(t)


def _median_ms(function: Callable[[], object], repeats: int) -> tuple[float, float, float]:
    """Median wall, fastest wall and median CPU milliseconds per call (after a warm-up)."""
    function()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        function()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return 1e3 * statistics.median(wall), 1e3 * min(wall), 1e3 * statistics.median(cpu)


def timing(repeats: int) -> None:
    scene = make_scene("indoor", 0)
    pose = camera_trajectory(scene, 1)[0]
    lidar = LidarModel(
        num_beams=64,
        horizontal_resolution_deg=360.0 / 1875,
        dropout_probability=0.0,
        outlier_fraction=0.01,
    )
    scan = simulate_lidar(scene, lidar, pose, 0)
    frame = render(scene, KITTI, pose)
    disparity = prediction(frame.depth_m, np.random.default_rng(0), **PREDICTION_ERRORS)
    points, T = scan.points_m, lidar.T_camera_lidar
    config = LidarProjectionConfig(min_range_m=MIN_DEPTH_M, max_range_m=MAX_DEPTH_M)
    projection = project_lidar_points(points, T, KITTI, rectified=True, config=config)
    samples = sample_disparity(disparity, projection, config)
    fit = fit_disparity_affine(samples.disparity, samples.z_m)
    filter_ = ScaleShiftFilter()
    stamp = iter(range(0, 10**18, 100_000_000))

    def frame_overhead() -> np.ndarray:
        p = project_lidar_points(points, T, KITTI, rectified=True, config=config)
        s = sample_disparity(disparity, p, config)
        f = fit_disparity_affine(s.disparity, s.z_m)
        state = filter_.update(f, next(stamp))
        return metric_depth_from_disparity(
            disparity, state.scale, state.shift, MIN_DEPTH_M, MAX_DEPTH_M
        )

    no_occlusion = LidarProjectionConfig(
        min_range_m=MIN_DEPTH_M, max_range_m=MAX_DEPTH_M, occlusion_filter=False
    )
    reference = np.empty_like(disparity)

    def image_pass() -> None:
        np.multiply(disparity, np.float32(1.5), out=reference)
        np.add(reference, np.float32(0.1), out=reference)

    def project() -> object:
        return project_lidar_points(points, T, KITTI, rectified=True, config=config)

    def project_without_occlusion() -> object:
        return project_lidar_points(points, T, KITTI, rectified=True, config=no_occlusion)

    def sample() -> object:
        return sample_disparity(disparity, projection, config)

    def fit_only() -> object:
        return fit_disparity_affine(samples.disparity, samples.z_m)

    def project_sample_fit() -> object:
        s = sample_disparity(disparity, project(), config)
        return fit_disparity_affine(s.disparity, s.z_m)

    def metric_image() -> object:
        return metric_depth_from_disparity(
            disparity, fit.scale, fit.shift, MIN_DEPTH_M, MAX_DEPTH_M
        )

    stages: list[tuple[str, Callable[[], object]]] = [
        ("reference: one multiply-add over the image", image_pass),
        ("projection, no occlusion test", project_without_occlusion),
        ("projection (incl. occlusion test)", project),
        ("disparity sampling + edge test", sample),
        ("robust fit (RANSAC + IRLS)", fit_only),
        ("projection + sampling + fit", project_sample_fit),
        ("metric depth image", metric_image),
        ("full per-frame metric overhead", frame_overhead),
    ]
    print(
        f"Timing: {points.shape[0]} LiDAR points -> {KITTI.width_px}x{KITTI.height_px} image; "
        f"{projection.num_in_view} in view, {projection.num_occluded} occluded, "
        f"{samples.num_edge_rejected} at depth edges, fit {fit.num_inliers}/{fit.num_points} "
        f"inliers; median of {repeats} calls"
    )
    print(f"  load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"  {'stage':44s} {'median':>9s} {'fastest':>9s} {'CPU':>9s}  ratio (median)")
    reference_ms = None
    for name, function in stages:
        wall_ms, fastest_ms, cpu_ms = _median_ms(function, repeats)
        reference_ms = reference_ms or wall_ms
        print(
            f"  {name:44s} {wall_ms:6.2f} ms {fastest_ms:6.2f} ms {cpu_ms:6.2f} ms  "
            f"{wall_ms / reference_ms:5.1f}x reference"
        )
    print(f"  load average after: {os.getloadavg()[0]:.2f}")


def _hidden(scene, pose, scan, T_camera_lidar) -> np.ndarray:
    """Ground truth: the camera ray towards the true LiDAR hit meets something first."""
    points = scan.points_m.astype(np.float64)
    points *= (scan.true_range_m / np.linalg.norm(points, axis=1))[:, None]
    world = transform_points(pose @ T_camera_lidar, points)
    t, _ = cast_rays(scene, pose[:3, 3], (world - pose[:3, 3]).T)
    return t < 1.0 - 1e-4


def accuracy(num_seeds: int) -> None:
    print(
        "\nAccuracy: AbsRel of metric depth over all ground-truth pixels, 16-beam LiDAR "
        f"(dropout 5 %), {KITTI.width_px}x{KITTI.height_px}; prediction errors = 2 % noise + "
        "±5 % smooth bias (relative, on inverse depth); edge errors = 2 px fattening + blur at "
        "depth edges"
    )
    print(
        f"  {'condition':15s} {'scene':9s} {'oracle':>8s} {'fitted':>8s} {'ratio':>6s} "
        f"{'inliers/points':>15s}"
    )
    worst: dict[str, float] = {}
    frames = []
    for kind in ("indoor", "street"):
        for seed in range(num_seeds):
            scene = make_scene(kind, seed)
            pose = camera_trajectory(scene, 1)[0]
            frames.append((f"{kind}-{seed}", scene, pose, render(scene, KITTI, pose)))
    for condition, lidar_settings, errors in CONDITIONS:
        lidar = LidarModel(num_beams=16, **lidar_settings)
        for name, scene, pose, frame in frames:
            disparity = prediction(frame.depth_m, np.random.default_rng(1), **errors)
            scan = simulate_lidar(scene, lidar, pose, 0)
            projection = project_lidar_points(
                scan.points_m, lidar.T_camera_lidar, KITTI, rectified=True
            )
            samples = sample_disparity(disparity, projection)
            fit = fit_disparity_affine(samples.disparity, samples.z_m)
            s_oracle, t_oracle = oracle_fit(disparity, frame.depth_m)
            oracle = abs_rel(
                metric_depth_from_disparity(disparity, s_oracle, t_oracle), frame.depth_m
            )
            fitted = (
                abs_rel(metric_depth_from_disparity(disparity, fit.scale, fit.shift), frame.depth_m)
                if fit.valid
                else float("nan")
            )
            ratio = fitted / oracle if oracle > 1e-5 else float("nan")
            if condition != "clean":
                worst[condition] = max(worst.get(condition, 0.0), ratio)
            print(
                f"  {condition:15s} {name:9s} {oracle:8.5f} {fitted:8.5f} {ratio:6.3f} "
                f"{fit.num_inliers:7d}/{fit.num_points:<7d}" + ("" if fit.valid else fit.reason)
            )
    print(
        "  worst fitted/oracle ratio per condition: "
        + ", ".join(f"{condition} {ratio:.3f}" for condition, ratio in worst.items())
    )


def occlusions(num_seeds: int) -> None:
    print(
        "\nBaseline occlusions (default mount: LiDAR 0.2 m above, 0.05 m behind the camera; "
        "2 cm noise, prediction with edge errors), summed over the scenes: LiDAR points that "
        "the camera cannot see"
    )
    plain_config = LidarProjectionConfig(occlusion_filter=False)
    for beams in (16, 64):
        lidar = LidarModel(num_beams=beams, range_noise_std_m=0.02, outlier_fraction=0.0)
        totals = np.zeros(6, dtype=np.int64)
        for kind in ("indoor", "street"):
            for seed in range(num_seeds):
                scene = make_scene(kind, seed)
                pose = camera_trajectory(scene, 1)[0]
                frame = render(scene, KITTI, pose)
                disparity = prediction(
                    frame.depth_m, np.random.default_rng(1), edges=True, **PREDICTION_ERRORS
                )
                scan = simulate_lidar(scene, lidar, pose, 0)
                hidden = _hidden(scene, pose, scan, lidar.T_camera_lidar)
                T = lidar.T_camera_lidar
                plain = project_lidar_points(
                    scan.points_m, T, KITTI, rectified=True, config=plain_config
                )
                tested = project_lidar_points(scan.points_m, T, KITTI, rectified=True)
                visible = ~hidden[plain.indices]
                totals += [
                    hidden[plain.indices].sum(),
                    hidden[tested.indices].sum(),
                    hidden[sample_disparity(disparity, plain).indices].sum(),
                    hidden[sample_disparity(disparity, tested).indices].sum(),
                    visible.sum(),
                    visible.sum() - (~hidden[tested.indices]).sum(),
                ]
        print(
            f"  {beams:2d} beams: {totals[0]} hidden points in view; after projection "
            f"{totals[0]} without / {totals[1]} with the occlusion test; after the depth-edge "
            f"test (what reaches the fit) {totals[2]} / {totals[3]}; visible points removed "
            f"by the test: {totals[5]} of {totals[4]}"
        )


def main(argv: list[str] | None = None) -> int:
    """Prints timings and accuracy figures; returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--only", choices=("timing", "accuracy", "occlusions"), help="run one part only"
    )
    args = parser.parse_args(argv)
    if args.only in (None, "timing"):
        timing(args.repeats)
    if args.only in (None, "accuracy"):
        accuracy(args.seeds)
    if args.only in (None, "occlusions"):
        occlusions(args.seeds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
