"""Ray-cast rendering of synthetic scenes: RGB, z-depth and normals in the optical frame."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from lotus2_ros.geometry.camera import PinholeCamera
from lotus2_ros.synthetic.poses import camera_trajectory, check_pose
from lotus2_ros.synthetic.scene import Scene, cast_rays, surface_fields

__all__ = ["SyntheticFrame", "render", "render_sequence"]

_GAMMA = 1.0 / 2.2  # linear albedo x light -> display-like RGB
# Gamma by table lookup (a power over every pixel costs more than the rest of the shading);
# 2^14 steps keep the error below 0.1 grey level for everything brighter than 1 % linear.
_GAMMA_STEPS = 16383
_GAMMA_LUT = np.round(255.0 * np.linspace(0.0, 1.0, _GAMMA_STEPS + 1) ** _GAMMA).astype(np.uint8)
# Pixels per band of rows: keeps temporaries near the L2 cache size.
_BAND_PIXELS = 65536
# Corners closer than this to the camera plane disable bounding-box culling (projection of a
# box straddling the camera plane is unbounded).
_MIN_CULL_Z_M = 1e-3


@dataclass(frozen=True, eq=False)
class SyntheticFrame:
    """One rendered camera frame with exact geometry.

    Attributes:
        rgb: [H,W,3] uint8 RGB image (Lambert shading, gamma 1/2.2; sky where nothing is hit).
        depth_m: [H,W] float32 z-depth along the optical axis (not ray length), metres; NaN
            where nothing is hit (sky) or beyond ``scene.max_depth_m``.
        normals: [H,W,3] float32 unit surface normals in the camera's optical frame (x right,
            y down, z forward), oriented towards the camera (``n · ray < 0``); NaN where
            ``depth_m`` is NaN.
        primitive_index: [H,W] int16 index of the visible primitive in ``scene.primitives``; -1
            where nothing is hit.
        camera: Intrinsics the frame was rendered with.
        T_world_camera: [4,4] float64 camera-to-world pose (optical axes).
        stamp_ns: Timestamp, integer nanoseconds.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    normals: np.ndarray
    primitive_index: np.ndarray
    camera: PinholeCamera
    T_world_camera: np.ndarray
    stamp_ns: int = 0


def _cull_regions(
    scene: Scene, camera: PinholeCamera, T_world_camera: np.ndarray
) -> list[tuple[slice, slice] | None]:
    """Per primitive, the pixel rectangle containing its projection (None: whole image)."""
    if camera.has_distortion:
        return [None] * len(scene.primitives)  # rays are not a pinhole grid; skip culling
    R = T_world_camera[:3, :3]
    origin = T_world_camera[:3, 3]
    regions: list[tuple[slice, slice] | None] = []
    for primitive in scene.primitives:
        corners = primitive.corners()
        if corners is None:
            regions.append(None)
            continue
        cam = (corners - origin) @ R  # [8,3] in the optical frame
        if np.any(cam[:, 2] < _MIN_CULL_Z_M):
            if np.all(cam[:, 2] < 0.0):
                regions.append((slice(0, 0), slice(0, 0)))  # entirely behind the camera
            else:
                regions.append(None)
            continue
        u = camera.fx * cam[:, 0] / cam[:, 2] + camera.cx
        v = camera.fy * cam[:, 1] / cam[:, 2] + camera.cy
        # The projection of a convex body in front of the camera lies inside the convex hull of
        # its projected bounding-box corners; pad a pixel for rounding.
        u0 = int(np.clip(math.floor(u.min()) - 1, 0, camera.width_px))
        u1 = int(np.clip(math.ceil(u.max()) + 2, 0, camera.width_px))
        v0 = int(np.clip(math.floor(v.min()) - 1, 0, camera.height_px))
        v1 = int(np.clip(math.ceil(v.max()) + 2, 0, camera.height_px))
        regions.append((slice(v0, v1), slice(u0, u1)))
    return regions


def _band_region(
    region: tuple[slice, slice] | None, v0: int, v1: int
) -> tuple[slice, slice] | None:
    """A full-image cull region restricted to rows [v0, v1), in band coordinates."""
    if region is None:
        return None
    rows, cols = region
    start, stop = max(rows.start, v0), min(rows.stop, v1)
    if start >= stop:
        return (slice(0, 0), slice(0, 0))
    return (slice(start - v0, stop - v0), cols)


def render(
    scene: Scene,
    camera: PinholeCamera,
    T_world_camera: np.ndarray,
    *,
    stamp_ns: int = 0,
) -> SyntheticFrame:
    """Renders a scene by casting one ray per pixel centre.

    Works through the image in bands of rows so that temporaries stay small (faster than
    whole-image arrays: better cache use and less allocator traffic). Objects are only tested
    against the pixels inside their projected bounding box.

    Args:
        scene: The scene.
        camera: Intrinsics (plumb_bob distortion, if any, is rendered: the image is then the
            raw distorted image and depth/normals are per raw pixel).
        T_world_camera: [4,4] camera-to-world pose with optical axes (x right, y down,
            z forward).
        stamp_ns: Timestamp stored in the frame, integer nanoseconds.

    Returns:
        The frame (RGB, z-depth, optical-frame normals, primitive index).
    """
    if not isinstance(scene, Scene):
        raise ValueError(f"scene must be a Scene, got {type(scene).__name__}")
    if not isinstance(camera, PinholeCamera):
        raise ValueError(f"camera must be a PinholeCamera, got {type(camera).__name__}")
    T = check_pose("T_world_camera", T_world_camera)
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
        raise ValueError(f"stamp_ns must be an int (nanoseconds), got {stamp_ns!r}")
    H, W = camera.height_px, camera.width_px
    frame = SyntheticFrame(
        rgb=np.empty((H, W, 3), dtype=np.uint8),
        depth_m=np.empty((H, W), dtype=np.float32),
        normals=np.empty((H, W, 3), dtype=np.float32),
        primitive_index=np.empty((H, W), dtype=np.int16),
        camera=camera,
        T_world_camera=T.copy(),
        stamp_ns=int(stamp_ns),
    )
    if camera.has_distortion:
        rays = camera.pixel_rays()  # [H,W,3]
        x_rays, y_rays = rays[..., 0], rays[..., 1]
    else:
        # Pinhole grid: x depends on the column only, y on the row only.
        x_rays = ((np.arange(W) - camera.cx) / camera.fx).astype(np.float32)[None, :]  # [1,W]
        y_rays = ((np.arange(H) - camera.cy) / camera.fy).astype(np.float32)[:, None]  # [H,1]
    regions = _cull_regions(scene, camera, T)
    light_cam = T[:3, :3].T @ np.asarray(scene.light_direction_world)  # [3]
    rows_per_band = max(1, _BAND_PIXELS // W)
    for v0 in range(0, H, rows_per_band):
        v1 = min(H, v0 + rows_per_band)
        x_band = np.broadcast_to(x_rays[v0:v1] if camera.has_distortion else x_rays, (v1 - v0, W))
        y_band = np.broadcast_to(y_rays[v0:v1], (v1 - v0, W))
        band_regions = [_band_region(region, v0, v1) for region in regions]
        _render_band(scene, T, light_cam, x_band, y_band, band_regions, frame, v0, v1)
    return frame


def _render_band(
    scene: Scene,
    T: np.ndarray,
    light_cam: np.ndarray,
    x_rays: np.ndarray,
    y_rays: np.ndarray,
    regions: list[tuple[slice, slice] | None],
    frame: SyntheticFrame,
    v0: int,
    v1: int,
) -> None:
    """Casts, shades and writes rows [v0, v1) of ``frame`` (rays given for those rows)."""
    R = T[:3, :3]
    origin = T[:3, 3]
    B, W = x_rays.shape

    # 1. Rays with unit optical z, so the ray parameter of a hit is its z-depth.
    dirs = np.empty((3, B, W), dtype=np.float32)
    for k in range(3):
        dirs[k] = float(R[k, 0]) * x_rays + float(R[k, 1]) * y_rays + float(R[k, 2])

    # 2. Nearest hit per pixel.
    t, index = cast_rays(scene, origin, dirs, max_t=scene.max_depth_m, regions=regions)
    hit = index >= 0  # [B,W]
    frame.primitive_index[v0:v1] = index
    frame.depth_m[v0:v1] = np.where(hit, t, np.float32(np.nan))

    # 3. Surface fields at the hits, as flat per-component arrays (cheap gathers/scatters).
    index_flat = index.reshape(-1)  # [N]
    t_flat = np.where(hit, t, np.float32(0.0)).reshape(-1)  # [N]
    d_flat = dirs.reshape(3, -1)  # [3,N] world
    px, py, pz = (float(origin[k]) + t_flat * d_flat[k] for k in range(3))
    nx, ny, nz, *albedo = surface_fields(scene, px, py, pz, index_flat)  # [N] each, world

    # 4. Normals facing the camera (n . ray < 0), then into the optical frame (R^T n).
    away = nx * d_flat[0] + ny * d_flat[1] + nz * d_flat[2] > 0.0
    for component in (nx, ny, nz):
        np.negative(component, out=component, where=away)
    normals = frame.normals[v0:v1].reshape(-1, 3)  # view into the frame
    for k in range(3):
        normals[:, k] = float(R[0, k]) * nx + float(R[1, k]) * ny + float(R[2, k]) * nz

    # 5. Lambert shading with a directional light plus ambient (NaN where nothing is hit).
    lx, ly, lz = (float(c) for c in light_cam)
    lambert = -(normals[:, 0] * lx + normals[:, 1] * ly + normals[:, 2] * lz)
    shade = scene.ambient + (1.0 - scene.ambient) * np.clip(lambert, 0.0, 1.0)  # [N]
    channels = [channel * shade for channel in albedo]

    # 6. Sky: vertical gradient from horizon to zenith colour by ray elevation.
    sky_rows = np.flatnonzero(index_flat < 0)
    if sky_rows.size:
        sky = [d_flat[k][sky_rows] for k in range(3)]
        elevation = sky[2] / np.sqrt(sky[0] * sky[0] + sky[1] * sky[1] + sky[2] * sky[2])
        w = np.clip(elevation / 0.6, 0.0, 1.0)
        for k in range(3):
            horizon, zenith = scene.sky_horizon_rgb[k], scene.sky_zenith_rgb[k]
            channels[k][sky_rows] = horizon + w * (zenith - horizon)

    rgb = frame.rgb[v0:v1].reshape(-1, 3)  # view into the frame
    for k, channel in enumerate(channels):
        np.clip(channel, 0.0, 1.0, out=channel)
        rgb[:, k] = _GAMMA_LUT[(channel * _GAMMA_STEPS + 0.5).astype(np.int32)]


def render_sequence(
    scene: Scene,
    camera: PinholeCamera,
    num_frames: int,
    rate_hz: float = 10.0,
    *,
    start_stamp_ns: int = 0,
    poses: Sequence[np.ndarray] | None = None,
) -> Iterator[SyntheticFrame]:
    """Renders frames along a trajectory, lazily, with stamps at a fixed rate.

    Args:
        scene: The scene.
        camera: Intrinsics.
        num_frames: Number of frames (>= 1).
        rate_hz: Frame rate, Hz (> 0); frame ``i`` is stamped
            ``start_stamp_ns + round(i * 1e9 / rate_hz)``.
        start_stamp_ns: Stamp of the first frame, integer nanoseconds.
        poses: ``num_frames`` camera poses; None uses :func:`camera_trajectory` defaults.

    Yields:
        One :class:`SyntheticFrame` per pose, in order.
    """
    if not (isinstance(rate_hz, (int, float)) and math.isfinite(rate_hz) and rate_hz > 0.0):
        raise ValueError(f"rate_hz must be a positive finite number, got {rate_hz!r}")
    if isinstance(start_stamp_ns, bool) or not isinstance(start_stamp_ns, (int, np.integer)):
        raise ValueError(f"start_stamp_ns must be an int (nanoseconds), got {start_stamp_ns!r}")
    if poses is None:
        poses = camera_trajectory(scene, num_frames)
    elif len(poses) != num_frames:
        raise ValueError(f"poses must hold num_frames={num_frames} poses, got {len(poses)}")
    return _frames(scene, camera, list(poses), float(rate_hz), int(start_stamp_ns))


def _frames(
    scene: Scene,
    camera: PinholeCamera,
    poses: list[np.ndarray],
    rate_hz: float,
    start_stamp_ns: int,
) -> Iterator[SyntheticFrame]:
    # A separate generator so that argument errors surface at the call, not at first next().
    for i, pose in enumerate(poses):
        stamp_ns = start_stamp_ns + int(round(i * 1e9 / rate_hz))
        yield render(scene, camera, pose, stamp_ns=stamp_ns)
