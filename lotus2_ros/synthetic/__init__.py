"""Deterministic procedural scenes with exact geometry, for tests, the demo and training.

numpy only (no ROS, no torch). Frames:

* World: z up, metres; each scene's main path runs along ``Scene.path_yaw_rad`` (+x).
* Camera: ROS optical frame (x right, y down, z forward); poses are ``T_world_camera``
  ([4,4] camera-to-world).
* LiDAR: REP-103 (x forward, y left, z up), mounted with ``LidarModel.T_camera_lidar``.

Typical use::

    scene = make_indoor_scene(seed=3)
    camera = PinholeCamera.from_fov(640, 480, hfov_deg=70.0)
    for frame in render_sequence(scene, camera, num_frames=20, rate_hz=10.0):
        scan = simulate_lidar(scene, LidarModel(), frame.T_world_camera, rng=frame.stamp_ns)
"""

from lotus2_ros.synthetic.generators import (
    SCENE_KINDS,
    make_indoor_scene,
    make_scene,
    make_street_scene,
)
from lotus2_ros.synthetic.lidar import (
    DEFAULT_T_CAMERA_LIDAR,
    LidarModel,
    LidarScan,
    simulate_lidar,
)
from lotus2_ros.synthetic.poses import (
    R_BODY_OPTICAL,
    camera_trajectory,
    invert_pose,
    look_at,
    pose_from_xyz_ypr,
    transform_points,
)
from lotus2_ros.synthetic.primitives import Box, Plane, Primitive, Sphere
from lotus2_ros.synthetic.renderer import SyntheticFrame, render, render_sequence
from lotus2_ros.synthetic.scene import Scene, cast_rays, surface_properties
from lotus2_ros.synthetic.textures import TEXTURE_PATTERNS, Texture, random_texture

__all__ = [
    "DEFAULT_T_CAMERA_LIDAR",
    "R_BODY_OPTICAL",
    "SCENE_KINDS",
    "TEXTURE_PATTERNS",
    "Box",
    "LidarModel",
    "LidarScan",
    "Plane",
    "Primitive",
    "Scene",
    "Sphere",
    "SyntheticFrame",
    "Texture",
    "camera_trajectory",
    "cast_rays",
    "invert_pose",
    "look_at",
    "make_indoor_scene",
    "make_scene",
    "make_street_scene",
    "pose_from_xyz_ypr",
    "random_texture",
    "render",
    "render_sequence",
    "simulate_lidar",
    "surface_properties",
    "transform_points",
]
