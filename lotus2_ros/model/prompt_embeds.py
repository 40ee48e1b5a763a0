"""Cached FLUX text conditioning for Lotus-2 (the empty prompt).

Lotus-2 conditions both tasks on the empty prompt, encoded as ``FluxPipeline.encode_prompt``
does it: T5 last hidden state over 512 tokens (``prompt_embeds``) and the pooled CLIP text
vector (``pooled_prompt_embeds``). Encoding needs T5-XXL, most of FLUX.1-dev's memory, so it is
done once by ``lotus2 export-prompt-embeds`` (:func:`export_prompt_embeds`), which writes
:data:`PROMPT_EMBEDS_FILENAME` beside the Lotus-2 weights; the engine only calls
:func:`load_prompt_embeds` and never loads a text encoder.

File format (safetensors): float32 tensors ``prompt_embeds`` ``[1, 512, D_t5]`` and
``pooled_prompt_embeds`` ``[1, D_clip]`` (float32 whatever the compute dtype: a bf16/fp16
result is stored exactly, and the engine casts to its own dtype), plus string metadata:
``format``, ``format_version``, ``prompt``, ``max_sequence_length``, ``t5_dim``, ``clip_dim``,
``compute_dtype``, ``source_model`` (the base-model folder's name, never a full path) and
``text_encoders_fingerprint`` (:func:`text_encoders_fingerprint` of the folder it was computed
from).

Only the official embeddings are accepted: the official inference encodes the empty prompt
with the base model's own text encoders at 512 T5 tokens on every call, and T5 attends over
the padding (no attention mask), so even the first tokens of a shorter encoding differ. The
loader rejects a cache with another token count or prompt, or one computed from other text
encoders than those of the base model it is used with (when that folder has them), and says
which command re-exports it.
"""

from __future__ import annotations

import gc
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

PROMPT_EMBEDS_FILENAME = "lotus-2_prompt_embeds.safetensors"
"""Name of the prompt-embedding file inside the ``--weights`` folder."""

PROMPT_EMBEDS_FORMAT = "lotus2-prompt-embeds"
PROMPT_EMBEDS_FORMAT_VERSION = 2
"""2 adds ``text_encoders_fingerprint``; version-1 files (512 tokens) still load, unchecked for their source."""
LOTUS2_PROMPT = ""
"""The prompt Lotus-2 conditions on, for depth and normals alike."""

FLUX_MAX_SEQUENCE_LENGTH = 512
"""Longest T5 sequence FLUX accepts (``FluxPipeline`` rejects more)."""

LOTUS2_SEQUENCE_LENGTH = FLUX_MAX_SEQUENCE_LENGTH
"""T5 tokens of the official embeddings: the official pipeline calls ``encode_prompt`` with
FluxPipeline's default ``max_sequence_length=512``."""

TEXT_SUBFOLDERS = ("tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2")
"""Base-model subfolders needed to compute the embeddings (diffusers FLUX layout)."""

_PROMPT_KEY = "prompt_embeds"
_POOLED_KEY = "pooled_prompt_embeds"
_EXPORT_HINT = (
    "create it with `lotus2 export-prompt-embeds --base-model DIR --weights DIR` "
    "(--base-model: the FLUX.1-dev folder with text_encoder*/ and tokenizer*/)"
)


@dataclass(frozen=True)
class PromptEmbeds:
    """FLUX text conditioning of one prompt (batch 1).

    Attributes:
        prompt_embeds: T5 encoder last hidden state, ``[1, L, D_t5]`` (L = 512 and D_t5 = 4096
            for FLUX.1-dev); the transformer's ``encoder_hidden_states``, so D_t5 must equal
            its ``joint_attention_dim``. Unitless features.
        pooled_prompt_embeds: CLIP text ``pooler_output``, ``[1, D_clip]`` (768 for
            FLUX.1-dev); the transformer's ``pooled_projections``, so D_clip must equal its
            ``pooled_projection_dim``.

    The transformer's ``txt_ids`` are ``zeros([L, 3])``; they carry no information and are not
    stored.
    """

    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor

    def __post_init__(self) -> None:
        shape = tuple(self.prompt_embeds.shape)
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"{_PROMPT_KEY} must have shape [1, L, D_t5], got {list(shape)}")
        pooled = tuple(self.pooled_prompt_embeds.shape)
        if len(pooled) != 2 or pooled[0] != 1:
            raise ValueError(f"{_POOLED_KEY} must have shape [1, D_clip], got {list(pooled)}")

    @property
    def sequence_length(self) -> int:
        """L, the number of T5 tokens."""
        return int(self.prompt_embeds.shape[1])

    @property
    def t5_dim(self) -> int:
        """D_t5, the T5 width (= transformer ``joint_attention_dim``)."""
        return int(self.prompt_embeds.shape[2])

    @property
    def clip_dim(self) -> int:
        """D_clip, the pooled CLIP width (= transformer ``pooled_projection_dim``)."""
        return int(self.pooled_prompt_embeds.shape[1])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> PromptEmbeds:
        """Return a copy on ``device`` with ``dtype`` (``None`` keeps the current one)."""
        return PromptEmbeds(
            prompt_embeds=self.prompt_embeds.to(device=device, dtype=dtype),
            pooled_prompt_embeds=self.pooled_prompt_embeds.to(device=device, dtype=dtype),
        )


def check_text_folders(base_model: Path) -> None:
    """Check that ``base_model`` is a folder holding every entry of :data:`TEXT_SUBFOLDERS`.

    Raises:
        FileNotFoundError: If the folder or one of the subfolders is missing (names them).
    """
    base_model = Path(base_model)
    if not base_model.is_dir():
        raise FileNotFoundError(f"base model folder {base_model} does not exist or is not a folder")
    missing = [name for name in TEXT_SUBFOLDERS if not (base_model / name).is_dir()]
    if missing:
        listed = ", ".join(f"{name}/" for name in missing)
        raise FileNotFoundError(
            f"base model folder {base_model} lacks {listed}: exporting prompt embeddings needs "
            f"a FLUX.1-dev folder in diffusers layout with {', '.join(TEXT_SUBFOLDERS)}"
        )


def compute_prompt_embeds(
    base_model: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    max_sequence_length: int = FLUX_MAX_SEQUENCE_LENGTH,
) -> PromptEmbeds:
    """Encode the Lotus-2 (empty) prompt with a FLUX base model's text encoders.

    Loads only ``tokenizer*/`` and ``text_encoder*/`` from the local folder (no download),
    encodes exactly as ``FluxPipeline.encode_prompt(prompt="", prompt_2=None, ...)`` does, and
    frees the encoders before returning.

    Args:
        base_model: FLUX.1-dev folder in diffusers layout.
        dtype: Dtype the encoders are loaded and run in; float32 or bfloat16 (T5 overflows in
            float16).
        device: Device the encoders run on.
        max_sequence_length: T5 tokens L, 1..512 (FLUX and Lotus-2 use 512).

    Returns:
        The embeddings on ``device`` in ``dtype``: ``[1, L, D_t5]`` and ``[1, D_clip]``.

    Raises:
        FileNotFoundError: If the folder or a text subfolder is missing.
        ValueError: If ``max_sequence_length`` is out of range.
        OSError: If a tokenizer or encoder cannot be loaded (names the folder).
    """
    from transformers import CLIPTextModel, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

    if not 1 <= max_sequence_length <= FLUX_MAX_SEQUENCE_LENGTH:
        raise ValueError(
            f"max_sequence_length must be in [1, {FLUX_MAX_SEQUENCE_LENGTH}], "
            f"got {max_sequence_length}"
        )
    base_model = Path(base_model)
    check_text_folders(base_model)

    # 1. Load tokenizers and encoders (local files only).
    tokenizer = _load(CLIPTokenizer, base_model / "tokenizer")
    tokenizer_2 = _load(T5TokenizerFast, base_model / "tokenizer_2")
    text_encoder = _load(CLIPTextModel, base_model / "text_encoder", dtype=dtype).to(device)
    text_encoder_2 = _load(T5EncoderModel, base_model / "text_encoder_2", dtype=dtype).to(device)
    text_encoder.eval()
    text_encoder_2.eval()
    try:
        prompt = [LOTUS2_PROMPT]
        with torch.no_grad():
            # 2. CLIP: pad to the tokenizer's model_max_length (77), keep only pooler_output,
            #    no attention mask (as FluxPipeline._get_clip_prompt_embeds).
            clip_ids = tokenizer(
                prompt,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids  # [1,77]
            pooled = text_encoder(clip_ids.to(device), output_hidden_states=False).pooler_output
            pooled = pooled.to(dtype=text_encoder.dtype, device=device)  # [1,D_clip]

            # 3. T5: pad to max_sequence_length, last hidden state, no attention mask
            #    (as FluxPipeline._get_t5_prompt_embeds).
            t5_ids = tokenizer_2(
                prompt,
                padding="max_length",
                max_length=max_sequence_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids  # [1,L]
            embeds = text_encoder_2(t5_ids.to(device), output_hidden_states=False)[0]
            embeds = embeds.to(dtype=text_encoder_2.dtype, device=device)  # [1,L,D_t5]
    finally:
        # 4. The encoders are only needed once; T5-XXL alone is ~9 GB in bf16.
        del text_encoder, text_encoder_2
        gc.collect()
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
    return PromptEmbeds(prompt_embeds=embeds, pooled_prompt_embeds=pooled)


def export_prompt_embeds(
    base_model: Path,
    weights_dir: Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    force: bool = False,
) -> Path:
    """Compute the official empty-prompt embeddings (512 T5 tokens) and write them to ``weights_dir``.

    The file is :data:`PROMPT_EMBEDS_FILENAME`, float32 tensors plus metadata (see the module
    docstring). ``weights_dir`` is created if missing. The write is atomic (temporary file in
    the same folder, then ``os.replace``), so a reader never sees a partial file. An existing
    file with exactly the same tensors is left untouched.

    Args:
        base_model: FLUX.1-dev folder in diffusers layout (needs ``tokenizer*/`` and
            ``text_encoder*/``).
        weights_dir: Folder of the Lotus-2 weights.
        dtype: Compute dtype of the encoders (see :func:`compute_prompt_embeds`).
        device: Device the encoders run on.
        force: Overwrite an existing file that holds different embeddings.

    Returns:
        The path of the written (or already identical) file.

    Raises:
        FileExistsError: If the file exists with different content and ``force`` is false.
        FileNotFoundError: If the base model or one of its text subfolders is missing.
    """
    from safetensors.torch import save_file

    base_model = Path(base_model)
    weights_dir = Path(weights_dir)
    embeds = compute_prompt_embeds(
        base_model, dtype=dtype, device=device, max_sequence_length=LOTUS2_SEQUENCE_LENGTH
    )
    tensors = {
        _PROMPT_KEY: embeds.prompt_embeds.detach().to("cpu", torch.float32).contiguous(),
        _POOLED_KEY: embeds.pooled_prompt_embeds.detach().to("cpu", torch.float32).contiguous(),
    }
    metadata = {
        "format": PROMPT_EMBEDS_FORMAT,
        "format_version": str(PROMPT_EMBEDS_FORMAT_VERSION),
        "prompt": LOTUS2_PROMPT,
        "max_sequence_length": str(LOTUS2_SEQUENCE_LENGTH),
        "t5_dim": str(embeds.t5_dim),
        "clip_dim": str(embeds.clip_dim),
        "compute_dtype": str(dtype).removeprefix("torch."),
        "source_model": base_model.resolve().name,
        "text_encoders_fingerprint": text_encoders_fingerprint(base_model),
    }

    path = weights_dir / PROMPT_EMBEDS_FILENAME
    if path.exists() and not force:
        if _holds_tensors(path, tensors) and _metadata(path) == metadata:
            return path
        raise FileExistsError(
            f"{path} already exists and holds different prompt embeddings; "
            "pass force=True (CLI: --force) to overwrite it"
        )

    weights_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=weights_dir, prefix=f".{PROMPT_EMBEDS_FILENAME}.", suffix=".tmp"
    )
    os.close(fd)
    try:
        save_file(tensors, tmp_name, metadata=metadata)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_prompt_embeds(
    weights_dir: Path,
    *,
    joint_attention_dim: int | None = None,
    pooled_projection_dim: int | None = None,
    base_model: Path | None = None,
) -> PromptEmbeds:
    """Load the exported empty-prompt embeddings, accepting only the official ones.

    Args:
        weights_dir: Folder holding :data:`PROMPT_EMBEDS_FILENAME`.
        joint_attention_dim: The transformer's ``joint_attention_dim``; if given, the T5 width
            must equal it.
        pooled_projection_dim: The transformer's ``pooled_projection_dim``; if given, the CLIP
            width must equal it.
        base_model: The base-model folder the embeddings are used with. If it has the text
            encoders, the file must have been computed from them (its fingerprint).

    Returns:
        float32 CPU tensors ``[1, 512, D_t5]`` and ``[1, D_clip]``; cast with
        :meth:`PromptEmbeds.to`.

    Raises:
        FileNotFoundError: If the file is missing (says how to create it).
        ValueError: If the file is unreadable, of a newer format, lacks a key, is not the
            official encoding (token count, prompt, text encoders) or a shape does not fit the
            transformer (names the file, the key, the shapes and the command that re-exports it).
    """
    from safetensors import safe_open

    path = Path(weights_dir) / PROMPT_EMBEDS_FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"prompt-embedding file {path} not found; {_EXPORT_HINT}")
    reexport = _reexport_hint(Path(weights_dir), base_model)

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            keys = set(handle.keys())
            tensors = {key: handle.get_tensor(key) for key in (_PROMPT_KEY, _POOLED_KEY)
                       if key in keys}
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise ValueError(
            f"cannot read prompt-embedding file {path}: {err}; {_EXPORT_HINT}"
        ) from err

    version = metadata.get("format_version", "1")
    if not version.isdigit() or int(version) > PROMPT_EMBEDS_FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version!r}; this lotus2_ros reads up to "
            f"{PROMPT_EMBEDS_FORMAT_VERSION}"
        )
    for key in (_PROMPT_KEY, _POOLED_KEY):
        if key not in tensors:
            raise ValueError(
                f"{path} lacks key {key!r} (found {sorted(keys)}); re-export it: {reexport}"
            )

    prompt = tensors[_PROMPT_KEY].float()
    pooled = tensors[_POOLED_KEY].float()
    if prompt.ndim != 3 or prompt.shape[0] != 1:
        raise ValueError(f"{path}: key {_PROMPT_KEY!r} has shape {list(prompt.shape)}, "
                         f"expected [1, {LOTUS2_SEQUENCE_LENGTH}, D_t5]; re-export it: {reexport}")
    if pooled.ndim != 2 or pooled.shape[0] != 1:
        raise ValueError(f"{path}: key {_POOLED_KEY!r} has shape {list(pooled.shape)}, "
                         f"expected [1, D_clip]; re-export it: {reexport}")
    if prompt.shape[1] != LOTUS2_SEQUENCE_LENGTH:
        raise ValueError(
            f"{path}: key {_PROMPT_KEY!r} holds {prompt.shape[1]} T5 tokens (shape "
            f"{list(prompt.shape)}); the official Lotus-2 embeddings have {LOTUS2_SEQUENCE_LENGTH} "
            f"(and a shorter encoding differs in every token); re-export it: {reexport}"
        )
    if metadata.get("prompt", LOTUS2_PROMPT) != LOTUS2_PROMPT:
        raise ValueError(f"{path} encodes the prompt {metadata['prompt']!r}, not Lotus-2's empty prompt; "
                         f"re-export it: {reexport}")
    if joint_attention_dim is not None and prompt.shape[2] != joint_attention_dim:
        raise ValueError(
            f"{path}: key {_PROMPT_KEY!r} has shape {list(prompt.shape)} but the transformer's "
            f"joint_attention_dim is {joint_attention_dim} (expected [1, {LOTUS2_SEQUENCE_LENGTH}, "
            f"{joint_attention_dim}]); export it from the base model this transformer belongs to: {reexport}"
        )
    if pooled_projection_dim is not None and pooled.shape[1] != pooled_projection_dim:
        raise ValueError(
            f"{path}: key {_POOLED_KEY!r} has shape {list(pooled.shape)} but the transformer's "
            f"pooled_projection_dim is {pooled_projection_dim} (expected [1, "
            f"{pooled_projection_dim}]); export it from the base model this transformer "
            f"belongs to: {reexport}"
        )
    recorded = metadata.get("text_encoders_fingerprint")
    if base_model is not None and recorded is not None and _has_text_folders(Path(base_model)):
        found = text_encoders_fingerprint(base_model)
        if found != recorded:
            raise ValueError(
                f"{path} was computed from other text encoders than those of {base_model} "
                f"(fingerprint {recorded[:12]}, the base model's {found[:12]}): the official inference "
                f"encodes the prompt with the base model's own encoders; re-export it: {reexport}"
            )
    return PromptEmbeds(prompt_embeds=prompt, pooled_prompt_embeds=pooled)


def text_encoders_fingerprint(base_model: Path) -> str:
    """A SHA-256 that changes when the tokenizers or text encoders of ``base_model`` change.

    Covers every file of :data:`TEXT_SUBFOLDERS` by relative name and size, small files (configs,
    vocabularies) in full and large ones (weights) by their first and last MiB — cheap enough to
    check at every load, and independent of the folder's location and file times.
    """
    import hashlib

    base_model = Path(base_model)
    digest = hashlib.sha256()
    chunk = 1 << 20
    for sub in TEXT_SUBFOLDERS:
        for file in sorted(p for p in (base_model / sub).rglob("*") if p.is_file()):
            size = file.stat().st_size
            digest.update(f"{file.relative_to(base_model).as_posix()}\0{size}\0".encode())
            with open(file, "rb") as f:
                if size <= 4 * chunk:
                    digest.update(f.read())
                else:
                    digest.update(f.read(chunk))
                    f.seek(size - chunk)
                    digest.update(f.read(chunk))
    return digest.hexdigest()


def _has_text_folders(base_model: Path) -> bool:
    return all((base_model / sub).is_dir() for sub in TEXT_SUBFOLDERS)


def _reexport_hint(weights_dir: Path, base_model: Path | None) -> str:
    base = str(base_model) if base_model is not None else "DIR"
    return (f"`lotus2 export-prompt-embeds --base-model {base} --weights {weights_dir} --force`"
            + ("" if base_model is not None else " (DIR: the FLUX.1-dev folder with text_encoder*/ and tokenizer*/)"))


def _metadata(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except Exception:  # unreadable: treat as different
        return {}


def _load(cls: type, folder: Path, **kwargs: object):
    """``cls.from_pretrained(folder, local_files_only=True)``, naming the folder on failure."""
    try:
        return cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        raise OSError(f"cannot load {cls.__name__} from {folder}: {err}") from err


def _holds_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> bool:
    """Whether the safetensors file at ``path`` holds exactly ``tensors`` (keys, dtypes, values)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            if set(handle.keys()) != set(tensors):
                return False
            for key, expected in tensors.items():
                found = handle.get_tensor(key)
                if found.dtype != expected.dtype or not torch.equal(found, expected):
                    return False
    except Exception:  # unreadable or corrupt: treat as different
        return False
    return True
