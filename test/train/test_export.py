"""Export helpers: the official key format, alpha folding, and files the engine's reader accepts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lotus2_ros.model.weights import read_state_dict
from lotus2_ros.train.model import base_transformer_state_dict, lcm_state_dict, lora_state_dict


def test_lora_export_uses_release_keys_and_folds_alpha_over_rank_into_b():
    a, b = torch.randn(4, 8), torch.randn(6, 4)
    state = {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.depth_core.weight": a,
        "transformer.transformer_blocks.0.attn.to_q.lora_B.depth_core.weight": b,
        "transformer.transformer_blocks.0.attn.to_q.lora_A.depth_sharpener.weight": torch.zeros(4, 8),
        "transformer.transformer_blocks.0.attn.to_q.base_layer.weight": torch.zeros(6, 8),
    }
    sd = lora_state_dict(state, "depth_core", scaling=0.75)
    assert set(sd) == {"transformer.transformer_blocks.0.attn.to_q.lora_A.weight",
                       "transformer.transformer_blocks.0.attn.to_q.lora_B.weight"}
    torch.testing.assert_close(sd["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"], 0.75 * b)
    with pytest.raises(ValueError, match="no LoRA adapter"):
        lora_state_dict(state, "normal_core", 1.0)


def test_base_weights_drop_lora_and_undo_peft_names():
    state = {"transformer.a.to_q.base_layer.weight": torch.ones(1), "transformer.a.to_q.lora_A.x.weight": torch.ones(1),
             "transformer.norm.weight": torch.ones(1), "lcms.depth.lcm.0.weight": torch.ones(1)}
    assert set(base_transformer_state_dict(state)) == {"a.to_q.weight", "norm.weight"}
    assert set(lcm_state_dict(state, "depth")) == {"lcm.0.weight"}


def test_a_safetensors_file_whose_header_length_starts_with_0x80_is_not_taken_for_a_pickle(tmp_path):
    # The header length is the first 8 bytes (little endian); find tensors making it 0x..80.
    for n in range(1, 200):
        path = tmp_path / f"f{n}.safetensors"
        save_file({f"lcm.{i}.weight": torch.zeros(1) for i in range(n)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.skip("no header length with a 0x80 first byte found")
    assert len(read_state_dict(path)) == n


@pytest.mark.parametrize("name", ["multi_gpu", "multi_node", "fsdp_flux"])
def test_shipped_accelerate_configs_are_valid(name):
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    import lotus2_ros

    path = Path(lotus2_ros.__file__).parent / "train" / "accelerate" / f"{name}.yaml"
    config = load_config_from_file(str(path))
    assert config.mixed_precision == "bf16" and config.num_processes >= 8
    if name == "fsdp_flux":
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",") == [
            "FluxTransformerBlock", "FluxSingleTransformerBlock"]
        from diffusers.models.transformers import transformer_flux

        for cls in config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
            assert hasattr(transformer_flux, cls)  # the block classes the FLUX transformer is made of
