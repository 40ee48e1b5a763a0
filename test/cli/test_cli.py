"""Smoke tests of the ``lotus2`` command line (the library is tested in depth elsewhere)."""

from __future__ import annotations

import json
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
        "a.json", "a_depth.npy", "a_depth.png", "a_normal.npy", "a_normal.png",
        "b.json", "b_depth.npy", "b_depth.png", "b_normal.npy", "b_normal.png",
    ]
    meta = json.loads((out / "a.json").read_text())
    # 40x56: short 40 -> 32, s = 0.8, w = int(44.8) = 44 -> 32
    assert meta["refine_steps"] == 1 and meta["process_hw_px"] == [32, 32] and meta["refined"] is True
    assert "not metres" in meta["files"]["a_depth.npy"] and "ROS optical frame" in meta["files"]["a_normal.npy"]
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
    assert "accuracy against the synthetic ground truth" in text and "relative depth AbsRel" in text
    assert "normals mean angular error" in text
    written = {p.name for p in (tmp_path / "demo" / "graph" / "outputs").iterdir()}
    assert {"disparity.npy", "depth_colorized.png", "normals_image.npy", "normals_colorized.png",
            "ground_truth_depth.npy", "ground_truth_normals.npy"} <= written
    gt = np.load(tmp_path / "demo" / "graph" / "outputs" / "ground_truth_depth.npy")
    assert gt.shape == (48, 64) and np.nanmin(gt) > 0


def test_demo_accuracy_compares_outputs_with_the_ground_truth_of_the_same_stamp():
    from lotus2_ros.io import build_header, build_image, rosbags_types
    from lotus2_ros.ros.demo_graph import accuracy

    types = rosbags_types()
    v, u = np.mgrid[0:24, 0:32]
    gt = (1.0 + 0.05 * u + 0.02 * v).astype(np.float32)  # metres
    gt_normals = np.zeros((24, 32, 3), np.float32)
    gt_normals[..., 2] = -1.0
    tilted = np.zeros_like(gt_normals)
    tilted[..., 1], tilted[..., 2] = -np.sin(np.radians(10)), -np.cos(np.radians(10))

    def msg(stamp, array, encoding):
        return build_image(types, build_header(types, stamp, "cam"), array, encoding), 0

    received = {
        "ground_truth/depth": [msg(1, gt, "32FC1"), msg(2, gt, "32FC1")],
        "ground_truth/normals": [msg(1, gt_normals, "32FC3")],
        "disparity": [msg(1, (0.5 / gt + 0.2).astype(np.float32), "32FC1"),  # affine in disparity: exact
                      msg(3, np.ones_like(gt), "32FC1")],  # no ground truth with that stamp: ignored
        "depth/image": [msg(1, 1.1 * gt, "32FC1")],  # 10 % too far
        "normals/image": [msg(1, tilted, "32FC3")],
    }
    text = accuracy(received)
    assert "relative depth AbsRel 0.000, δ1 1.000 (1 frames)" in text
    assert "metric depth AbsRel 0.100 over 100% of pixels (1 frames)" in text
    assert "normals mean angular error 10.0° (1 frames)" in text
    assert "refined" not in text
