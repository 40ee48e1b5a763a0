"""The committed Lotus-1 demo model (``models/demo_lotus1``, built by ``scripts/train_lotus1_demo_model.sh``)
has really learned.

On held-out synthetic frames (scene seeds the trainer never drew) it must beat the trivial
baseline (constant disparity; every normal facing the camera) by a clear margin, through the
same perception pipeline the node runs (figures: ``models/demo_lotus1/EVAL.md``). Skips in a
checkout without the model folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lotus2_ros.perception.config import PerceptionConfig
from lotus2_ros.perception.pipeline import load_pipeline
from lotus2_ros.train.eval_data import synthetic_eval_samples
from lotus2_ros.train.evaluate import constant_predictor, evaluate_depth, evaluate_normals, pipeline_predictor

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo_lotus1"
pytestmark = pytest.mark.skipif(not (MODEL / "model.json").is_file(), reason="models/demo_lotus1 is not in this checkout")
NUM_FRAMES = 8


@pytest.fixture(scope="module")
def samples():
    return list(synthetic_eval_samples(NUM_FRAMES))  # 160x128, the training size


@pytest.fixture(scope="module")
def demo_pipeline():
    """The Lotus-1 demo model with its own defaults (model.json: 160 px), as every front end loads it."""
    return load_pipeline(PerceptionConfig(backend="lotus1", weights=str(MODEL), device="cpu", dtype="fp32",
                                          metric_source="none", require_camera_info=False))


def test_the_lotus1_demo_model_is_small_and_says_its_processing_size(demo_pipeline):
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size <= 16 * 2**20
    assert json.loads((MODEL / "model.json").read_text())["process_res"] == 160
    assert demo_pipeline.backend.info.settings.process_res == 160
    assert demo_pipeline.tasks == ("depth", "normal")
    assert {demo_pipeline.backend.mode(t) for t in ("depth", "normal")} == {"d"}
    assert demo_pipeline.backend.info.depth_output == "disparity"
    assert (MODEL / "EVAL.md").is_file()


def test_depth_beats_the_constant_baseline_on_held_out_frames(demo_pipeline, samples):
    predict = pipeline_predictor(demo_pipeline, "depth", 0)
    depth = [d for d, _ in samples]
    model = evaluate_depth(predict, depth, "synthetic", "m", 0.01, 1000.0).metrics
    constant = evaluate_depth(constant_predictor("depth"), depth, "synthetic", "m", 0.01, 1000.0).metrics
    assert model["delta1"] > constant["delta1"] + 0.3, (model, constant)
    indoor = [d for d in depth if d.name.startswith("indoor")]
    assert (evaluate_depth(predict, indoor, "synthetic", "m", 0.01, 1000.0).metrics["abs_rel"]
            < 0.7 * evaluate_depth(constant_predictor("depth"), indoor, "synthetic", "m", 0.01, 1000.0).metrics["abs_rel"])


def test_normals_beat_the_constant_baseline_on_held_out_frames(demo_pipeline, samples):
    normals = [n for _, n in samples]
    model = evaluate_normals(pipeline_predictor(demo_pipeline, "normal", 0), normals, "synthetic", "demo").metrics
    constant = evaluate_normals(constant_predictor("normal"), normals, "synthetic", "constant").metrics
    # (Its share within 11.25° is about the constant's: walls facing the camera are exactly what the
    # constant predicts; models/demo_lotus1/EVAL.md.)
    assert model["mean"] < 0.6 * constant["mean"], (model, constant)
    assert model["median"] < 0.5 * constant["median"], (model, constant)
    assert model["a22.5"] > constant["a22.5"] + 15.0, (model, constant)


def test_predictions_are_finite_at_the_camera_size(demo_pipeline, samples):
    rgb = samples[0][0].rgb
    pred = demo_pipeline.predict(rgb, refine_steps=0)
    assert pred.disparity.shape == rgb.shape[:2] and np.isfinite(pred.disparity).all()
    assert pred.normals.shape == (*rgb.shape[:2], 3)
    np.testing.assert_allclose(np.linalg.norm(pred.normals, axis=-1), 1.0, atol=1e-4)


def test_lotus2_demo_runs_the_lotus1_demo_model(tmp_path, capsys):
    """``make demo DEMO_BACKEND=lotus1`` passes ``--backend lotus1 --model models/demo_lotus1`` (here engine-only)."""
    from lotus2_ros.cli.main import main

    rc = main(["demo", "--backend", "lotus1", "--model", str(MODEL), "--engine-only", "--frames", "1",
               "--width", "160", "--height", "128", "-o", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Lotus-1 pipeline demo" in out and "core depth" in out and "core normal" in out
    assert np.isfinite(np.load(tmp_path / "frames" / "frame_001_depth.npy")).all()
