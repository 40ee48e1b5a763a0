"""Tiny, randomly initialised FLUX text stack (CLIP + T5) built offline.

Lotus-2 conditions on the empty prompt encoded by FLUX.1-dev's two text encoders. The real
encoders (CLIP-L and T5-XXL) are gigabytes; tests and the tiny demo model need the same *layout*
and the same loading classes, not the same weights. :func:`write_tiny_text_stack` writes the
four text folders of a diffusers FLUX folder::

    tokenizer/        CLIPTokenizer   (vocab.json, merges.txt, tokenizer_config.json, ...)
    tokenizer_2/      T5TokenizerFast (tokenizer.json, tokenizer_config.json, ...)
    text_encoder/     CLIPTextModel   (config.json, model.safetensors)
    text_encoder_2/   T5EncoderModel  (config.json, model.safetensors)

Everything is constructed in code (a byte-level BPE vocabulary for CLIP, a Unigram vocabulary
for T5); nothing is downloaded. The folders load with the exact classes ``FluxPipeline`` uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

CLIP_MAX_LENGTH = 77
"""CLIP tokenizer ``model_max_length`` = text-model ``max_position_embeddings`` (FLUX.1-dev)."""

T5_MAX_LENGTH = 512
"""T5 tokenizer ``model_max_length``; FLUX.1-dev encodes prompts to 512 T5 tokens."""

CLIP_BOS_TOKEN = "<|startoftext|>"
CLIP_EOS_TOKEN = "<|endoftext|>"  # also CLIP's pad and unk token, as in the real tokenizer
T5_PAD_TOKEN = "<pad>"
T5_EOS_TOKEN = "</s>"
T5_UNK_TOKEN = "<unk>"

# Words that get whole-word merges / pieces, so a short English prompt tokenises to a few ids
# instead of one id per byte. Only the empty prompt matters for Lotus-2; these keep the stack
# usable for other prompts in tests.
_TINY_WORDS = ("a", "the", "of", "photo", "image", "depth", "normal", "map", "surface", "scene")


@dataclass(frozen=True)
class TextEncoderDims:
    """Output widths of the two FLUX text encoders.

    Attributes:
        t5_dim: T5 ``d_model``: last dim of ``prompt_embeds`` ``[1, L, t5_dim]``; equals the
            FLUX transformer's ``joint_attention_dim``.
        clip_dim: CLIP text ``hidden_size``: last dim of ``pooled_prompt_embeds``
            ``[1, clip_dim]``; equals the FLUX transformer's ``pooled_projection_dim``.
    """

    t5_dim: int
    clip_dim: int


FLUX_DEV_TEXT_DIMS = TextEncoderDims(t5_dim=4096, clip_dim=768)
"""Dims of the real FLUX.1-dev text encoders (T5-v1.1-XXL, CLIP ViT-L/14 text model)."""

TEXT_STACK_MODEL_INDEX: dict[str, list[str]] = {
    "text_encoder": ["transformers", "CLIPTextModel"],
    "text_encoder_2": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "T5TokenizerFast"],
}
"""``model_index.json`` entries for the folders :func:`write_tiny_text_stack` writes."""


def write_tiny_text_stack(
    base_dir: Path, *, t5_dim: int = 32, clip_dim: int = 32, seed: int = 0
) -> None:
    """Write tiny random text encoders and their tokenizers into a FLUX folder.

    Writes ``tokenizer/``, ``tokenizer_2/``, ``text_encoder/`` and ``text_encoder_2/`` under
    ``base_dir`` (created if missing; other content is left alone, existing text folders are
    overwritten). Weights are float32, initialised from ``seed`` without touching the global
    torch RNG state. The empty prompt tokenises as in the real FLUX.1-dev tokenizers: CLIP
    ``[bos, eos, pad...]`` (pad = eos), T5 ``[eos, pad...]``.

    Args:
        base_dir: The FLUX-layout folder to write into.
        t5_dim: T5 ``d_model`` (the transformer's ``joint_attention_dim``); multiple of 4.
        clip_dim: CLIP text ``hidden_size`` (the transformer's ``pooled_projection_dim``);
            multiple of 4.
        seed: Seed of the weight initialisation; same seed → identical weights.

    Raises:
        ValueError: If a dim is not a positive multiple of 4 (4 attention heads each).
    """
    # Imported here so importing the model package stays cheap for code that never builds.
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    for name, dim in (("t5_dim", t5_dim), ("clip_dim", clip_dim)):
        if dim <= 0 or dim % 4 != 0:
            raise ValueError(f"{name} must be a positive multiple of 4 (4 heads), got {dim}")

    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)

    clip_vocab_size = _write_clip_tokenizer(base_dir / "tokenizer")
    t5_vocab_size = _write_t5_tokenizer(base_dir / "tokenizer_2")

    clip_config = CLIPTextConfig(
        vocab_size=clip_vocab_size,
        hidden_size=clip_dim,
        intermediate_size=4 * clip_dim,
        projection_dim=clip_dim,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=CLIP_MAX_LENGTH,
        hidden_act="quick_gelu",
        # bos/eos are the last two ids, as in the real CLIP vocab; with the true eos id the
        # pooler takes the first eos position (pad == eos, so not the last one).
        bos_token_id=clip_vocab_size - 2,
        eos_token_id=clip_vocab_size - 1,
        pad_token_id=clip_vocab_size - 1,
    )
    t5_config = T5Config(
        vocab_size=t5_vocab_size,
        d_model=t5_dim,
        d_kv=t5_dim // 4,
        d_ff=2 * t5_dim,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",  # T5 v1.1, as FLUX's T5-XXL
        tie_word_embeddings=False,
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=0,
        eos_token_id=1,
    )

    # fork_rng: building the tiny stack must not change the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clip_model = CLIPTextModel(clip_config).eval()
        t5_model = T5EncoderModel(t5_config).eval()
    save_clip_text_model(clip_model, base_dir / "text_encoder")
    t5_model.save_pretrained(base_dir / "text_encoder_2", safe_serialization=True)


def save_clip_text_model(model, folder: Path) -> None:
    """``save_pretrained`` of a ``CLIPTextModel`` stored under ``text_model.*`` (FLUX.1-dev's layout).

    transformers 5 saves ``CLIPTextModel`` without that prefix and reads either; transformers 4
    (what the official Lotus and Lotus-2 code runs with) reads only the prefixed keys and otherwise
    re-initialises the whole encoder at random, with a mere warning.
    """
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    _prefix_clip_keys(folder / "model.safetensors")


def write_clip_tokenizer(folder: Path) -> int:
    """A tiny byte-level BPE CLIP tokenizer in ``folder`` (see :func:`_write_clip_tokenizer`); its vocab size."""
    return _write_clip_tokenizer(Path(folder))


def _prefix_clip_keys(path: Path) -> None:
    """Rewrite a saved CLIP text model's keys under ``text_model.*`` (see :func:`save_clip_text_model`)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    if all(k.startswith("text_model.") for k in tensors):
        return
    prefixed = {k if k.startswith("text_model.") else f"text_model.{k}": v.contiguous() for k, v in tensors.items()}
    save_file(prefixed, str(path), metadata={"format": "pt"})


def _byte_level_alphabet() -> list[str]:
    """The 256 byte-level BPE symbols (one per byte), in code-point order."""
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _whole_word_merges(words: tuple[str, ...]) -> list[tuple[str, str]]:
    """Left-to-right BPE merges that assemble each word into one ``word</w>`` token."""
    merges: list[tuple[str, str]] = []
    for word in words:
        if len(word) < 2:
            continue
        prefix = word[0]
        for i, char in enumerate(word[1:], start=1):
            last = i == len(word) - 1
            pair = (prefix, char + "</w>" if last else char)
            if pair not in merges:
                merges.append(pair)
            prefix += char
    return merges


def _write_clip_tokenizer(folder: Path) -> int:
    """Write a tiny byte-level BPE CLIP tokenizer; returns its vocabulary size.

    The layout follows FLUX.1-dev's ``tokenizer/``: ``vocab.json`` + ``merges.txt`` (loadable by
    the slow and the fast CLIP tokenizer), ``tokenizer_config.json``, ``special_tokens_map.json``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_level_alphabet()
    tokens = alphabet + [symbol + "</w>" for symbol in alphabet]
    merges = _whole_word_merges(_TINY_WORDS)
    for left, right in merges:
        merged = left + right
        if merged not in tokens:
            tokens.append(merged)
    tokens += [CLIP_BOS_TOKEN, CLIP_EOS_TOKEN]  # last two ids, as in CLIP (49406, 49407)
    vocab = {token: i for i, token in enumerate(tokens)}

    _write_json(folder / "vocab.json", vocab)
    merges_lines = ["#version: 0.2"] + [f"{left} {right}" for left, right in merges]
    (folder / "merges.txt").write_text("\n".join(merges_lines) + "\n", encoding="utf-8")

    def special(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False,
                "single_word": False}

    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": special(CLIP_BOS_TOKEN), "eos_token": special(CLIP_EOS_TOKEN),
         "pad_token": special(CLIP_EOS_TOKEN), "unk_token": special(CLIP_EOS_TOKEN)},
    )
    _write_json(
        folder / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": {
                str(vocab[CLIP_BOS_TOKEN]): {**special(CLIP_BOS_TOKEN), "special": True},
                str(vocab[CLIP_EOS_TOKEN]): {**special(CLIP_EOS_TOKEN), "special": True},
            },
            "bos_token": CLIP_BOS_TOKEN,
            # The real file says True; transformers 5 ignores it for BPE (with a warning).
            "clean_up_tokenization_spaces": False,
            "do_lower_case": True,
            "eos_token": CLIP_EOS_TOKEN,
            "errors": "replace",
            "model_max_length": CLIP_MAX_LENGTH,
            "pad_token": CLIP_EOS_TOKEN,
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": CLIP_EOS_TOKEN,
        },
    )
    return len(vocab)


def _write_t5_tokenizer(folder: Path) -> int:
    """Write a tiny Unigram (sentencepiece-style) T5 tokenizer; returns its vocabulary size.

    Ids 0/1/2 are ``<pad>``/``</s>``/``<unk>`` as in T5; a post-processor appends ``</s>``. The
    layout follows FLUX.1-dev's ``tokenizer_2/`` minus ``spiece.model`` (``tokenizer.json``
    carries the whole tokenizer).
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram

    folder.mkdir(parents=True, exist_ok=True)
    pieces: list[tuple[str, float]] = [
        (T5_PAD_TOKEN, 0.0), (T5_EOS_TOKEN, 0.0), (T5_UNK_TOKEN, 0.0)
    ]
    pieces.append(("▁", -2.0))
    pieces += [(chr(c), -6.0) for c in range(ord("a"), ord("z") + 1)]
    pieces += [(str(d), -6.0) for d in range(10)]
    pieces += [("▁" + word, -3.0) for word in _TINY_WORDS]

    backend = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    # Case-sensitive like the real T5 vocab; only collapse repeated spaces.
    backend.normalizer = normalizers.Replace(" {2,}", " ")
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(),
         pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)]
    )
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    backend.post_processor = processors.TemplateProcessing(
        single=["$A", T5_EOS_TOKEN],
        pair=["$A", T5_EOS_TOKEN, "$B", T5_EOS_TOKEN],
        special_tokens=[(T5_EOS_TOKEN, 1)],
    )
    backend.add_special_tokens([T5_PAD_TOKEN, T5_EOS_TOKEN, T5_UNK_TOKEN])
    backend.save(str(folder / "tokenizer.json"))

    def special(content: str) -> dict:
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False}

    _write_json(
        folder / "special_tokens_map.json",
        {"eos_token": special(T5_EOS_TOKEN), "pad_token": special(T5_PAD_TOKEN),
         "unk_token": special(T5_UNK_TOKEN)},
    )
    _write_json(
        folder / "tokenizer_config.json",
        {
            "added_tokens_decoder": {
                "0": {**special(T5_PAD_TOKEN), "special": True},
                "1": {**special(T5_EOS_TOKEN), "special": True},
                "2": {**special(T5_UNK_TOKEN), "special": True},
            },
            "clean_up_tokenization_spaces": True,
            "eos_token": T5_EOS_TOKEN,
            "extra_ids": 0,  # the real tokenizer has 100 sentinel ids; unused by FLUX
            "legacy": True,
            "model_max_length": T5_MAX_LENGTH,
            "pad_token": T5_PAD_TOKEN,
            "tokenizer_class": "T5Tokenizer",
            "unk_token": T5_UNK_TOKEN,
        },
    )
    return len(pieces)


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
