"""Sharing bags between launcher processes: disjoint, complete, balanced, environment-driven."""

from __future__ import annotations

from pathlib import Path

import pytest

from lotus2_ros.bag.shard import Shard, assign_bags, device_for, shard_from_env


def test_shares_are_disjoint_cover_every_bag_and_balance_bytes():
    bags = [Path(f"/data/run{i:02d}") for i in range(11)]
    sizes = {b: (i + 1) * 100 for i, b in enumerate(bags)}
    shares = [assign_bags(bags + bags[:2], Shard(k, 3), sizes) for k in range(3)]
    assert sorted(b for s in shares for b in s) == sorted(bags)
    loads = [sum(sizes[b] for b in s) for s in shares]
    assert max(loads) - min(loads) <= max(sizes.values())
    assert all(s == sorted(s, key=bags.index) for s in shares)  # kept in the given order


def test_rank_and_world_size_come_from_the_launcher_environment():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}
    shard = shard_from_env(env)
    assert shard == Shard(5, 8, 1)
    assert device_for("cuda", shard) == "cuda:1" and device_for("cuda:3", shard) == "cuda:3"
    assert device_for("cpu", shard) == "cpu"
    assert shard_from_env({}) == Shard(0, 1, None) and device_for("cuda", Shard()) == "cuda"
    assert shard_from_env(env, index=0, count=2) == Shard(0, 2, 1)  # explicit options win
    with pytest.raises(ValueError):
        shard_from_env({}, index=1)
    with pytest.raises(ValueError, match="shard index"):
        Shard(2, 2)
