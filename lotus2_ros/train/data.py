"""Data specifications, probability mixing and the reproducible batch stream.

A source is written ``KIND[=PATH][@PROB]`` on the command line, e.g.
``hypersim=/data/hypersim@0.9 vkitti2=/data/vkitti2@0.1`` (the paper's mix), ``synthetic`` or
``folder=/data/my_robot``. Probabilities are normalised to sum to 1.

The stream is *counter-based*: micro-batch ``g`` (global over ranks) is built only from
``numpy.random.default_rng([seed, g])``, which picks the source (mixing by probability: a
micro-batch comes from one source, so its frames share a size), the frames (uniformly, with
replacement; frames a reader rejects as :class:`~lotus2_ros.train.datasets.InvalidSample`
are redrawn), the crop and the flip, and a seed for the step's own randomness (flow times).
So the data of step ``s`` does not depend on what ran before: resuming at step ``s`` continues
with exactly the batches an uninterrupted run would have seen, on any number of workers.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .datasets import (
    FolderDataset,
    HypersimDataset,
    InvalidSample,
    SyntheticDataset,
    VirtualKitti2Dataset,
)
from .samples import Sample, crop, depth_valid_mask, disparity_target, normal_target

KINDS = ("hypersim", "vkitti2", "synthetic", "folder")
#: Sources the paper trains on, with its mixing probabilities.
PAPER_MIX = {"hypersim": 0.9, "vkitti2": 0.1}
MAX_REDRAWS = 100


@dataclass(frozen=True)
class DataSource:
    """One entry of ``--data``: a dataset kind, its folder and its mixing probability."""

    kind: str
    path: Path | None = None
    prob: float = 1.0

    @classmethod
    def parse(cls, text: str) -> DataSource:
        """Parse ``KIND[=PATH][@PROB]``.

        Raises:
            ValueError: Unknown kind, missing path, or a probability that is not positive.
        """
        body, prob = text, None
        if "@" in text:
            body, _, p = text.rpartition("@")
            try:
                prob = float(p)
            except ValueError:
                raise ValueError(f"data source {text!r}: probability after '@' must be a number, got {p!r}") from None
        kind, _, path = body.partition("=")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise ValueError(f"data source {text!r}: kind must be one of {KINDS}, got {kind!r}")
        if kind != "synthetic" and not path:
            raise ValueError(f"data source {text!r}: {kind} needs a folder, e.g. {kind}=/data/{kind}")
        if prob is None:
            prob = PAPER_MIX.get(kind, 1.0)
        if not (prob > 0 and math.isfinite(prob)):
            raise ValueError(f"data source {text!r}: probability must be > 0, got {prob}")
        return cls(kind=kind, path=Path(path) if path else None, prob=prob)

    def __str__(self) -> str:
        return f"{self.kind}{'=' + str(self.path) if self.path else ''}@{self.prob:g}"


@dataclass(frozen=True)
class SyntheticOptions:
    """Settings of ``synthetic`` sources (train and held-out use disjoint scene seeds)."""

    width_px: int = 160
    height_px: int = 128
    hfov_deg: float = 70.0
    num_scenes: int = 1000
    frames_per_scene: int = 20
    kinds: tuple[str, ...] = ("indoor", "street")
    heldout_seed_offset: int = 1_000_000


def open_source(source: DataSource, *, heldout: bool = False, resize_short_px: int | None = None,
                crop_hw: tuple[int, int] | None = None, flip_prob: float | None = None,
                synthetic: SyntheticOptions = SyntheticOptions()):
    """Open the reader for ``source``; ``heldout`` picks the validation part.

    Held-out parts: Hypersim's official ``val`` split, Virtual KITTI 2's ``Scene01`` (which
    Lotus leaves out of training), synthetic scenes with seeds from ``heldout_seed_offset``, and
    the whole folder for ``folder``. Held-out frames are never flipped or randomly cropped.
    """
    if source.kind == "hypersim":
        ds = HypersimDataset(source.path, split="val" if heldout else "train")
    elif source.kind == "vkitti2":
        ds = VirtualKitti2Dataset(source.path, scenes=("Scene01",)) if heldout else VirtualKitti2Dataset(source.path)
    elif source.kind == "synthetic":
        ds = SyntheticDataset(kinds=synthetic.kinds, num_scenes=synthetic.num_scenes,
                              frames_per_scene=synthetic.frames_per_scene, width_px=synthetic.width_px,
                              height_px=synthetic.height_px, hfov_deg=synthetic.hfov_deg,
                              seed_offset=synthetic.heldout_seed_offset if heldout else 0)
    else:
        ds = FolderDataset(source.path)
    policy = ds.policy
    if resize_short_px is not None:
        policy = replace(policy, resize_short_px=resize_short_px or None)
    if crop_hw is not None:
        policy = replace(policy, crop_hw=tuple(crop_hw) if crop_hw[0] else None)
    if flip_prob is not None:
        policy = replace(policy, flip_prob=flip_prob)
    if heldout:
        policy = replace(policy, flip_prob=0.0, crop_mode="kitti" if policy.crop_mode == "kitti" else "random")
    ds.policy = policy
    return ds


# ----------------------------------------------------------------------------- batches
def sample_to_arrays(sample: Sample, tasks: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Model inputs and targets of one frame: rgb ``[3,H,W]`` in [−1, 1]; per task ``[3,H,W]`` + weight ``[1,H,W]``."""
    out = {"rgb": (sample.rgb.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)}
    H, W = sample.hw
    for task in tasks:
        if task == "depth":
            if sample.depth_m is None:
                target, weight = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
            else:
                target, weight = disparity_target(sample.depth_m, depth_valid_mask(sample), sample.sky)
            out["depth"] = np.repeat(target[None], 3, axis=0)
        else:
            if sample.normals is None:
                target, weight = np.zeros((H, W, 3), np.float32), np.zeros((H, W), np.float32)
            else:
                target, weight = normal_target(sample.normals)
            out["normal"] = target.transpose(2, 0, 1)
        out[f"{task}_weight"] = weight[None]
    return out


def _common_size(samples: list[Sample]) -> list[Sample]:
    """Centre-crop frames of one micro-batch to their common size (multiples of 16 already)."""
    h = min(s.hw[0] for s in samples)
    w = min(s.hw[1] for s in samples)
    return [s if s.hw == (h, w) else crop(s, (s.hw[0] - h) // 2, (s.hw[1] - w) // 2, h, w) for s in samples]


class BatchStream(torch.utils.data.IterableDataset):
    """Endless stream of micro-batches for one rank (see the module docstring).

    Yields dicts of CPU tensors: ``rgb`` ``[B,3,H,W]`` in [−1, 1]; per task ``{task}``
    ``[B,3,H,W]`` in [−1, 1] and ``{task}_weight`` ``[B,1,H,W]`` in {0, 1}; ``seed`` (int64
    scalar for the step's own randomness), ``index`` (the global micro-batch number) and
    ``source`` (which dataset it came from).
    """

    def __init__(self, datasets: list, probs: list[float], batch_size: int, tasks: tuple[str, ...],
                 seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        super().__init__()
        if len(datasets) != len(probs) or not datasets:
            raise ValueError("need one probability per dataset and at least one dataset")
        p = np.asarray(probs, dtype=np.float64)
        self.datasets, self.probs = datasets, p / p.sum()
        self.batch_size, self.tasks, self.seed = int(batch_size), tuple(tasks), int(seed)
        self.start, self.rank, self.world_size = int(start), int(rank), int(world_size)

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        """Micro-batch ``k`` of this rank (global number ``k · world_size + rank``)."""
        g = k * self.world_size + self.rank
        rng = np.random.default_rng([self.seed, g])
        source = int(rng.choice(len(self.datasets), p=self.probs))
        ds = self.datasets[source]
        samples = []
        for _ in range(self.batch_size):
            draws = (rng.integers(len(ds)) for _ in itertools.count())  # drawn one per attempt
            sample = _first_valid(ds, draws, f"{MAX_REDRAWS} frames in a row were invalid")
            samples.append(ds.policy.apply(sample, rng))
        arrays = [sample_to_arrays(s, self.tasks) for s in _common_size(samples)]
        out = {k: torch.from_numpy(np.stack([a[k] for a in arrays])) for k in arrays[0]}
        out["seed"] = torch.tensor(int(rng.integers(2**62)), dtype=torch.int64)
        out["index"] = torch.tensor(g, dtype=torch.int64)
        out["source"] = torch.tensor(source, dtype=torch.int64)
        return out

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for k in itertools.count(self.start + wid, nw):
            yield self.batch(k)


def _first_valid(ds, indices, failure: str) -> Sample:
    """The first frame among ``indices`` (at most :data:`MAX_REDRAWS` tried) that the reader accepts."""
    for idx in itertools.islice(indices, MAX_REDRAWS):
        try:
            return ds.load(int(idx))
        except InvalidSample:
            continue
    raise RuntimeError(f"{ds.name}: {failure}")


def heldout_samples(datasets: list, count: int) -> list[Sample]:
    """``count`` evenly spaced held-out frames over the sources, at training geometry, unflipped."""
    out = []
    per = [count // len(datasets) + (1 if i < count % len(datasets) else 0) for i in range(len(datasets))]
    for ds, n in zip(datasets, per):
        if n == 0:
            continue
        rng = np.random.default_rng(0)
        for idx in np.linspace(0, len(ds) - 1, n).round().astype(int):
            following = ((int(idx) + j) % len(ds) for j in itertools.count())
            sample = _first_valid(ds, following, f"no valid held-out frame near {idx}")
            out.append(ds.policy.apply(sample, rng))
    return out
