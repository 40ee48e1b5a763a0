"""Rigid transforms, camera poses and smooth camera trajectories for synthetic scenes.

Frames:

* World: z up, metres; scenes lay their main path along the heading ``scene.path_yaw_rad``.
* Body / LiDAR (REP-103): x forward, y left, z up.
* Camera optical (REP-103 optical): x right, y down, z forward.

A pose ``T_a_b`` is a [4,4] float64 homogeneous transform that maps coordinates in frame ``b``
to frame ``a`` (``p_a = T_a_b @ p_b``); ``T_world_camera`` is the camera-to-world pose whose
rotation columns are the optical axes expressed in the world frame.
"""

from __future__ import annotations

import math

import numpy as np

from lotus2_ros.synthetic.scene import Scene

__all__ = [
    "R_BODY_OPTICAL",
    "camera_trajectory",
    "check_pose",
    "invert_pose",
    "look_at",
    "pose_from_xyz_ypr",
    "transform_points",
]

#: Rotation taking optical-frame coordinates (x right, y down, z forward) to body-frame
#: coordinates (x forward, y left, z up). Its columns are the optical axes in the body frame.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def check_pose(name: str, T: np.ndarray) -> np.ndarray:
    """Validates a rigid [4,4] transform and returns it as float64.

    Raises:
        ValueError: Naming ``name`` when the shape is wrong, values are not finite, the last row
            is not (0, 0, 0, 1) or the rotation block is not a proper rotation.
    """
    arr = np.asarray(T, dtype=np.float64)
    if arr.shape != (4, 4):
        raise ValueError(f"{name} must have shape (4, 4), got {np.asarray(T).shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()!r}")
    R = arr[:3, :3]
    if (
        not np.allclose(arr[3], (0.0, 0.0, 0.0, 1.0))
        or not np.allclose(R @ R.T, np.eye(3), atol=1e-6)
        or np.linalg.det(R) < 0.0
    ):
        raise ValueError(
            f"{name} must be a rigid transform (rotation + translation), got {arr.tolist()!r}"
        )
    return arr


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid [4,4] transform (``T_b_a`` from ``T_a_b``)."""
    T = np.asarray(T, dtype=np.float64)
    inv = np.eye(4)
    inv[:3, :3] = T[:3, :3].T
    inv[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return inv


def transform_points(T_a_b: np.ndarray, points_b: np.ndarray) -> np.ndarray:
    """Maps [...,3] points from frame b to frame a with a [4,4] transform (float64 result)."""
    T = np.asarray(T_a_b, dtype=np.float64)
    pts = np.asarray(points_b, dtype=np.float64)
    return pts @ T[:3, :3].T + T[:3, 3]


def _rotation_ypr(yaw_rad: float, pitch_rad: float, roll_rad: float) -> np.ndarray:
    cy, sy = math.cos(yaw_rad), math.sin(yaw_rad)
    cp, sp = math.cos(pitch_rad), math.sin(pitch_rad)
    cr, sr = math.cos(roll_rad), math.sin(roll_rad)
    Rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    Ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return Rz @ Ry @ Rx


def pose_from_xyz_ypr(
    position_m: np.ndarray | tuple[float, float, float],
    yaw_rad: float = 0.0,
    pitch_rad: float = 0.0,
    roll_rad: float = 0.0,
) -> np.ndarray:
    """Camera pose ``T_world_camera`` (optical axes) from a position and body angles.

    The body frame (x forward, y left, z up) is rotated by ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``
    from the world frame; the optical frame is fixed to the body (``R_BODY_OPTICAL``). With all
    angles zero the camera is level and looks along world +x. Positive pitch looks down
    (REP-103: rotation about the left-pointing y axis); positive yaw turns left.

    Args:
        position_m: [3] camera centre in the world, metres.
        yaw_rad: Heading about world z, radians.
        pitch_rad: Nose-down pitch, radians.
        roll_rad: Roll about the forward axis, radians.

    Returns:
        [4,4] float64 camera-to-world transform.
    """
    position = np.asarray(position_m, dtype=np.float64).reshape(-1)
    if position.shape != (3,) or not np.all(np.isfinite(position)):
        raise ValueError(f"position_m must be 3 finite numbers, got {position_m!r}")
    T = np.eye(4)
    T[:3, :3] = _rotation_ypr(yaw_rad, pitch_rad, roll_rad) @ R_BODY_OPTICAL
    T[:3, 3] = position
    return T


def look_at(
    eye_m: np.ndarray | tuple[float, float, float],
    target_m: np.ndarray | tuple[float, float, float],
    up_world: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Camera pose ``T_world_camera`` at ``eye_m`` whose optical z axis points at ``target_m``.

    The image's "up" (optical −y) is as close to ``up_world`` as possible.

    Raises:
        ValueError: The eye equals the target or the view direction is parallel to ``up_world``.
    """
    eye = np.asarray(eye_m, dtype=np.float64).reshape(3)
    forward = np.asarray(target_m, dtype=np.float64).reshape(3) - eye
    norm = np.linalg.norm(forward)
    if norm < 1e-12:
        raise ValueError(f"target_m must differ from eye_m, got both {eye.tolist()!r}")
    z = forward / norm
    x = np.cross(z, np.asarray(up_world, dtype=np.float64))  # right = forward x up
    if np.linalg.norm(x) < 1e-9:
        raise ValueError(f"view direction {z.tolist()!r} is parallel to up_world {up_world!r}")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def camera_trajectory(
    scene: Scene,
    num_frames: int,
    *,
    step_m: float = 0.1,
    yaw_amplitude_deg: float = 5.0,
    yaw_period_m: float = 4.0,
    pitch_deg: float = 3.0,
    bob_amplitude_m: float = 0.02,
) -> list[np.ndarray]:
    """A smooth forward dolly along the scene's free path, with a gentle yaw sway.

    The camera moves ``step_m`` per frame along ``scene.path_yaw_rad`` from
    ``scene.path_start_m``; at the end of the free path it reverses and dollies backwards,
    still facing along the path (ping-pong, so arbitrarily long sequences stay inside the
    scene and the pose never jumps).

    Args:
        scene: Scene whose ``path_*`` attributes define the free path.
        num_frames: Number of poses (>= 1).
        step_m: Distance travelled per frame, metres (>= 0).
        yaw_amplitude_deg: Amplitude of the sinusoidal yaw around the path heading, degrees.
        yaw_period_m: Distance travelled per yaw oscillation, metres (> 0).
        pitch_deg: Constant nose-down pitch, degrees.
        bob_amplitude_m: Amplitude of a small vertical oscillation, metres.

    Returns:
        ``num_frames`` [4,4] float64 ``T_world_camera`` poses.
    """
    if (
        isinstance(num_frames, bool)
        or not isinstance(num_frames, (int, np.integer))
        or (num_frames < 1)
    ):
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if not (math.isfinite(step_m) and step_m >= 0.0):
        raise ValueError(f"step_m must be finite and >= 0, got {step_m!r}")
    if not (math.isfinite(yaw_period_m) and yaw_period_m > 0.0):
        raise ValueError(f"yaw_period_m must be finite and > 0, got {yaw_period_m!r}")
    start = np.asarray(scene.path_start_m, dtype=np.float64)
    heading = np.array([math.cos(scene.path_yaw_rad), math.sin(scene.path_yaw_rad), 0.0])
    length = scene.path_length_m
    poses = []
    for i in range(int(num_frames)):
        travelled = i * step_m
        if length > 0.0:
            phase = travelled % (2.0 * length)
            along = phase if phase <= length else 2.0 * length - phase
        else:
            along = 0.0
        wave = math.sin(2.0 * math.pi * travelled / yaw_period_m)
        yaw = scene.path_yaw_rad + math.radians(yaw_amplitude_deg) * wave
        position = start + along * heading
        position[2] += bob_amplitude_m * math.sin(4.0 * math.pi * travelled / yaw_period_m)
        poses.append(pose_from_xyz_ypr(position, yaw, math.radians(pitch_deg)))
    return poses
