"""The engine, through the perception pipeline, against an independent step-by-step re-computation of
the official algorithm.

The reference below is written from the official Lotus-2 inference description directly on the
diffusers modules (FluxPipeline's static pack/unpack/ids helpers, the FlowMatch Euler scheduler
loaded with ``num_train_timesteps=10`` and stepped through ``retrieve_timesteps``, peft adapters
attached with the official target list via ``convert_unet_state_dict_to_peft``, the VAE image
processor's post-processing and OpenCV's bilinear resize) and shares no code with the engine.
Its one deviation is the engine's: the VAE posterior mode instead of a sample.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from lotus2_ros.perception.pipeline import offline_pipeline

OFFICIAL_TARGETS = [
    "attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj",
    "attn.add_v_proj", "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj",
    "ff_context.net.2",
]


class ReferenceLCM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.lcm = nn.Sequential(nn.Conv2d(c, 2 * c, 3, padding=1), nn.GELU(), nn.Conv2d(2 * c, c, 3, padding=1))

    def forward(self, x):
        return x + self.lcm(x)


def reference_predict(base, weights, task, image_uint8, steps):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from diffusers.image_processor import VaeImageProcessor
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    transformer = FluxTransformer2DModel.from_pretrained(base / "transformer").eval()
    vae = AutoencoderKL.from_pretrained(base / "vae").eval()
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(base / "scheduler", num_train_timesteps=10)
    for kind, name in (("core_predictor", "core"), ("detail_sharpener", "sharp")):
        sd = load_file(str(weights / f"lotus-2_{kind}_{task}.safetensors"))
        rank = next(v.shape[0] for k, v in sd.items() if "lora_A" in k)
        transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=OFFICIAL_TARGETS), adapter_name=name)
        sd = convert_unet_state_dict_to_peft({k.replace("transformer.", "", 1): v for k, v in sd.items()})
        res = set_peft_model_state_dict(transformer, sd, adapter_name=name)
        assert not getattr(res, "unexpected_keys", None)
    lcm = ReferenceLCM(16)
    lcm.load_state_dict(load_file(str(weights / f"lotus-2_lcm_{task}.safetensors")))
    emb = load_file(str(weights / "lotus-2_prompt_embeds.safetensors"))
    prompt, pooled = emb["prompt_embeds"], emb["pooled_prompt_embeds"]
    text_ids = torch.zeros(prompt.shape[1], 3)

    with torch.no_grad():
        # preprocess: [-1,1], long edge <= 1024 (not exceeded here), shorter side to a multiple of 16
        x = torch.tensor(image_uint8.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
        h, w = x.shape[2:]
        s = (min(h, w) // 16) * 16 / min(h, w)
        nh, nw = (int(h * s) // 16) * 16, (int(w * s) // 16) * 16
        x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
        lat = vae.encode(x).latent_dist.mode()
        lat = (lat - vae.config.shift_factor) * vae.config.scaling_factor
        lh, lw = lat.shape[2:]
        packed = FluxPipeline._pack_latents(lat, 1, 16, lh, lw)
        img_ids = FluxPipeline._prepare_latent_image_ids(1, lh // 2, lw // 2, "cpu", lat.dtype)
        guidance = torch.full([1], 3.5)
        kw = dict(guidance=guidance, pooled_projections=pooled, encoder_hidden_states=prompt, txt_ids=text_ids,
                  img_ids=img_ids, joint_attention_kwargs={}, return_dict=False)
        transformer.set_adapter("core")
        out = transformer(hidden_states=packed, timestep=torch.tensor(1).expand(1).float() / 1000, **kw)[0]
        lat = FluxPipeline._unpack_latents(out, nh, nw, 8)
        lat = lcm(lat)
        transformer.set_adapter("sharp")
        packed = FluxPipeline._pack_latents(lat, 1, 16, lh, lw)
        if steps:
            mu = calculate_shift(packed.shape[1], scheduler.config.base_image_seq_len, scheduler.config.max_image_seq_len,
                                 scheduler.config.base_shift, scheduler.config.max_shift)
            timesteps, _ = retrieve_timesteps(scheduler, steps, "cpu", sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
            for t in timesteps:
                v = transformer(hidden_states=packed, timestep=t.expand(1).float() / 1000, **kw)[0]
                packed = scheduler.step(v, t, packed, return_dict=False)[0]
        lat = FluxPipeline._unpack_latents(packed, nh, nw, 8)
        lat = lat / vae.config.scaling_factor + vae.config.shift_factor
        img = vae.decode(lat, return_dict=False)[0]
        img = VaeImageProcessor(vae_scale_factor=8).postprocess(img, output_type="np")[0]  # [h,w,3] in [0,1]
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    if task == "depth":
        return img.mean(axis=-1)
    n = img * 2 - 1
    n = -n / np.linalg.norm(n, axis=-1, keepdims=True)
    return n


@pytest.mark.parametrize("task,steps", [("depth", 0), ("depth", 3), ("normal", 2)])
def test_engine_matches_step_by_step_reference(tiny_model, tiny_engine, task, steps):
    rng = np.random.default_rng(7)
    image = (rng.random((72, 104, 3)) * 255).astype(np.uint8)  # processed at 64x80 (short side 72 -> 64, then 92 -> 80)
    ref = reference_predict(tiny_model.base_model, tiny_model.weights, task, image, steps)
    pred = offline_pipeline(tiny_engine).predict(image, refine_steps=steps, tasks=(task,))
    got = pred.disparity if task == "depth" else pred.normals
    assert got.shape == ref.shape
    assert pred.process_hw == (64, 80)
    # float32 round-off of two bilinear implementations; renormalising normals magnifies it a little
    np.testing.assert_allclose(got, ref, atol=2e-5 if task == "depth" else 1e-4, rtol=0)


def test_sharpener_steps_change_the_prediction(tiny_engine):
    image = (np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)
    d0 = offline_pipeline(tiny_engine).predict(image, refine_steps=0, tasks=("depth",)).disparity
    d2 = offline_pipeline(tiny_engine).predict(image, refine_steps=2, tasks=("depth",)).disparity
    assert np.abs(d0 - d2).max() > 1e-3


def test_preprocess_matches_the_official_two_step_resize_above_the_cap(tiny_engine):
    # Official: resize to the capped size (long edge 1024), then again to multiples of 16.
    image = (np.random.default_rng(5).random((700, 1100, 3)) * 255).astype(np.uint8)
    x = torch.tensor(image.astype(np.float32)).permute(2, 0, 1)[None] / 127.5 - 1.0
    scale = 1024 / 1100
    h, w = int(700 * scale), int(1100 * scale)  # 651, 1024
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    s = (min(h, w) // 16) * 16 / min(h, w)
    nh, nw = (int(h * s) // 16) * 16, (int(w * s) // 16) * 16  # 640, 992
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    got = tiny_engine.preprocess(image)
    assert tuple(got.shape) == (1, 3, 640, 992)
    torch.testing.assert_close(got, x, atol=1e-6, rtol=0)
