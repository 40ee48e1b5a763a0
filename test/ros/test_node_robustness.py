"""perception_node as a hostile publisher and a demanding ROS user meet it, over real DDS (issue #13).

One LiDAR node (``extrinsic_source: auto`` without tf2_ros) and one compressed-input node serve
the tests of this module; each test reads counters as differences, so their order does not matter.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hostile_messages import peak_rss_mib, png_bomb
from ros_harness import RELIABLE, H, W, NodeProcess, Probe, base_params, now_ns, spin_until

from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.io import build_camera_info, build_header, build_image
from lotus2_ros.io.pointcloud import build_pointcloud2

pytestmark = pytest.mark.slow

NS, NS_C = "/nr", "/nc"


@pytest.fixture(scope="module")
def lidar_node(tiny_model, tmp_path_factory):
    params = base_params(tiny_model, metric_source="lidar", extrinsic_source="auto", tasks=["depth"])
    node = NodeProcess("perception-node", params, NS, tmp_path_factory.mktemp("logs") / "robust_lidar.log")
    yield node
    node.stop()


@pytest.fixture(scope="module")
def compressed_node(tiny_model, tmp_path_factory):
    params = base_params(tiny_model, image_transport="compressed", tasks=["depth"], sharpen_enabled=False,
                         metric_source="fixed", fixed_scale=2.0, fixed_shift=0.1, min_depth_m=0.01, max_depth_m=1000.0)
    node = NodeProcess("perception-node", params, NS_C, tmp_path_factory.mktemp("logs") / "robust_compressed.log")
    yield node
    node.stop()


def counters(p: Probe) -> dict[str, float]:
    """The newest /diagnostics figures of the probe's node (both nodes of the module publish there)."""
    spin_until(p.node, lambda: False, 1.2)
    name = f"{p.ns}/lotus2_perception:"
    for msg in reversed(p.diagnostics):
        for status in msg.status:
            if status.name.startswith(name):
                return {kv.key: float(kv.value) for kv in status.values if _is_number(kv.value)}
    raise AssertionError(f"no /diagnostics from {name}")


def diagnostics_values(p: Probe) -> dict[str, str]:
    counters(p)
    name = f"{p.ns}/lotus2_perception:"
    for msg in reversed(p.diagnostics):
        for status in msg.status:
            if status.name.startswith(name):
                return {kv.key: kv.value for kv in status.values}
    raise AssertionError(f"no /diagnostics from {name}")


def settle_camera(probe, p: Probe, camera: PinholeCamera) -> None:
    """Publish the camera_info and give it time to arrive before any image (they race otherwise)."""
    p.info_pub.publish(build_camera_info(p.types, build_header(p.types, now_ns(probe), "cam_optical"), camera))
    spin_until(probe, lambda: False, 0.5)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def delta(after: dict, before: dict, key: str) -> float:
    return after.get(key, 0.0) - before.get(key, 0.0)


def set_parameter(probe, ns: str, name: str, value):
    """SetParameters on the node as ``ros2 param set`` does; the result (successful, reason)."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    client = probe.create_client(SetParameters, f"{ns}/lotus2_perception/set_parameters")
    assert client.wait_for_service(timeout_sec=20)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()]))
    assert spin_until(probe, future.done, 20)
    probe.destroy_client(client)
    return future.result().results[0]


# ------------------------------------------------------------------------------------------ #13.1
def test_a_lidar_sweep_that_fails_every_edge_test_still_gives_the_frame_its_disparity(probe, lidar_node):
    from sensor_msgs.msg import PointCloud2

    p = Probe(probe, NS)
    lidar_pub = probe.create_publisher(PointCloud2, f"{NS}/lidar/points", RELIABLE)
    p.wait_ready(lidar_node)
    before = counters(p)
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)  # 160x120 noise image
    points = np.c_[rng.uniform(-2, 2, 150), rng.uniform(-1.5, 1.5, 150), np.full(150, 5.0)].astype(np.float32)
    noise_camera = PinholeCamera.from_fov(160, 120, 70.0)
    settle_camera(probe, p, noise_camera)
    stamp = now_ns(probe)
    lidar_pub.publish(build_pointcloud2(p.types, build_header(p.types, stamp, "cam_optical"), points[None]))
    spin_until(probe, lambda: False, 0.3)
    p.publish(noise, noise_camera, stamp)
    assert p.wait_for("disparity", stamp, 60), lidar_node.log()[-3000:]
    after = counters(p)
    assert delta(after, before, "processing_errors") == 0
    assert delta(after, before, "fits_invalid") >= 1  # the sweep was used, and gave no valid fit


# ------------------------------------------------------------------------------------------ #13.2, #13.5
def test_lidar_extrinsic_and_use_sim_time_can_be_set_at_run_time(probe, lidar_node):
    p = Probe(probe, NS)
    p.wait_ready(lidar_node)
    moved = [0.1, -0.05, 0.02, 0.0, 0.0, 0.0, 1.0]
    result = set_parameter(probe, NS, "lidar_extrinsic", moved)  # a double array: array.array in rclpy
    assert result.successful, result.reason
    bad = set_parameter(probe, NS, "lidar_extrinsic", [0.0] * 6)
    assert not bad.successful and "lidar_extrinsic" in bad.reason
    sim = set_parameter(probe, NS, "use_sim_time", True)
    assert sim.successful, sim.reason
    assert set_parameter(probe, NS, "use_sim_time", False).successful
    assert lidar_node.proc.poll() is None


# ------------------------------------------------------------------------------------------ #13.4
def test_diagnostics_period_changes_at_run_time(probe, lidar_node):
    p = Probe(probe, NS)
    p.wait_ready(lidar_node)

    def diagnostics_per_second(seconds: float) -> float:
        spin_until(probe, lambda: False, 0.6)
        start = len(p.diagnostics)
        spin_until(probe, lambda: False, seconds)
        ours = [m for m in p.diagnostics[start:] if any(NS.strip("/") in s.name for s in m.status)]
        return len(ours) / seconds

    assert diagnostics_per_second(2.0) <= 2.6  # 0.5 s period
    assert set_parameter(probe, NS, "diagnostics_period_s", 0.1).successful
    try:
        assert diagnostics_per_second(2.0) >= 6.0
    finally:
        assert set_parameter(probe, NS, "diagnostics_period_s", 0.5).successful


# ------------------------------------------------------------------------------------------ #13.3
def test_the_output_rate_in_diagnostics_falls_once_frames_stop(probe, lidar_node, scene_frames):
    camera, frames = scene_frames
    p = Probe(probe, NS)
    p.wait_ready(lidar_node)
    settle_camera(probe, p, camera)
    sent = []
    for i in range(4):
        sent.append(now_ns(probe))
        p.publish(frames[i % len(frames)], camera, sent[-1])
        assert p.wait_for("disparity", sent[-1], 60)
    spin_until(probe, lambda: False, 3.0)  # a pause of 3 s
    rate = counters(p)["output_rate_hz"]
    # 4 outputs in the 5 s window, the last more than 3 s ago: at most 3 intervals over 3 s. The
    # old window rate divided by the burst's own duration and kept reporting the burst's rate.
    assert rate <= 3 / 3.0 + 0.05


# ------------------------------------------------------------------------------------------ #13.15
def test_the_identity_extrinsic_fallback_is_warned_once_and_reported_in_diagnostics(probe, lidar_node):
    p = Probe(probe, NS)
    p.wait_ready(lidar_node)
    diag = diagnostics_values(p)
    assert "IDENTITY" in diag["lidar_extrinsic_source"] and "tf2_ros not installed" in diag["lidar_extrinsic_source"]
    warnings = [line for line in lidar_node.log().splitlines() if "tf2_ros is not installed" in line]
    assert len(warnings) == 1 and "WARN" in warnings[0] and "identity" in warnings[0]


# ------------------------------------------------------------------------------------------ #13.8
def test_malformed_images_are_bad_images_never_dropped_frames_and_tiny_ones_are_too_small(probe, lidar_node,
                                                                                        scene_frames):
    from sensor_msgs.msg import Image

    camera, frames = scene_frames
    p = Probe(probe, NS)
    p.wait_ready(lidar_node)
    header = build_header(p.types, now_ns(probe), "cam_optical")
    p.info_pub.publish(build_camera_info(p.types, header, camera))
    spin_until(probe, lambda: False, 0.5)  # the camera_info is in place before any image
    before = counters(p)
    good = build_image(p.types, header, frames[0], "rgb8")
    p.image_pub.publish(good)  # keeps the model busy while the bad ones arrive
    spin_until(probe, lambda: False, 0.03)
    bad = Image(header=good.header, height=H, width=W, encoding="rgb8", is_bigendian=0, step=W)  # step too short
    bad.data = good.data
    for _ in range(8):
        p.image_pub.publish(bad)
        spin_until(probe, lambda: False, 0.005)
    tiny = build_image(p.types, header, np.zeros((8, 12, 3), np.uint8), "rgb8")
    p.info_pub.publish(build_camera_info(p.types, header, PinholeCamera.from_fov(12, 8, 70.0)))
    spin_until(probe, lambda: False, 0.2)
    p.image_pub.publish(tiny)
    assert spin_until(probe, lambda: delta(counters(p), before, "bad_image_too_small") >= 1, 20), lidar_node.log()[-2000:]
    after = counters(p)
    received = delta(after, before, "frames_received")
    assert received >= 2
    assert delta(after, before, "frames_dropped") == 0  # no valid frame was replaced
    # Every image that arrived is either the good one, processed, or a bad one counted as bad.
    assert delta(after, before, "bad_image") + delta(after, before, "frames_processed") == received
    assert delta(after, before, "bad_image") >= 2
    assert delta(after, before, "processing_errors") == 0
    p.publish(frames[1], camera, now_ns(probe))  # restore the camera size for the other tests


# ------------------------------------------------------------------------------------------ #13.6
def test_every_frame_the_camera_sent_is_received_or_counted_as_missed(probe, lidar_node, scene_frames):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    camera, frames = scene_frames
    p = Probe(probe, NS)
    p.wait_ready(lidar_node)
    # A camera publisher of its own keeping one sample, as drivers do, sending a burst faster than it
    # can deliver: the samples it overwrote never reach the node, and their sequence numbers say so.
    cam_pub = probe.create_publisher(Image, f"{NS}/image", QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                                                                        reliability=ReliabilityPolicy.RELIABLE))
    spin_until(probe, lambda: False, 1.0)
    header = build_header(p.types, now_ns(probe), "cam_optical")
    p.info_pub.publish(build_camera_info(p.types, header, camera))
    msgs = [build_image(p.types, header, frames[i % len(frames)], "rgb8") for i in range(61)]
    start = counters(p)
    cam_pub.publish(msgs[0])  # the node learns this publisher's sequence numbers from its first frame
    assert spin_until(probe, lambda: delta(counters(p), start, "frames_received") >= 1, 20)
    before = counters(p)
    for m in msgs[1:]:
        cam_pub.publish(m)
    spin_until(probe, lambda: False, 2.0)
    after = counters(p)
    received = delta(after, before, "frames_received")
    missed = delta(after, before, "frames_missed_upstream")
    assert received >= 1 and missed >= 1, (received, missed)
    assert received + missed == 60, (received, missed)
    assert delta(after, before, "frames_dropped") <= received
    probe.destroy_publisher(cam_pub)


# ------------------------------------------------------------------------------------------ #13.14
def test_the_node_advertises_only_what_its_configuration_can_publish(probe, compressed_node):
    p = Probe(probe, NS_C, compressed=True)
    p.wait_ready(compressed_node)

    def advertised() -> set[str]:
        names = probe.get_publisher_names_and_types_by_node("lotus2_perception", NS_C)
        return {n.split("/lotus2_perception/", 1)[1] for n, _ in names if "/lotus2_perception/" in n}

    # depth only, no sharpener, a fixed metric map: 5 of the 16 outputs (no normals, scale_fit, refined/…)
    expected = {"disparity", "depth/image", "depth/camera_info", "depth/colorized", "points"}
    assert advertised() == expected
    assert set_parameter(probe, NS_C, "publish_colorized", False).successful
    assert spin_until(probe, lambda: advertised() == expected - {"depth/colorized"}, 10), advertised()
    assert set_parameter(probe, NS_C, "publish_colorized", True).successful
    assert spin_until(probe, lambda: "depth/colorized" in advertised(), 10)


# ------------------------------------------------------------------------------------------ #13.7, #13.8
def test_a_png_bomb_is_refused_before_decoding_and_libpng_does_not_write_to_the_log(probe, compressed_node,
                                                                                     scene_frames):
    from sensor_msgs.msg import CompressedImage

    camera, frames = scene_frames
    p = Probe(probe, NS_C, compressed=True)
    p.wait_ready(compressed_node)
    before = counters(p)
    peak_before = peak_rss_mib(compressed_node.proc.pid)
    header = build_header(p.types, now_ns(probe), "cam_optical")
    p.info_pub.publish(build_camera_info(p.types, header, camera))
    bomb = CompressedImage(header=header, format="png")
    bomb.data = png_bomb()
    p.image_pub.publish(bomb)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(frames[0][..., ::-1]))
    corrupt = bytearray(png.tobytes())
    corrupt[200:240] = bytes(40)  # inside IDAT: libpng fails on it
    broken = CompressedImage(header=header, format="png")
    broken.data = bytes(corrupt)
    spin_until(probe, lambda: False, 0.3)
    p.image_pub.publish(broken)
    assert spin_until(probe, lambda: delta(counters(p), before, "bad_image") >= 2, 30), compressed_node.log()[-2000:]
    after = counters(p)
    assert delta(after, before, "bad_image_too_large") == 1
    assert peak_rss_mib(compressed_node.proc.pid) - peak_before < 150  # decoding it takes 1.2 GB
    stamp = now_ns(probe)
    p.publish(frames[1], camera, stamp, compressed=True)
    assert p.wait_for("disparity", stamp, 60)
    stray = [line for line in compressed_node.log().splitlines()
             if "libpng" in line and "dropped a bad image" not in line]
    assert not stray, stray


# ------------------------------------------------------------------------------------------ #13.16
def test_with_a_distorted_camera_the_outputs_are_what_depth_image_proc_expects(probe, compressed_node, scene_frames):
    """depth_image_proc back-projects with P and no distortion (it expects rectified images):
    by default the node rectifies, and its cloud is exactly depth_image_proc's cloud of its depth."""
    from lotus2_ros.io import image_msg_to_array
    from lotus2_ros.io.pointcloud import read_pointcloud2_fields

    camera, frames = scene_frames
    p = Probe(probe, NS_C, compressed=True)
    p.wait_ready(compressed_node)
    distorted = PinholeCamera(W, H, camera.fx, camera.fy, camera.cx + 3.0, camera.cy - 2.0,
                              D=(-0.28, 0.09, 0.001, -0.002, 0.0))
    header = build_header(p.types, now_ns(probe), "cam_optical")
    p.info_pub.publish(build_camera_info(p.types, header, distorted))
    spin_until(probe, lambda: False, 0.5)
    stamp = now_ns(probe)
    p.publish(frames[2], distorted, stamp, compressed=True)
    for topic in ("depth/image", "depth/camera_info", "points"):
        assert p.wait_for(topic, stamp, 60), (topic, compressed_node.log()[-2000:])

    def at(topic):
        return next(m for m, _ in p.received[topic] if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec == stamp)

    info = at("depth/camera_info")
    assert not np.any(np.asarray(info.d)), "outputs aligned with a distorted camera: depth_image_proc would be wrong"
    P = np.asarray(info.p).reshape(3, 4)
    np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), P[:, :3])
    np.testing.assert_allclose(np.asarray(info.r).reshape(3, 3), np.eye(3))
    depth = image_msg_to_array(at("depth/image"))
    cloud = read_pointcloud2_fields(at("points"), ["x", "y", "z"])
    # depth_image_proc (point_cloud_xyz, float depth): x = (u - cx) * z / fx with image_geometry's P.
    v, u = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(cloud["z"], depth, rtol=1e-6)
    np.testing.assert_allclose(cloud["x"], (u - P[0, 2]) * depth / P[0, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cloud["y"], (v - P[1, 2]) * depth / P[1, 1], rtol=1e-5, atol=1e-5)
    p.publish(frames[1], camera, now_ns(probe), compressed=True)  # back to the plain camera
