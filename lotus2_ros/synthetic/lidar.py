"""A simulated spinning multi-beam LiDAR ray-cast against the same scene as the camera.

LiDAR frame (REP-103): x forward, y left, z up, metres. Beam ``ring`` 0 is the lowest beam.
The sensor is mounted on the camera with the extrinsic ``T_camera_lidar`` (LiDAR -> camera
optical frame), so its centre differs from the camera's and occlusions differ between the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lotus2_ros.synthetic.poses import R_BODY_OPTICAL, check_pose
from lotus2_ros.synthetic.scene import Scene, cast_rays, surface_properties

__all__ = ["DEFAULT_T_CAMERA_LIDAR", "LidarModel", "LidarScan", "simulate_lidar"]


def _default_T_camera_lidar() -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R_BODY_OPTICAL.T  # LiDAR axes (x fwd, y left, z up) in the optical frame
    T[:3, 3] = (0.0, -0.2, -0.05)  # 0.2 m above and 0.05 m behind the camera centre
    T.flags.writeable = False
    return T


#: Default extrinsic: LiDAR level with the camera, 0.2 m above it and 0.05 m behind it.
DEFAULT_T_CAMERA_LIDAR = _default_T_camera_lidar()


def _readonly_pose(name: str, T: np.ndarray) -> np.ndarray:
    arr = check_pose(name, T).copy()
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class LidarModel:
    """A spinning LiDAR: evenly spaced beams swept over 360 degrees.

    Attributes:
        num_beams: Number of lasers (rings), e.g. 16, 32, 64.
        vertical_fov_min_deg: Elevation of the lowest beam, degrees (negative = below horizon).
        vertical_fov_max_deg: Elevation of the highest beam, degrees. Beams are evenly spaced
            from min to max inclusive.
        horizontal_resolution_deg: Azimuth step, degrees; the sweep has
            ``round(360 / horizontal_resolution_deg)`` columns starting at azimuth -180.
        min_range_m: Returns closer than this are dropped, metres.
        max_range_m: Returns farther than this are dropped, metres.
        range_noise_std_m: Standard deviation of Gaussian range noise, metres.
        dropout_probability: Probability that a valid return is lost, [0, 1).
        outlier_fraction: Probability that a kept return is a gross error whose range is
            uniform in [min_range_m, max_range_m], [0, 1].
        T_camera_lidar: [4,4] LiDAR-to-camera-optical-frame transform (read-only array).
    """

    num_beams: int = 32
    vertical_fov_min_deg: float = -25.0
    vertical_fov_max_deg: float = 15.0
    horizontal_resolution_deg: float = 0.4
    min_range_m: float = 0.3
    max_range_m: float = 100.0
    range_noise_std_m: float = 0.02
    dropout_probability: float = 0.05
    outlier_fraction: float = 0.005
    T_camera_lidar: np.ndarray = field(default_factory=lambda: DEFAULT_T_CAMERA_LIDAR)

    def __post_init__(self) -> None:
        if (
            isinstance(self.num_beams, bool)
            or not isinstance(self.num_beams, (int, np.integer))
            or (self.num_beams < 1)
        ):
            raise ValueError(f"num_beams must be a positive int, got {self.num_beams!r}")
        lo, hi = self.vertical_fov_min_deg, self.vertical_fov_max_deg
        if not (-90.0 <= lo <= hi <= 90.0) or (self.num_beams > 1 and lo == hi):
            raise ValueError(
                "vertical_fov_min_deg <= vertical_fov_max_deg must lie in [-90, 90] (and differ "
                f"for several beams), got vertical_fov_min_deg={lo!r}, vertical_fov_max_deg={hi!r}"
            )
        if not 0.0 < self.horizontal_resolution_deg <= 90.0:
            raise ValueError(
                "horizontal_resolution_deg must be in (0, 90], got "
                f"{self.horizontal_resolution_deg!r}"
            )
        if not 0.0 <= self.min_range_m < self.max_range_m or not math.isfinite(self.max_range_m):
            raise ValueError(
                "need 0 <= min_range_m < max_range_m < inf, got "
                f"min_range_m={self.min_range_m!r}, max_range_m={self.max_range_m!r}"
            )
        if not (math.isfinite(self.range_noise_std_m) and self.range_noise_std_m >= 0.0):
            raise ValueError(f"range_noise_std_m must be >= 0, got {self.range_noise_std_m!r}")
        if not 0.0 <= self.dropout_probability < 1.0:
            raise ValueError(
                f"dropout_probability must be in [0, 1), got {self.dropout_probability!r}"
            )
        if not 0.0 <= self.outlier_fraction <= 1.0:
            raise ValueError(f"outlier_fraction must be in [0, 1], got {self.outlier_fraction!r}")
        object.__setattr__(
            self, "T_camera_lidar", _readonly_pose("T_camera_lidar", self.T_camera_lidar)
        )

    @property
    def elevations_rad(self) -> np.ndarray:
        """[num_beams] float64 beam elevations, radians, ring 0 (lowest) first."""
        return np.radians(
            np.linspace(self.vertical_fov_min_deg, self.vertical_fov_max_deg, self.num_beams)
        )

    @property
    def azimuths_rad(self) -> np.ndarray:
        """[num_columns] float64 sweep azimuths, radians, from -pi (counter-clockwise)."""
        columns = max(1, int(round(360.0 / self.horizontal_resolution_deg)))
        return -math.pi + (2.0 * math.pi / columns) * np.arange(columns)

    def beam_directions(self) -> np.ndarray:
        """[num_beams, num_columns, 3] float64 unit beam directions in the LiDAR frame."""
        el = self.elevations_rad[:, None]  # [B,1]
        az = self.azimuths_rad[None, :]  # [1,C]
        return np.stack(
            np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)),
            axis=-1,
        )


@dataclass(frozen=True, eq=False)
class LidarScan:
    """Returns of one simulated sweep (only beams that produced a return).

    Attributes:
        points_m: [N,3] float32 points in the LiDAR frame (x forward, y left, z up), metres.
        ring: [N] uint16 beam index, 0 = lowest beam.
        intensity: [N] float32 reflectance proxy in [0, 1] (albedo x |cos incidence|).
        range_m: [N] float32 measured range (with noise and outliers), metres.
        true_range_m: [N] float32 exact range to the surface along the beam, metres (ground
            truth for tests and evaluation).
        is_outlier: [N] bool, True for gross-error returns (ground truth).
        T_camera_lidar: [4,4] float64 extrinsic used (LiDAR -> camera optical frame).
        stamp_ns: Timestamp, integer nanoseconds.
    """

    points_m: np.ndarray
    ring: np.ndarray
    intensity: np.ndarray
    range_m: np.ndarray
    true_range_m: np.ndarray
    is_outlier: np.ndarray
    T_camera_lidar: np.ndarray
    stamp_ns: int = 0


def simulate_lidar(
    scene: Scene,
    lidar: LidarModel,
    T_world_camera: np.ndarray,
    rng: np.random.Generator | int = 0,
    *,
    stamp_ns: int = 0,
) -> LidarScan:
    """Simulates one instantaneous 360-degree sweep of a LiDAR mounted on the camera.

    Beams that hit nothing (sky) or hit outside [min_range_m, max_range_m] give no return;
    surviving returns are dropped with ``dropout_probability``, perturbed by Gaussian noise of
    ``range_noise_std_m`` and, with ``outlier_fraction``, replaced by a uniform random range.
    The random stream is consumed in a fixed pattern, so a seed gives the same scan whatever
    the noise settings.

    Args:
        scene: The scene (the same one the camera renders).
        lidar: Sensor model and extrinsic.
        T_world_camera: [4,4] camera-to-world pose (optical axes).
        rng: A numpy Generator, or an int seed for ``numpy.random.default_rng``.
        stamp_ns: Timestamp stored in the scan, integer nanoseconds.

    Returns:
        The scan in the LiDAR frame.
    """
    if not isinstance(scene, Scene):
        raise ValueError(f"scene must be a Scene, got {type(scene).__name__}")
    if not isinstance(lidar, LidarModel):
        raise ValueError(f"lidar must be a LidarModel, got {type(lidar).__name__}")
    T_world_lidar = check_pose("T_world_camera", T_world_camera) @ lidar.T_camera_lidar
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    elif not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy Generator or an int seed, got {rng!r}")

    # 1. Cast every beam of the sweep from the LiDAR centre.
    dirs_lidar = lidar.beam_directions().reshape(-1, 3)  # [R,3] unit
    # float64: a sweep has few rays, and grazing hits need the precision.
    dirs_world = np.ascontiguousarray((dirs_lidar @ T_world_lidar[:3, :3].T).T)  # [3,R]
    t, index = cast_rays(scene, T_world_lidar[:3, 3], dirs_world, max_t=lidar.max_range_m)
    num_rays = t.shape[0]

    # 2. Random draws for all rays in a fixed order (independent of which rays hit).
    dropout_draw = rng.random(num_rays)
    noise_draw = rng.standard_normal(num_rays)
    outlier_draw = rng.random(num_rays)
    outlier_range = rng.uniform(lidar.min_range_m, lidar.max_range_m, num_rays)

    # 3. Keep valid, non-dropped returns; corrupt their ranges.
    valid = (index >= 0) & (t >= lidar.min_range_m)
    keep = valid & (dropout_draw >= lidar.dropout_probability)
    true_range = t[keep].astype(np.float64)
    is_outlier = outlier_draw[keep] < lidar.outlier_fraction
    measured = true_range + lidar.range_noise_std_m * noise_draw[keep]
    measured = np.where(is_outlier, outlier_range[keep], measured)
    positive = measured > 0.0  # heavy noise near min range could flip a point behind the sensor
    keep_rows = np.flatnonzero(keep)[positive]
    true_range, measured, is_outlier = (
        true_range[positive],
        measured[positive],
        is_outlier[positive],
    )

    # 4. Intensity from the surface's albedo and incidence angle.
    d_world = dirs_world[:, keep_rows].T  # [N,3]
    hit_points = T_world_lidar[:3, 3] + true_range[:, None] * d_world
    normals, albedo = surface_properties(scene, hit_points, index[keep_rows])
    cos_incidence = np.abs(np.einsum("ij,ij->i", normals.astype(np.float64), d_world))
    intensity = albedo.mean(axis=1) * cos_incidence

    num_columns = lidar.azimuths_rad.shape[0]
    points = measured[:, None] * dirs_lidar[keep_rows]
    return LidarScan(
        points_m=points.astype(np.float32),
        ring=(keep_rows // num_columns).astype(np.uint16),
        intensity=intensity.astype(np.float32),
        range_m=measured.astype(np.float32),
        true_range_m=true_range.astype(np.float32),
        is_outlier=is_outlier,
        T_camera_lidar=np.array(lidar.T_camera_lidar),
        stamp_ns=int(stamp_ns),
    )
