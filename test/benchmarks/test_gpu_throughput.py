"""``benchmarks/gpu_throughput.py`` runs unchanged on the CPU at the tiny size (the GPU run uses the same code)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_throughput.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_gpu_benchmark_runs_on_the_cpu_at_tiny_size_and_reports_every_case(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "rows.json"
    assert bench.main(["--device", "cpu", "--size", "tiny", "--resolutions", "32x32", "--steps", "0", "2",
                       "--both-steps", "1", "--repeats", "1", "--warmup", "0", "--torch-threads", "1",
                       "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 32x32 | depth+normal, one batched forward | 1 |" in printed
    rows = json.loads(out.read_text())["rows"]
    by_case = {(r["case"], r["steps"]): r for r in rows}
    assert set(by_case) == {("depth", 0), ("depth", 2), ("depth+normal, separate forwards", 1),
                            ("depth+normal, one batched forward", 1)}
    # Forwards made: core + steps, per task unless batched.
    assert by_case[("depth", 2)]["forwards"] == 3
    assert by_case[("depth+normal, separate forwards", 1)]["forwards"] == 4
    assert by_case[("depth+normal, one batched forward", 1)]["forwards"] == 2
    assert all(r["frame_ms"] > 0 and r["gflop_per_forward"] > 0 for r in rows)


def test_the_real_size_builder_matches_the_published_widths():
    bench = _load()
    cfg = bench.SIZES["real"]["transformer"]
    assert (cfg["num_layers"], cfg["num_single_layers"], cfg["num_attention_heads"] * cfg["attention_head_dim"]) == (
        19, 38, 3072)
    assert bench.SIZES["real"]["ranks"] == {"depth": 128, "normal": 256}


@pytest.mark.parametrize("name, peak", [("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                        ("NVIDIA H100 PCIe", 756.0)])
def test_the_bf16_peak_table_finds_common_gpus(name, peak):
    bench = _load()
    assert next(v for key, v in bench.BF16_PEAK_TFLOPS if key in name) == peak
