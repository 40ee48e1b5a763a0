"""The Lotus-2 backend's stages, and whole images through the perception pipeline (tiny seeded model, CPU).

Numerical agreement with the official algorithm is checked in ``test_engine_reference.py``;
these tests pin the stage contracts (shapes, dtypes, ranges), batching, determinism, adapter
switching, configuration validation and the ``PerceptionOutput`` of a whole image.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lotus2_ros.geometry.normals import model_to_optical
from lotus2_ros.model.backend import BackendConfig
from lotus2_ros.model.engine import MAX_SHARPEN_STEPS, Lotus2Engine
from lotus2_ros.perception.pipeline import PerceptionOutput, offline_pipeline

# The engine adds several named adapters to one transformer on purpose; peft warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")

#: 50x70 is processed at 48x64: short 50 -> 3*16 = 48, s = 0.96, w = int(67.2) = 67 -> 64.
IMAGE_HW = (50, 70)
PROCESS_HW = (48, 64)
LATENT_HW = (6, 8)


def _image(hw=IMAGE_HW, seed=0, batch=None):
    shape = (*hw, 3) if batch is None else (batch, *hw, 3)
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image():
    return _image()


@pytest.fixture(scope="module")
def latents(tiny_engine, image):
    with torch.no_grad():
        return tiny_engine.encode(tiny_engine.preprocess(image))  # [1,16,6,8]


def _predict(engine, image, tasks=None, sharpen_steps=0):
    """One image through the pipeline every front end uses (``lotus2 predict``)."""
    return offline_pipeline(engine).predict(image, refine_steps=sharpen_steps, tasks=tasks)


@pytest.fixture(scope="module")
def predictions(tiny_engine, image):
    """Both tasks, 2 sharpener steps."""
    return [_predict(tiny_engine, image, sharpen_steps=2)]


@pytest.fixture(scope="module")
def capped_engine(tiny_model):
    """Depth only, no sharpener, long edge capped at 64 px."""
    return Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=tiny_model.weights,
                                           tasks=("depth",), process_res=64, load_refiner=False))


def _unit_norm_error(normals):
    return np.abs(np.linalg.norm(normals, axis=-1) - 1.0).max()


# ----------------------------------------------------------------------------- stages
def test_preprocess_gives_minus_one_one_at_the_processing_size(tiny_engine, image):
    rgb = tiny_engine.preprocess(image)
    assert rgb.shape == (1, 3, *PROCESS_HW)
    assert rgb.dtype == torch.float32
    assert rgb.min().item() >= -1.0 and rgb.max().item() <= 1.0
    assert rgb.min().item() < -0.9 and rgb.max().item() > 0.9  # the full range is used


def test_encode_gives_a_16_channel_latent_at_one_eighth(tiny_engine, latents):
    assert latents.shape == (1, 16, *LATENT_HW)
    assert latents.dtype == torch.float32
    assert torch.isfinite(latents).all()


def test_core_and_lcm_keep_the_latent_shape(tiny_engine, latents):
    with torch.no_grad():
        coarse = tiny_engine.core(latents, "depth")
        refined = tiny_engine.lcm(coarse, "depth")
    assert coarse.shape == refined.shape == latents.shape
    assert coarse.dtype == refined.dtype == torch.float32
    assert not torch.equal(coarse, latents) and not torch.equal(refined, coarse)


def test_decode_gives_a_zero_one_image_at_the_processing_size(tiny_engine, latents):
    with torch.no_grad():
        decoded = tiny_engine.decode(tiny_engine.core(latents, "depth"))
    assert decoded.shape == (1, 3, *PROCESS_HW)
    assert decoded.dtype == torch.float32
    assert decoded.min().item() >= 0.0 and decoded.max().item() <= 1.0


def test_to_disparity_is_the_channel_mean_in_zero_one_at_the_input_size():
    decoded = torch.rand(2, 3, 8, 16, generator=torch.Generator().manual_seed(0))
    disparity = Lotus2Engine.to_disparity(decoded, (8, 16))
    assert disparity.shape == (2, 8, 16) and disparity.dtype == np.float32
    np.testing.assert_allclose(disparity, decoded.mean(dim=1).numpy(), atol=1e-7)
    resized = Lotus2Engine.to_disparity(decoded, (12, 20))
    assert resized.shape == (2, 12, 20)
    assert resized.min() >= 0.0 and resized.max() <= 1.0


def test_to_normals_gives_unit_optical_frame_vectors_at_the_input_size():
    decoded = torch.rand(1, 3, 8, 16, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    decoded[0, :, 0, 0] = torch.tensor([0.5, 0.5, 1.0])  # model "toward the viewer"
    normals = Lotus2Engine.to_normals(decoded, (8, 16))
    assert normals.shape == (1, 8, 16, 3) and normals.dtype == np.float32
    assert _unit_norm_error(normals) < 1e-5
    np.testing.assert_allclose(normals[0, 0, 0], [0.0, 0.0, -1.0], atol=1e-6)
    assert Lotus2Engine.to_normals(decoded, (10, 20)).shape == (1, 10, 20, 3)


def test_to_normals_is_bit_identical_to_model_to_optical_on_the_hwc_view():
    decoded = torch.rand(2, 3, 8, 16, generator=torch.Generator().manual_seed(2))
    decoded[0, :, 1, 1] = 0.5  # no direction: NaN
    decoded[1, 0, 2, 3] = float("nan")
    normals = Lotus2Engine.to_normals(decoded, (8, 16))
    expected = model_to_optical(decoded.permute(0, 2, 3, 1).numpy())
    assert normals.flags["C_CONTIGUOUS"] and normals.shape == expected.shape and normals.dtype == expected.dtype
    assert np.array_equal(normals.view(np.uint32), expected.view(np.uint32))
    assert np.isnan(normals[0, 1, 1]).all() and np.isnan(normals[1, 2, 3]).all()


def test_the_stages_chained_by_hand_give_the_prediction(tiny_engine, image, predictions):
    with torch.no_grad():
        latent = tiny_engine.encode(tiny_engine.preprocess(image))
        fine = tiny_engine.sharpen(tiny_engine.lcm(tiny_engine.core(latent, "normal"), "normal"), "normal", 2)
        normals = tiny_engine.to_normals(tiny_engine.decode(fine), IMAGE_HW)[0]
    # The prediction ran depth and normal in one batched forward: the same within float32 rounding.
    np.testing.assert_allclose(normals, predictions[0].normals, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- adapters
def test_depth_and_normal_use_different_adapters_and_switching_back_is_exact(tiny_engine, latents):
    with torch.no_grad():
        depth = tiny_engine.core(latents, "depth")
        normal = tiny_engine.core(latents, "normal")
        depth_again = tiny_engine.core(latents, "depth")
    assert (depth - normal).abs().max().item() > 1e-3
    assert torch.equal(depth, depth_again)


def test_depth_and_normal_lcms_differ(tiny_engine, latents):
    with torch.no_grad():
        assert (tiny_engine.lcm(latents, "depth") - tiny_engine.lcm(latents, "normal")).abs().max().item() > 1e-3


def test_depth_and_normal_predictions_differ(predictions):
    p = predictions[0]
    # Both decode to [0,1] images; disparity is their channel mean, normals their -(2u - 1).
    normal_as_disparity = ((1.0 - p.normals) / 2.0).mean(axis=-1)
    assert np.abs(p.disparity - normal_as_disparity).max() > 1e-2


# ----------------------------------------------------------------------------- sharpener
def test_iter_sharpen_yields_one_latent_per_step_and_ends_where_sharpen_ends(tiny_engine, latents):
    with torch.no_grad():
        steps = list(tiny_engine.iter_sharpen(latents, "depth", 3))
        final = tiny_engine.sharpen(latents, "depth", 3)
    assert len(steps) == 3
    assert all(s.shape == latents.shape for s in steps)
    assert not torch.equal(steps[0], steps[1]) and not torch.equal(steps[1], steps[2])
    assert torch.equal(steps[-1], final)


def test_sharpen_with_zero_steps_returns_the_input_unchanged(tiny_engine, latents):
    assert tiny_engine.sharpen(latents, "depth", 0) is latents
    assert list(tiny_engine.iter_sharpen(latents, "normal", 0)) == []


@pytest.mark.parametrize("steps", [MAX_SHARPEN_STEPS + 1, -1])
def test_sharpen_steps_out_of_range_are_rejected(tiny_engine, latents, image, steps):
    with pytest.raises(ValueError, match=r"sharpen steps must be in 0\.\.10"):
        tiny_engine.sharpen(latents, "depth", steps)
    with pytest.raises(ValueError, match=rf"refinement steps must be in 0\.\.10, got {steps}"):
        _predict(tiny_engine, image, sharpen_steps=steps)


def test_sharpening_without_the_sharpener_loaded_is_rejected(capped_engine, latents, image):
    with pytest.raises(ValueError, match=r"refinement step\(s\) requested but the refinement \(sharpen\) is not "
                                         r"loaded for \['depth'\]"):
        _predict(capped_engine, image, sharpen_steps=1)
    with pytest.raises(ValueError, match="detail sharpener for 'depth' is not loaded"):
        capped_engine.sharpen(latents, "depth", 2)
    assert _predict(capped_engine, image, sharpen_steps=0).refine_steps == 0


# ----------------------------------------------------------------------------- predict
def test_prediction_fields(predictions):
    assert len(predictions) == 1
    p = predictions[0]
    assert isinstance(p, PerceptionOutput) and p.refined is True
    assert p.disparity.shape == IMAGE_HW and p.disparity.dtype == np.float32
    assert p.disparity.min() >= 0.0 and p.disparity.max() <= 1.0
    assert p.normals.shape == (*IMAGE_HW, 3) and p.normals.dtype == np.float32
    assert _unit_norm_error(p.normals) < 1e-5
    assert p.refine_steps == 2
    assert p.process_hw == PROCESS_HW
    # Depth and normal share each transformer forward (core, sharpener steps): one stage for both.
    expected = {"preprocess", "encode", "core_depth+normal", "sharpen_depth+normal"} | {
        f"{stage}_{task}" for stage in ("lcm", "decode", "postprocess") for task in ("depth", "normal")}
    assert expected <= set(p.timings_ms)
    assert all(v >= 0.0 for v in p.timings_ms.values())


def test_predict_only_the_requested_task(tiny_engine, image):
    p = _predict(tiny_engine, image, tasks=("normal",), sharpen_steps=0)
    assert p.disparity is None and p.normals.shape == (*IMAGE_HW, 3)
    assert p.refine_steps == 0 and p.refined is False
    assert "core_depth" not in p.timings_ms and "core_normal" in p.timings_ms


def test_a_batch_of_two_equals_two_single_predictions(tiny_engine):
    batch = _image(hw=(32, 48), seed=5, batch=2)

    def disparity(images):  # the stages on a batch, as a backend runs them
        with torch.no_grad():
            cond = tiny_engine.encode(tiny_engine.preprocess(images))
            z = tiny_engine.sharpen(tiny_engine.predict(cond, ("depth",))["depth"], "depth", 1)
            return tiny_engine.to_depth(tiny_engine.decode(z), (32, 48))

    together = disparity(batch)
    assert len(together) == 2
    for i in range(2):
        alone = _predict(tiny_engine, batch[i], tasks=("depth",), sharpen_steps=1).disparity
        np.testing.assert_allclose(together[i], alone, atol=1e-5, rtol=0)
    assert np.abs(together[0] - together[1]).max() > 1e-3


def test_predict_is_deterministic_within_and_across_engines(tiny_model, tiny_engine, image, predictions):
    again = _predict(tiny_engine, image, sharpen_steps=2)
    assert np.array_equal(again.disparity, predictions[0].disparity)
    assert np.array_equal(again.normals, predictions[0].normals)
    other = Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=tiny_model.weights,
                                            tasks=("depth",)))
    alone = _predict(tiny_engine, image, tasks=("depth",), sharpen_steps=2).disparity
    assert np.array_equal(_predict(other, image, sharpen_steps=2).disparity, alone)


# ----------------------------------------------------------------------------- both tasks in one forward
def test_core_tasks_is_one_forward_equal_to_one_core_per_task(tiny_engine, latents):
    with torch.no_grad():
        together = tiny_engine.core_tasks(latents, ("depth", "normal"))
        for task in ("depth", "normal"):
            torch.testing.assert_close(together[task], tiny_engine.core(latents, task), atol=1e-5, rtol=0)
        swapped = tiny_engine.core_tasks(latents, ("normal", "depth"))  # the order of the batch does not matter
    for task in ("depth", "normal"):
        torch.testing.assert_close(swapped[task], together[task], atol=1e-5, rtol=0)
    assert (together["depth"] - together["normal"]).abs().max().item() > 1e-3  # each sample its own adapter


def test_batched_sharpener_steps_equal_the_separate_steps_at_every_step(tiny_engine, latents):
    with torch.no_grad():
        start = {task: tiny_engine.lcm(tiny_engine.core(latents, task), task) for task in ("depth", "normal")}
        together = list(tiny_engine.iter_sharpen_tasks(start, 3))
        alone = {task: list(tiny_engine.iter_sharpen(start[task], task, 3)) for task in start}
    assert len(together) == 3
    for i in range(3):
        for task in start:
            torch.testing.assert_close(together[i][task], alone[task][i], atol=1e-5, rtol=0)


def test_batched_and_separate_task_forwards_give_the_same_products(tiny_engine, image, predictions):
    tiny_engine.batch_tasks = False
    try:
        separate = _predict(tiny_engine, image, sharpen_steps=2)
    finally:
        tiny_engine.batch_tasks = True
    assert {"core_depth", "core_normal", "sharpen_depth", "sharpen_normal"} <= set(separate.timings_ms)
    batched = predictions[0]
    np.testing.assert_allclose(batched.disparity, separate.disparity, atol=1e-5, rtol=0)
    np.testing.assert_allclose(batched.normals, separate.normals, atol=1e-4, rtol=0)


def test_batched_task_forwards_agree_with_separate_ones_in_bf16(tiny_model, image):
    engine = Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=tiny_model.weights,
                                             tasks=("depth", "normal"), dtype="bf16"))
    with torch.no_grad():
        cond = engine.encode(engine.preprocess(image))
        together = engine.predict(cond, ("depth", "normal"))
        engine.batch_tasks = False
        alone = engine.predict(cond, ("depth", "normal"))
    for task in together:
        assert together[task].dtype == torch.bfloat16
        # bf16 keeps 8 bits: a different GEMM blocking for a batch of two moves a value by an ulp or so.
        scale = alone[task].abs().max().item()
        assert (together[task].float() - alone[task].float()).abs().max().item() <= 0.02 * scale


def test_mixed_adapter_hooks_are_gone_after_the_forward_even_when_it_fails(tiny_engine, latents):
    from peft.tuners.lora import LoraLayer

    layers = [m for m in tiny_engine.transformer.modules() if isinstance(m, LoraLayer)]
    assert layers and not any(m._forward_pre_hooks for m in layers)
    with torch.no_grad():
        tiny_engine.core_tasks(latents, ("depth", "normal"))
    assert not any(m._forward_pre_hooks for m in layers)
    with pytest.raises(ValueError, match="Length of `adapter_names`"):  # peft checks one name per sample
        with tiny_engine._mixed_adapters(["depth_core"]), torch.no_grad():
            tiny_engine.core(torch.cat([latents, latents]), "depth")
    assert not any(m._forward_pre_hooks for m in layers)


def test_an_unknown_or_unloaded_task_is_rejected(tiny_engine, capped_engine, image):
    with pytest.raises(ValueError, match=r"tasks \['segmentation'\] are not loaded"):
        _predict(tiny_engine, image, tasks=("segmentation",))
    with pytest.raises(ValueError, match=r"tasks \['normal'\] are not loaded \(loaded: \('depth',\)\)"):
        _predict(capped_engine, image, tasks=("normal",), sharpen_steps=0)


def test_process_res_caps_a_large_image(capped_engine, tiny_engine):
    img = _image(hw=(64, 200), seed=2)
    # cap 64: s = 64/200, h = int(20.48) = 20, w = 64; short 20 -> 16, s = 0.8: w = int(51.2) = 51 -> 48
    capped = _predict(capped_engine, img, sharpen_steps=0)
    assert capped.process_hw == (16, 48)
    assert capped.disparity.shape == (64, 200)
    # default cap 1024: short 64 is a multiple of 16 (s = 1), w = 200 -> 12*16 = 192
    assert _predict(tiny_engine, img, tasks=("depth",), sharpen_steps=0).process_hw == (64, 192)


def test_a_bf16_engine_on_cpu_stays_close_to_fp32(tiny_model, image, predictions):
    bf16 = Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=tiny_model.weights,
                                           tasks=("depth", "normal"), dtype="bf16"))
    assert bf16.transformer.dtype == torch.bfloat16 and bf16.vae.dtype == torch.bfloat16
    got = _predict(bf16, image, sharpen_steps=2)
    ref = predictions[0]  # fp32, same image and steps
    assert got.disparity.dtype == np.float32 and got.normals.dtype == np.float32
    assert np.abs(got.disparity - ref.disparity).mean() < 0.05
    assert _unit_norm_error(got.normals) < 1e-5
    cosine = np.sum(got.normals * ref.normals, axis=-1)  # [H,W]; the random tiny model has near-zero
    assert np.median(cosine) > 0.95 and cosine.mean() > 0.9  # decoded vectors, whose direction bf16 flips
    assert not np.array_equal(got.disparity, ref.disparity)  # it really ran in bf16


def test_predict_rejects_a_non_rgb_image(tiny_engine):
    with pytest.raises(ValueError, match="shape"):
        tiny_engine.preprocess(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"uint8 RGB \[H,W,3\], got uint8 \(32, 32\)"):
        _predict(tiny_engine, np.zeros((32, 32), np.uint8))


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"dtype": "fp64"}, "dtype must be one of"),
        ({"tasks": ()}, "tasks must be a non-empty subset"),
        ({"family": "lotus3"}, "backend must be one of"),
        ({"refine_steps": 11}, "refine_steps must be in 0..10"),
        ({"tasks": ("depth", "depth")}, "tasks must be a non-empty subset"),
        ({"tasks": ("segmentation",)}, "tasks must be a non-empty subset"),
        ({"tasks": "depth"}, "tasks must be a non-empty subset"),
        ({"device": "tpu"}, "device must be 'cpu' or 'cuda"),
        ({"process_res": 8}, "process_res must be >= 16 or None, got 8"),
    ],
)
def test_backend_config_rejects_bad_values_naming_them(overrides, match):
    with pytest.raises(ValueError, match=match):
        BackendConfig(base_model="base", weights="weights", **overrides)


def test_backend_config_defaults_leave_model_settings_to_the_model():
    config = BackendConfig(base_model="base", weights="weights")
    assert (config.family, config.tasks, config.device, config.dtype, config.process_res, config.refine_steps,
            config.full_resolution, config.load_refiner) == ("lotus2", None, "cpu", "fp32", None, None, False, True)
    with pytest.raises(TypeError):
        BackendConfig("base", "weights")  # keyword-only: a swapped base model / weights cannot slip through


def test_the_tiny_model_gets_the_official_defaults_and_a_model_json_overrides_them(tiny_model, tmp_path):
    import shutil

    assert Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=tiny_model.weights,
                                           load_refiner=False)).info.settings.process_res == 1024
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model.weights, weights)
    (weights / "model.json").write_text('{"process_res": 64, "sharpen_steps": 3, "tasks": ["normal"]}')
    engine = Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=weights))
    s = engine.info.settings
    assert (s.tasks, s.process_res, s.refine_steps) == (("normal",), 64, 3) and len(s.notes) == 3
    assert engine.info.source == str(weights / "model.json")
    # What the user gives wins over the model's defaults.
    mine = Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=weights, tasks=("depth",),
                                           process_res=96, refine_steps=1))
    assert (mine.info.tasks, mine.info.settings.process_res, mine.info.settings.refine_steps) == (("depth",), 96, 1)
