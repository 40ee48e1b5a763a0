"""Metric references in the pipeline: LiDAR and sparse depth images turned into metric outputs."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.io import build_header, build_image, rosbags_types
from lotus2_ros.io.camera_info import build_camera_info
from lotus2_ros.io.pointcloud import build_pointcloud2
from lotus2_ros.perception import Frame, PerceptionConfig, PerceptionPipeline
from lotus2_ros.perception.assembly import FrameAssembler, MissingCameraInfo
from lotus2_ros.perception.metric import MetricReference
from lotus2_ros.synthetic import DEFAULT_T_CAMERA_LIDAR, camera_trajectory, make_indoor_scene, render

W, H = 96, 64
S, T = 2.5, 0.15
T_CL = np.asarray(DEFAULT_T_CAMERA_LIDAR, dtype=float)


@pytest.fixture(scope="module")
def camera_and_rgb():
    camera = PinholeCamera.from_fov(W, H, 70.0)
    scene = make_indoor_scene(seed=2)
    return camera, render(scene, camera, camera_trajectory(scene, 2)[0]).rgb


def config(tiny_model, **changes):
    base = dict(base_model=str(tiny_model.base_model), weights=str(tiny_model.weights), device="cpu", dtype="fp32",
                tasks=["depth"], sharpen_steps=1, min_depth_m=0.05, lidar_min_range_m=0.05, lidar_edge_window_px=0,
                lidar_extrinsic=[float(v) for v in T_CL.ravel()])
    base.update(changes)
    return PerceptionConfig(**base)


def consistent_depth(disparity):
    return (1.0 / (S * disparity + T)).astype(np.float32)


def lidar_points(disparity, camera, step=2):
    v, u = np.mgrid[0:H:step, 0:W:step]
    z = consistent_depth(disparity)[v, u]
    K = camera.K
    pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1).reshape(-1, 3)
    T_lc = np.linalg.inv(T_CL)
    return (pc @ T_lc[:3, :3].T + T_lc[:3, 3]).astype(np.float32)


def test_a_lidar_sweep_consistent_with_the_prediction_gives_its_metric_map(tiny_model, tiny_engine, camera_and_rgb):
    camera, rgb = camera_and_rgb
    pipe = PerceptionPipeline(config(tiny_model, metric_source="lidar"), tiny_engine)
    cal = CameraCalibration(camera)
    relative, _ = pipe.process(Frame(rgb, 1, "cam", cal))
    assert relative.depth_m is None and relative.scale_fit is None  # no reference: relative only
    ref = MetricReference(points_lidar_m=lidar_points(relative.disparity, camera), T_camera_lidar=T_CL, stamp_ns=2)
    out, ctx = pipe.process(Frame(rgb, 2, "cam", cal, ref))
    assert out.scale_fit.valid and out.scale_fit.filtered
    assert out.scale_shift == pytest.approx((S, T), rel=1e-4)
    np.testing.assert_allclose(out.depth_m, consistent_depth(out.disparity), rtol=1e-3)
    assert out.points_m is not None
    # A refined frame gets its own fit (with its frame's sweep) in its own filter.
    refined = pipe.start_refinement(ctx).result()
    assert refined.refined and refined.scale_fit is not None and refined.scale_fit.stamp_ns == 2


def test_a_sparse_depth_image_is_a_metric_reference_too(tiny_model, tiny_engine, camera_and_rgb):
    camera, rgb = camera_and_rgb
    pipe = PerceptionPipeline(config(tiny_model, metric_source="depth_image", sharpen_enabled=False), tiny_engine)
    cal = CameraCalibration(camera)
    relative, _ = pipe.process(Frame(rgb, 1, "cam", cal))
    sparse = np.full((H, W), np.nan, np.float32)
    sparse[::4, ::4] = consistent_depth(relative.disparity)[::4, ::4]
    out, _ = pipe.process(Frame(rgb, 2, "cam", cal, MetricReference(depth_m=sparse, stamp_ns=2)))
    assert out.scale_fit.valid and out.scale_fit.num_points == sparse[::4, ::4].size
    np.testing.assert_allclose(out.depth_m, consistent_depth(out.disparity), rtol=1e-3)


def test_an_unrelated_lidar_sweep_gives_an_invalid_fit_and_no_metric_output(tiny_model, tiny_engine, camera_and_rgb):
    camera, rgb = camera_and_rgb
    pipe = PerceptionPipeline(config(tiny_model, metric_source="lidar", sharpen_enabled=False), tiny_engine)
    rng = np.random.default_rng(0)
    junk = rng.uniform([1, -3, -1], [20, 3, 2], size=(2000, 3)).astype(np.float32)  # all gross outliers
    out, _ = pipe.process(Frame(rgb, 3, "cam", CameraCalibration(camera),
                                MetricReference(points_lidar_m=junk, T_camera_lidar=T_CL, stamp_ns=3)))
    assert out.scale_fit is not None and not out.scale_fit.valid and out.scale_fit.reason
    assert out.depth_m is None and out.points_m is None


def test_the_assembler_pairs_each_image_with_the_nearest_sweep_within_the_window(tiny_model, camera_and_rgb):
    camera, rgb = camera_and_rgb
    types = rosbags_types()
    asm = FrameAssembler(config(tiny_model, metric_source="lidar", metric_max_offset_ms=30.0))
    image = build_image(types, build_header(types, 1_000_000_000, "cam"), rgb, "rgb8")
    with pytest.raises(MissingCameraInfo):
        asm.assemble(image)
    asm.add_camera_info(build_camera_info(types, build_header(types, 0, "cam"), camera))
    pts = np.ones((1, 5, 3), np.float32)
    for stamp in (950_000_000, 1_020_000_000):
        asm.add_reference(build_pointcloud2(types, build_header(types, stamp, "lidar"), pts * stamp / 1e9))
    frame = asm.assemble(image)
    assert frame.reference.stamp_ns == 1_020_000_000  # 20 ms away, the other is 50 ms away
    np.testing.assert_allclose(frame.reference.points_lidar_m, np.full((5, 3), 1.02), rtol=1e-6)
    np.testing.assert_allclose(frame.reference.T_camera_lidar, T_CL)
    far = build_image(types, build_header(types, 2_000_000_000, "cam"), rgb, "rgb8")
    assert asm.assemble(far).reference is None  # nothing within 30 ms


def test_a_malformed_sweep_leaves_the_frame_without_reference_and_says_why(tiny_model, camera_and_rgb):
    camera, rgb = camera_and_rgb
    types = rosbags_types()
    asm = FrameAssembler(config(tiny_model, metric_source="lidar"))
    asm.add_camera_info(build_camera_info(types, build_header(types, 0, "cam"), camera))
    cloud = build_pointcloud2(types, build_header(types, 5, "lidar"), np.ones((1, 4, 3), np.float32))
    cloud.fields = [f for f in cloud.fields if f.name != "z"]  # no z field
    asm.add_reference(cloud)
    frame = asm.assemble(build_image(types, build_header(types, 5, "cam"), rgb, "rgb8"))
    assert frame.reference is None and "z" in str(asm.reference_error)


def test_a_depth_output_model_is_fitted_in_depth_space_and_recovers_a_known_scale_and_shift(
        tiny_lotus1_d, camera_and_rgb):
    """Lotus-1 v1-0 style models predict affine-invariant depth: ``depth_m = s·d + t`` (not 1/(s·d + t))."""
    from lotus2_ros.model.backend import BackendConfig
    from lotus2_ros.model.lotus1 import Lotus1Engine

    camera, rgb = camera_and_rgb
    engine = Lotus1Engine.load(BackendConfig(family="lotus1", weights=tiny_lotus1_d.root, tasks=("depth",),
                                             process_res=96))
    cfg = PerceptionConfig(backend="lotus1", weights=str(tiny_lotus1_d.root), device="cpu", dtype="fp32",
                           tasks=["depth"], metric_source="depth_image", min_depth_m=0.05, max_depth_m=1000.0)
    pipe = PerceptionPipeline(cfg, engine)
    cal = CameraCalibration(camera)
    relative, _ = pipe.process(Frame(rgb, 1, "cam", cal))
    assert relative.relative_kind == "depth" and relative.disparity is None and relative.depth_m is None
    s, t = 12.0, 0.4
    sparse = np.full((H, W), np.nan, np.float32)
    sparse[::3, ::3] = (s * relative.relative_depth + t)[::3, ::3]  # an exact affine transform of the depth
    out, _ = pipe.process(Frame(rgb, 2, "cam", cal, MetricReference(depth_m=sparse, stamp_ns=2)))
    fit = out.scale_fit
    assert fit.valid and fit.fit_space == "depth" and fit.abs_rel < 1e-4
    assert out.scale_shift == pytest.approx((s, t), rel=1e-4)
    np.testing.assert_allclose(out.depth_m, s * relative.relative_depth + t, rtol=1e-5)
    # Fitting the same numbers as disparity would have given another map: the space matters.
    assert not np.allclose(1.0 / (s * relative.relative_depth + t), out.depth_m, rtol=0.05)


# ----------------------------------------------------------------------------- stereo camera_info (full P)
BASELINE_M = 0.5


def stereo_right(camera: PinholeCamera, **kw) -> CameraCalibration:
    """The right camera of a stereo pair: D = 0, P = [K | (−fx·B, 0, 0)] (frame_id: the left camera)."""
    P = np.hstack([camera.K, [[-camera.fx * BASELINE_M], [0.0], [0.0]]])
    return CameraCalibration(camera, p=tuple(P.ravel()), **kw)


def frame_points_from_depth(depth, camera):
    """depth_image_proc's registration formula: x = ((u − cx)·z − Tx)/fx, in the frame_id frame."""
    v, u = np.mgrid[0:H, 0:W]
    tx = -camera.fx * BASELINE_M
    return np.stack([((u - camera.cx) * depth - tx) / camera.fx, (v - camera.cy) * depth / camera.fy, depth], -1)


def test_a_stereo_right_camera_is_fitted_with_its_baseline_and_clouds_are_in_the_frame_id_frame(
        tiny_model, tiny_engine, camera_and_rgb):
    camera, rgb = camera_and_rgb
    pipe = PerceptionPipeline(config(tiny_model, metric_source="lidar", sharpen_enabled=False), tiny_engine)
    cal = stereo_right(camera)
    relative, _ = pipe.process(Frame(rgb, 1, "left_optical", cal))
    pf = frame_points_from_depth(consistent_depth(relative.disparity), camera)[::2, ::2].reshape(-1, 3)
    T_lc = np.linalg.inv(T_CL)
    sweep = (pf @ T_lc[:3, :3].T + T_lc[:3, 3]).astype(np.float32)
    out, _ = pipe.process(Frame(rgb, 2, "left_optical", cal, MetricReference(sweep, T_CL, stamp_ns=2)))
    assert out.camera_model.rectified and out.camera_model.t == pytest.approx((-BASELINE_M, 0.0, 0.0))
    np.testing.assert_array_equal(out.calibration.P, cal.P)  # the published camera_info keeps Tx
    assert out.scale_fit.valid and out.scale_shift == pytest.approx((S, T), rel=1e-4)
    np.testing.assert_allclose(out.points_m, frame_points_from_depth(out.depth_m, camera), rtol=1e-5, atol=1e-5)
    # The fit's points were those of the frame_id frame seen from the right camera: Tx ignored,
    # they would land fx·B/z = 8–90 px off and the fit would not recover (S, T).
    shifted = pipe._metric.project(MetricReference(sweep, T_CL), CameraCalibration(camera))
    exact = pipe._metric.project(MetricReference(sweep, T_CL), out.calibration)
    common = np.intersect1d(shifted.indices, exact.indices)
    assert common.size > 50
    du = (shifted.u_px[np.searchsorted(shifted.indices, common)] - exact.u_px[np.searchsorted(exact.indices, common)])
    assert np.all(du > 5.0)


def test_rectified_images_with_a_raw_D_follow_P_when_the_configuration_says_so(tiny_model, tiny_engine, camera_and_rgb):
    """KITTI publishes rectified images with the raw camera's D: ``camera_model: rectified``."""
    camera, rgb = camera_and_rgb
    raw_d = PinholeCamera(W, H, camera.fx * 1.01, camera.fy * 1.01, camera.cx + 0.7, camera.cy - 0.4,
                          D=(-0.37, 0.2, 0.0, 0.001, 0.0))
    P = np.hstack([camera.K, [[-camera.fx * BASELINE_M], [0.0], [0.0]]])
    cal = CameraCalibration(raw_d, p=tuple(P.ravel()))
    auto = PerceptionPipeline(config(tiny_model, sharpen_enabled=False, rectify=False), tiny_engine)
    forced = PerceptionPipeline(config(tiny_model, sharpen_enabled=False, camera_model="rectified"), tiny_engine)
    a, _ = auto.process(Frame(rgb, 1, "cam", cal))
    f, _ = forced.process(Frame(rgb, 1, "cam", cal))
    assert a.calibration == cal and not a.camera_model.rectified  # D != 0: raw by the rule
    assert f.calibration.camera == camera and f.camera_model.rectified
    np.testing.assert_array_equal(f.calibration.P, P)
    np.testing.assert_array_equal(a.disparity, f.disparity)  # the image itself is not touched
