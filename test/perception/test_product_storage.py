"""Where the pipeline's products are made: in the storage its ``allocate`` gives (the node's message
payloads), with the host normals on a second thread, and clouds written from the depth.

The products must not depend on any of it: the same values as a pipeline with plain numpy arrays
on one thread, whatever the storage held before.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from lotus2_ros.geometry import bands
from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.io.msg_types import data_as_uint8, rosbags_types
from lotus2_ros.io.pointcloud import build_pointcloud2
from lotus2_ros.perception import Frame, PerceptionConfig, PerceptionPipeline
from lotus2_ros.perception.messages import output_messages

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")

CAMERA = PinholeCamera(128, 96, 110.0, 95.0, 60.3, 50.7)
IMAGE_PRODUCTS = ("disparity", "normals", "depth_m", "depth_colorized", "normals_colorized")


class RecordingStorage:
    """``allocate`` that fills each array with garbage first and remembers what it made."""

    def __init__(self):
        self.made: list[np.ndarray] = []

    def __call__(self, shape, dtype):
        array = np.empty(shape, dtype)
        array.view(np.uint8)[...] = 0xA5  # NaN-like floats and odd bytes: every element must be written
        self.made.append(array)
        return array


def _config(**changes):
    return PerceptionConfig(**{"device": "cpu", "dtype": "fp32", "metric_source": "fixed", "fixed_scale": 2.0,
                               "fixed_shift": 0.1, "sharpen_enabled": False, **changes})


def _frames(n=3):
    rng = np.random.default_rng(0)
    return [Frame((rng.random((96, 128, 3)) * 255).astype(np.uint8), 1_000 + k * 100_000_000, "cam",
                  CameraCalibration(CAMERA)) for k in range(n)]


def _owned_by(array, storage):
    return any(np.shares_memory(array, made) for made in storage.made)


@pytest.fixture
def host_threads():
    yield bands.set_host_threads
    bands.set_host_threads(0)


@pytest.mark.parametrize("tasks", [["depth", "normal"], ["normal"], ["depth"]])
def test_products_are_made_in_the_given_storage_with_the_values_of_plain_arrays(tiny_engine, host_threads, tasks):
    host_threads(2)
    storage = RecordingStorage()
    into = PerceptionPipeline(_config(tasks=tasks), tiny_engine, allocate=storage)
    plain = PerceptionPipeline(_config(tasks=tasks), tiny_engine)
    for frame in _frames():  # the aligner runs in place on the stored disparity: several frames
        got, _ = into.process(frame)
        want, _ = plain.process(frame)
        for key in IMAGE_PRODUCTS:
            a, b = getattr(got, key), getattr(want, key)
            assert (a is None) == (b is None), key
            if a is not None:
                assert _owned_by(a, storage), f"{key} was not made in the given storage"
                assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), key


def test_the_normals_made_on_a_second_thread_equal_those_made_on_one(tiny_engine, host_threads):
    outs = {}
    for threads in (1, 2):
        host_threads(threads)
        outs[threads] = [PerceptionPipeline(_config(), tiny_engine).process(f)[0] for f in _frames(2)]
    for one, two in zip(outs[1], outs[2], strict=True):
        for key in IMAGE_PRODUCTS:
            assert np.array_equal(getattr(one, key), getattr(two, key), equal_nan=True), key
        assert "postprocess_normal" in two.timings_ms  # the wait for them is timed


@pytest.mark.parametrize("tasks, threads", [(["depth", "normal"], 1), (["depth", "normal"], 2), (["normal"], 2)])
def test_the_time_spent_on_the_normals_counts_in_the_frames_overhead(tiny_engine, host_threads, monkeypatch,
                                                                      tasks, threads):
    # Made on the frame's own thread (one host thread, or normals alone) the normals' time is part of
    # the frame's wall time outside the forwards, so it must be in the stage timings; made beside
    # the depth products, the frame waits for them at most that long.
    host_threads(threads)
    pipeline = PerceptionPipeline(_config(tasks=tasks), tiny_engine)
    slow_ms, to_normals = 80.0, tiny_engine.to_normals

    def slow(*args, **kwargs):
        time.sleep(slow_ms / 1e3)
        return to_normals(*args, **kwargs)

    monkeypatch.setattr(tiny_engine, "to_normals", slow)
    t0 = time.perf_counter()
    out, _ = pipeline.process(_frames(1)[0])
    wall_ms = (time.perf_counter() - t0) * 1e3
    assert out.normals is not None
    forwards_ms = sum(out.timings_ms.values()) - out.overhead_ms
    if not (threads > 1 and len(tasks) > 1):  # beside the depth products only the wait is this stage's
        assert out.timings_ms["postprocess_normal"] >= slow_ms * 0.9
    assert out.overhead_ms >= slow_ms * 0.9  # the frame waits for them either way
    assert out.overhead_ms + forwards_ms <= wall_ms + 1.0


def test_an_error_while_making_the_normals_reaches_the_caller(tiny_engine, host_threads, monkeypatch):
    host_threads(2)
    pipeline = PerceptionPipeline(_config(), tiny_engine)

    def broken(*args, **kwargs):
        raise RuntimeError("normals failed")

    monkeypatch.setattr(tiny_engine, "to_normals", broken)
    with pytest.raises(RuntimeError, match="normals failed"):
        pipeline.process(_frames(1)[0])


def test_a_cloud_from_a_plain_camera_is_written_from_the_depth_with_the_bytes_of_its_points(tiny_engine):
    types = rosbags_types()
    out, _ = PerceptionPipeline(_config(), tiny_engine).process(_frames(1)[0])
    assert out.point_rays is not None  # the points are not built for the cloud
    msg = output_messages(types, out, {"points"})["points"]
    assert out.point_rays is not None
    points = out.points_m  # built on first access
    assert out.point_rays is None and points.shape == (96, 128, 3) and out.points_m is points
    reference = build_pointcloud2(types, msg.header, points, out.rgb, out.normals)
    assert bytes(data_as_uint8(msg.data)) == bytes(data_as_uint8(reference.data))
    v, u = np.mgrid[0:96, 0:128]
    np.testing.assert_allclose(points[..., 0], (u - CAMERA.cx) / CAMERA.fx * out.depth_m, rtol=1e-6)
    np.testing.assert_array_equal(points[..., 2], out.depth_m)
