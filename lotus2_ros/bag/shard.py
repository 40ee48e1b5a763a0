"""Sharing a list of bags between processes started by a launcher (torchrun, accelerate, srun).

Each process works alone — no process group, no communication: it reads its rank and the number
of processes from the environment the launcher sets (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``
for torchrun and ``accelerate launch``; or explicit ``--shard-index`` / ``--num-shards``), takes
its share of the bag list, and uses the GPU ``cuda:LOCAL_RANK``. Every process computes the same
assignment from the same list, so the shares are disjoint and cover every bag.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Shard:
    """This process's place among the processes.

    Attributes:
        index: 0-based index of this process (``RANK``).
        count: Number of processes (``WORLD_SIZE``).
        local_rank: Index on this machine (``LOCAL_RANK``), for choosing the GPU; None if unset.
    """

    index: int = 0
    count: int = 1
    local_rank: int | None = None

    def __post_init__(self):
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ValueError(f"shard index must be in [0, {self.count}), got {self.index} (of {self.count})")


def shard_from_env(environ: Mapping[str, str] | None = None, index: int | None = None,
                   count: int | None = None) -> Shard:
    """The shard of this process: explicit ``index``/``count``, else ``RANK``/``WORLD_SIZE``, else ``0 of 1``."""
    env = os.environ if environ is None else environ
    local = env.get("LOCAL_RANK")
    local_rank = int(local) if local not in (None, "") else None
    if index is not None or count is not None:
        if index is None or count is None:
            raise ValueError("--shard-index and --num-shards go together")
        return Shard(index, count, local_rank)
    return Shard(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), local_rank)


def device_for(device: str, shard: Shard) -> str:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` under a launcher; anything else is kept."""
    if device == "cuda" and shard.local_rank is not None:
        return f"cuda:{shard.local_rank}"
    return device


def bag_size(path: Path) -> int:
    """Bytes of a bag (folder or file); 0 if it is missing (the run will report it)."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    if p.is_dir():
        return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
    return 0


def assign_bags(bags: Sequence[Path], shard: Shard, sizes: Mapping[Path, int] | None = None) -> list[Path]:
    """The bags of ``shard``: largest first to the least-loaded shard (by bytes), ties by name.

    Args:
        bags: All bags (the same list in every process; duplicates are dropped).
        shard: This process's shard.
        sizes: Bytes per bag (default: measured on disk); the balance, not correctness, depends on it.
            Every process must see the same sizes (the same files), or shares could overlap.

    Returns:
        This shard's bags in the order of ``bags``.
    """
    unique = list(dict.fromkeys(Path(b) for b in bags))
    size = [bag_size(b) if sizes is None else int(sizes[b]) for b in unique]
    order = sorted(range(len(unique)), key=lambda i: (-size[i], str(unique[i])))
    load = [0] * shard.count
    owner = [0] * len(unique)
    for i in order:
        s = min(range(shard.count), key=lambda k: (load[k], k))
        owner[i] = s
        load[s] += max(size[i], 1)
    return [b for i, b in enumerate(unique) if owner[i] == shard.index]
