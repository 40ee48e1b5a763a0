"""The committed demo model (``models/demo``, built by ``scripts/train_demo_model.sh``) has really learned.

On held-out synthetic frames (scene seeds the trainer never drew) it must beat the trivial
baseline (constant disparity; every normal facing the camera) by a clear margin, through the
same perception pipeline the node runs. (Its untrained start scores like the baseline:
``models/demo/EVAL.md``.) Skips in a checkout without
the model folder.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from lotus2_ros.perception.config import PerceptionConfig
from lotus2_ros.perception.pipeline import load_pipeline
from lotus2_ros.train.eval_data import synthetic_eval_samples
from lotus2_ros.train.evaluate import constant_predictor, evaluate_depth, evaluate_normals, pipeline_predictor

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo"
pytestmark = [
    pytest.mark.skipif(not (MODEL / "weights").is_dir(), reason="models/demo is not in this checkout"),
    pytest.mark.filterwarnings("ignore:Already found a `peft_config` attribute:UserWarning"),
]
NUM_FRAMES = 8


@pytest.fixture(scope="module")
def samples():
    return list(synthetic_eval_samples(NUM_FRAMES))  # 160x128, the training size


@pytest.fixture(scope="module")
def demo_pipeline():
    """The demo model with its own defaults (weights/model.json: 160 px), as every front end loads it."""
    return load_pipeline(PerceptionConfig(base_model=str(MODEL / "base_model"), weights=str(MODEL / "weights"),
                                          device="cpu", dtype="fp32", metric_source="none",
                                          require_camera_info=False))


def test_the_demo_model_is_small_and_says_its_processing_size(demo_pipeline):
    # The LoRA files are zero-padded to the release ranks (128 / 256) so that the official inference
    # loads them: ~49 MiB on disk, but zeros cost git (zlib) next to nothing. The budget is what the
    # repository stores (zlib level 1 here: an upper bound of git's level-6 size).
    stored = sum(len(zlib.compress(p.read_bytes(), 1)) for p in MODEL.rglob("*") if p.is_file())
    assert stored < 20 * 2**20
    assert json.loads((MODEL / "weights" / "model.json").read_text())["process_res"] == 160
    assert demo_pipeline.backend.info.settings.process_res == 160
    assert demo_pipeline.tasks == ("depth", "normal")
    assert (MODEL / "EVAL.md").is_file()


@pytest.mark.parametrize("sharpen_steps", [0, 4])
def test_depth_beats_the_constant_baseline_on_held_out_frames(demo_pipeline, samples, sharpen_steps):
    """Ordering (δ1) on every frame; AbsRel on the indoor frames. The street frames' AbsRel is worse
    than the baseline's (far road to 300 m under the disparity alignment; see models/demo/EVAL.md)."""
    predict = pipeline_predictor(demo_pipeline, "depth", sharpen_steps)

    def metrics(predictor, kind=""):
        depth = [d for d, _ in samples if d.name.startswith(kind)]
        return evaluate_depth(predictor, depth, "synthetic", "m", 0.01, 1000.0).metrics

    assert metrics(predict)["delta1"] > metrics(constant_predictor("depth"))["delta1"] + 0.1
    assert metrics(predict, "indoor")["abs_rel"] < 0.9 * metrics(constant_predictor("depth"), "indoor")["abs_rel"]


@pytest.mark.parametrize("sharpen_steps", [0, 4])
def test_normals_beat_the_constant_baseline_on_held_out_frames(demo_pipeline, samples, sharpen_steps):
    normals = [n for _, n in samples]
    model = evaluate_normals(pipeline_predictor(demo_pipeline, "normal", sharpen_steps), normals, "synthetic", "demo").metrics
    constant = evaluate_normals(constant_predictor("normal"), normals, "synthetic", "constant").metrics
    assert model["mean"] < 0.5 * constant["mean"] and model["mean"] < 25.0
    assert model["a11.25"] > constant["a11.25"] + 10.0


def test_predictions_are_finite_at_the_camera_size(demo_pipeline, samples):
    rgb = samples[0][0].rgb
    pred = demo_pipeline.predict(rgb, refine_steps=0)
    assert pred.disparity.shape == rgb.shape[:2] and np.isfinite(pred.disparity).all()
    assert pred.normals.shape == (*rgb.shape[:2], 3)
    np.testing.assert_allclose(np.linalg.norm(pred.normals, axis=-1), 1.0, atol=1e-4)


def test_the_sharpener_refines_depth_and_normals_of_held_out_frames(demo_pipeline, samples):
    """Refined (4 sharpener steps, the model's default) depth and normals beat the core ones: depth
    AbsRel and δ1 (disparity-space alignment, as the figures in models/demo/EVAL.md), normal mean
    angle and the share under 11.25°. The depth sharpener is the rollout-trained one
    (scripts/train_demo_model.sh); the straight-path one made depth worse (0.147 → 0.192)."""
    depth = [d for d, _ in samples]
    core_d = evaluate_depth(pipeline_predictor(demo_pipeline, "depth", 0), depth, "synthetic", "core", 0.01, 1000.0).metrics
    refined_d = evaluate_depth(pipeline_predictor(demo_pipeline, "depth", 4), depth, "synthetic", "refined", 0.01,
                               1000.0).metrics
    assert refined_d["abs_rel"] < 0.99 * core_d["abs_rel"] and refined_d["delta1"] > core_d["delta1"], (core_d, refined_d)
    normals = [n for _, n in samples]
    core = evaluate_normals(pipeline_predictor(demo_pipeline, "normal", 0), normals, "synthetic", "core").metrics
    refined = evaluate_normals(pipeline_predictor(demo_pipeline, "normal", 4), normals, "synthetic", "refined").metrics
    assert refined["mean"] < core["mean"] - 0.3 and refined["a11.25"] > core["a11.25"] + 0.5, (core, refined)
