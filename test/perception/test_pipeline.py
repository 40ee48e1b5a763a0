"""PerceptionPipeline on the tiny seeded model (CPU): alignment, metric depth, points, rectification,
stepwise refinement, timings and colourised images.

Every expectation is recomputed here from first principles (intrinsics by the half-pixel rule,
back-projection with ``K`` written out, rectification with ``cv2.undistort``), not taken from the
code under test. Model passes are shared per module to keep the file fast.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.model.backend import deliver
from lotus2_ros.model.engine import Lotus2Engine
from lotus2_ros.perception import Frame, PerceptionConfig, PerceptionPipeline
from lotus2_ros.perception.pipeline import _points_from_depth

# The engine adds several named adapters to one transformer on purpose; peft warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")

STAMP_NS = 1_700_000_000_123_456_789
FRAME_ID = "camera_optical_frame"
HW = (96, 128)  # processed at its own size (both sides multiples of 16)
#: Undistorted camera with fx != fy and an off-centre principal point, so swaps show.
CAMERA = PinholeCamera(128, 96, 110.0, 95.0, 60.3, 50.7)
#: 100x136 is processed at 96x128: short 100 -> 6*16 = 96, s = 0.96, w = int(130.56) = 130 -> 128.
BIG_HW, PROCESS_HW = (100, 136), (96, 128)
BIG_CAMERA = PinholeCamera(136, 100, 120.0, 110.0, 70.2, 48.9)
#: A raw plumb_bob camera whose rectified camera P[:, :3] differs from K.
DISTORTED = CameraCalibration(
    PinholeCamera(128, 96, 100.0, 100.0, 63.5, 47.5, (-0.25, 0.08, 0.001, -0.002, 0.0)),
    p=(90.0, 0.0, 64.0, 0.0, 0.0, 90.0, 48.0, 0.0, 0.0, 0.0, 1.0, 0.0),
)
FORWARD_PREFIXES = ("core_", "lcm_", "sharpen", "decode_")


def _image(hw, seed=0):
    return (np.random.default_rng(seed).random((*hw, 3)) * 255).astype(np.uint8)


def _config(**changes) -> PerceptionConfig:
    return PerceptionConfig(**{"device": "cpu", "dtype": "fp32", **changes})


def _frame(rgb, calibration):
    return Frame(rgb=rgb, stamp_ns=STAMP_NS, frame_id=FRAME_ID, calibration=calibration)


def _is_forward(stage: str) -> bool:
    return stage == "encode" or stage.startswith(FORWARD_PREFIXES)


def _back_project(depth, camera):
    """x = (u − cx)/fx·z, y = (v − cy)/fy·z, z in float64."""
    v, u = np.mgrid[0:depth.shape[0], 0:depth.shape[1]]
    z = depth.astype(np.float64)
    return np.stack([(u - camera.cx) / camera.fx * z, (v - camera.cy) / camera.fy * z, z], axis=-1)


# ----------------------------------------------------------------------------- shared passes
@pytest.fixture(scope="module")
def rgb():
    return _image(HW)


@pytest.fixture(scope="module")
def passes(tiny_engine, rgb):
    """The same frame through a relative-only pipeline, then through a fixed-metric one.

    The fixed (s, t) and depth window come from the relative disparity's quantiles, so the metric
    pass has pixels with ``s·d + t ≤ 0``, pixels beyond ``max_depth_m``, pixels nearer than
    ``min_depth_m`` and valid ones, whatever the random model predicts.
    """
    relative, _ = PerceptionPipeline(_config(), tiny_engine).process(_frame(rgb, CameraCalibration(CAMERA)))
    q20, q40, q90 = (float(q) for q in np.quantile(relative.disparity, [0.2, 0.4, 0.9]))
    metric = dict(metric_source="fixed", fixed_scale=1.0, fixed_shift=-q20,
                  min_depth_m=1.0 / (q90 - q20), max_depth_m=1.0 / (q40 - q20))
    # Frames of one stamp, refined several times: each is the model's own output, not aligned to
    # the one before (relative_alignment has its own tests below).
    pipeline = PerceptionPipeline(_config(**metric, relative_alignment="off"), tiny_engine)
    fixed, ctx = pipeline.process(_frame(rgb, CameraCalibration(CAMERA)))
    return dict(pipeline=pipeline, relative=relative, fixed=fixed, ctx=ctx, metric=metric)


@pytest.fixture(scope="module")
def fixed(passes):
    return passes["fixed"]


@pytest.fixture(scope="module")
def refined(passes):
    """Two sharpener steps (both tasks batched) on the fixed pass, counting the ``step()`` calls."""
    refinement = passes["pipeline"].start_refinement(passes["ctx"], 2)
    done = [refinement.step() for _ in range(refinement.total_steps)]
    return dict(refinement=refinement, done=done, out=refinement.result())


# ----------------------------------------------------------------------------- alignment
def test_outputs_are_at_camera_resolution_and_aligned_with_the_input_calibration(fixed, rgb):
    h, w = HW
    assert fixed.disparity.shape == fixed.depth_m.shape == (h, w)
    assert fixed.normals.shape == fixed.points_m.shape == fixed.rgb.shape == (h, w, 3)
    assert {a.dtype for a in (fixed.disparity, fixed.depth_m, fixed.normals, fixed.points_m)} == {np.dtype(np.float32)}
    assert fixed.calibration == CameraCalibration(CAMERA)
    assert fixed.camera == CAMERA
    np.testing.assert_array_equal(fixed.rgb, rgb)


def test_stamp_and_frame_id_are_copied_from_the_frame(fixed, refined):
    for out in (fixed, refined["out"]):
        assert (out.stamp_ns, out.frame_id) == (STAMP_NS, FRAME_ID)
    assert fixed.refined is False


def test_disparity_is_relative_in_unit_range_and_normals_are_unit_vectors(fixed):
    assert 0.0 <= fixed.disparity.min() < fixed.disparity.max() <= 1.0
    lengths = np.linalg.norm(fixed.normals, axis=-1)
    np.testing.assert_allclose(lengths, 1.0, atol=1e-5)


def test_processing_resolution_outputs_come_with_a_consistently_scaled_calibration(tiny_engine):
    pipeline = PerceptionPipeline(_config(output_resolution="processing", metric_source="fixed"), tiny_engine)
    out, _ = pipeline.process(_frame(_image(BIG_HW, seed=1), CameraCalibration(BIG_CAMERA)))
    h, w = PROCESS_HW
    assert out.disparity.shape == out.depth_m.shape == (h, w)
    assert out.normals.shape == out.points_m.shape == out.rgb.shape == out.normals_colorized.shape == (h, w, 3)
    sx, sy = w / BIG_HW[1], h / BIG_HW[0]
    cam = out.calibration.camera
    assert (cam.width_px, cam.height_px) == (w, h)
    assert cam.fx == pytest.approx(120.0 * sx) and cam.fy == pytest.approx(110.0 * sy)
    # Half-pixel rule: pixel edges map to pixel edges, cx' = (cx + 0.5)·s − 0.5.
    assert cam.cx == pytest.approx((70.2 + 0.5) * sx - 0.5) and cam.cy == pytest.approx((48.9 + 0.5) * sy - 0.5)
    np.testing.assert_allclose(out.calibration.P[:, :3], cam.K)
    np.testing.assert_allclose(out.points_m, _back_project(out.depth_m, cam), rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- metric products
def test_a_relative_config_gives_disparity_but_no_metric_depth_or_points(passes):
    relative, fixed = passes["relative"], passes["fixed"]
    assert relative.depth_m is None and relative.points_m is None and relative.scale_shift is None
    assert relative.normals is not None and relative.calibration == CameraCalibration(CAMERA)
    # Same frame, deterministic model: the metric reference does not touch the disparity.
    np.testing.assert_array_equal(relative.disparity, fixed.disparity)


def test_fixed_metric_depth_is_the_inverse_affine_disparity_with_nan_outside_the_window(passes):
    out, m = passes["fixed"], passes["metric"]
    s, t = m["fixed_scale"], m["fixed_shift"]
    assert out.scale_shift == (s, t)
    inv = np.float32(s) * out.disparity + np.float32(t)  # float32, as published
    with np.errstate(divide="ignore"):
        depth = np.float32(1.0) / inv
    behind = inv <= 0
    too_far = ~behind & (depth > m["max_depth_m"])
    too_near = ~behind & (depth < m["min_depth_m"])
    valid = ~(behind | too_far | too_near)
    assert min(behind.sum(), too_far.sum(), too_near.sum(), valid.sum()) > 0, "every case must occur"
    expected = np.where(valid, depth, np.nan)
    np.testing.assert_array_equal(out.depth_m, expected)
    d64 = out.disparity.astype(np.float64)
    np.testing.assert_allclose(out.depth_m[valid], 1.0 / (s * d64[valid] + t), rtol=1e-5)


def test_points_are_the_back_projection_of_depth(fixed):
    expected = _back_project(fixed.depth_m, CAMERA)
    np.testing.assert_allclose(fixed.points_m, expected, rtol=1e-6, atol=1e-6)  # NaN where depth is NaN
    assert np.array_equal(np.isnan(fixed.points_m).any(axis=-1), np.isnan(fixed.depth_m))
    assert np.isnan(fixed.points_m[np.isnan(fixed.depth_m)]).all()


@pytest.mark.parametrize("camera", [CAMERA, DISTORTED.camera])
def test_points_are_bit_identical_to_rays_times_depth(camera):
    """Plane products + merge give exactly ``pixel_rays() * depth[..., None]`` (NaN where depth is NaN)."""
    depth = np.random.default_rng(6).uniform(0.3, 9.0, (camera.height_px, camera.width_px)).astype(np.float32)
    depth[::5, ::7] = np.nan
    points = _points_from_depth(camera, depth)
    expected = camera.pixel_rays() * depth[..., None]
    assert points.dtype == np.float32 and points.shape == expected.shape and points.flags["C_CONTIGUOUS"]
    assert np.array_equal(points.view(np.uint32), expected.view(np.uint32))


def test_without_camera_info_there_are_no_points_but_disparity_and_normals(tiny_engine, rgb):
    pipeline = PerceptionPipeline(_config(metric_source="fixed", publish_colorized=False), tiny_engine)
    out, _ = pipeline.process(_frame(rgb, None))
    assert out.calibration is None and out.camera is None and out.points_m is None
    assert out.disparity.shape == HW and out.normals.shape == (*HW, 3)
    assert out.depth_m is not None  # the fixed reference needs no camera
    assert out.depth_colorized is None and out.normals_colorized is None


# ----------------------------------------------------------------------------- rectification
@pytest.fixture(scope="module")
def rectify_runs(tiny_engine, rgb):
    """Depth-only passes on a distorted camera with and without rectification, recording what the
    model was fed (``Lotus2Engine.preprocess``'s argument)."""
    runs = {}
    original = Lotus2Engine.preprocess
    for rectify in (False, True):
        fed = []

        def spy(self, images, fed=fed):
            fed.append(np.array(images))
            return original(self, images)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Lotus2Engine, "preprocess", spy)
            pipeline = PerceptionPipeline(_config(tasks=["depth"], rectify=rectify), tiny_engine)
            out, _ = pipeline.process(_frame(rgb, DISTORTED))
        assert len(fed) == 1
        runs[rectify] = (out, fed[0])
    return runs


def test_rectification_changes_the_image_the_model_sees(rectify_runs, rgb):
    (raw_out, raw_fed), (rect_out, rect_fed) = rectify_runs[False], rectify_runs[True]
    np.testing.assert_array_equal(raw_fed, rgb)
    cam = DISTORTED.camera
    undistorted = cv2.undistort(rgb, cam.K, np.array(cam.D), None, DISTORTED.P[:, :3])
    assert np.abs(rect_fed.astype(np.int16) - undistorted).mean() < 0.5
    assert np.abs(rect_fed.astype(np.int16) - rgb).mean() > 20.0
    np.testing.assert_array_equal(rect_out.rgb, rect_fed)
    assert not np.array_equal(raw_out.disparity, rect_out.disparity)
    assert raw_out.normals is None and rect_out.normals is None  # depth-only config


def test_rectified_outputs_carry_the_rectified_camera(rectify_runs):
    raw_out, rect_out = rectify_runs[False][0], rectify_runs[True][0]
    assert raw_out.calibration == DISTORTED
    cal = rect_out.calibration
    assert cal.camera.D == (0.0,) * 5 and not cal.camera.has_distortion
    np.testing.assert_array_equal(cal.K, DISTORTED.P[:, :3])
    np.testing.assert_array_equal(cal.R, np.eye(3))
    np.testing.assert_array_equal(cal.P[:, :3], DISTORTED.P[:, :3])
    assert (cal.width_px, cal.height_px) == (128, 96)


# ----------------------------------------------------------------------------- refinement
def test_a_refinement_needs_one_step_call_per_batched_forward(refined):
    refinement = refined["refinement"]
    assert refinement.total_steps == 2  # depth and normal share each sharpener forward
    assert refined["done"] == [False, True]
    assert refinement.step() is True and refinement.steps_done == 2  # no further work once done


def test_without_task_batching_a_refinement_needs_steps_times_tasks_step_calls(passes, refined, tiny_engine):
    tiny_engine.batch_tasks = False
    try:
        refinement = passes["pipeline"].start_refinement(passes["ctx"], 2)
        assert refinement.total_steps == 2 * 2
        assert [refinement.step() for _ in range(4)] == [False, False, False, True]
        out = refinement.result()
    finally:
        tiny_engine.batch_tasks = True
    np.testing.assert_allclose(out.disparity, refined["out"].disparity, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.normals, refined["out"].normals, atol=1e-4, rtol=0)


def test_a_refinement_defaults_to_the_configured_step_count_else_the_models(passes, tiny_engine):
    # sharpen_steps 0: the model's own (the tiny model has no model.json: the official 10 steps).
    assert passes["pipeline"].config.sharpen_steps == 0 and tiny_engine.info.settings.refine_steps == 10
    refinement = passes["pipeline"].start_refinement(passes["ctx"])
    assert refinement.total_steps == 10  # one batched forward per step for both tasks
    assert refinement.done is False
    three = PerceptionPipeline(_config(sharpen_steps=3), tiny_engine)
    assert three.start_refinement(passes["ctx"]).total_steps == 3


def test_a_refined_result_is_marked_keeps_its_frame_and_differs_from_the_core(refined, fixed, passes):
    out = refined["out"]
    assert out.refined is True and out.stamp_ns == fixed.stamp_ns
    assert out.calibration == fixed.calibration
    assert out.disparity.shape == fixed.disparity.shape and out.normals.shape == fixed.normals.shape
    assert np.abs(out.disparity - fixed.disparity).max() > 1e-3
    assert np.nanmax(np.abs(out.normals - fixed.normals)) > 1e-3
    # Its metric products follow from its own disparity with the same reference.
    m = passes["metric"]
    inv = np.float32(m["fixed_scale"]) * out.disparity + np.float32(m["fixed_shift"])
    ok = np.isfinite(out.depth_m)
    np.testing.assert_array_equal(out.depth_m[ok], (np.float32(1.0) / inv)[ok])


def test_a_refinement_interleaved_with_core_frames_gives_the_same_result(passes, refined, rgb):
    """The scheduler runs core frames between sharpener steps; adapters must switch back."""
    pipeline = passes["pipeline"]
    refinement = pipeline.start_refinement(passes["ctx"], 2)
    refinement.step()
    pipeline.process(_frame(_image(HW, seed=3), CameraCalibration(CAMERA)))  # core adapters in between
    refinement.step()
    pipeline.process(_frame(_image(HW, seed=4), None))
    out = refinement.result()
    np.testing.assert_allclose(out.disparity, refined["out"].disparity, atol=1e-6)
    np.testing.assert_allclose(out.normals, refined["out"].normals, atol=1e-6)


def test_a_zero_step_refinement_is_done_at_once_and_decodes_the_core_latents(passes, fixed):
    refinement = passes["pipeline"].start_refinement(passes["ctx"], 0)
    assert refinement.done and refinement.total_steps == 0
    assert refinement.step() is True
    out = refinement.result()
    assert out.refined is True
    np.testing.assert_allclose(out.disparity, fixed.disparity, atol=1e-6)
    np.testing.assert_allclose(out.normals, fixed.normals, atol=1e-6)


# ----------------------------------------------------------------------------- timings
def test_overhead_is_the_sum_of_the_non_forward_stages(fixed):
    stages = fixed.timings_ms
    forward = {k for k in stages if _is_forward(k)}
    assert forward == {"encode", "core_depth+normal", "lcm_depth", "lcm_normal",  # one core forward, both tasks
                       "decode_depth", "decode_normal"}
    assert {"preprocess", "postprocess_depth", "postprocess_normal", "products", "metric",
            "points"} <= set(stages) - forward
    assert fixed.overhead_ms == pytest.approx(sum(v for k, v in stages.items() if k not in forward))
    assert 0.0 < fixed.overhead_ms < sum(stages.values())


def test_refined_overhead_excludes_the_sharpener_forwards(refined):
    out = refined["out"]
    assert "sharpen_depth+normal" in out.timings_ms
    expected = sum(v for k, v in out.timings_ms.items() if not _is_forward(k))
    assert out.overhead_ms == pytest.approx(expected)


# ----------------------------------------------------------------------------- colourised images
def test_colourised_images_are_rgb8_at_output_size(fixed):
    for image in (fixed.depth_colorized, fixed.normals_colorized):
        assert image.dtype == np.uint8 and image.shape == (*HW, 3)
    # The usual normal colouring: RGB = (n_model + 1)/2 with n_model = −n_optical.
    expected = np.clip(np.floor((1.0 - fixed.normals.astype(np.float64)) / 2.0 * 255.0 + 0.5), 0, 255)
    assert np.abs(fixed.normals_colorized - expected).max() <= 1
    # Turbo: the nearest pixel (largest disparity) is red, the farthest blue.
    near = fixed.depth_colorized[np.unravel_index(np.argmax(fixed.disparity), HW)].astype(int)
    far = fixed.depth_colorized[np.unravel_index(np.argmin(fixed.disparity), HW)].astype(int)
    assert near[0] > near[2] and far[2] > far[0]


# ----------------------------------------------------------------------------- relative alignment
def test_relative_outputs_stay_on_one_scale_without_a_metric_reference(tiny_engine, rgb, monkeypatch):
    """The model's output of the second frame is the first one under an affine map (a frame-to-frame
    normalisation change): with ``relative_alignment`` (auto: on for metric_source none) the
    published disparity and its colours are the first frame's again; off, they jump."""
    to_depth = tiny_engine.to_depth
    maps = iter([(1.0, 0.0), (1.6, -0.3), (1.0, 0.0), (1.6, -0.3)])

    def jumping(decoded, out_hw, out=None):
        a, b = next(maps)
        return deliver(a * to_depth(decoded, out_hw) + b, out)

    monkeypatch.setattr(tiny_engine, "to_depth", jumping)
    runs = {}
    for mode in ("auto", "off"):
        pipeline = PerceptionPipeline(_config(tasks=["depth"], relative_alignment=mode), tiny_engine)
        runs[mode] = [pipeline.process(Frame(rgb, STAMP_NS + k * 100_000_000, FRAME_ID, None))[0] for k in range(2)]
    first, second = runs["auto"]
    assert first.alignment.reset and not second.alignment.reset
    assert second.alignment.scale == pytest.approx(1 / 1.6, rel=1e-4)
    assert second.alignment.shift == pytest.approx(0.3 / 1.6, abs=1e-4)
    np.testing.assert_allclose(second.disparity, first.disparity, atol=1e-5)
    assert np.abs(second.depth_colorized.astype(int) - first.depth_colorized).max() <= 1
    raw_first, raw_second = runs["off"]
    assert raw_second.alignment is None
    np.testing.assert_allclose(raw_second.disparity, 1.6 * raw_first.disparity - 0.3, atol=1e-5)


def test_the_aligner_gets_the_image_and_K_to_follow_the_camera(tiny_engine, rgb):
    """``alignment_motion`` (auto: on for metric_source none): the aligner is given the published
    image and the camera's K, and keeps the image to track the next frame from; without
    camera_info, or with metric_source fixed, it fits without the motion."""
    def first_aligner(config, calibration):
        pipeline = PerceptionPipeline(config, tiny_engine)
        pipeline.process(_frame(rgb, calibration))
        return pipeline.aligners[False]

    moving = first_aligner(_config(tasks=["depth"]), CameraCalibration(CAMERA))
    assert moving.config.motion and moving._previous_grey is not None
    assert moving._previous_grey.shape == HW and moving._previous_values.shape == HW
    assert first_aligner(_config(tasks=["depth"]), None)._previous_grey is None  # no K without camera_info
    fixed = first_aligner(_config(tasks=["depth"], metric_source="fixed"), CameraCalibration(CAMERA))
    assert not fixed.config.motion and fixed._previous_grey is None
    assert first_aligner(_config(tasks=["depth"], metric_source="fixed", alignment_motion="on"),
                         CameraCalibration(CAMERA))._previous_grey is not None


def test_single_image_tools_never_align_one_image_to_another(tiny_pipeline):
    assert tiny_pipeline.config.relative_alignment == "off" and tiny_pipeline.aligners is None
