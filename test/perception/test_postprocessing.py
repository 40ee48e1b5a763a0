"""Pre/post-processing at camera sizes against the computation the pipeline did before it was made
fast (torch resizes, torch channel mean, numpy normals and colourising), and the GPU path
(post-processing and colourising on the model's device, one download) against the host path.

The network forwards are replaced by fixed tensors, so real camera sizes (1280x720) run in
milliseconds; what is compared is everything around the forwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.geometry.normals import planar_model_to_optical
from lotus2_ros.geometry.scale_fit import metric_depth_from_disparity
from lotus2_ros.io.visualize import colorize_disparity, colorize_normals
from lotus2_ros.model.engine import Lotus2Engine
from lotus2_ros.model.resize import (capped_size, images_to_tensor, planar_model_to_optical_tensor,
                                     processing_size)
from lotus2_ros.perception import Frame, PerceptionConfig, PerceptionPipeline
from lotus2_ros.perception.device_products import colorize_disparity_tensor, colorize_normals_tensor, download

pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")

SCALE, SHIFT = 0.5, 0.02


class FixedForwards(Lotus2Engine):
    """The tiny engine with its forwards replaced by fixed tensors: decode gives ``decoded[task]``."""

    def __init__(self, engine: Lotus2Engine, decoded: dict[str, torch.Tensor]):
        self.__dict__.update(engine.__dict__)
        self.decoded = decoded

    def encode(self, rgb):
        return torch.zeros(rgb.shape[0], self.latent_channels, rgb.shape[2] // 8, rgb.shape[3] // 8)

    def predict(self, cond, tasks, timer=None):
        return {task: torch.full_like(cond, float(i)) for i, task in enumerate(tasks)}

    def decode(self, latents, task=None):
        return self.decoded["depth" if float(latents.flatten()[0]) == 0.0 else "normal"].clone()


def _decoded(process_hw, seed=0) -> dict[str, torch.Tensor]:
    """A decoded depth image (any values in [0,1]) and a decoded normal image (unit normals, model coding)."""
    rng = np.random.default_rng(seed)
    h, w = process_hw
    depth = rng.random((1, 3, h, w), dtype=np.float32)
    v, u = np.mgrid[0:h, 0:w] / max(h, w)  # a smooth surface, mostly facing the camera (as decoded normals are)
    n = np.stack([np.sin(9 * u), np.cos(7 * v) * 0.6, 1.5 + 0.3 * np.sin(5 * u * v)])
    n /= np.linalg.norm(n, axis=0, keepdims=True)
    normal = ((n + 1) / 2).astype(np.float32)[None]  # [1,3,h,w] in [0,1]
    return {"depth": torch.from_numpy(depth), "normal": torch.from_numpy(normal)}


def _reference(rgb, decoded, camera):
    """What the pipeline computed before: torch resizes, torch mean, numpy normals and colourising."""
    h, w = rgb.shape[:2]
    x = images_to_tensor(rgb)
    for size in (capped_size(h, w, 1024), processing_size(h, w, 1024)):
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def up(t):
        return t if tuple(t.shape[-2:]) == (h, w) else F.interpolate(t, size=(h, w), mode="bilinear",
                                                                     align_corners=False)

    disparity = up(decoded["depth"].mean(dim=1, keepdim=True))[0, 0].numpy()
    normals = planar_model_to_optical(up(decoded["normal"]).numpy())[0]
    depth_m = metric_depth_from_disparity(disparity, SCALE, SHIFT, 0.1, 80.0)
    points = camera.pixel_rays() * depth_m[..., None]
    return dict(model_input=x, disparity=disparity, normals=normals, depth_m=depth_m, points_m=points,
                depth_colorized=colorize_disparity(disparity), normals_colorized=colorize_normals(normals))


def _run(tiny_engine, width, height, on_device=False):
    process_hw = processing_size(height, width, 1024)
    decoded = _decoded(process_hw)
    engine = FixedForwards(tiny_engine, decoded)
    camera = PinholeCamera(width, height, 0.8 * width, 0.8 * width, width / 2 - 0.3, height / 2 + 0.2)
    config = PerceptionConfig(device="cpu", dtype="fp32", tasks=["depth", "normal"], sharpen_enabled=False,
                              metric_source="fixed", fixed_scale=SCALE, fixed_shift=SHIFT,
                              min_depth_m=0.1, max_depth_m=80.0, process_res=1024,
                              relative_alignment="off")  # the per-frame products, as computed before
    pipeline = PerceptionPipeline(config, engine)
    pipeline.products_on_device = on_device
    rgb = (np.random.default_rng(1).random((height, width, 3)) * 255).astype(np.uint8)
    out, _ = pipeline.process(Frame(rgb, 1, "camera", CameraCalibration(camera)))
    return out, engine.preprocess(rgb), _reference(rgb, decoded, camera)


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def test_at_640x480_every_product_is_bit_identical_to_the_previous_computation(tiny_engine):
    out, model_input, ref = _run(tiny_engine, 640, 480)  # processed at its own size: no resize anywhere
    assert torch.equal(model_input, ref["model_input"])
    for key in ("disparity", "normals", "depth_m", "depth_colorized", "normals_colorized"):
        got = getattr(out, key)
        assert got.shape == ref[key].shape and got.dtype == ref[key].dtype, key
        assert np.array_equal(_bits(got), _bits(ref[key])), key
    np.testing.assert_allclose(out.points_m, ref["points_m"], rtol=1e-6, atol=0)


def test_at_1280x720_the_products_agree_with_the_previous_computation_within_float_rounding(tiny_engine):
    out, model_input, ref = _run(tiny_engine, 1280, 720)  # 1024x576: resized in and out
    # 1280 -> 1024 and 720 -> 576 sample at the same positions in OpenCV and torch: a few ulp apart.
    torch.testing.assert_close(model_input, ref["model_input"], atol=3e-7, rtol=0)
    # Back to 1280x720: torch places the samples in float32, OpenCV in double (up to ~1e-4 px).
    np.testing.assert_allclose(out.disparity, ref["disparity"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.normals, ref["normals"], atol=1e-4, rtol=0)
    finite = np.isfinite(ref["depth_m"])
    assert np.array_equal(np.isfinite(out.depth_m), finite)
    np.testing.assert_allclose(out.depth_m[finite], ref["depth_m"][finite], rtol=5e-4)
    for key in ("depth_colorized", "normals_colorized"):  # a colour-map step here and there
        differs = np.any(getattr(out, key) != ref[key], axis=-1)
        assert differs.mean() < 0.01, key
    assert np.abs(out.normals_colorized.astype(int) - ref["normals_colorized"]).max() <= 1


@pytest.mark.parametrize("width, height", [(640, 480), (1280, 720)])
def test_the_device_path_gives_the_host_path_products(tiny_engine, width, height):
    host, _, _ = _run(tiny_engine, width, height)
    device, _, _ = _run(tiny_engine, width, height, on_device=True)
    assert "postprocess_download" in device.timings_ms and "postprocess_download" not in host.timings_ms
    # torch resizes on the device (float32 sample positions); torch's CPU sqrt is within 1 ulp.
    np.testing.assert_allclose(device.disparity, host.disparity, atol=1e-4, rtol=0)
    np.testing.assert_allclose(device.normals, host.normals, atol=1e-4, rtol=0)
    for key in ("depth_colorized", "normals_colorized"):
        got, want = getattr(device, key), getattr(host, key)
        assert got.dtype == np.uint8 and got.shape == want.shape and got.flags["C_CONTIGUOUS"]
        assert np.any(got != want, axis=-1).mean() < 0.01, key
    if (width, height) == (640, 480):  # no resize: the same disparity bits, so the same colours
        assert np.array_equal(_bits(device.disparity), _bits(host.disparity))
        assert np.array_equal(device.depth_colorized, host.depth_colorized)


def _awkward_disparity(seed=0):
    d = np.random.default_rng(seed).random((37, 53)).astype(np.float32) * 3 - 1
    d[3, 4], d[5, 6], d[7, 8] = np.nan, np.inf, -np.inf
    return d


@pytest.mark.parametrize("make", [
    _awkward_disparity,
    lambda: np.random.default_rng(1).random((20, 30)).astype(np.float32),  # all finite
    lambda: np.full((4, 5), 0.25, np.float32),  # constant: scale 0
    lambda: np.full((4, 5), np.nan, np.float32),  # nothing finite
])
def test_colorize_disparity_tensor_is_bit_identical_to_the_numpy_form(make):
    d = make()
    assert np.array_equal(colorize_disparity_tensor(torch.from_numpy(d)).numpy(), colorize_disparity(d))


def test_colorize_normals_tensor_is_bit_identical_to_the_numpy_form():
    n = np.random.default_rng(2).normal(size=(31, 45, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[0, 0] = (0.0, 0.0, -1.0)  # exactly 255.5 / 0.5 at the ends
    n[0, 1] = (-1.0, 1.0, 0.0)
    n[1, 1, 2] = np.nan
    n[2, 2] = (7.0, -9.0, 0.0)  # out of range: clipped
    assert np.array_equal(colorize_normals_tensor(torch.from_numpy(n)).numpy(), colorize_normals(n))


def test_planar_model_to_optical_tensor_matches_the_numpy_form_within_an_ulp():
    u = np.random.default_rng(3).random((2, 3, 17, 23)).astype(np.float32)
    u[0, :, 1, 1] = 0.5  # no direction: NaN
    u[1, 0, 2, 3] = np.nan
    got = planar_model_to_optical_tensor(torch.from_numpy(u)).numpy()
    want = planar_model_to_optical(u)
    assert got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    # The same float32 operations; torch's CPU sqrt is not correctly rounded (CUDA's is).
    np.testing.assert_allclose(got, want, rtol=3e-7, atol=0)


def test_download_returns_every_tensor_with_its_dtype_and_shape_from_one_buffer():
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.arange(5, dtype=torch.uint8),
               "c": torch.tensor([[1.5, -2.0]], dtype=torch.float32).t()}  # a non-contiguous view
    host = download(tensors)
    assert list(host) == ["a", "b", "c"]
    for key, t in tensors.items():
        assert host[key].dtype == t.numpy().dtype and host[key].shape == tuple(t.shape)
        assert np.array_equal(host[key], t.numpy())
    assert download({}) == {}
