"""Tests for the tiny FLUX text stack and the prompt-embedding cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lotus2_ros.model.prompt_embeds import (
    PROMPT_EMBEDS_FILENAME,
    PromptEmbeds,
    compute_prompt_embeds,
    export_prompt_embeds,
    load_prompt_embeds,
    text_encoders_fingerprint,
)
from lotus2_ros.model.tiny_text import (
    FLUX_DEV_TEXT_DIMS,
    TEXT_STACK_MODEL_INDEX,
    write_tiny_text_stack,
)

T5_DIM = 32
CLIP_DIM = 24  # differs from T5_DIM so a swapped dim cannot pass


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("flux") / "FLUX.1-tiny"
    write_tiny_text_stack(base, t5_dim=T5_DIM, clip_dim=CLIP_DIM, seed=0)
    return base


@pytest.fixture(scope="module")
def tiny_components(tiny_base: Path) -> dict:
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    return {
        "tokenizer": CLIPTokenizer.from_pretrained(tiny_base / "tokenizer", local_files_only=True),
        "tokenizer_2": T5TokenizerFast.from_pretrained(
            tiny_base / "tokenizer_2", local_files_only=True
        ),
        "text_encoder": CLIPTextModel.from_pretrained(
            tiny_base / "text_encoder", local_files_only=True
        ),
        "text_encoder_2": T5EncoderModel.from_pretrained(
            tiny_base / "text_encoder_2", local_files_only=True
        ),
    }


@pytest.fixture(scope="module")
def exported_dir(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    weights = tmp_path_factory.mktemp("weights")
    export_prompt_embeds(tiny_base, weights)
    return weights


def _flux_encode_empty_prompt(components: dict, max_sequence_length: int):
    """The reference: diffusers' own FluxPipeline.encode_prompt on the same components."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline(scheduler=None, vae=None, transformer=None, **components)
    with torch.no_grad():
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(
            prompt="", prompt_2=None, device="cpu", max_sequence_length=max_sequence_length
        )
    return prompt_embeds, pooled, text_ids


# --- tiny text stack ---------------------------------------------------------------------------


def test_tiny_stack_has_the_diffusers_flux_text_layout(tiny_base: Path) -> None:
    assert sorted(p.name for p in tiny_base.iterdir()) == sorted(TEXT_STACK_MODEL_INDEX)
    assert {"vocab.json", "merges.txt", "tokenizer_config.json"} <= {
        p.name for p in (tiny_base / "tokenizer").iterdir()
    }
    assert (tiny_base / "tokenizer_2" / "tokenizer.json").is_file()
    for encoder in ("text_encoder", "text_encoder_2"):
        assert (tiny_base / encoder / "config.json").is_file()
        assert (tiny_base / encoder / "model.safetensors").is_file()


def test_tiny_clip_is_stored_as_flux_stores_it_so_transformers_4_loads_it_too(tiny_base: Path, tiny_components: dict) -> None:
    # transformers 4 (the official Lotus-2 code's) silently re-initialises a CLIP saved without the prefix.
    with safe_open(str(tiny_base / "text_encoder" / "model.safetensors"), framework="pt") as handle:
        keys = list(handle.keys())
        assert keys and all(k.startswith("text_model.") for k in keys)
        stored = handle.get_tensor("text_model.embeddings.token_embedding.weight")
    loaded = tiny_components["text_encoder"].get_input_embeddings().weight
    assert torch.equal(loaded, stored)


def test_tiny_stack_loads_with_flux_pipeline_classes_and_requested_dims(
    tiny_components: dict,
) -> None:
    clip, t5 = tiny_components["text_encoder"], tiny_components["text_encoder_2"]
    assert type(clip).__name__ == "CLIPTextModel"
    assert type(t5).__name__ == "T5EncoderModel"
    assert clip.config.hidden_size == CLIP_DIM
    assert clip.config.max_position_embeddings == 77
    assert t5.config.d_model == T5_DIM
    assert clip.dtype == torch.float32 and t5.dtype == torch.float32
    assert tiny_components["tokenizer"].model_max_length == 77
    assert tiny_components["tokenizer_2"].model_max_length == 512


def test_tiny_clip_tokenizer_gives_empty_prompt_bos_then_eos_padding(
    tiny_components: dict,
) -> None:
    tok = tiny_components["tokenizer"]
    ids = tok([""], padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    ids = ids.input_ids[0].tolist()
    vocab_size = tiny_components["text_encoder"].config.vocab_size
    # bos and eos are the last two ids as in CLIP; pad is eos.
    assert tok.bos_token_id == vocab_size - 2
    assert tok.eos_token_id == tok.pad_token_id == vocab_size - 1
    assert ids == [tok.bos_token_id] + [tok.eos_token_id] * 76


def test_tiny_t5_tokenizer_gives_empty_prompt_eos_then_pad(tiny_components: dict) -> None:
    tok = tiny_components["tokenizer_2"]
    ids = tok([""], padding="max_length", max_length=512, truncation=True, return_tensors="pt")
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert ids.input_ids[0].tolist() == [1] + [0] * 511


def test_tiny_tokenizers_split_known_words_into_single_tokens(tiny_components: dict) -> None:
    clip_ids = tiny_components["tokenizer"]("a depth map").input_ids
    t5_ids = tiny_components["tokenizer_2"]("a depth map").input_ids
    assert len(clip_ids) == 5  # bos a depth map eos
    assert len(t5_ids) == 4  # ▁a ▁depth ▁map </s>


def test_write_tiny_text_stack_leaves_the_global_rng_untouched(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    write_tiny_text_stack(tmp_path, t5_dim=8, clip_dim=8, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_write_tiny_text_stack_rejects_dims_not_divisible_by_heads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="clip_dim.*30"):
        write_tiny_text_stack(tmp_path, clip_dim=30)


def test_flux_dev_text_dims_are_t5_xxl_and_clip_l() -> None:
    assert (FLUX_DEV_TEXT_DIMS.t5_dim, FLUX_DEV_TEXT_DIMS.clip_dim) == (4096, 768)


# --- compute / export / load -------------------------------------------------------------------


def test_exported_embeds_equal_flux_pipeline_encode_prompt_exactly(
    exported_dir: Path, tiny_components: dict
) -> None:
    ref_embeds, ref_pooled, _ = _flux_encode_empty_prompt(tiny_components, 512)
    loaded = load_prompt_embeds(
        exported_dir, joint_attention_dim=T5_DIM, pooled_projection_dim=CLIP_DIM
    )
    assert loaded.prompt_embeds.shape == (1, 512, T5_DIM)
    assert loaded.pooled_prompt_embeds.shape == (1, CLIP_DIM)
    assert loaded.prompt_embeds.dtype == torch.float32
    assert torch.equal(loaded.prompt_embeds, ref_embeds)
    assert torch.equal(loaded.pooled_prompt_embeds, ref_pooled)
    # A real check, not zeros: the encoders produce non-trivial features.
    assert loaded.prompt_embeds.abs().mean() > 0.1
    assert loaded.pooled_prompt_embeds.abs().mean() > 0.1


def test_compute_with_short_sequence_matches_flux_pipeline(
    tiny_base: Path, tiny_components: dict
) -> None:
    ref_embeds, ref_pooled, _ = _flux_encode_empty_prompt(tiny_components, 16)
    embeds = compute_prompt_embeds(tiny_base, max_sequence_length=16)
    assert embeds.sequence_length == 16
    assert torch.equal(embeds.prompt_embeds, ref_embeds)
    assert torch.equal(embeds.pooled_prompt_embeds, ref_pooled)


def test_compute_in_bfloat16_returns_bfloat16_close_to_float32(
    tiny_base: Path, exported_dir: Path
) -> None:
    embeds = compute_prompt_embeds(tiny_base, dtype=torch.bfloat16, max_sequence_length=512)
    reference = load_prompt_embeds(exported_dir)
    assert embeds.prompt_embeds.dtype == torch.bfloat16
    assert embeds.pooled_prompt_embeds.dtype == torch.bfloat16
    torch.testing.assert_close(
        embeds.prompt_embeds.float(), reference.prompt_embeds, atol=0.1, rtol=0.05
    )


def test_exported_file_records_metadata_with_folder_name_only(
    exported_dir: Path, tiny_base: Path
) -> None:
    with safe_open(str(exported_dir / PROMPT_EMBEDS_FILENAME), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata == {
        "format": "lotus2-prompt-embeds",
        "format_version": "2",
        "prompt": "",
        "max_sequence_length": "512",
        "t5_dim": str(T5_DIM),
        "clip_dim": str(CLIP_DIM),
        "compute_dtype": "float32",
        "source_model": "FLUX.1-tiny",
        "text_encoders_fingerprint": text_encoders_fingerprint(tiny_base),
    }
    assert str(tiny_base.parent) not in "".join(metadata.values())


def test_same_seed_gives_identical_embeds_and_other_seed_differs(
    tiny_base: Path, exported_dir: Path, tmp_path: Path
) -> None:
    write_tiny_text_stack(tmp_path / "same", t5_dim=T5_DIM, clip_dim=CLIP_DIM, seed=0)
    write_tiny_text_stack(tmp_path / "other", t5_dim=T5_DIM, clip_dim=CLIP_DIM, seed=1)
    reference = load_prompt_embeds(exported_dir)
    same = compute_prompt_embeds(tmp_path / "same")
    other = compute_prompt_embeds(tmp_path / "other")
    assert torch.equal(same.prompt_embeds, reference.prompt_embeds)
    assert torch.equal(same.pooled_prompt_embeds, reference.pooled_prompt_embeds)
    assert not torch.allclose(other.prompt_embeds, reference.prompt_embeds)
    assert not torch.allclose(other.pooled_prompt_embeds, reference.pooled_prompt_embeds)


def test_export_refuses_to_overwrite_a_different_file_without_force(
    tiny_base: Path, tmp_path: Path
) -> None:
    path = tmp_path / PROMPT_EMBEDS_FILENAME
    save_file({"prompt_embeds": torch.zeros(1, 4, T5_DIM)}, str(path))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=PROMPT_EMBEDS_FILENAME) as info:
        export_prompt_embeds(tiny_base, tmp_path)
    assert str(path) in str(info.value) and "force" in str(info.value)
    assert path.read_bytes() == before

    assert export_prompt_embeds(tiny_base, tmp_path, force=True) == path
    assert load_prompt_embeds(tmp_path).prompt_embeds.shape == (1, 512, T5_DIM)


def test_export_over_an_identical_file_leaves_it_untouched(
    tiny_base: Path, tmp_path: Path
) -> None:
    path = export_prompt_embeds(tiny_base, tmp_path)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert export_prompt_embeds(tiny_base, tmp_path) == path
    assert path.stat().st_mtime_ns == 1_000_000_000


def test_export_writes_atomically_and_leaves_no_temp_files(
    tiny_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "weights"  # created by the export
    export_prompt_embeds(tiny_base, weights)
    assert sorted(os.listdir(weights)) == [PROMPT_EMBEDS_FILENAME]

    import safetensors.torch

    def failing_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save)
    failed = tmp_path / "failed"
    with pytest.raises(OSError, match="disk full"):
        export_prompt_embeds(tiny_base, failed)
    assert os.listdir(failed) == []


def test_load_missing_file_names_it_and_the_export_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_prompt_embeds(tmp_path)
    message = str(info.value)
    assert str(tmp_path / PROMPT_EMBEDS_FILENAME) in message
    assert "lotus2 export-prompt-embeds --base-model DIR --weights DIR" in message


def test_load_missing_key_names_the_key(tmp_path: Path) -> None:
    save_file({"prompt_embeds": torch.zeros(1, 512, 8)}, str(tmp_path / PROMPT_EMBEDS_FILENAME))
    with pytest.raises(ValueError, match="lacks key 'pooled_prompt_embeds'") as info:
        load_prompt_embeds(tmp_path)
    assert PROMPT_EMBEDS_FILENAME in str(info.value)


def test_load_wrong_joint_attention_dim_names_key_and_shapes(exported_dir: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_prompt_embeds(exported_dir, joint_attention_dim=4096)
    message = str(info.value)
    assert "'prompt_embeds'" in message
    assert f"[1, 512, {T5_DIM}]" in message and "joint_attention_dim is 4096" in message
    assert PROMPT_EMBEDS_FILENAME in message


def test_load_wrong_pooled_projection_dim_names_key_and_shapes(exported_dir: Path) -> None:
    with pytest.raises(ValueError) as info:
        load_prompt_embeds(exported_dir, joint_attention_dim=T5_DIM, pooled_projection_dim=T5_DIM)
    message = str(info.value)
    assert "'pooled_prompt_embeds'" in message
    assert f"[1, {CLIP_DIM}]" in message and f"pooled_projection_dim is {T5_DIM}" in message


def test_load_corrupt_file_raises_value_error_naming_it(tmp_path: Path) -> None:
    (tmp_path / PROMPT_EMBEDS_FILENAME).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=PROMPT_EMBEDS_FILENAME):
        load_prompt_embeds(tmp_path)


def test_compute_names_the_missing_base_model_subfolder(tmp_path: Path) -> None:
    for name in ("tokenizer", "tokenizer_2", "text_encoder"):
        (tmp_path / name).mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks text_encoder_2/"):
        compute_prompt_embeds(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compute_prompt_embeds(tmp_path / "nowhere")


def test_compute_rejects_sequence_length_beyond_flux_limit(tiny_base: Path) -> None:
    with pytest.raises(ValueError, match="max_sequence_length.*513"):
        compute_prompt_embeds(tiny_base, max_sequence_length=513)


# --- PromptEmbeds ------------------------------------------------------------------------------


def test_prompt_embeds_to_casts_both_tensors() -> None:
    embeds = PromptEmbeds(torch.ones(1, 3, 8), torch.ones(1, 4))
    half = embeds.to("cpu", torch.bfloat16)
    assert half.prompt_embeds.dtype == half.pooled_prompt_embeds.dtype == torch.bfloat16
    assert (half.sequence_length, half.t5_dim, half.clip_dim) == (3, 8, 4)
    assert embeds.prompt_embeds.dtype == torch.float32  # the original is unchanged


def test_prompt_embeds_rejects_shapes_without_batch_one() -> None:
    with pytest.raises(ValueError, match=r"prompt_embeds.*\[2, 3, 8\]"):
        PromptEmbeds(torch.ones(2, 3, 8), torch.ones(1, 4))
    with pytest.raises(ValueError, match=r"pooled_prompt_embeds.*\[4\]"):
        PromptEmbeds(torch.ones(1, 3, 8), torch.ones(4))


# --- only the official embeddings are accepted -------------------------------------------------


def test_a_cache_with_another_token_count_is_rejected_with_the_command_that_re_exports_it(
    tiny_base: Path, tmp_path: Path
) -> None:
    # What the old demo model stored: the first 16 tokens of a 16-token encoding. They are not the
    # official ones (T5 attends over the padding without a mask), so they are refused.
    short = compute_prompt_embeds(tiny_base, max_sequence_length=16)
    official = compute_prompt_embeds(tiny_base)
    assert not torch.allclose(short.prompt_embeds, official.prompt_embeds[:, :16], atol=1e-3)
    save_file({"prompt_embeds": short.prompt_embeds, "pooled_prompt_embeds": short.pooled_prompt_embeds},
              str(tmp_path / PROMPT_EMBEDS_FILENAME), metadata={"format_version": "1", "prompt": ""})
    with pytest.raises(ValueError) as info:
        load_prompt_embeds(tmp_path, base_model=tiny_base)
    message = str(info.value)
    assert str(tmp_path / PROMPT_EMBEDS_FILENAME) in message and "16 T5 tokens" in message
    assert f"lotus2 export-prompt-embeds --base-model {tiny_base} --weights {tmp_path} --force" in message
    with pytest.raises(ValueError, match="--base-model DIR --weights"):  # no base model known: DIR
        load_prompt_embeds(tmp_path)


def test_a_cache_of_other_text_encoders_is_rejected(exported_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other_flux"
    write_tiny_text_stack(other, t5_dim=T5_DIM, clip_dim=CLIP_DIM, seed=1)
    with pytest.raises(ValueError, match="other text encoders") as info:
        load_prompt_embeds(exported_dir, base_model=other)
    assert f"--base-model {other} --weights {exported_dir} --force" in str(info.value)


def test_the_source_check_holds_for_a_copy_and_is_skipped_without_text_encoders(
    tiny_base: Path, exported_dir: Path, tmp_path: Path
) -> None:
    import shutil

    copy = tmp_path / "copied_elsewhere"
    shutil.copytree(tiny_base, copy)
    assert load_prompt_embeds(exported_dir, base_model=copy).sequence_length == 512
    (tmp_path / "runtime_only").mkdir()  # a deployed base model without text encoders
    assert load_prompt_embeds(exported_dir, base_model=tmp_path / "runtime_only").sequence_length == 512


def test_a_cache_of_another_prompt_is_rejected(exported_dir: Path, tmp_path: Path) -> None:
    tensors = {"prompt_embeds": torch.zeros(1, 512, T5_DIM), "pooled_prompt_embeds": torch.zeros(1, CLIP_DIM)}
    save_file(tensors, str(tmp_path / PROMPT_EMBEDS_FILENAME), metadata={"prompt": "a photo"})
    with pytest.raises(ValueError, match="encodes the prompt 'a photo'"):
        load_prompt_embeds(tmp_path)
