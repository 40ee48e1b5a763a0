"""2×2 latent packing, position ids and the sharpener's schedule against diffusers' FLUX code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline, calculate_shift

from lotus2_ros.model.latents import (
    LOTUS2_NUM_TRAIN_TIMESTEPS,
    FlowSchedule,
    image_position_ids,
    pack_latents,
    text_position_ids,
    unpack_latents,
)
from lotus2_ros.model.tiny import FLUX_SCHEDULER_CONFIG

VAE_SCALE_FACTOR = 8


def _random_latents(b, c, h, w, seed=0):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- packing
@pytest.mark.parametrize("shape", [(1, 16, 2, 2), (2, 16, 4, 6), (3, 4, 10, 2)])
def test_pack_then_unpack_gives_back_the_exact_latent(shape):
    x = _random_latents(*shape)
    tokens = pack_latents(x)
    b, c, h, w = shape
    assert tokens.shape == (b, (h // 2) * (w // 2), 4 * c)
    assert torch.equal(unpack_latents(tokens, (h, w)), x)


@pytest.mark.parametrize("shape", [(1, 16, 2, 2), (2, 16, 4, 6), (2, 16, 8, 4)])
def test_pack_and_unpack_equal_the_flux_pipeline_helpers(shape):
    b, c, h, w = shape
    x = _random_latents(*shape, seed=3)
    ref_tokens = FluxPipeline._pack_latents(x, b, c, h, w)
    assert torch.equal(pack_latents(x), ref_tokens)
    other = torch.randn_like(ref_tokens)
    # FluxPipeline takes the pixel size; the latent is 1/8 of it
    ref = FluxPipeline._unpack_latents(other, h * VAE_SCALE_FACTOR, w * VAE_SCALE_FACTOR, VAE_SCALE_FACTOR)
    assert torch.equal(unpack_latents(other, (h, w)), ref)


def test_a_patch_holds_its_channels_major_then_the_2x2_pixels_row_major():
    x = torch.arange(2 * 2 * 2, dtype=torch.float32).view(1, 2, 2, 2)  # [B=1,C=2,h=2,w=2]
    tokens = pack_latents(x)
    assert tokens.tolist() == [[[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]]


@pytest.mark.parametrize("hw", [(3, 4), (4, 5), (1, 1)])
def test_packing_a_latent_with_an_odd_side_raises(hw):
    with pytest.raises(ValueError, match="even"):
        pack_latents(torch.zeros(1, 16, *hw))


def test_unpacking_to_a_size_that_does_not_fit_the_token_count_raises():
    tokens = torch.zeros(1, 6, 64)
    with pytest.raises(ValueError, match="cannot unpack"):
        unpack_latents(tokens, (4, 4))  # 4 patches, not 6
    with pytest.raises(ValueError, match="cannot unpack"):
        unpack_latents(torch.zeros(1, 4, 62), (4, 4))  # channels not a multiple of 4


# ----------------------------------------------------------------------------- position ids
@pytest.mark.parametrize("latent_hw", [(2, 2), (4, 6), (10, 4)])
def test_image_ids_equal_the_flux_pipeline_ids(latent_hw):
    ids = image_position_ids(latent_hw, "cpu", torch.float32)
    ref = FluxPipeline._prepare_latent_image_ids(1, latent_hw[0] // 2, latent_hw[1] // 2, "cpu", torch.float32)
    assert ids.dtype == torch.float32
    assert torch.equal(ids, ref)


def test_image_ids_are_zero_row_col_in_row_major_order():
    ids = image_position_ids((4, 6), "cpu", torch.bfloat16)  # 2x3 patch grid
    assert ids.dtype == torch.bfloat16
    assert ids.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0], [0, 1, 1], [0, 1, 2]]


def test_text_ids_are_all_zero():
    ids = text_position_ids(7, "cpu", torch.float32)
    assert ids.shape == (7, 3)
    assert not ids.any()


# ----------------------------------------------------------------------------- schedule
def _diffusers_sigmas(config: dict, num_steps: int, image_seq_len: int) -> np.ndarray:
    scheduler = FlowMatchEulerDiscreteScheduler(**{**config, "num_train_timesteps": LOTUS2_NUM_TRAIN_TIMESTEPS})
    mu = calculate_shift(image_seq_len, scheduler.config.base_image_seq_len, scheduler.config.max_image_seq_len,
                         scheduler.config.base_shift, scheduler.config.max_shift)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / num_steps, num_steps), mu=mu)
    return scheduler.sigmas.numpy()


@pytest.mark.parametrize("image_seq_len", [4, 4096])
@pytest.mark.parametrize("num_steps", range(1, 11))
def test_sigmas_equal_the_flux_flow_match_scheduler(num_steps, image_seq_len):
    ref = _diffusers_sigmas(FLUX_SCHEDULER_CONFIG, num_steps, image_seq_len)
    got = FlowSchedule().sigmas(num_steps, image_seq_len)
    assert got.dtype == np.float32
    assert got.shape == (num_steps + 1,)
    assert got[-1] == 0.0 and got[0] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(got) < 0)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_sigmas_without_dynamic_shifting_use_the_static_shift():
    config = {**FLUX_SCHEDULER_CONFIG, "use_dynamic_shifting": False, "shift": 3.0}
    scheduler = FlowMatchEulerDiscreteScheduler(**{**config, "num_train_timesteps": LOTUS2_NUM_TRAIN_TIMESTEPS})
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / 4, 4))
    got = FlowSchedule(use_dynamic_shifting=False, shift=3.0).sigmas(4, 1234)
    np.testing.assert_allclose(got, scheduler.sigmas.numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("image_seq_len", [1, 256, 1000, 4096, 8192])
def test_mu_equals_diffusers_calculate_shift(image_seq_len):
    c = FLUX_SCHEDULER_CONFIG
    ref = calculate_shift(image_seq_len, c["base_image_seq_len"], c["max_image_seq_len"],
                          c["base_shift"], c["max_shift"])
    assert FlowSchedule().mu(image_seq_len) == pytest.approx(ref, abs=1e-12)


def test_mu_is_the_base_and_max_shift_at_the_base_and_max_lengths():
    s = FlowSchedule()
    assert s.mu(256) == pytest.approx(0.5) and s.mu(4096) == pytest.approx(1.15)


@pytest.mark.parametrize("num_steps", [0, -1])
def test_sigmas_need_at_least_one_step(num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        FlowSchedule().sigmas(num_steps, 16)


# ----------------------------------------------------------------------------- scheduler folder
def _write_scheduler(tmp_path, **config):
    (tmp_path / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", **config}))
    return tmp_path


def test_from_scheduler_dir_reads_the_shift_settings_and_keeps_the_lotus2_timestep_count(tmp_path):
    folder = _write_scheduler(tmp_path, num_train_timesteps=1000, shift=2.0, use_dynamic_shifting=True,
                              base_shift=0.4, max_shift=1.3, base_image_seq_len=128, max_image_seq_len=2048)
    s = FlowSchedule.from_scheduler_dir(folder)
    assert s == FlowSchedule(base_image_seq_len=128, max_image_seq_len=2048, base_shift=0.4, max_shift=1.3,
                             use_dynamic_shifting=True, shift=2.0, num_train_timesteps=10)


def test_from_scheduler_dir_reads_what_diffusers_writes(tmp_path):
    FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG).save_pretrained(tmp_path)
    assert FlowSchedule.from_scheduler_dir(tmp_path) == FlowSchedule()


def test_from_scheduler_dir_fills_missing_settings_with_the_flux_defaults(tmp_path):
    assert FlowSchedule.from_scheduler_dir(_write_scheduler(tmp_path)) == FlowSchedule()


@pytest.mark.parametrize(
    "setting, shown",
    [
        ({"use_karras_sigmas": True}, "use_karras_sigmas"),
        ({"use_exponential_sigmas": True}, "use_exponential_sigmas"),
        ({"use_beta_sigmas": True}, "use_beta_sigmas"),
        ({"invert_sigmas": True}, "invert_sigmas"),
        ({"shift_terminal": 0.1}, "shift_terminal"),
        ({"stochastic_sampling": True}, "stochastic_sampling"),
        ({"time_shift_type": "linear"}, "linear"),
    ],
)
def test_from_scheduler_dir_rejects_unsupported_settings_naming_them(tmp_path, setting, shown):
    folder = _write_scheduler(tmp_path, **setting)
    with pytest.raises(ValueError, match="unsupported scheduler settings") as info:
        FlowSchedule.from_scheduler_dir(folder)
    assert shown in str(info.value)
    assert "scheduler_config.json" in str(info.value)


def test_from_scheduler_dir_accepts_disabled_options(tmp_path):
    folder = _write_scheduler(tmp_path, use_karras_sigmas=False, shift_terminal=None, time_shift_type="exponential")
    assert FlowSchedule.from_scheduler_dir(folder) == FlowSchedule()


def test_from_scheduler_dir_without_a_config_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="scheduler_config.json"):
        FlowSchedule.from_scheduler_dir(tmp_path)
