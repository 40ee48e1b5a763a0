"""Memory of the real-size Lotus-2 model, from parameter counts of the real configs on the meta device.

Nothing is downloaded and no weights are allocated: the FLUX.1-dev transformer, VAE and (for
comparison) the T5-XXL and CLIP-L text encoders are built from their published configurations
on the meta device and their parameters counted; the LoRA adapters are counted from the Linear
layers they adapt (official targets; rank 128 depth, 256 normal); the LCM from its layout.

    python benchmarks/real_model_memory.py
"""

from __future__ import annotations

import torch

from lotus2_ros.model.lcm import LocalContinuityModule
from lotus2_ros.model.tiny import lora_target_modules

FLUX_DEV_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)
FLUX_DEV_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, norm_num_groups=32,
    block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False,
)
T5_XXL_ENCODER = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False)
CLIP_L_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, projection_dim=768)
LORA_RANKS = {"depth": 128, "normal": 256}
PROMPT_TOKENS, T5_DIM, CLIP_DIM = 512, 4096, 768


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main() -> None:
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**FLUX_DEV_TRANSFORMER)
        vae = AutoencoderKL(**FLUX_DEV_VAE)
        t5 = T5EncoderModel(T5Config(**T5_XXL_ENCODER))
        clip = CLIPTextModel(CLIPTextConfig(**CLIP_L_TEXT))
    lora_per_rank = sum(m.in_features + m.out_features for _, m in lora_target_modules(transformer))
    n = {
        "transformer": count(transformer),
        "vae": count(vae),
        "lcm (per task)": count(LocalContinuityModule(16)),
        "prompt embeddings": PROMPT_TOKENS * T5_DIM + CLIP_DIM,
        "lora core+sharpener depth (r=128)": 2 * LORA_RANKS["depth"] * lora_per_rank,
        "lora core+sharpener normal (r=256)": 2 * LORA_RANKS["normal"] * lora_per_rank,
        "t5-xxl encoder (not loaded)": count(t5),
        "clip-l text (not loaded)": count(clip),
    }
    gib = 2 / 2**30  # bf16 bytes per parameter, in GiB
    print(f"{'component':<38}{'parameters':>16}{'bf16 GiB':>11}")
    for k, v in n.items():
        print(f"{k:<38}{v:>16,}{v * gib:>11.2f}")
    base = n["transformer"] + n["vae"] + n["prompt embeddings"]
    depth = base + n["lora core+sharpener depth (r=128)"] + n["lcm (per task)"]
    both = depth + n["lora core+sharpener normal (r=256)"] + n["lcm (per task)"]
    official = both + n["t5-xxl encoder (not loaded)"] + n["clip-l text (not loaded)"]
    print(f"\nweights resident in bf16: depth alone {depth * gib:.2f} GiB, depth + normal {both * gib:.2f} GiB")
    print(f"(with the T5-XXL and CLIP text encoders kept in memory it would be {official * gib:.2f} GiB)")


if __name__ == "__main__":
    main()
