"""``lotus2 lidar-overlay``: the metric fit's own LiDAR projection, drawn and saved per frame.

On bags the tests write (sqlite3 and mcap) the saved ``(u, v, depth)`` must be exactly what the
fit projects when the bag tool runs the pipeline over the same bag; on a folder with a stereo
camera_info (``Tx``) they must be the homogeneous ``P·[p; 1]`` written out here.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml
from bag_helpers import lidar_config

from lotus2_ros.bag import ProcessBagOptions, plan_bag_run, run_bag
from lotus2_ros.bag.synthetic import write_synthetic_bag
from lotus2_ros.cli.main import main
from lotus2_ros.geometry.calibration import CameraCalibration
from lotus2_ros.perception.metric import MetricFitter, MetricReference


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def bag(request, tmp_path_factory):
    return write_synthetic_bag(tmp_path_factory.mktemp("overlay") / f"bag_{request.param}", num_frames=2, width=96,
                               height=64, storage=request.param, extra_topic=False)


def overlay(bag_path, out, *extra) -> int:
    return main(["lidar-overlay", str(bag_path), "-o", str(out), *extra])


def test_the_overlay_of_a_bag_writes_a_png_and_the_fits_points_per_frame(bag, tmp_path):
    out = tmp_path / "out"
    assert overlay(bag.path, out) == 0
    summary = json.loads((out / "overlay.json").read_text())
    assert [f["stamp_ns"] for f in summary["frames"]] == bag.stamps_ns and summary["skipped"] == {}
    fitter = MetricFitter(lidar_config())
    for i, frame in enumerate(summary["frames"]):
        stem = f"{bag.stamps_ns[i]:019d}"
        uvz = np.load(out / f"{stem}_lidar_uvz.npy")
        assert uvz.dtype == np.float32 and uvz.shape == (frame["drawn"], 3) and frame["drawn"] > 200
        assert frame["extrinsic_source"] == "tf" and frame["camera_model"] == "raw"
        # The bag's TF chain gives the simulated mount (to rounding): the fit's projection of the sweep.
        expected = fitter.project(MetricReference(bag.lidar_points_m[i], bag.T_camera_lidar), CameraCalibration(bag.camera))
        np.testing.assert_allclose(uvz, np.stack([expected.u_px, expected.v_px, expected.z_m], 1), atol=1e-4)
        png = cv2.imread(str(out / f"{stem}_overlay.png"))[..., ::-1]
        assert png.shape == (*bag.rgb[i].shape[:2], 3)
        cols, rows = (np.floor(uvz[:, :2] + 0.5).astype(int).T)
        changed = np.any(png[rows, cols] != bag.rgb[i][rows, cols], axis=-1)
        assert changed.mean() > 0.9  # every point is drawn


def test_the_overlay_equals_the_projection_of_the_fit_in_the_bag_tool(bag, tiny_engine, tmp_path, monkeypatch):
    seen = {}
    original = MetricFitter.project

    def spy(self, ref, calibration):
        projection = original(self, ref, calibration)
        seen[ref.stamp_ns] = np.stack([projection.u_px, projection.v_px, projection.z_m], 1)
        return projection

    monkeypatch.setattr(MetricFitter, "project", spy)
    config = lidar_config(tasks=["depth"], sharpen_enabled=False)
    plan = plan_bag_run(ProcessBagOptions(bag.path, tmp_path / "processed", config), tiny_engine.info.settings)
    run_bag(plan, tiny_engine)
    assert sorted(seen) == bag.lidar_stamps_ns
    monkeypatch.setattr(MetricFitter, "project", original)
    assert overlay(bag.path, tmp_path / "out") == 0
    for stamp, lidar_stamp in zip(bag.stamps_ns, bag.lidar_stamps_ns):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"{stamp:019d}_lidar_uvz.npy"), seen[lidar_stamp])


def test_a_parameter_extrinsic_overrides_the_bag_tf(bag, tmp_path):
    T = np.array(bag.T_camera_lidar, dtype=float)
    T[0, 3] += 0.5  # half a metre off: points move right by fx·0.5/z
    assert overlay(bag.path, tmp_path / "out", "--extrinsic", *map(str, T.ravel()), "--max-frames", "1") == 0
    summary = json.loads((tmp_path / "out" / "overlay.json").read_text())
    assert len(summary["frames"]) == 1 and summary["frames"][0]["extrinsic_source"] == "parameter"
    np.testing.assert_allclose(summary["frames"][0]["T_camera_lidar"], T)


def test_a_folder_with_a_stereo_camera_info_uses_the_full_P(bag, tmp_path):
    """Images, clouds (.npy and KITTI .bin) and a camera_calibration YAML of a right stereo camera."""
    images, clouds = tmp_path / "images", tmp_path / "clouds"
    images.mkdir()
    clouds.mkdir()
    cam = bag.camera
    tx = -cam.fx * 0.3
    P = np.hstack([cam.K, [[tx], [0.0], [0.0]]])
    (tmp_path / "right.yaml").write_text(yaml.safe_dump({
        "image_width": cam.width_px, "image_height": cam.height_px, "camera_name": "right",
        "camera_matrix": {"rows": 3, "cols": 3, "data": cam.K.ravel().tolist()},
        "distortion_model": "plumb_bob", "distortion_coefficients": {"rows": 1, "cols": 5, "data": [0.0] * 5},
        "rectification_matrix": {"rows": 3, "cols": 3, "data": np.eye(3).ravel().tolist()},
        "projection_matrix": {"rows": 3, "cols": 4, "data": P.ravel().tolist()}}))
    for i, name in enumerate(("f0", "f1")):
        cv2.imwrite(str(images / f"{name}.png"), bag.rgb[i][..., ::-1])
    np.save(clouds / "f0.npy", bag.lidar_points_m[0])
    with_reflectance = np.hstack([bag.lidar_points_m[1], np.full((len(bag.lidar_points_m[1]), 1), 0.5, np.float32)])
    with_reflectance.astype(np.float32).tofile(clouds / "f1.bin")
    T = np.asarray(bag.T_camera_lidar, dtype=float)
    args = ["lidar-overlay", "--images", str(images), "--clouds", str(clouds), "--camera-info",
            str(tmp_path / "right.yaml"), "--extrinsic", *map(str, T.ravel()), "-o", str(tmp_path / "out")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "out" / "overlay.json").read_text())
    assert [f["stem"] for f in summary["frames"]] == ["f0", "f1"]
    assert all(f["camera_model"] == "rectified" for f in summary["frames"])
    for i, stem in enumerate(("f0", "f1")):
        uvz = np.load(tmp_path / "out" / f"{stem}_lidar_uvz.npy").astype(np.float64)
        p = bag.lidar_points_m[i].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
        uvw = np.hstack([p, np.ones((len(p), 1))]) @ P.T  # [u' v' w] = P [p; 1]
        u, v, w = uvw[:, 0] / uvw[:, 2], uvw[:, 1] / uvw[:, 2], uvw[:, 2]
        # Match each drawn point to its sweep point by its exact pixel and depth.
        nearest = np.concatenate([np.min((c[:, None, 0] - u) ** 2 + (c[:, None, 1] - v) ** 2
                                         + (c[:, None, 2] - w) ** 2, axis=1) for c in np.array_split(uvz, 20)])
        assert uvz.shape[0] > 100 and np.sqrt(nearest).max() < 1e-3


@pytest.mark.parametrize("args, message", [
    (["--images", "x"], "either a BAG"),
    ([], "either a BAG"),
])
def test_a_bag_and_a_folder_at_once_or_neither_is_refused(bag, tmp_path, caplog, args, message):
    extra = [str(bag.path)] if args else []
    assert main(["lidar-overlay", *extra, "-o", str(tmp_path / "o"), *args]) == 2
    assert message in caplog.text
