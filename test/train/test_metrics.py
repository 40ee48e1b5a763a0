"""Evaluation metrics against hand-computed values, and the evaluation-set readers on fixture folders."""

from __future__ import annotations

import tarfile

import cv2
import numpy as np
import pytest

from lotus2_ros.train import eval_data
from lotus2_ros.train.evaluate import constant_predictor, evaluate_depth, evaluate_normals, results_table, write_results
from lotus2_ros.train.metrics import (
    DepthMetricsAccumulator,
    NormalMetricsAccumulator,
    angular_error_deg,
    depth_metrics,
    fit_scale_shift,
)


# ----------------------------------------------------------------------------- depth
def test_an_affine_copy_of_the_true_disparity_scores_perfectly():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 10, size=(20, 30))
    pred = 0.37 * (1 / gt) + 0.05  # right up to scale and shift in disparity
    m = depth_metrics(pred, gt, np.ones_like(gt, bool), 1e-3, 100)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert m["delta1"] == m["delta2"] == m["delta3"] == 1.0


def test_depth_metrics_by_hand():
    # gt depth 1, 2, 4 m (disparity 1, .5, .25); the fourth pixel is outside the mask.
    gt = np.array([[1.0, 2.0, 4.0, 1.0]])
    valid = np.array([[True, True, True, False]])
    pred = np.array([[1.0, 0.5, 0.5, 123.0]])
    # least squares of x = (1, .5, .5) onto y = (1, .5, .25): s = cov/var = (15/72)/(12/72), t = ȳ − s·x̄
    assert fit_scale_shift(pred, 1 / gt, valid) == pytest.approx((1.25, -0.25))
    m = depth_metrics(pred, gt, valid, 1e-3, 10)
    # aligned disparity (1, .375, .375) → depth (1, 8/3, 8/3); ratios to gt 1, 4/3, 3/2
    assert m["abs_rel"] == pytest.approx((0 + (8 / 3 - 2) / 2 + (4 - 8 / 3) / 4) / 3)
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == m["delta3"] == pytest.approx(1.0)


def test_aligned_depth_is_clipped_to_the_dataset_range_and_images_are_averaged():
    gt = np.array([[1.0, 2.0, 3.0]])
    pred = np.array([[3.0, 2.0, -5.0]])  # the negative pixel is left out of the fit but evaluated
    # fit on (3, 2) → (1, .5): s = .5, t = −.5; aligned (1, .5, −3) → clip 1e-3 → depth (1, 2, 1000) → 2.5
    m = depth_metrics(pred, gt, np.ones((1, 3), bool), 0.5, 2.5)
    assert m["abs_rel"] == pytest.approx((0.5 / 3) / 3)
    acc = DepthMetricsAccumulator()
    acc.add(pred, gt, np.ones((1, 3), bool), 0.5, 2.5)
    acc.add(0.37 / gt, gt, np.ones((1, 3), bool), 0.5, 10.0)  # exact: 0
    assert acc.result()["abs_rel"] == pytest.approx(m["abs_rel"] / 2)


# ----------------------------------------------------------------------------- normals
def test_angular_errors_by_hand():
    gt = np.array([[0, 0, -1.0], [0, 0, -1.0], [0, 0, -1.0], [1.0, 0, 0]])
    pred = np.array([[0, 0, -2.0], [0, 1.0, -1.0], [np.nan, np.nan, np.nan], [-1.0, 0, 0]])
    np.testing.assert_allclose(angular_error_deg(pred, gt), [0, 45, 90, 180], atol=1e-6)


def test_normal_metrics_pool_pixels_over_the_dataset():
    acc = NormalMetricsAccumulator()
    acc.add_errors(np.array([1.0, 10.0, 20.0]))
    acc.add_errors(np.array([25.0, 40.0]))
    r = acc.result()
    assert r["mean"] == pytest.approx(19.2)
    assert r["median"] == pytest.approx(20.0, abs=1e-3)
    assert r["rmse"] == pytest.approx(np.sqrt((1 + 100 + 400 + 625 + 1600) / 5))
    assert (r["a5"], r["a11.25"], r["a22.5"], r["a30"]) == pytest.approx((20.0, 40.0, 60.0, 80.0))
    acc.add_errors(np.array([11.25]))  # thresholds are strict: 11.25° is not within 11.25°
    assert acc.result()["a11.25"] == pytest.approx(100 * 2 / 6)


# ----------------------------------------------------------------------------- readers
def _png16(path, depth):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), depth.astype(np.uint16))


def _rgb(path, h, w):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 100, np.uint8))


def test_nyuv2_reader_millimetres_range_and_eigen_crop_from_a_tar(tmp_path):
    folder = tmp_path / "nyu"
    _rgb(folder / "test/kitchen_0004/rgb_0001.png", 480, 640)
    depth = np.full((480, 640), 2000)
    depth[100, 100] = 12000  # beyond 10 m
    _png16(folder / "test/kitchen_0004/depth_0001.png", depth)
    _png16(folder / "test/kitchen_0004/filled_0001.png", depth)
    (tmp_path / "list.txt").write_text(
        "test/kitchen_0004/rgb_0001.png test/kitchen_0004/depth_0001.png test/kitchen_0004/filled_0001.png\n")
    tar = tmp_path / "nyu_labeled_extracted.tar"
    with tarfile.open(tar, "w") as t:
        t.add(folder, arcname=".")
    (s,) = list(eval_data.depth_eval_samples("nyuv2", tar, tmp_path / "list.txt"))
    assert s.depth_m[200, 200] == pytest.approx(2.0)
    assert not s.valid[100, 100] and not s.valid[10, 10] and s.valid[200, 200]
    assert s.valid.sum() == (471 - 45) * (601 - 41) - 1
    (s2,) = list(eval_data.depth_eval_samples("nyuv2", folder))  # a folder without list: discovered
    np.testing.assert_array_equal(s2.valid, s.valid)


def test_kitti_reader_crops_to_the_benchmark_size_and_skips_missing_ground_truth(tmp_path):
    root = tmp_path / "kitti"
    _rgb(root / "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png", 375, 1242)
    depth = np.zeros((375, 1242))
    depth[200:, :] = 10 * 256  # 10 m where the LiDAR reached
    _png16(root / "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png", depth)
    (tmp_path / "eigen.txt").write_text(
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png "
        "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png 721.5377\n"
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000070.png None 721.5377\n")
    (s,) = list(eval_data.depth_eval_samples("kitti", root, tmp_path / "eigen.txt"))
    assert s.rgb.shape == (352, 1216, 3) and s.depth_m.shape == (352, 1216)
    assert s.depth_m[-1, 600] == pytest.approx(10.0)
    eigen = eval_data.kitti_eigen_mask((352, 1216))
    np.testing.assert_array_equal(s.valid, eigen & (s.depth_m > 0))


def test_diode_reader_uses_the_validity_mask_file(tmp_path):
    root = tmp_path / "diode"
    stem = "val/indoors/scene_00019/scan_00183/00019_00183_indoors_000_010"
    _rgb(root / f"{stem}.png", 8, 8)
    np.save(root / f"{stem}_depth.npy", np.full((8, 8, 1), 3.0, np.float32))
    mask = np.ones((8, 8), np.float32)
    mask[0] = 0
    np.save(root / f"{stem}_depth_mask.npy", mask)
    (s,) = list(eval_data.depth_eval_samples("diode", root))
    assert s.valid.sum() == 56 and s.depth_m.shape == (8, 8)


def test_dsine_normals_are_returned_in_the_optical_frame_with_black_as_unknown(tmp_path):
    root = tmp_path / "nyuv2"
    (root / "test").mkdir(parents=True)
    cv2.imwrite(str(root / "test/000000_img.png"), np.full((4, 6, 3), 50, np.uint8))
    colours = np.zeros((4, 6, 3), np.uint8)
    colours[:, 1:] = (128, 128, 255)  # RGB: facing the viewer in the DSINE convention
    cv2.imwrite(str(root / "test/000000_normal.png"), colours[..., ::-1])
    (s,) = list(eval_data.normal_eval_samples("nyuv2", root))
    assert not s.valid[:, 0].any() and s.valid[:, 1:].all()
    np.testing.assert_allclose(s.normals[0, 3], [0, 0, -1.0], atol=0.01)  # optical: toward the camera is -z


def test_evaluation_runner_table_and_files(tmp_path):
    pairs = list(eval_data.synthetic_eval_samples(3, 40, 32))
    rd = evaluate_depth(constant_predictor("depth"), [d for d, _ in pairs], "synthetic", "constant", 1e-3, 1e3)
    rn = evaluate_normals(constant_predictor("normal"), [n for _, n in pairs], "synthetic", "constant")
    assert rd.num_images == 3 and 0 < rd.metrics["abs_rel"] < 5
    assert 0 < rn.metrics["mean"] < 90
    table = results_table([rd, rn])
    assert "abs_rel" in table and "a11.25" in table and "constant" in table
    js, cs = write_results([rd, rn], tmp_path)
    assert js.is_file() and cs.read_text().count("\n") == 3


def test_oasis_normals_fill_the_region_of_interest_with_x_and_y_negated(tmp_path):
    import pickle

    root = tmp_path / "oasis"
    (root / "val").mkdir(parents=True)
    cv2.imwrite(str(root / "val/100277_DT_img.png"), np.full((6, 8, 3), 90, np.uint8))
    roi = np.zeros((3, 4, 3), np.float32)  # rows 2..4, cols 1..4
    roi[:, :3] = (0.6, 0.0, 0.8)  # OASIS: x points right; the last column has no normal
    with open(root / "val/100277_DT_normal.pkl", "wb") as f:
        pickle.dump({"min_y": 2, "max_y": 4, "min_x": 1, "max_x": 4, "normal": roi}, f)
    np.save(root / "val/100277_DT_intrins.npy", np.eye(3))
    (tmp_path / "val.txt").write_text("val/100277_DT_img.png\n")
    (s,) = list(eval_data.normal_eval_samples("oasis", root, tmp_path / "val.txt"))
    expected = np.zeros((6, 8), bool)
    expected[2:5, 1:4] = True
    np.testing.assert_array_equal(s.valid, expected)
    # model convention (-0.6, 0, 0.8) → optical frame (0.6, 0, -0.8): right and toward the camera
    np.testing.assert_allclose(s.normals[3, 2], [0.6, 0.0, -0.8], atol=1e-6)
    perfect = evaluate_normals(lambda rgb: s.normals, [s], "oasis", "gt")
    assert perfect.metrics["mean"] < 1e-3 and perfect.num_images == 1


def test_an_oasis_pickle_that_would_run_code_is_refused(tmp_path):
    import pickle

    root = tmp_path / "oasis"
    (root / "val").mkdir(parents=True)
    cv2.imwrite(str(root / "val/1_img.png"), np.full((4, 4, 3), 90, np.uint8))
    (root / "val/1_normal.pkl").write_bytes(pickle.dumps({"normal": OSError("x")}))
    with pytest.raises(ValueError, match="not allowed"):
        list(eval_data.normal_eval_samples("oasis", root))
