"""Synthetic ROS 2 bags (camera, camera_info, LiDAR, ``/tf_static``) for tests, the benchmark and demos.

Written with ``rosbags``' own writer from the scenes of :mod:`lotus2_ros.synthetic`, with what a
recorder sees on a robot: each message's bag time is its header stamp plus a transport latency,
and the LiDAR arrives later than the image taken with it (so a processor must look ahead to pair
them). The camera–LiDAR extrinsic is only in ``/tf_static``, through ``base_link``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..geometry.camera import PinholeCamera
from ..io.camera_info import build_camera_info
from ..io.image_msgs import build_compressed_image, build_image
from ..io.msg_types import rosbags_types
from ..io.pointcloud import build_pointcloud2
from ..io.stamps import build_header, ns_to_stamp
from ..synthetic import R_BODY_OPTICAL, LidarModel, camera_trajectory, make_indoor_scene, render, simulate_lidar
from .writer import OutputBag

CAMERA_FRAME = "camera_optical_frame"
LIDAR_FRAME = "lidar"
BASE_FRAME = "base_link"
#: ``T_base_camera``: the camera 1.2 m above the base, looking forward (optical axes).
T_BASE_CAMERA = np.eye(4)
T_BASE_CAMERA[:3, :3] = R_BODY_OPTICAL
T_BASE_CAMERA[:3, 3] = (0.1, 0.0, 1.2)


def quaternion_from_matrix(R: np.ndarray) -> tuple[float, float, float, float]:
    """Unit quaternion ``(x, y, z, w)`` of a rotation matrix."""
    R = np.asarray(R, dtype=np.float64)[:3, :3]
    w = np.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2.0
    x = np.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2.0
    y = np.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2.0
    z = np.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2.0
    x = np.copysign(x, R[2, 1] - R[1, 2])
    y = np.copysign(y, R[0, 2] - R[2, 0])
    z = np.copysign(z, R[1, 0] - R[0, 1])
    q = np.array([x, y, z, w])
    return tuple(float(v) for v in q / np.linalg.norm(q))


#: Topic of the optional sparse metric depth image (``depth_reference_stride_px``).
DEPTH_REFERENCE_TOPIC = "/camera/depth/image"


@dataclass
class SyntheticBag:
    """What was written (ground truth for tests).

    Attributes:
        path: The bag folder.
        camera: Intrinsics of the images.
        stamps_ns: Image header stamps.
        rgb: The images (``uint8`` ``[H,W,3]``), as written (before any JPEG compression).
        lidar_points_m: Per LiDAR sweep, the ``[N,3]`` float32 points in the LiDAR frame.
        lidar_stamps_ns: Their header stamps.
        T_camera_lidar: The extrinsic ``/tf_static`` encodes.
        topics: ``{role: topic}`` (``image``, ``camera_info``, ``lidar``, ``tf_static``, ``extra``,
            ``depth_reference``).
    """

    path: Path
    camera: PinholeCamera
    stamps_ns: list[int]
    rgb: list[np.ndarray]
    lidar_points_m: list[np.ndarray] = field(default_factory=list)
    lidar_stamps_ns: list[int] = field(default_factory=list)
    T_camera_lidar: np.ndarray | None = None
    topics: dict[str, str] = field(default_factory=dict)


def write_synthetic_bag(path: Path, *, num_frames: int = 4, width: int = 128, height: int = 96,
                        storage: str = "sqlite3", compressed: bool = False, lidar: bool = True,
                        lidar_model: LidarModel | None = None, tf_static: bool = True,
                        rate_hz: float = 10.0, start_ns: int = 1_700_000_000_000_000_000, seed: int = 0,
                        lidar_offset_ns: int = 4_000_000, latency_ns: int = 2_000_000,
                        lidar_latency_ns: int = 150_000_000, extra_topic: bool = True,
                        depth_reference_stride_px: int = 0) -> SyntheticBag:
    """Render an indoor sequence and write it as a ROS 2 bag.

    Args:
        path: Bag folder to create.
        num_frames: Camera frames (each with a camera_info and, if ``lidar``, a sweep).
        width, height: Image size, pixels.
        storage: ``sqlite3`` or ``mcap``.
        compressed: Images as ``sensor_msgs/CompressedImage`` (JPEG) on ``/camera/image_raw/compressed``
            instead of raw ``rgb8`` on ``/camera/image_raw``.
        lidar: Write ``/lidar/points`` (PointCloud2 x y z in frame ``lidar``).
        lidar_model: The simulated sensor (default: 16 beams, 1° steps — small and fast).
        tf_static: Write ``/tf_static`` (``base_link`` → camera and → LiDAR).
        rate_hz: Camera rate.
        start_ns: First image stamp.
        seed: Scene seed.
        lidar_offset_ns: LiDAR stamp minus image stamp.
        latency_ns: Bag time minus header stamp, camera topics.
        lidar_latency_ns: Bag time minus header stamp, LiDAR (larger: it arrives after later images).
        extra_topic: Also write an unrelated ``/notes`` (std_msgs/String) topic, to check copying.
        depth_reference_stride_px: If > 0, also write a sparse metric depth image registered to the
            camera on ``/camera/depth/image`` (32FC1 metres, REP-118 NaN = no return): the true depth
            on every ``stride``-th row and column, as a stereo or RGB-D camera would give.
    """
    types = rosbags_types()
    ts = types.typestore
    scene = make_indoor_scene(seed)
    camera = PinholeCamera.from_fov(width, height, 70.0)
    poses = camera_trajectory(scene, num_frames)
    model = lidar_model or LidarModel(num_beams=16, horizontal_resolution_deg=1.0)
    T_base_lidar = T_BASE_CAMERA @ np.asarray(model.T_camera_lidar)
    image_topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    result = SyntheticBag(path=Path(path), camera=camera, stamps_ns=[], rgb=[],
                          T_camera_lidar=np.asarray(model.T_camera_lidar) if lidar else None,
                          topics={"image": image_topic, "camera_info": "/camera/camera_info"})
    records: list[tuple[int, str, object]] = []  # (bag time, topic, message)
    period_ns = round(1e9 / rate_hz)
    for i, pose in enumerate(poses):
        stamp = start_ns + i * period_ns
        frame = render(scene, camera, pose)
        header = build_header(types, stamp, CAMERA_FRAME)
        image = (build_compressed_image(types, header, frame.rgb, "jpeg") if compressed
                 else build_image(types, header, frame.rgb, "rgb8"))
        records.append((stamp + latency_ns, image_topic, image))
        records.append((stamp + latency_ns + 1000, "/camera/camera_info", build_camera_info(types, header, camera)))
        result.stamps_ns.append(stamp)
        result.rgb.append(frame.rgb)
        if depth_reference_stride_px > 0:
            sparse = np.full(frame.depth_m.shape, np.nan, dtype=np.float32)
            k = depth_reference_stride_px
            sparse[::k, ::k] = frame.depth_m[::k, ::k]
            records.append((stamp + latency_ns + 2000, DEPTH_REFERENCE_TOPIC, build_image(types, header, sparse, "32FC1")))
        if lidar:
            lstamp = stamp + lidar_offset_ns
            scan = simulate_lidar(scene, model, pose, rng=seed * 7919 + i)
            pts = np.ascontiguousarray(scan.points_m, dtype=np.float32)
            cloud = build_pointcloud2(types, build_header(types, lstamp, LIDAR_FRAME), pts[None])
            records.append((lstamp + lidar_latency_ns, "/lidar/points", cloud))
            result.lidar_points_m.append(pts)
            result.lidar_stamps_ns.append(lstamp)
        if extra_topic:
            records.append((stamp + 3 * latency_ns, "/notes", ts.types["std_msgs/msg/String"](data=f"frame {i}")))
    if tf_static:
        tfs = []
        for child, T in ((CAMERA_FRAME, T_BASE_CAMERA), (LIDAR_FRAME, T_base_lidar)):
            q = quaternion_from_matrix(T)
            tr = ts.types["geometry_msgs/msg/Transform"](
                translation=ts.types["geometry_msgs/msg/Vector3"](*map(float, T[:3, 3])),
                rotation=ts.types["geometry_msgs/msg/Quaternion"](*q))
            tfs.append(ts.types["geometry_msgs/msg/TransformStamped"](
                header=types.Header(stamp=ns_to_stamp(types, start_ns - 10**9), frame_id=BASE_FRAME),
                child_frame_id=child, transform=tr))
        records.append((start_ns - 10**9, "/tf_static", ts.types["tf2_msgs/msg/TFMessage"](transforms=tfs)))
        result.topics["tf_static"] = "/tf_static"
    if lidar:
        result.topics["lidar"] = "/lidar/points"
    if depth_reference_stride_px > 0:
        result.topics["depth_reference"] = DEPTH_REFERENCE_TOPIC
    if extra_topic:
        result.topics["extra"] = "/notes"

    order = {t: k for k, t in enumerate(dict.fromkeys(topic for _, topic, _ in records))}
    # SQLite's default layout, as a bag recorded by ros2 bag record has (the tests damage its pages).
    with OutputBag(Path(path), storage, ts, tuned=False) as out:
        conns = {topic: out.add_topic(topic, msg.__msgtype__) for _, topic, msg in
                 sorted(records, key=lambda r: order[r[1]])}
        for t, topic, msg in sorted(records, key=lambda r: r[0]):
            out.write_message(conns[topic], t, msg)
    return result
