"""perception_node with a LiDAR metric reference, end to end over real DDS.

The tiny test model is random, so instead of hoping its disparity resembles the scene, the test
builds a LiDAR sweep that agrees with the model's own prediction under a known metric map
``z = 1 / (s·d + t)``: it first gets the node's disparity for an image, turns some pixels into
3-D points with that map, moves them into a LiDAR frame offset from the camera, and publishes
the same image again with that sweep. The node must recover s and t and publish metric depth.
"""

from __future__ import annotations

import numpy as np
import pytest
from ros_harness import RELIABLE, H, W, NodeProcess, Probe, base_params, now_ns, spin_until

from lotus2_ros.io import build_header, image_msg_to_array
from lotus2_ros.io.pointcloud import build_pointcloud2
from lotus2_ros.synthetic import DEFAULT_T_CAMERA_LIDAR

pytestmark = pytest.mark.slow

S, T = 3.0, 0.2  # the metric map the sweep is built with


@pytest.fixture(scope="module")
def lidar_node(tiny_model, tmp_path_factory):
    T_cl = np.asarray(DEFAULT_T_CAMERA_LIDAR, dtype=float)
    params = base_params(tiny_model, metric_source="lidar", extrinsic_source="parameter", tasks=["depth"],
                         lidar_extrinsic=[float(v) for v in T_cl.ravel()], metric_max_offset_ms=20.0,
                         min_depth_m=0.05, max_depth_m=100.0, lidar_min_range_m=0.05, fit_hold_time_s=0.5,
                         # The random model's disparity is rough everywhere: the edge test would
                         # reject every point.
                         lidar_edge_window_px=0)
    node = NodeProcess("perception-node", params, "/l", tmp_path_factory.mktemp("logs") / "lidar_node.log")
    yield node
    node.stop()


def sweep_from_disparity(disparity: np.ndarray, K: np.ndarray, T_camera_lidar: np.ndarray, step: int = 3) -> np.ndarray:
    """LiDAR-frame points whose camera depth is 1/(S·d + T) at every ``step``-th pixel."""
    v, u = np.mgrid[step // 2:H:step, step // 2:W:step]
    z = 1.0 / (S * disparity[v, u] + T)
    pts_cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1).reshape(-1, 3)
    T_lc = np.linalg.inv(T_camera_lidar)
    return (pts_cam @ T_lc[:3, :3].T + T_lc[:3, 3]).astype(np.float32)


def test_the_node_fits_lidar_to_its_prediction_and_publishes_metric_depth(probe, lidar_node, scene_frames):
    from sensor_msgs.msg import PointCloud2

    camera, frames = scene_frames
    p = Probe(probe, "/l")
    lidar_pub = probe.create_publisher(PointCloud2, "/l/lidar/points", RELIABLE)
    p.wait_ready(lidar_node)
    assert spin_until(probe, lambda: lidar_pub.get_subscription_count() > 0, 30)  # reliable: no sweep is lost

    # 1. No LiDAR yet: relative outputs only.
    s1 = now_ns(probe)
    p.publish(frames[0], camera, s1)
    assert p.wait_for("disparity", s1, 60), lidar_node.log()[-2000:]
    spin_until(probe, lambda: False, 0.5)
    assert s1 not in p.stamps("depth/image") and s1 not in p.stamps("points")
    disparity = image_msg_to_array(p.message("disparity", s1))

    # 2. The same image with a sweep that agrees with the prediction under z = 1/(S d + T).
    T_cl = np.asarray(DEFAULT_T_CAMERA_LIDAR, dtype=float)
    points = sweep_from_disparity(disparity, camera.K, T_cl)
    s2 = now_ns(probe)
    lidar_pub.publish(build_pointcloud2(p.types, build_header(p.types, s2 + 5_000_000, "lidar"), points[None]))
    # The sweep and the image travel on different topics: until the node has stored the sweep, the
    # image goes without it (relative outputs only), so the image is sent again until it has met it.
    assert p.send_until(frames[0], camera, s2, lambda: s2 in p.stamps("depth/image") and s2 in p.stamps("points")), \
        lidar_node.log()[-3000:]
    depth = image_msg_to_array(p.message("depth/image", s2))
    expected = 1.0 / (S * disparity + T)
    np.testing.assert_allclose(depth, expected, rtol=2e-3)
    p.wait_diagnostics(lambda d: d["fits_valid"] >= 1)  # counted after the outputs are published


def test_metric_output_stops_after_the_hold_time_without_lidar(probe, lidar_node, scene_frames):
    camera, frames = scene_frames
    p = Probe(probe, "/l")
    p.wait_ready(lidar_node)
    spin_until(probe, lambda: False, 1.0)  # longer than fit_hold_time_s = 0.5 since the last fit
    s3 = now_ns(probe)
    p.publish(frames[1], camera, s3)
    assert p.wait_for("disparity", s3, 60)
    spin_until(probe, lambda: False, 0.5)
    assert s3 not in p.stamps("depth/image")  # relative values are never published as metres
