"""``benchmarks/node_overhead.py`` runs at a small size and reports every stage (its figures are not tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "node_overhead.py"


def test_the_node_overhead_benchmark_runs_and_builds_every_topic_of_a_fixed_metric_frame(capsys, monkeypatch):
    pytest.importorskip("rclpy", reason="the benchmark builds rclpy messages (ROS 2 wheels not installed)")
    monkeypatch.syspath_prepend(str(SCRIPT.parent))  # as when run as a script: its helper modules beside it
    spec = importlib.util.spec_from_file_location("node_overhead", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--frames", "2", "--warmup", "1", "--sizes", "64x48", "--replay-forwards",
                       "--torch-threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "64x48 (processed at" in printed and "total (node overhead)" in printed
    for topic in ("disparity", "depth/image", "normals/image", "points"):  # built and timed one by one
        assert f"    {topic} " in printed, topic
