"""Lotus-1 (D/G) against Lotus-2: real-size parameters, bf16 memory and FLOPs per frame; tiny-model CPU times.

Real sizes come from the published configurations, built on the meta device (nothing is
downloaded, no weights are allocated): Stable Diffusion 2's U-Net with Lotus' task-switcher class
embedding (8 input channels for Lotus-G, 4 for Lotus-D) and its VAE; FLUX.1-dev's transformer and
VAE with the Lotus-2 LoRA adapters. FLOPs are counted by ``torch.utils.flop_counter`` on meta
tensors for one frame of the per-frame prediction (VAE encode + one network forward + VAE decode
per task; Lotus-2 adds the LCM, Lotus-2 sharpener steps cost one transformer forward each, a
Lotus-G ensemble member one U-Net forward). Then the tiny random models of both families run the
perception pipeline on the CPU in this same process (median wall time per frame).

    python benchmarks/model_families.py [--frames 5] [--sizes 512x512 1024x768] [--skip-flops]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from real_model_memory import FLUX_DEV_TRANSFORMER, FLUX_DEV_VAE, LORA_RANKS, count

#: Stable Diffusion 2 (base) U-Net, as the Lotus-1 releases configure it (+ the task switcher).
SD2_UNET = dict(
    sample_size=64, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
    flip_sin_to_cos=True, freq_shift=0, class_embed_type="projection", projection_class_embeddings_input_dim=4,
)
SD2_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, scaling_factor=0.18215,
)
GIB_BF16 = 2 / 2**30


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def real_sizes(sizes: list[tuple[int, int]], flops: bool) -> None:
    from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel

    from lotus2_ros.model.latents import image_position_ids, pack_latents, text_position_ids
    from lotus2_ros.model.tiny import lora_target_modules

    with torch.device("meta"):
        unet_g = UNet2DConditionModel(in_channels=8, **SD2_UNET)
        unet_d = UNet2DConditionModel(in_channels=4, **SD2_UNET)
        sd_vae = AutoencoderKL(**SD2_VAE)
        flux = FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
        flux_vae = AutoencoderKL(**FLUX_DEV_VAE)
    lora_per_rank = sum(m.in_features + m.out_features for _, m in lora_target_modules(flux))
    params = {
        "Lotus-G (U-Net + VAE), one task": count(unet_g) + count(sd_vae),
        "Lotus-D (U-Net + VAE), one task": count(unet_d) + count(sd_vae),
        "Lotus-1 depth + normal (two U-Nets, one VAE)": 2 * count(unet_g) + count(sd_vae),
        "Lotus-2 depth (FLUX + VAE + core/sharpener LoRA)": count(flux) + count(flux_vae)
        + 2 * LORA_RANKS["depth"] * lora_per_rank,
        "Lotus-2 depth + normal": count(flux) + count(flux_vae)
        + 2 * (LORA_RANKS["depth"] + LORA_RANKS["normal"]) * lora_per_rank,
    }
    print(f"{'model (weights resident)':<52}{'parameters':>16}{'bf16 GiB':>10}")
    for name, n in params.items():
        print(f"{name:<52}{n:>16,}{n * GIB_BF16:>10.2f}")
    if not flops:
        return
    print("\nFLOPs per frame, per task (VAE encode + one network forward + VAE decode); GFLOP")
    print(f"{'frame':<12}{'Lotus-G':>12}{'Lotus-D':>12}{'Lotus-2 core':>14}{'Lotus-2 +1 step':>17}{'ratio L2/G':>12}")
    for w, h in sizes:
        with torch.device("meta"):
            rgb = torch.zeros(1, 3, h, w)
            lat4 = torch.zeros(1, 4, h // 8, w // 8)
            lat16 = torch.zeros(1, 16, h // 8, w // 8)
            text = torch.zeros(1, 2, 1024)
            labels = torch.zeros(1, 4)
        vae_sd = _flops(lambda: sd_vae.encode(rgb)) + _flops(lambda: sd_vae.decode(lat4))
        g = vae_sd + _flops(lambda: unet_g(torch.cat([lat4, lat4], 1), 999, encoder_hidden_states=text,
                                           class_labels=labels))
        d = vae_sd + _flops(lambda: unet_d(lat4, 999, encoder_hidden_states=text, class_labels=labels))
        with torch.device("meta"):
            tokens = pack_latents(lat16)
            prompt = torch.zeros(1, 512, 4096)
            pooled = torch.zeros(1, 768)
            t = torch.zeros(1)
        txt_ids = text_position_ids(512, torch.device("meta"), torch.float32)
        img_ids = image_position_ids((h // 8, w // 8), torch.device("meta"), torch.float32)
        step = _flops(lambda: flux(hidden_states=tokens, timestep=t, guidance=t, pooled_projections=pooled,
                                   encoder_hidden_states=prompt, txt_ids=txt_ids, img_ids=img_ids))
        vae_flux = _flops(lambda: flux_vae.encode(rgb)) + _flops(lambda: flux_vae.decode(lat16))
        core = vae_flux + step
        print(f"{f'{w}x{h}':<12}{g / 1e9:>12.0f}{d / 1e9:>12.0f}{core / 1e9:>14.0f}{(core + step) / 1e9:>17.0f}"
              f"{core / g:>12.1f}")


def tiny_times(frames: int, size: tuple[int, int]) -> None:
    from lotus2_ros.model.tiny import make_tiny_model
    from lotus2_ros.model.tiny_lotus1 import make_tiny_lotus1
    from lotus2_ros.perception.config import PerceptionConfig
    from lotus2_ros.perception.pipeline import load_pipeline

    w, h = size
    rgb = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    print(f"\ntiny random models on this CPU ({torch.get_num_threads()} torch threads), {w}x{h} frames processed at "
          f"their own size, depth + normal, per-frame prediction only; median of {frames} frames after one warm-up")
    with tempfile.TemporaryDirectory() as tmp:
        lotus2 = make_tiny_model(Path(tmp) / "l2")
        runs = {"Lotus-2 (tiny)": dict(base_model=str(lotus2.base_model), weights=str(lotus2.weights))}
        for mode in ("g", "d"):
            tiny = make_tiny_lotus1(Path(tmp) / f"l1{mode}", mode=mode)
            runs[f"Lotus-{mode.upper()} (tiny)"] = dict(backend="lotus1", weights=str(tiny.root))
        for name, model in runs.items():
            pipeline = load_pipeline(PerceptionConfig(**model, device="cpu", dtype="fp32", process_res=-1,
                                                      metric_source="none", require_camera_info=False,
                                                      sharpen_enabled=False))
            times = []
            for i in range(frames + 1):
                t0 = time.perf_counter()
                pipeline.predict(rgb, refine_steps=0, wanted=set())
                if i:
                    times.append((time.perf_counter() - t0) * 1e3)
            print(f"  {name:<18}{statistics.median(times):9.1f} ms/frame  (min {min(times):.1f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", type=_size, default=[(512, 512), (1024, 768)])
    parser.add_argument("--tiny-size", type=_size, default=(160, 128))
    parser.add_argument("--skip-flops", action="store_true")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    real_sizes(args.sizes, not args.skip_flops)
    tiny_times(args.frames, args.tiny_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
