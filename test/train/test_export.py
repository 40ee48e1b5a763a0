"""Export helpers: the official key format, alpha folding, release-rank padding, the official file
formats and the refusals; files the engine's reader accepts."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lotus2_ros.model.weights import drop_zero_rank_padding, normalise_lora_keys, read_state_dict
from lotus2_ros.train.export import (
    ExportError,
    base_transformer_state_dict,
    check_official_lora,
    lcm_state_dict,
    lora_state_dict,
    pad_lora_rank,
    placeholder_lora_state_dict,
    save_lcm,
)


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


def test_padding_to_the_release_rank_keeps_b_times_a_exactly_and_loading_drops_it_again():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 32, generator=gen), torch.randn(48, 8, generator=gen)
    state = {"transformer.blocks.0.attn.to_q.lora_A.depth_core.weight": a,
             "transformer.blocks.0.attn.to_q.lora_B.depth_core.weight": b}
    sd = lora_state_dict(state, "depth_core", scaling=2.0, rank=128)
    a2, b2 = sd["transformer.blocks.0.attn.to_q.lora_A.weight"], sd["transformer.blocks.0.attn.to_q.lora_B.weight"]
    assert a2.shape == (128, 32) and b2.shape == (48, 128) and a2.dtype == b2.dtype == torch.float32
    assert torch.equal(b2 @ a2, (2.0 * b) @ a)  # the added rank components are exact zeros
    # The reader drops the padding: the same tensors at the trained rank.
    (pair,) = drop_zero_rank_padding(normalise_lora_keys(sd, "x")).values()
    assert torch.equal(pair["A"], a) and torch.equal(pair["B"], 2.0 * b)
    with pytest.raises(ExportError, match="rank 8 cannot be padded to the smaller rank 4"):
        pad_lora_rank(sd | {"transformer.blocks.0.attn.to_q.lora_A.weight": a}, 4)


def test_a_fresh_adapters_zero_b_is_not_taken_for_padding():
    a, b = torch.randn(4, 8), torch.zeros(6, 4)  # a step-0 export: A random, B zero; it must still train
    (pair,) = drop_zero_rank_padding({"m": {"A": a, "B": b}}).values()
    assert pair["A"].shape == (4, 8)
    (pair,) = drop_zero_rank_padding({"m": {"A": torch.zeros(4, 8), "B": b}}).values()
    assert pair["A"].shape == (1, 8)  # all zero (a placeholder): one zero component is kept


def test_the_exporter_refuses_what_the_official_loader_would_reject():
    check_official_lora("depth", 128, ["transformer_blocks.0.attn.to_q", "ff.net.2"], "x")  # fine
    with pytest.raises(ExportError, match="rank 129 exceeds the release rank 128"):
        check_official_lora("depth", 129, ["attn.to_q"], "adapter depth_core")
    check_official_lora("normal", 256, ["attn.to_q"], "x")
    with pytest.raises(ExportError, match=r"does not adapt.*single_transformer_blocks.0.proj_out"):
        check_official_lora("normal", 8, ["attn.to_q", "single_transformer_blocks.0.proj_out"], "x")


def test_a_placeholder_sharpener_is_all_zero_on_every_official_target():
    state = {"transformer.transformer_blocks.0.attn.to_q.base_layer.weight": torch.ones(6, 8),
             "transformer.transformer_blocks.0.attn.to_q.lora_A.depth_core.weight": torch.ones(4, 8),
             "transformer.single_transformer_blocks.0.proj_out.weight": torch.ones(6, 10),
             "transformer.x_embedder.weight": torch.ones(6, 64)}
    sd = placeholder_lora_state_dict(state, 128)
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (128, 8),
        "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": (6, 128)}
    assert all(not v.any() for v in sd.values())


def test_the_lcm_is_written_as_a_torch_pickle_that_any_torch_load_reads(tmp_path):
    sd = {"lcm.0.weight": torch.randn(32, 16, 3, 3), "lcm.0.bias": torch.randn(32)}
    path = tmp_path / "lotus-2_lcm_depth.safetensors"
    save_lcm(sd, path)
    with open(path, "rb") as f:  # a file object: how torch < 2.10 (the official pin) reads any name
        loaded = torch.load(f, map_location="cpu", weights_only=True)
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert all(torch.equal(read_state_dict(path)[k], sd[k]) for k in sd)


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


def test_carrying_a_folder_of_other_ranks_pads_the_lora_and_rewrites_the_lcm_exactly(tmp_path, tiny_model):
    """What train-sharpener does with a --weights folder not yet in the official form (the tiny model:
    rank 4 / 8 LoRA, safetensors LCM): the export gets release-rank LoRA with the same B·A and a
    torch-pickle LCM with the same tensors, and the manifest says what was converted."""
    import zipfile

    from lotus2_ros.model.weights import TaskWeightFiles
    from lotus2_ros.train.export import carry_weights_folder

    entries = carry_weights_folder(tiny_model.weights, tmp_path / "out")
    for task, release in (("depth", 128), ("normal", 256)):
        src, dst = TaskWeightFiles.in_folder(tiny_model.weights, task), TaskWeightFiles.in_folder(tmp_path / "out", task)
        for kind in ("core_predictor", "detail_sharpener"):
            a, b = (normalise_lora_keys(read_state_dict(getattr(f, kind)), "x") for f in (src, dst))
            for module, pair in a.items():
                assert b[module]["A"].shape[0] == release
                torch.testing.assert_close(b[module]["B"] @ b[module]["A"], pair["B"] @ pair["A"], rtol=0, atol=0)
            assert "zero-padded" in entries[getattr(dst, kind).name]["converted"]
        assert zipfile.is_zipfile(dst.lcm)
        lcm_src, lcm_dst = read_state_dict(src.lcm), read_state_dict(dst.lcm)
        assert all(torch.equal(lcm_src[k], lcm_dst[k]) for k in lcm_src)
    # in the official form now: a second carry copies every file byte for byte
    again = carry_weights_folder(tmp_path / "out", tmp_path / "again")
    for name in again:
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()


def test_a_full_fine_tune_needs_a_base_model_the_official_pipeline_can_load(tmp_path):
    import json

    from lotus2_ros.train.export import check_official_base_model

    base = tmp_path / "base"
    for sub in ("scheduler", "vae", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"):
        (base / sub).mkdir(parents=True)
    components = ("transformer", "vae", "scheduler", "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    (base / "model_index.json").write_text(json.dumps({c: ["x", "y"] for c in components}))
    check_official_base_model(base)
    (base / "text_encoder_2").rmdir()
    with pytest.raises(ExportError, match="lacks text_encoder_2"):
        check_official_base_model(base)


def test_the_official_target_check_sees_full_module_names_however_peft_stores_the_targets(tmp_path):
    """peft shortens a long target list to suffixes (``proj``, ``net.2``) in the adapter config; the
    check must look at the modules really adapted (a fine-tuned file of 36 modules was refused)."""
    from diffusers import FluxTransformer2DModel
    from safetensors.torch import save_file

    from lotus2_ros.model.tiny import TINY_TRANSFORMER_CONFIG, random_lora_state_dict
    from lotus2_ros.model.weights import attach_lora
    from lotus2_ros.train.export import adapted_modules

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(**dict(TINY_TRANSFORMER_CONFIG, num_layers=2, num_single_layers=4))
    save_file(random_lora_state_dict(transformer, 4, torch.Generator().manual_seed(0)), str(tmp_path / "l.safetensors"))
    attach_lora(transformer, tmp_path / "l.safetensors", "depth_core")
    modules = adapted_modules(transformer, "depth_core")
    assert len(modules) == 2 * 12 + 4 * 3 and "transformer_blocks.1.ff_context.net.0.proj" in modules
    check_official_lora("depth", 4, modules, "x")
