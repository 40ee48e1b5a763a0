"""Reading the official Lotus-2 files: rank inference, strict checks with clear errors, file formats.

Broken files are crafted in ``tmp_path`` from the tiny model's own files with ``save_file`` /
``torch.save``; nothing binary is checked in.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from lotus2_ros.model.backend import BackendConfig
from lotus2_ros.model.engine import Lotus2Engine
from lotus2_ros.model.lcm import LocalContinuityModule
from lotus2_ros.model.tiny import TINY_LORA_RANKS, lora_target_modules
from lotus2_ros.model.weights import (
    TaskWeightFiles,
    WeightsError,
    attach_lora,
    load_lcm,
    normalise_lora_keys,
    read_state_dict,
)

# The engine adds several named adapters to one transformer on purpose; peft warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning")

CORE_DEPTH = "lotus-2_core_predictor_depth.safetensors"
LCM_DEPTH = "lotus-2_lcm_depth.safetensors"
#: A module every official LoRA file adapts (first double block, image query projection).
SOME_MODULE = "transformer_blocks.0.attn.to_q"


def _fresh_transformer(tiny_model):
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel.from_pretrained(tiny_model.base_model / "transformer", local_files_only=True)


@pytest.fixture
def transformer(tiny_model):
    """A transformer with no adapters, straight from the tiny base model."""
    return _fresh_transformer(tiny_model)


@pytest.fixture
def core_depth_sd(tiny_model):
    return load_file(str(tiny_model.weights / CORE_DEPTH))


@pytest.fixture
def lcm_depth_sd(tiny_model):
    return load_file(str(tiny_model.weights / LCM_DEPTH))


def _save(tmp_path, sd, name="lora.safetensors"):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def _lora_weight(transformer, module, part, adapter):
    layer = transformer.get_submodule(module)
    return getattr(layer, f"lora_{part}")[adapter].weight


# ----------------------------------------------------------------------------- LoRA: happy path
@pytest.mark.parametrize("task", ["depth", "normal"])
def test_attach_lora_infers_the_rank_from_the_tensors_with_alpha_equal_to_rank(tiny_model, transformer, task):
    files = TaskWeightFiles.in_folder(tiny_model.weights, task)
    targets = tuple(sorted(name for name, _ in lora_target_modules(transformer)))  # before peft wraps them
    spec = attach_lora(transformer, files.core_predictor, "core")
    assert spec.rank == TINY_LORA_RANKS[task] == {"depth": 4, "normal": 8}[task]
    assert len(targets) == 18 and spec.modules == targets
    config = transformer.peft_config["core"]
    assert (config.r, config.lora_alpha) == (spec.rank, spec.rank)


def test_attach_lora_loads_the_file_values_frozen(tiny_model, transformer, core_depth_sd):
    attach_lora(transformer, tiny_model.weights / CORE_DEPTH, "core")
    for module in (SOME_MODULE, "single_transformer_blocks.1.attn.to_v", "transformer_blocks.0.ff_context.net.2"):
        for part in "AB":
            in_file = core_depth_sd[f"transformer.{module}.lora_{part}.weight"]
            assert torch.equal(_lora_weight(transformer, module, part, "core"), in_file)
    adapter_params = [p for n, p in transformer.named_parameters() if ".core." in n]
    assert adapter_params and not any(p.requires_grad for p in adapter_params)


@pytest.mark.parametrize("a_suffix, b_suffix", [
    ("lora.down.weight", "lora.up.weight"),
    ("lora_down.weight", "lora_up.weight"),
    ("lora_linear_layer.down.weight", "lora_linear_layer.up.weight"),
])
def test_alternate_key_spellings_load_identically_to_lora_a_b(tmp_path, tiny_model, transformer, core_depth_sd,
                                                             a_suffix, b_suffix):
    renamed = {k.replace("lora_A.weight", a_suffix).replace("lora_B.weight", b_suffix): v
               for k, v in core_depth_sd.items()}
    assert set(renamed) != set(core_depth_sd)
    spec_ref = attach_lora(transformer, tiny_model.weights / CORE_DEPTH, "ref")
    spec_alt = attach_lora(transformer, _save(tmp_path, renamed), "alt")
    assert spec_alt == spec_ref
    for module in spec_ref.modules:
        for part in "AB":
            alt, ref = (_lora_weight(transformer, module, part, name) for name in ("alt", "ref"))
            assert torch.equal(alt, ref)


# ----------------------------------------------------------------------------- LoRA: errors
def test_a_wrong_shape_lora_a_names_the_key_and_both_shapes(tmp_path, transformer, core_depth_sd):
    key = f"transformer.{SOME_MODULE}.lora_A.weight"
    r, n_in = core_depth_sd[key].shape
    core_depth_sd[key] = torch.zeros(r, n_in + 3)
    with pytest.raises(WeightsError) as info:
        attach_lora(transformer, _save(tmp_path, core_depth_sd), "core")
    msg = str(info.value)
    assert key in msg and str((r, n_in + 3)) in msg and str((r, n_in)) in msg and "lora.safetensors" in msg


def test_a_wrong_shape_lora_b_names_the_key_and_both_shapes(tmp_path, transformer, core_depth_sd):
    key = f"transformer.{SOME_MODULE}.lora_B.weight"
    n_out, r = core_depth_sd[key].shape
    core_depth_sd[key] = torch.zeros(n_out - 1, r)
    with pytest.raises(WeightsError) as info:
        attach_lora(transformer, _save(tmp_path, core_depth_sd), "core")
    msg = str(info.value)
    assert key in msg and str((n_out - 1, r)) in msg and str((n_out, r)) in msg


@pytest.mark.parametrize("module", ["transformer_blocks.0.attn.to_nothing", "norm_out"])
def test_a_key_naming_no_linear_layer_is_rejected(tmp_path, transformer, core_depth_sd, module):
    core_depth_sd[f"transformer.{module}.lora_A.weight"] = torch.zeros(4, 32)
    core_depth_sd[f"transformer.{module}.lora_B.weight"] = torch.zeros(32, 4)
    with pytest.raises(WeightsError, match="names no Linear layer") as info:
        attach_lora(transformer, _save(tmp_path, core_depth_sd), "core")
    assert module in str(info.value)


def test_a_key_without_the_transformer_prefix_is_rejected(tmp_path, transformer, core_depth_sd):
    key = f"transformer.{SOME_MODULE}.lora_A.weight"
    core_depth_sd[key.removeprefix("transformer.")] = core_depth_sd.pop(key)
    with pytest.raises(WeightsError, match="must start with 'transformer.'") as info:
        attach_lora(transformer, _save(tmp_path, core_depth_sd), "core")
    assert f"{SOME_MODULE}.lora_A.weight" in str(info.value)


def test_a_key_that_is_no_lora_weight_is_rejected(tmp_path, transformer, core_depth_sd):
    core_depth_sd[f"transformer.{SOME_MODULE}.weight"] = torch.zeros(32, 32)
    with pytest.raises(WeightsError, match="not a LoRA A/B weight"):
        attach_lora(transformer, _save(tmp_path, core_depth_sd), "core")


@pytest.mark.parametrize("dropped, missing", [("lora_B", "lora_B"), ("lora_A", "lora_A")])
def test_a_lora_half_without_its_partner_is_rejected(tmp_path, transformer, core_depth_sd, dropped, missing):
    del core_depth_sd[f"transformer.{SOME_MODULE}.{dropped}.weight"]
    with pytest.raises(WeightsError, match=f"has no {missing} weight") as info:
        attach_lora(transformer, _save(tmp_path, core_depth_sd), "core")
    assert SOME_MODULE in str(info.value)


def test_inconsistent_ranks_are_rejected_listing_them(tmp_path, transformer, core_depth_sd):
    a, b = f"transformer.{SOME_MODULE}.lora_A.weight", f"transformer.{SOME_MODULE}.lora_B.weight"
    core_depth_sd[a] = core_depth_sd[a][:2]  # rank 2 here, rank 4 everywhere else
    core_depth_sd[b] = core_depth_sd[b][:, :2]
    with pytest.raises(WeightsError, match=r"ranks differ between modules: \[2, 4\]"):
        attach_lora(transformer, _save(tmp_path, core_depth_sd), "core")


def test_an_empty_lora_file_is_rejected(tmp_path):
    with pytest.raises(WeightsError, match="no LoRA weights"):
        normalise_lora_keys({}, tmp_path / "empty.safetensors")


def test_a_failed_check_leaves_the_transformer_without_the_adapter(tmp_path, transformer, core_depth_sd):
    del core_depth_sd[f"transformer.{SOME_MODULE}.lora_B.weight"]
    with pytest.raises(WeightsError):
        attach_lora(transformer, _save(tmp_path, core_depth_sd), "core")
    assert "core" not in (getattr(transformer, "peft_config", None) or {})


# ----------------------------------------------------------------------------- LCM
def test_load_lcm_loads_the_file_values_frozen(tiny_model, lcm_depth_sd):
    module = load_lcm(tiny_model.weights / LCM_DEPTH, 16)
    assert isinstance(module, LocalContinuityModule)
    for key, value in module.state_dict().items():
        assert torch.equal(value, lcm_depth_sd[key])
    assert not any(p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("missing", ["lcm.2.bias", "lcm.0.weight"])
def test_an_lcm_with_a_missing_key_names_it(tmp_path, lcm_depth_sd, missing):
    del lcm_depth_sd[missing]
    with pytest.raises(WeightsError, match="LCM state dict mismatch") as info:
        load_lcm(_save(tmp_path, lcm_depth_sd, "lcm.safetensors"), 16)
    assert repr(missing) in str(info.value) and "lcm.safetensors" in str(info.value)


def test_an_lcm_with_foreign_key_names_gets_a_hint(tmp_path, lcm_depth_sd):
    prefixed = {f"module.{k}": v for k, v in lcm_depth_sd.items()}  # as a DDP wrapper would save it
    with pytest.raises(WeightsError, match="LCM keys look like 'lcm.0.weight'") as info:
        load_lcm(_save(tmp_path, prefixed, "lcm.safetensors"), 16)
    assert "'module.lcm.0.weight'" in str(info.value)


def test_an_lcm_with_a_wrong_shape_names_the_key_and_both_shapes(tmp_path, lcm_depth_sd):
    lcm_depth_sd["lcm.2.weight"] = torch.zeros(16, 32, 1, 1)
    with pytest.raises(WeightsError) as info:
        load_lcm(_save(tmp_path, lcm_depth_sd, "lcm.safetensors"), 16)
    msg = str(info.value)
    assert "'lcm.2.weight'" in msg and "(16, 32, 1, 1)" in msg and "(16, 32, 3, 3)" in msg


def test_an_lcm_for_other_latent_channels_is_rejected(tiny_model):
    with pytest.raises(WeightsError, match="for 8 latent channels"):
        load_lcm(tiny_model.weights / LCM_DEPTH, 8)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy_pickle"])
def test_an_lcm_saved_with_torch_save_loads_like_the_safetensors_one(tmp_path, tiny_model, lcm_depth_sd, zip_format):
    # The official loader uses torch.load; the file keeps its .safetensors name.
    path = tmp_path / LCM_DEPTH
    torch.save(lcm_depth_sd, path, _use_new_zipfile_serialization=zip_format)
    from_pickle = load_lcm(path, 16)
    from_safetensors = load_lcm(tiny_model.weights / LCM_DEPTH, 16)
    x = torch.randn(2, 16, 4, 6, generator=torch.Generator().manual_seed(0))
    out = from_pickle(x)
    assert out.shape == x.shape
    assert torch.equal(out, from_safetensors(x))
    assert not torch.equal(out, x)


# ----------------------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("content", [
    b"this is not a weight file" * 8,
    b"\x80\x04garbage that starts like a pickle",
    b"PK\x03\x04 a broken zip",
    b"",
], ids=["text", "pickle_magic", "zip_magic", "empty"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, on the fake pickle header
def test_a_corrupt_file_raises_weights_error_naming_it(tmp_path, content):
    path = tmp_path / "broken_lcm.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match="broken_lcm.safetensors"):
        read_state_dict(path)
    with pytest.raises(WeightsError, match="broken_lcm.safetensors"):
        load_lcm(path, 16)


def test_a_truncated_safetensors_lora_raises_weights_error_naming_it(tmp_path, tiny_model, transformer):
    data = (tiny_model.weights / CORE_DEPTH).read_bytes()
    path = tmp_path / CORE_DEPTH
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=CORE_DEPTH):
        attach_lora(transformer, path, "core")


def test_a_torch_file_that_is_no_flat_state_dict_is_rejected(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(WeightsError, match="flat state dict"):
        read_state_dict(path)


def test_read_state_dict_on_a_missing_file_names_it(tmp_path):
    with pytest.raises(WeightsError, match="weight file not found.*nothing.safetensors"):
        read_state_dict(tmp_path / "nothing.safetensors")


# ----------------------------------------------------------------------------- file sets
def test_task_weight_files_name_the_official_files(tmp_path):
    files = TaskWeightFiles.in_folder(tmp_path, "normal")
    assert files.task == "normal"
    assert files.core_predictor == tmp_path / "lotus-2_core_predictor_normal.safetensors"
    assert files.detail_sharpener == tmp_path / "lotus-2_detail_sharpener_normal.safetensors"
    assert files.lcm == tmp_path / "lotus-2_lcm_normal.safetensors"


def test_task_weight_files_for_an_unknown_task_raise():
    with pytest.raises(ValueError, match="task must be one of.*'segmentation'"):
        TaskWeightFiles.in_folder(".", "segmentation")


def _copy_weights(tiny_model, tmp_path):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model.weights, weights)
    return weights


def test_loading_an_engine_with_a_missing_file_names_it(tmp_path, tiny_model):
    weights = _copy_weights(tiny_model, tmp_path)
    (weights / "lotus-2_detail_sharpener_normal.safetensors").unlink()
    (weights / "lotus-2_lcm_normal.safetensors").unlink()
    with pytest.raises(WeightsError, match="missing Lotus-2 normal weight file") as info:
        Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=weights, tasks=("depth", "normal")))
    msg = str(info.value)
    assert "lotus-2_detail_sharpener_normal.safetensors" in msg and "lotus-2_lcm_normal.safetensors" in msg
    assert "core_predictor" not in msg


def test_loading_an_engine_without_the_sharpener_still_needs_the_core_predictor(tmp_path, tiny_model):
    weights = _copy_weights(tiny_model, tmp_path)
    (weights / CORE_DEPTH).unlink()
    with pytest.raises(WeightsError, match="missing Lotus-2 depth core predictor or LCM"):
        Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=weights, tasks=("depth", "normal"),
                                        load_refiner=False))


def test_loading_an_engine_with_a_corrupt_lcm_names_the_file(tmp_path, tiny_model):
    weights = _copy_weights(tiny_model, tmp_path)
    (weights / LCM_DEPTH).write_bytes(b"garbage" * 16)
    with pytest.raises(WeightsError, match=f"cannot read weight file .*{LCM_DEPTH}"):
        Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=weights, tasks=("depth", "normal"),
                                        load_refiner=False))


def test_loading_an_engine_from_missing_folders_names_them(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="weights folder not found"):
        Lotus2Engine.load(BackendConfig(base_model=tiny_model.base_model, weights=tmp_path / "no_weights"))
    with pytest.raises(FileNotFoundError, match="base model"):
        Lotus2Engine.load(BackendConfig(base_model=tmp_path / "no_base", weights=tiny_model.weights))
