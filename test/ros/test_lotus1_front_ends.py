"""A tiny Lotus-1 model end to end through every front end: predict, evaluate, the bag tool and the
node over real DDS — with the Lotus-G ensemble's uncertainty, and a depth-output (v1-0 style) model
on its own topic."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from ros_harness import RELIABLE, NodeProcess, Probe, spin_until

from lotus2_ros.bag.synthetic import write_synthetic_bag
from lotus2_ros.cli.main import main
from lotus2_ros.io import image_msg_to_array, rosbags_types

pytestmark = pytest.mark.slow

PREFIX = "/lotus2/lotus2_perception/"


def _bag_images(bag) -> dict[str, np.ndarray]:
    from rosbags.rosbag2 import Reader

    store, out = rosbags_types().typestore, {}
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic.startswith(PREFIX) and conn.msgtype == "sensor_msgs/msg/Image":
                out[conn.topic.removeprefix(PREFIX)] = image_msg_to_array(store.deserialize_cdr(raw, conn.msgtype))
    return out


def test_predict_evaluate_and_the_bag_tool_run_lotus_g_with_an_ensemble(tiny_lotus1, tmp_path):
    bag = write_synthetic_bag(tmp_path / "bag", num_frames=1, width=64, height=48, lidar=False, tf_static=False,
                              extra_topic=False)
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), np.ascontiguousarray(bag.rgb[0][..., ::-1]))
    model = ["--backend", "lotus1", "--weights", str(tiny_lotus1.root), "--process-res", "64", "--ensemble", "3"]
    assert main(["predict", *model, "-o", str(tmp_path / "pred"), str(png)]) == 0
    written = sorted(p.name for p in (tmp_path / "pred").iterdir())
    assert written == ["frame.json", "frame_depth.npy", "frame_depth.png", "frame_depth_std.npy",
                       "frame_normal.npy", "frame_normal.png"]
    std = np.load(tmp_path / "pred" / "frame_depth_std.npy")
    assert std.shape == (48, 64) and np.nanmin(std) >= 0 and np.nanmax(std) > 0

    assert main(["process-bag", str(bag.path), "-o", str(tmp_path / "out"), *model, "--device", "cpu",
                 "--dtype", "fp32", "--no-progress"]) == 0
    outputs = _bag_images(tmp_path / "out")  # a refined frame gets its refined outputs only (the default)
    assert {"refined/disparity", "refined/normals/image", "refined/depth/uncertainty"} <= set(outputs)
    assert "depth/uncertainty" not in outputs and "disparity" not in outputs
    np.testing.assert_array_equal(outputs["refined/depth/uncertainty"], std)
    np.testing.assert_array_equal(outputs["refined/disparity"], np.load(tmp_path / "pred" / "frame_depth.npy"))

    assert main(["evaluate", "--backend", "lotus1", "--weights", str(tiny_lotus1.root), "--process-res", "64",
                 "--synthetic", "2", "--synthetic-size", "64x48", "-o", str(tmp_path / "eval")]) == 0
    import json

    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert {(r["task"], r["dataset"]) for r in results} == {("depth", "synthetic"), ("normal", "synthetic")}
    assert all(np.isfinite(list(r["metrics"].values())).all() for r in results)


def test_the_node_runs_lotus_g_with_its_ensemble_uncertainty_and_a_depth_model_on_relative_depth(
        tiny_lotus1, tiny_lotus1_d, probe, tmp_path):
    from sensor_msgs.msg import Image

    bag = write_synthetic_bag(tmp_path / "bag", num_frames=1, width=64, height=48, lidar=False, tf_static=False,
                              extra_topic=False)
    for name, tiny, extra, topics in (
            ("g", tiny_lotus1, dict(ensemble_size=3, sharpen_rate_hz=50.0),
             ["disparity", "normals/image", "refined/disparity", "refined/depth/uncertainty"]),
            ("d", tiny_lotus1_d, dict(sharpen_rate_hz=0.0), ["relative_depth", "normals/image"])):
        params = dict(backend="lotus1", weights=str(tiny.root), device="cpu", dtype="fp32", process_res=64,
                      qos_reliability="reliable", torch_threads=1, **extra)
        node = NodeProcess("perception-node", params, f"/l1{name}", tmp_path / f"node_{name}.log")
        try:
            p = Probe(probe, f"/l1{name}")
            got: dict[str, list] = {}
            for topic in topics:
                probe.create_subscription(Image, f"/l1{name}/lotus2_perception/{topic}",
                                          lambda m, t=topic: got.setdefault(t, []).append(m), RELIABLE)
            p.wait_ready(node) if name == "g" else spin_until(
                probe, lambda: probe.count_subscribers(f"/l1{name}/image") > 0 or node.proc.poll() is not None, 90)
            spin_until(probe, lambda: False, 1.0)
            stamp = bag.stamps_ns[0]
            def mine(t):  # this frame's message (not the probe's warm-up frames)
                return next((m for m in got.get(t, []) if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp),
                            None)

            # Sent until answered: the camera_info topic is not ordered against the image topic, and until the
            # node has this frame's camera_info (not the warm-up frame's other size) it drops the image.
            assert p.send_until(bag.rgb[0], bag.camera, stamp, lambda: all(mine(t) is not None for t in topics), 90,
                                frame_id="camera_optical_frame"), (got.keys(), node.log()[-3000:])
            images = {t: image_msg_to_array(mine(t)) for t in topics}
            for t, img in images.items():
                assert img.shape[:2] == (48, 64), t
            if name == "g":
                u = images["refined/depth/uncertainty"]
                assert mine("refined/depth/uncertainty").encoding == "32FC1" and np.nanmin(u) >= 0 and np.nanmax(u) > 0
            else:
                assert "disparity" not in got  # a depth model never publishes its output as disparity
        finally:
            assert node.stop() == 0
