"""The Lotus-1 backend: Stable Diffusion 2 U-Net, one step, Lotus-D and Lotus-G (the light family).

Follows the official Lotus inference (EnVision-Research/Lotus ``pipeline.py`` + ``infer.py``)
step by step, for each task's released pipeline folder (:mod:`.lotus1_folders`):

1. :meth:`~Lotus1Engine.preprocess` uint8 RGB → ``[-1,1]`` float32, resized so that the long edge
   is ``process_res`` (768 by default; **upscales** small images, as the official code does; both
   sides truncated; bilinear, ``align_corners=False``, antialiased; no rounding to multiples of 8)
2. :meth:`~Lotus1Engine.encode` VAE posterior **mode** (the one deliberate deviation, as for
   Lotus-2: the official code samples, so even Lotus-D is random without a seed) × ``scaling_factor``
   → ``[B,4,h//8,w//8]``
3. :meth:`~Lotus1Engine.predict` one U-Net forward at timestep 999 with the cached empty-prompt
   embedding (2 CLIP tokens) and the task switcher ``class_labels = [sin 1, sin 0, cos 1, cos 0]``
   (annotation). Lotus-G feeds ``[image latent, noise]`` (8 channels), the noise drawn exactly as
   the official pipeline draws it: ``torch.Generator(device).manual_seed(seed)`` and one
   ``randn((1, 4, h//8, w//8))`` in the model's dtype — so a seeded frame reproduces the official
   output for that seed. Lotus-D feeds the image latent alone. The output is the x0 latent.
4. :meth:`~Lotus1Engine.iter_refine` (Lotus-G): the ensemble — K seeds (``seed``, ``seed+1``, …;
   the first is the per-frame prediction), the K−1 new ones in one batched forward per task;
   the pipeline decodes the members and reduces them (mean or median, and the standard deviation
   as the uncertainty)
5. :meth:`~Lotus1Engine.decode` ``z / scaling_factor`` → VAE decode → ``(x/2 + 0.5)`` clamped to [0,1]
6. :meth:`~Lotus1Engine.to_depth` channel mean / :meth:`~Lotus1Engine.to_normals` ``n = 2u − 1``
   in the ROS optical frame, resized back to the output size with **nearest-exact** (the official
   back-resize). Depth releases ``*-disparity`` predict affine-invariant disparity, the ``v1-0``
   ones affine-invariant depth (``ModelInfo.depth_output``).

Each task has its own folder, U-Net and VAE; tasks whose VAEs hold the same weights share one
encode. The text encoder is never loaded at run time: ``lotus2 export-prompt-embeds --backend
lotus1`` caches the empty-prompt embedding in each folder (:data:`PROMPT_EMBEDS_FILENAME`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..geometry.normals import planar_model_to_optical
from .backend import DTYPES, BackendConfig, ModelBackend, ModelInfo, StageTimer, deliver
from .lotus1_folders import Lotus1Folder, find_lotus1_folders
from .resize import images_to_tensor
from .spec import ModelSettings, WeightsError, resolve_model_request

log = logging.getLogger(__name__)

#: The single timestep of the official inference.
TIMESTEP = 999
#: The cached empty-prompt embedding inside each pipeline folder.
PROMPT_EMBEDS_FILENAME = "lotus-1_prompt_embeds.safetensors"
PROMPT_FORMAT = "lotus1-prompt-embeds"
#: ``[sin, sin, cos, cos]`` of these: the annotation (prediction) task; reconstruction is (0, 1).
ANNOTATION_SWITCH = (1.0, 0.0)
RECONSTRUCTION_SWITCH = (0.0, 1.0)


def task_switcher(switch: tuple[float, float], batch: int, device: torch.device) -> torch.Tensor:
    """The detail preserver's class label ``[sin a, sin b, cos a, cos b]`` ``[B,4]`` float32.

    Computed with float32 ``torch.sin``/``torch.cos`` on ``device`` as the official code does
    (``math.cos(1.0)`` rounded to float32 differs by one ulp, enough to move outputs by ~1e-6).
    """
    t = torch.tensor(switch, dtype=torch.float32, device=device).unsqueeze(0)  # [1,2]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=-1).expand(batch, 4)  # [B,4]


def resize_long_edge(rgb: torch.Tensor, long_edge_px: int | None) -> torch.Tensor:
    """The official Lotus-1 resize: long edge → ``long_edge_px`` (up or down), sides truncated.

    ``[B,3,H,W]`` float → ``[B,3,h,w]``; bilinear, ``align_corners=False``, antialiased; None:
    unchanged.
    """
    if not long_edge_px:
        return rgb
    H, W = rgb.shape[-2:]
    f = min(long_edge_px / W, long_edge_px / H)
    size = (int(H * f), int(W * f))
    if size == (H, W):
        return rgb
    if min(size) < 8:
        raise ValueError(f"a {W}x{H} image resized to a {long_edge_px} px long edge is {size[1]}x{size[0]}: "
                         "below the 8 px the VAE needs")
    return F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_nearest(x: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """The official back-resize of Lotus-1 outputs: ``nearest-exact``; identity at that size."""
    if tuple(x.shape[-2:]) == tuple(size_hw):
        return x
    return F.interpolate(x, size=tuple(size_hw), mode="nearest-exact")


# ----------------------------------------------------------------------------- prompt embeddings
def compute_prompt_embeds(folder: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The official empty-prompt encoding of a pipeline folder: ``[1, 2, D]`` (BOS, EOS; not padded to 77).

    ``tokenizer("", padding="do_not_pad")`` then the text encoder's last hidden state.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    for sub in ("tokenizer", "text_encoder"):
        if not (folder / sub).is_dir():
            raise FileNotFoundError(f"{folder} lacks {sub}/ (needed once, to compute the prompt embedding)")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype, local_files_only=True)
    encoder.to(device).eval()
    ids = tokenizer("", padding="do_not_pad", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)  # [[BOS, EOS]]
    with torch.no_grad():
        return encoder(ids)[0].float().cpu()  # [1,2,D]


def export_prompt_embeds(folder: Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                         force: bool = False) -> Path:
    """Write :data:`PROMPT_EMBEDS_FILENAME` into a pipeline folder (atomically); returns its path.

    Raises:
        FileExistsError: A different file is there and ``force`` is false.
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    embeds = compute_prompt_embeds(folder, device, dtype)
    path = folder / PROMPT_EMBEDS_FILENAME
    if path.exists() and not force:
        try:
            if torch.equal(load_file(str(path))["prompt_embeds"], embeds):
                return path
        except Exception:  # noqa: BLE001 - unreadable: it differs
            pass
        raise FileExistsError(f"{path} exists and differs; pass --force to replace it")
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    save_file({"prompt_embeds": embeds.contiguous()}, tmp,
              metadata={"format": PROMPT_FORMAT, "prompt": "", "tokens": str(embeds.shape[1]),
                        "dim": str(embeds.shape[2]), "compute_dtype": str(dtype).removeprefix("torch.")})
    os.replace(tmp, path)
    return path


def load_prompt_embeds(folder: Path, cross_attention_dim: int) -> torch.Tensor:
    """The cached embedding of a folder, checked against the U-Net's ``cross_attention_dim``.

    Raises:
        FileNotFoundError: No cache (the message gives the command that writes it).
        WeightsError: A cache of the wrong format or width.
    """
    from safetensors import safe_open

    path = Path(folder) / PROMPT_EMBEDS_FILENAME
    hint = f"run once: lotus2 export-prompt-embeds --backend lotus1 --weights {Path(folder)}"
    if not path.is_file():
        raise FileNotFoundError(f"no cached prompt embedding {path}; {hint}")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            embeds = f.get_tensor("prompt_embeds")
    except Exception as err:  # noqa: BLE001 - any unreadable file is one error
        raise WeightsError(f"cannot read {path}: {err}; {hint} --force") from None
    if meta.get("format") != PROMPT_FORMAT or embeds.ndim != 3 or embeds.shape[0] != 1:
        raise WeightsError(f"{path} is not a Lotus-1 prompt embedding ([1, tokens, dim]); {hint} --force")
    if embeds.shape[2] != cross_attention_dim:
        raise WeightsError(f"{path}: embedding width {embeds.shape[2]} != the U-Net's cross_attention_dim "
                           f"{cross_attention_dim}; {hint} --force")
    return embeds


# ----------------------------------------------------------------------------- the backend
class Lotus1Engine(ModelBackend):
    """Lotus-D / Lotus-G depth and normals; build with :meth:`load`."""

    def __init__(self, folders: dict[str, Lotus1Folder], unets: dict[str, torch.nn.Module],
                 vaes: dict[str, torch.nn.Module], prompts: dict[str, torch.Tensor], *, info: ModelInfo,
                 device: torch.device | str, dtype: torch.dtype, seed: int = 0):
        self.info = info
        self.device = torch.device(device)
        self.dtype = dtype
        self.seed = int(seed)
        self.folders = folders
        self.unets = unets
        self.vaes = vaes
        self.prompts = prompts
        # Tasks whose VAEs hold identical weights (the releases': SD2's) share one module and one
        # encode: {task: the task whose VAE encodes}.
        self.encoder_of: dict[str, str] = {}
        for task in unets:
            same = next((t for t in self.encoder_of if self.encoder_of[t] == t and _same_weights(vaes[t], vaes[task])),
                        None)
            self.encoder_of[task] = same or task
            self.vaes[task] = vaes[self.encoder_of[task]]  # one module in memory for identical VAEs

    def mode(self, task: str) -> str:
        return self.folders[task].mode

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, config: BackendConfig) -> "Lotus1Engine":
        """Load the pipeline folders ``config.weights`` names (local only; see :mod:`.lotus1_folders`).

        Raises:
            FileNotFoundError: The folder, a part of it, or the prompt cache is missing (named).
            ValueError: (``Lotus1FolderError``, ``WeightsError``) not a Lotus-1 model, wrong U-Net
                input channels, a requested task without a folder, a bad cache.
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel

        if config.base_model is not None:
            raise ValueError("the Lotus-1 backend takes no base model: --weights names its pipeline folder(s)")
        folders = find_lotus1_folders(config.weights)
        defaults, settings = resolve_model_request("lotus1", config.weights, tasks=config.tasks,
                                                   process_res=config.process_res, no_cap=config.full_resolution,
                                                   refine_steps=config.refine_steps)
        dtype, device = DTYPES[config.dtype], torch.device(config.device)
        unets, vaes, prompts = {}, {}, {}
        for task in settings.tasks:
            folder = folders[task]
            try:
                unet = UNet2DConditionModel.from_pretrained(folder.path / "unet", torch_dtype=dtype,
                                                            local_files_only=True)
                vae = AutoencoderKL.from_pretrained(folder.path / "vae", torch_dtype=dtype, local_files_only=True)
            except (OSError, ValueError, RuntimeError) as err:
                raise WeightsError(f"cannot load the Lotus-1 {task} model in {folder.path}: {err}") from None
            if int(vae.config.latent_channels) * (2 if folder.mode == "g" else 1) != int(unet.config.in_channels):
                raise WeightsError(f"{folder.path}: U-Net in_channels {unet.config.in_channels} does not fit the VAE's "
                                   f"{vae.config.latent_channels} latent channels for Lotus-{folder.mode.upper()}")
            unets[task] = unet.requires_grad_(False).to(device).eval()
            vaes[task] = vae.requires_grad_(False).to(device).eval()
            prompts[task] = load_prompt_embeds(folder.path, int(unet.config.cross_attention_dim)).to(device, dtype)
        generative = tuple(t for t in settings.tasks if folders[t].mode == "g")
        if not config.load_refiner:
            settings = ModelSettings(settings.tasks, settings.process_res, 0, settings.notes,
                                     settings.depth_output, settings.refinement)
        info = ModelInfo(family="lotus1", settings=settings, depth_output=defaults.depth_output,
                         refinement="ensemble", refine_tasks=generative if config.load_refiner else (),
                         source=defaults.source)
        for note in settings.notes:
            log.info("Lotus-1: %s", note)
        log.info("Lotus-1 ready: %s, device=%s dtype=%s", {t: f"{folders[t].path.name} (Lotus-{folders[t].mode.upper()})"
                                                           for t in settings.tasks}, device, config.dtype)
        return cls({t: folders[t] for t in settings.tasks}, unets, vaes, prompts, info=info, device=device,
                   dtype=dtype, seed=config.seed)

    # ------------------------------------------------------------------ stages
    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        rgb = images_to_tensor(images, self.device)  # [B,3,H,W] float32 in [-1,1]
        return resize_long_edge(rgb, self.info.settings.process_res).to(self.dtype)  # [B,3,h,w]

    def encode(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B,3,h,w]`` → ``{task: [B,4,h//8,w//8]}`` (posterior mode × scaling factor; shared where the VAEs are)."""
        out: dict[str, torch.Tensor] = {}
        for task, encoder in self.encoder_of.items():
            if encoder not in out:
                vae = self.vaes[encoder]
                out[encoder] = vae.encode(rgb.to(self.dtype)).latent_dist.mode() * vae.config.scaling_factor
            out[task] = out[encoder]
        return out

    def noise(self, latent_shape: torch.Size, seed: int) -> torch.Tensor:
        """The official Lotus-G noise for one image: a device generator seeded with ``seed``, one draw."""
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        return torch.randn((1, *latent_shape[1:]), generator=generator, device=self.device, dtype=self.dtype)

    def unet_forward(self, task: str, rgb_latent: torch.Tensor, noise: torch.Tensor | None = None,
                     switch: tuple[float, float] = ANNOTATION_SWITCH) -> torch.Tensor:
        """One U-Net forward at timestep 999: the x0 latent ``[B,4,h,w]`` (``noise`` for Lotus-G)."""
        b = rgb_latent.shape[0]
        x = rgb_latent if noise is None else torch.cat([rgb_latent, noise], dim=1)  # [B,4|8,h,w]
        timestep = torch.tensor(TIMESTEP, dtype=torch.long, device=self.device)
        return self.unets[task](x.to(self.dtype), timestep, encoder_hidden_states=self.prompts[task].expand(b, -1, -1),
                                class_labels=task_switcher(switch, b, self.device).to(self.dtype),
                                return_dict=False)[0]

    def predict(self, cond: dict[str, torch.Tensor], tasks: tuple[str, ...],
                timer: StageTimer | None = None) -> dict[str, torch.Tensor]:
        """One U-Net forward per task (Lotus-G: with the noise of ``seed``)."""
        timer = timer or StageTimer(self.device)
        out = {}
        for task in tasks:
            z = cond[task]
            with timer(f"core_{task}"):
                noise = None
                if self.mode(task) == "g":
                    noise = torch.cat([self.noise(z.shape, self.seed)] * z.shape[0])
                out[task] = self.unet_forward(task, z, noise)
        return out

    def refine_forwards(self, tasks: tuple[str, ...], num_steps: int) -> int:
        return len(tasks) if num_steps > 1 else 0

    def iter_refine(self, cond: dict[str, torch.Tensor], latents: dict[str, torch.Tensor], num_steps: int,
                    timer: StageTimer | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The ensemble of ``num_steps`` seeds: per task one batched forward of the K − 1 new members.

        Each item maps every task to its members so far, ``[K_task, 4, h, w]`` (single image).
        """
        timer = timer or StageTimer(self.device)
        if num_steps <= 1:
            return
        current = {task: z for task, z in latents.items()}
        for task in list(current):
            z = cond[task]
            if z.shape[0] != 1:
                raise ValueError("the Lotus-G ensemble runs on one image at a time")
            with timer(f"sharpen_{task}"):  # a forward stage (the refinement's)
                noise = torch.cat([self.noise(z.shape, self.seed + k) for k in range(1, num_steps)])
                members = self.unet_forward(task, z.expand(num_steps - 1, -1, -1, -1), noise)
            current[task] = torch.cat([latents[task], members])  # [K,4,h,w], member 0 = the prediction
            yield dict(current)

    def decode(self, latents: torch.Tensor, task: str | None = None) -> torch.Tensor:
        vae = self.vaes[task or next(iter(self.vaes))]
        decoded = vae.decode(latents.to(self.dtype) / vae.config.scaling_factor, return_dict=False)[0]
        return (decoded.float() / 2 + 0.5).clamp(0, 1)  # [B,3,8*(h//8),8*(w//8)]

    def to_depth(self, decoded: torch.Tensor, out_hw: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
        mean = decoded.mean(dim=1, keepdim=True)  # [B,1,h,w]
        return deliver(resize_nearest(mean, out_hw)[:, 0].cpu().numpy(), out)

    def to_normals(self, decoded: torch.Tensor, out_hw: tuple[int, int], out: np.ndarray | None = None,
                   colorized: np.ndarray | None = None) -> np.ndarray:
        return planar_model_to_optical(resize_nearest(decoded, out_hw).cpu().numpy(), out, colorized)  # [B,H,W,3]

    def check_request(self, tasks: tuple[str, ...], refine_steps: int) -> None:
        super().check_request(tasks, refine_steps)
        if refine_steps == 1:
            raise ValueError("an ensemble needs at least 2 seeds (refinement steps 0 or 2..10)")

    def describe(self) -> dict:
        return {**super().describe(), "modes": {t: f"lotus-{self.mode(t)}" for t in self.unets}, "seed": self.seed,
                "unet_params": sum(p.numel() for u in self.unets.values() for p in u.parameters())}


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    if a is b:
        return True
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)
