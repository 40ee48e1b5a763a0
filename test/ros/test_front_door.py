"""One front door: ``lotus2 predict``, the bag tool and the node give the same result for a frame.

Every front end runs the perception pipeline, so one frame gives bit-identical relative disparity
and normals (CPU, fp32, one torch thread everywhere) through the predictor, a one-frame bag and
the live node over real DDS — the per-frame prediction and the refined one alike. And every front
end takes the model's own defaults: the demo model's ``weights/model.json`` (``process_res`` 160)
applies when no processing size is given, exactly as if ``--process-res 160`` had been passed.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from ros_harness import NodeProcess, Probe

from lotus2_ros.bag.synthetic import write_synthetic_bag
from lotus2_ros.cli.main import main
from lotus2_ros.io import image_msg_to_array, rosbags_types

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"
PREFIX = "/lotus2/lotus2_perception/"


@pytest.fixture()
def one_thread():
    """Same reduction order in this process as in the node (torch_threads 1): bit-identical floats."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _bag_outputs(bag: Path) -> dict[str, np.ndarray]:
    from rosbags.rosbag2 import Reader

    store = rosbags_types().typestore
    out = {}
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages():
            if conn.topic.startswith(PREFIX) and conn.topic.endswith(("disparity", "normals/image")):
                out[conn.topic.removeprefix(PREFIX)] = image_msg_to_array(store.deserialize_cdr(raw, conn.msgtype))
    return out


def _one_frame(tmp_path: Path, width: int, height: int):
    """A one-frame bag and the same image as a PNG file (lossless, so every front end sees the same pixels)."""
    bag = write_synthetic_bag(tmp_path / "bag", num_frames=1, width=width, height=height, lidar=False,
                              tf_static=False, extra_topic=False)
    png = tmp_path / "images" / "frame.png"
    png.parent.mkdir()
    cv2.imwrite(str(png), np.ascontiguousarray(bag.rgb[0][..., ::-1]))
    return bag, png


def _node_outputs(probe, model_params: dict, bag, log: Path, refined: bool) -> dict[str, np.ndarray]:
    params = dict(model_params, device="cpu", dtype="fp32", qos_reliability="reliable", torch_threads=1,
                  sharpen_rate_hz=50.0 if refined else 0.0)
    node = NodeProcess("perception-node", params, "/fd", log)
    try:
        p = Probe(probe, "/fd")
        p.wait_ready(node)
        stamp = bag.stamps_ns[0]
        topics = ["disparity", "normals/image"] + (["refined/disparity", "refined/normals/image"] if refined else [])
        # The warm-up frame had another size: until the node has this frame's camera_info (its topic is not
        # ordered against the image topic) it drops the image as not matching, so send the frame until it is
        # answered. Every answer with this stamp comes from the same pixels and the same camera_info.
        assert p.send_until(bag.rgb[0], bag.camera, stamp, lambda: all(stamp in p.stamps(t) for t in topics), 90,
                            frame_id="camera_optical_frame"), node.log()[-3000:]
        return {t: image_msg_to_array(next(m for m, _ in p.received[t]
                                           if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp))
                for t in topics}
    finally:
        node.stop()


def test_predict_the_bag_tool_and_the_node_give_bit_identical_results_for_a_frame(
        tiny_model, probe, tmp_path, one_thread):
    bag, png = _one_frame(tmp_path, 128, 96)
    model = ["--base-model", str(tiny_model.base_model), "--weights", str(tiny_model.weights)]
    for steps in (0, 1):
        assert main(["predict", *model, "--sharpen-steps", str(steps), "-o", str(tmp_path / f"pred{steps}"),
                     str(png)]) == 0
    assert main(["process-bag", str(bag.path), "-o", str(tmp_path / "out"), *model, "--device", "cpu",
                 "--dtype", "fp32", "--sharpen-steps", "1", "--with-core", "--no-progress"]) == 0
    from_bag = _bag_outputs(tmp_path / "out")
    from_node = _node_outputs(probe, dict(base_model=str(tiny_model.base_model), weights=str(tiny_model.weights),
                                          sharpen_steps=1), bag, tmp_path / "node.log", refined=True)
    for prefix, steps in (("", 0), ("refined/", 1)):
        disparity = np.load(tmp_path / f"pred{steps}" / "frame_depth.npy")
        normals = np.load(tmp_path / f"pred{steps}" / "frame_normal.npy")
        for name, outputs in (("bag", from_bag), ("node", from_node)):
            assert np.array_equal(outputs[prefix + "disparity"], disparity), (name, prefix)
            assert np.array_equal(outputs[prefix + "normals/image"], normals, equal_nan=True), (name, prefix)
    # The refinement really changed the result (the comparison above is not trivially of equal inputs).
    assert np.abs(np.load(tmp_path / "pred0" / "frame_depth.npy") - np.load(tmp_path / "pred1" / "frame_depth.npy")
                  ).max() > 1e-4


@pytest.mark.skipif(not (DEMO / "weights" / "model.json").is_file(), reason="models/demo is not in this checkout")
def test_every_front_end_runs_the_demo_model_at_its_own_processing_size(probe, tmp_path, one_thread):
    bag, png = _one_frame(tmp_path, 320, 240)  # larger than the model's 160 px: the cap matters
    model = ["--base-model", str(DEMO / "base_model"), "--weights", str(DEMO / "weights"), "--sharpen-steps", "0"]
    runs = {"default": [], "160": ["--process-res", "160"], "full": ["--process-res", "0"]}
    pred = {}
    for name, extra in runs.items():
        assert main(["predict", *model, *extra, "-o", str(tmp_path / f"pred_{name}"), str(png)]) == 0
        pred[name] = np.load(tmp_path / f"pred_{name}" / "frame_depth.npy")
    assert np.array_equal(pred["default"], pred["160"])
    assert np.abs(pred["default"] - pred["full"]).max() > 1e-3  # 160 px is not what full resolution gives
    bags = {}
    for name in ("default", "160"):
        extra = runs[name]
        assert main(["process-bag", str(bag.path), "-o", str(tmp_path / f"bag_{name}"), *model, *extra,
                     "--device", "cpu", "--dtype", "fp32", "--no-progress"]) == 0
        bags[name] = _bag_outputs(tmp_path / f"bag_{name}")["disparity"]
    assert np.array_equal(bags["default"], pred["160"]) and np.array_equal(bags["160"], pred["160"])
    params = dict(base_model=str(DEMO / "base_model"), weights=str(DEMO / "weights"))
    node_default = _node_outputs(probe, params, bag, tmp_path / "node_default.log", refined=False)
    node_160 = _node_outputs(probe, dict(params, process_res=160), bag, tmp_path / "node_160.log", refined=False)
    assert np.array_equal(node_default["disparity"], pred["160"])
    assert np.array_equal(node_160["disparity"], pred["160"])
