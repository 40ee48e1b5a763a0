"""A looping synthetic camera (+ LiDAR) stream: the data source of ``synthetic_camera`` and the demo.

Frames are rendered once up front (rendering costs ~0.1 s a frame on a small CPU) and then
replayed in a loop with fresh, increasing stamps, so the stream keeps its rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config_fields import param_field as _f, validate_fields
from ..geometry.camera import PinholeCamera
from .generators import make_scene
from .lidar import LidarModel, LidarScan, simulate_lidar
from .poses import camera_trajectory
from .renderer import SyntheticFrame, render


@dataclass(frozen=True)
class SyntheticCameraConfig:
    """Parameters of the synthetic camera (one ROS parameter each, same name)."""

    scene: str = _f("indoor", "scene kind", read_only=True, choices=("indoor", "street"))
    seed: int = _f(0, "scene and noise seed", read_only=True, range_=(0, 2**31 - 1))
    width: int = _f(640, "image width", read_only=True, range_=(16, 4096), unit="px")
    height: int = _f(480, "image height", read_only=True, range_=(16, 4096), unit="px")
    hfov_deg: float = _f(70.0, "horizontal field of view", read_only=True, range_=(10.0, 170.0), unit="deg")
    loop_frames: int = _f(20, "frames rendered up front and replayed in a loop", read_only=True, range_=(1, 1000))
    rate_hz: float = _f(10.0, "publishing rate", read_only=True, range_=(0.1, 200.0), unit="Hz")
    frame_id: str = _f("camera_optical_frame", "frame_id of image and camera_info", read_only=True)
    lidar_frame_id: str = _f("lidar", "frame_id of the LiDAR cloud", read_only=True)
    publish_lidar: bool = _f(True, "publish lidar/points", read_only=True)
    lidar_beams: int = _f(32, "LiDAR beam count", read_only=True, range_=(1, 256))
    encoding: str = _f("rgb8", "encoding of 'image'", read_only=True, choices=("rgb8", "bgr8"))
    publish_compressed: bool = _f(False, "also publish image/compressed (jpeg)", read_only=True)
    publish_ground_truth: bool = _f(False, "also publish ground_truth/depth (32FC1, m) and ground_truth/normals "
                                    "(32FC3, optical frame) with the image's stamp", read_only=True)
    reliability: str = _f("reliable", "QoS reliability of the outputs", read_only=True,
                          choices=("reliable", "best_effort"))

    def __post_init__(self):
        validate_fields(self)


@dataclass(frozen=True)
class StreamItem:
    """One published instant: the camera frame and (optionally) the LiDAR sweep taken with it."""

    frame: SyntheticFrame
    lidar: LidarScan | None


class SyntheticStream:
    """Pre-rendered frames (and LiDAR sweeps) replayed cyclically with stamps at ``rate_hz``."""

    def __init__(self, config: SyntheticCameraConfig):
        self.config = config
        self.scene = make_scene(config.scene, config.seed)
        self.camera = PinholeCamera.from_fov(config.width, config.height, config.hfov_deg)
        self.lidar_model = LidarModel(num_beams=config.lidar_beams)
        poses = camera_trajectory(self.scene, config.loop_frames)
        self._items = []
        for i, pose in enumerate(poses):
            frame = render(self.scene, self.camera, pose)
            scan = (simulate_lidar(self.scene, self.lidar_model, pose, rng=config.seed * 7919 + i)
                    if config.publish_lidar else None)
            self._items.append(StreamItem(frame, scan))
        self._index = 0

    @property
    def T_camera_lidar(self) -> np.ndarray:
        """``[4,4]`` LiDAR → camera optical frame transform of the simulated mount."""
        return np.asarray(self.lidar_model.T_camera_lidar)

    def next(self) -> StreamItem:
        """The next item in the loop (stamps are given by the caller when publishing)."""
        item = self._items[self._index % len(self._items)]
        self._index += 1
        return item
