"""Smoke tests of the ``lotus2`` command line (the library is tested in depth elsewhere)."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch

from lotus2_ros.cli.main import main
from lotus2_ros.model.prompt_embeds import PROMPT_EMBEDS_FILENAME


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "a.png"), (rng.random((40, 56, 3)) * 255).astype(np.uint8))
    cv2.imwrite(str(folder / "b.jpg"), (rng.random((33, 33, 3)) * 255).astype(np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_predict_writes_npy_and_png_per_task_at_input_size(tiny_model, images, tmp_path):
    out = tmp_path / "out"
    args = ["predict", "--base-model", str(tiny_model.base_model), "--weights", str(tiny_model.weights),
            "--task", "depth", "--task", "normal", "--sharpen-steps", "1", "-o", str(out), str(images)]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_depth.npy", "a_depth.png", "a_normal.npy", "a_normal.png",
        "b_depth.npy", "b_depth.png", "b_normal.npy", "b_normal.png",
    ]
    depth = np.load(out / "a_depth.npy")
    normal = np.load(out / "b_normal.npy")
    assert depth.shape == (40, 56) and depth.dtype == np.float32
    assert 0.0 <= depth.min() and depth.max() <= 1.0
    assert normal.shape == (33, 33, 3) and normal.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(normal, axis=-1), 1.0, atol=1e-5)
    assert cv2.imread(str(out / "a_depth.png")).shape == (40, 56, 3)


def test_predict_refuses_to_overwrite_without_force(tiny_model, images, tmp_path, caplog):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_depth.npy").write_bytes(b"user data")
    args = ["predict", "--base-model", str(tiny_model.base_model), "--weights", str(tiny_model.weights),
            "--sharpen-steps", "0", "-o", str(out), str(images / "a.png")]
    assert main(args) == 2
    assert (out / "a_depth.npy").read_bytes() == b"user data"
    assert "--force" in caplog.text
    assert main(args + ["--force"]) == 0
    assert np.load(out / "a_depth.npy").shape == (40, 56)


def test_predict_with_missing_weight_file_fails_naming_it(tiny_model, images, tmp_path, caplog):
    weights = tmp_path / "weights"
    shutil.copytree(tiny_model.weights, weights)
    (weights / "lotus-2_lcm_depth.safetensors").unlink()
    args = ["predict", "--base-model", str(tiny_model.base_model), "--weights", str(weights),
            "-o", str(tmp_path / "out"), str(images)]
    assert main(args) == 2
    assert "lotus-2_lcm_depth.safetensors" in caplog.text


def test_predict_rejects_out_of_range_sharpen_steps(tiny_model, images, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--base-model", str(tiny_model.base_model), "--weights", str(tiny_model.weights),
              "--sharpen-steps", "11", "-o", str(tmp_path / "o"), str(images)])
    assert exc.value.code == 2


def test_make_tiny_model_refuses_a_non_empty_folder(tmp_path, capsys):
    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert main(["make-tiny-model", str(target)]) == 2
    assert (target / "keep.txt").read_text() == "mine"


def test_export_prompt_embeds_reproduces_the_tiny_models_file(tiny_model, tmp_path, capsys):
    weights = tmp_path / "w"
    assert main(["export-prompt-embeds", "--base-model", str(tiny_model.base_model), "--weights", str(weights)]) == 0
    from safetensors.torch import load_file

    new = load_file(str(weights / PROMPT_EMBEDS_FILENAME))
    ref = load_file(str(tiny_model.weights / PROMPT_EMBEDS_FILENAME))
    assert sorted(new) == ["pooled_prompt_embeds", "prompt_embeds"]
    for key in ref:
        assert torch.equal(new[key], ref[key])


def test_demo_runs_on_a_small_sequence_and_prints_stage_timings(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--engine-only", "--frames", "1", "--width", "96", "--height", "64",
                 "--sharpen-steps", "1"]) == 0
    text = capsys.readouterr().out
    for stage in ("encode", "core depth", "LCM normal", "sharpen depth", "decode normal", "peak memory"):
        assert stage in text
    frames = sorted(p.name for p in (tmp_path / "demo" / "frames").iterdir())
    assert "frame_001_depth.png" in frames and "frame_001_gt_normal.png" in frames


@pytest.mark.slow
def test_demo_runs_the_ros_graph_and_writes_every_output(tiny_model, tmp_path, capsys):
    pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not installed")
    model = tiny_model.base_model.parent
    assert main(["demo", "-o", str(tmp_path / "demo"), "--model", str(model), "--seconds", "6", "--width", "64",
                 "--height", "48", "--rate-hz", "3", "--sharpen-rate-hz", "2"]) == 0
    text = capsys.readouterr().out
    assert "disparity" in text and "node diagnostics" in text and "stage medians" in text
    written = {p.name for p in (tmp_path / "demo" / "graph" / "outputs").iterdir()}
    assert {"disparity.npy", "depth_colorized.png", "normals_image.npy", "normals_colorized.png"} <= written
