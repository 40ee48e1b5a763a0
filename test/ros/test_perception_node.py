"""perception_node end to end over real DDS: a node subprocess, synthetic frames in, outputs checked."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from gated_node import read_started
from ros_harness import H, OUT_TOPICS, REPO, W, NodeProcess, Probe, base_params, now_ns, settled, spin_until

from lotus2_ros.io import build_camera_info, build_header, build_image, image_msg_to_array
from lotus2_ros.io.pointcloud import read_pointcloud2_fields

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def metric_node(tiny_model, tmp_path_factory):
    node = NodeProcess("perception-node", base_params(tiny_model, metric_source="fixed", fixed_scale=2,  # an int for a double
                                                      fixed_shift=0.1, min_depth_m=0.01, max_depth_m=1000.0),
                       "/m", tmp_path_factory.mktemp("logs") / "metric_node.log")
    yield node
    node.stop()


def test_outputs_have_the_input_frame_id_stamp_encodings_and_camera_size(probe, metric_node, scene_frames):
    camera, frames = scene_frames
    p = Probe(probe, "/m")
    p.wait_ready(metric_node)
    stamp = now_ns(probe)
    assert p.send_until(frames[0], camera, stamp, lambda: all(stamp in p.stamps(t) for t in OUT_TOPICS)), \
        f"missing outputs: {[t for t in OUT_TOPICS if stamp not in p.stamps(t)]}\n{metric_node.log()[-2000:]}"
    msgs = {t: p.message(t, stamp) for t in OUT_TOPICS}
    for t, m in msgs.items():
        assert m.header.frame_id == "cam_optical", t
        assert (m.height, m.width) == (H, W), t
    assert msgs["disparity"].encoding == "32FC1" and msgs["depth/image"].encoding == "32FC1"
    assert msgs["normals/image"].encoding == "32FC3"
    assert msgs["depth/colorized"].encoding == "rgb8" and msgs["normals/colorized"].encoding == "rgb8"
    np.testing.assert_allclose(np.array(msgs["depth/camera_info"].k).reshape(3, 3), camera.K)

    disparity = image_msg_to_array(msgs["disparity"])
    depth = image_msg_to_array(msgs["depth/image"])
    assert 0.0 <= disparity.min() and disparity.max() <= 1.0
    # Fixed metric reference s=2, t=0.1: depth = 1 / (2 d + 0.1), recomputed here.
    np.testing.assert_allclose(depth, 1.0 / (2.0 * disparity + 0.1), rtol=1e-6)

    normals = image_msg_to_array(msgs["normals/image"])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-5)

    # The cloud is the back-projection of the published depth with K, computed independently.
    fields = read_pointcloud2_fields(msgs["points"], ["x", "y", "z", "normal_x", "normal_y", "normal_z"])
    v, u = np.mgrid[0:H, 0:W]
    K = camera.K
    np.testing.assert_allclose(fields["z"], depth, rtol=1e-6)
    np.testing.assert_allclose(fields["x"], (u - K[0, 2]) / K[0, 0] * depth, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fields["y"], (v - K[1, 2]) / K[1, 1] * depth, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.stack([fields[f"normal_{a}"] for a in "xyz"], -1), normals, atol=1e-6)


def test_latest_frame_wins_when_frames_come_while_the_model_is_busy(probe, tiny_model, scene_frames, tmp_path):
    """The node holds frame A in its model stage (a gate this test opens, gated_node.py) while
    frames B1..Bn reach it; then the next frame it processes is Bn, the rest are counted as dropped.

    Nothing depends on how fast the model or the machine is: A's entry into the model stage is
    observed before B1 is sent, and each B reaches the node (its frames_received) before the next
    is sent, so the node's own mailbox, not DDS, has to choose among them. Bursts of 1 and 6
    frames give the same outcome: one frame after A, so the newest frame's wait does not grow
    with the number of frames sent.
    """
    camera, frames = scene_frames
    gate = tmp_path / "gate"
    node = NodeProcess("perception-node", base_params(tiny_model, tasks=["depth"], sharpen_enabled=False,
                                                      diagnostics_period_s=0.1),
                       "/g", tmp_path / "gated.log", gate=gate, node_name="lotus2_gated")
    try:
        p = Probe(probe, "/g", node_name="lotus2_gated")
        p.wait_ready(node)
        for burst in (1, 6):
            before = p.wait_diagnostics(settled)  # every frame so far accounted for: none in the node
            started_before = len(read_started(gate))
            gate.touch()
            a = now_ns(probe)
            p.publish(frames[0], camera, a)
            assert spin_until(probe, lambda: a in read_started(gate), 60), node.log()[-2000:]  # busy with A
            sent = []
            for i in range(burst):
                sent.append(now_ns(probe))
                p.publish(frames[(i + 1) % len(frames)], camera, sent[-1])
                held = p.wait_diagnostics(lambda d: d["frames_received"] - before["frames_received"] == i + 2)
            assert held["frames_published"] == before["frames_published"]  # all of them came while A was held
            gate.unlink()
            assert p.wait_for("disparity", sent[-1], 60), "the newest frame was never processed"
            diag = p.wait_diagnostics(settled)

            # The model ran on A, then on the newest frame, and on nothing in between.
            assert read_started(gate)[started_before:] == [a, sent[-1]]
            # (A's outputs may be overwritten in the node's depth-1 output queue before a lost
            # sample is resent; the newest frame's are the last ones, so they always arrive.)
            assert [s for s in p.stamps("disparity") if s == a or s in sent] in ([a, sent[-1]], [sent[-1]])
            assert diag["frames_received"] - before["frames_received"] == burst + 1
            assert diag["frames_dropped"] - before["frames_dropped"] == burst - 1
            assert diag["frames_published"] - before["frames_published"] == 2
        assert p.stamps("disparity") == sorted(p.stamps("disparity"))  # never an older frame after a newer one
    finally:
        gate.unlink(missing_ok=True)
        assert node.stop() == 0, node.log()[-2000:]


@pytest.mark.parametrize("case", ["unknown_encoding", "short_step", "empty", "nan_camera_info", "size_mismatch"])
def test_a_malformed_message_is_counted_and_dropped_and_the_node_keeps_working(probe, metric_node, scene_frames, case):
    from sensor_msgs.msg import Image

    camera, frames = scene_frames
    p = Probe(probe, "/m")
    p.wait_ready(metric_node)
    before = p.wait_diagnostics()["bad_messages"]
    types, header = p.types, build_header(p.types, now_ns(probe), "cam_optical")
    good = build_image(types, header, frames[0], "rgb8")
    counted = lambda: p.value("bad_messages") > before  # noqa: E731
    if case in ("unknown_encoding", "short_step", "empty"):
        bad = Image(header=good.header, height=H, width=W, encoding="rgb8", is_bigendian=0, step=W * 3)
        bad.data = good.data
        if case == "unknown_encoding":
            bad.encoding = "yuv422_weird"
        elif case == "short_step":
            bad.step = W  # less than width x 3 bytes
        else:
            bad.height, bad.width, bad.step, bad.data = 0, 0, 0, []
        p.info_pub.publish(build_camera_info(types, header, camera))
        p.image_pub.publish(bad)
    elif case == "nan_camera_info":
        info = build_camera_info(types, header, camera)
        k = list(info.k)
        k[0] = math.nan
        info.k = k
        p.info_pub.publish(info)
    else:  # camera_info of another size than the image
        p.info_pub.publish(build_camera_info(types, header, camera.scaled(W * 2, H * 2)))
        # The two topics are not ordered: send the image until it has met that camera_info.
        assert p.repeat_until(lambda: p.image_pub.publish(good), counted, 20), metric_node.log()[-2000:]
    assert spin_until(probe, counted, 20), metric_node.log()[-2000:]
    assert metric_node.proc.poll() is None
    stamp = now_ns(probe)
    # A good frame with a good camera_info still works (sent again if the image overtook its camera_info).
    assert p.send_until(frames[1], camera, stamp, lambda: stamp in p.stamps("disparity")), metric_node.log()[-2000:]


def test_parameters_are_validated_at_run_time_and_model_parameters_are_read_only(probe, metric_node):
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    p = Probe(probe, "/m")
    p.wait_ready(metric_node)
    client = probe.create_client(SetParameters, "/m/lotus2_perception/set_parameters")
    assert client.wait_for_service(timeout_sec=20)

    def set_param(name, value):
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        future = client.call_async(SetParameters.Request(parameters=[ParameterMsg(name=name, value=pv)]))
        assert spin_until(probe, future.done, 20)
        return future.result().results[0]

    too_many = set_param("sharpen_steps", 11)
    assert not too_many.successful
    read_only = set_param("dtype", "bf16")
    assert not read_only.successful and "dtype" in read_only.reason
    wrong_choice = set_param("output_resolution", "huge")
    assert not wrong_choice.successful and "output_resolution" in wrong_choice.reason
    assert set_param("publish_colorized", False).successful
    assert set_param("publish_colorized", True).successful


def test_sigterm_stops_the_node_cleanly(metric_node):
    assert metric_node.proc.poll() is None
    t0 = time.monotonic()
    assert metric_node.stop(signal.SIGTERM) == 0, metric_node.log()[-2000:]
    assert time.monotonic() - t0 < 20


def test_relative_only_mode_publishes_no_metric_topics_from_compressed_input(probe, tiny_model, scene_frames,
                                                                           tmp_path):
    camera, frames = scene_frames
    node = NodeProcess("perception-node", base_params(tiny_model, image_transport="compressed", tasks=["depth"]),
                       "/r", tmp_path / "relative.log")
    try:
        p = Probe(probe, "/r", compressed=True)
        p.wait_ready(node)
        stamp = now_ns(probe)
        p.publish(frames[0], camera, stamp, compressed=True)
        assert p.wait_for("disparity", stamp, 60), node.log()[-2000:]
        assert p.wait_for("depth/camera_info", stamp, 60)
        spin_until(probe, lambda: False, 1.0)
        assert "depth/image" not in p.received and "points" not in p.received
        assert "normals/image" not in p.received  # depth only
        disparity = image_msg_to_array(p.received["disparity"][-1][0])
        assert disparity.shape == (H, W)
    finally:
        assert node.stop() == 0


def test_the_sharpener_publishes_refined_frames_while_every_frame_gets_its_core_result(probe, tiny_model,
                                                                                     scene_frames, tmp_path):
    camera, frames = scene_frames
    node = NodeProcess("perception-node", base_params(tiny_model, sharpen_rate_hz=20.0, sharpen_steps=1,
                                                      tasks=["depth"]), "/s", tmp_path / "sharpen.log")
    try:
        p = Probe(probe, "/s")
        p.wait_ready(node)
        sent = []
        for i in range(3):
            sent.append(now_ns(probe))
            p.publish(frames[i % len(frames)], camera, sent[-1])
            assert p.wait_for("disparity", sent[-1], 60), node.log()[-2000:]
            # The node refines its last frame once no frame waits: the next one is sent after that.
            assert p.wait_for("refined/disparity", sent[-1], 60), node.log()[-2000:]
        assert [s for s in p.stamps("disparity") if s in sent] == sent  # every frame got its core result
        refined = p.stamps("refined/disparity")
        assert set(refined) <= set(sent) | set(p.warmup_stamps), (refined, sent)
        for stamp in sent:  # the sharpener changed the prediction
            core, fine = (image_msg_to_array(p.message(t, stamp)) for t in ("disparity", "refined/disparity"))
            assert np.abs(core - fine).max() > 1e-4
    finally:
        assert node.stop() == 0


@pytest.mark.parametrize("params,needle", [
    ({"dtype": "fp64"}, "dtype"),
    ({"base_model": "/nonexistent/flux"}, "/nonexistent/flux"),
])
def test_bad_start_up_parameters_fail_with_a_clear_error_and_non_zero_exit(tiny_model, params, needle):
    args = [sys.executable, "-m", "lotus2_ros.cli.main", "perception-node", "--ros-args"]
    for k, v in base_params(tiny_model, **params).items():
        args += ["-p", f"{k}:={v}"]
    out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert needle in out.stderr
