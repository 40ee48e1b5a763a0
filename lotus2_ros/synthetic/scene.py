"""The :class:`Scene` container and vectorised nearest-hit ray casting over its primitives.

World frame: z up, metres (REP-103 style: x forward along the scene's main path, y left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lotus2_ros.synthetic.primitives import Primitive
from lotus2_ros.synthetic.textures import texture_weight_and_gain

__all__ = ["Scene", "cast_rays", "surface_fields", "surface_properties"]


@dataclass(frozen=True)
class Scene:
    """A static procedural scene.

    Attributes:
        name: Human-readable kind, e.g. ``"indoor"`` or ``"street"``.
        seed: Seed it was generated from.
        primitives: The surfaces; primitive ``i`` is reported as index ``i`` in renders.
        light_direction_world: Direction the light travels (from the light into the scene),
            world frame, normalised here. ``(0, 0, -1)`` is light from straight above.
        ambient: Fraction of light that reaches every surface regardless of orientation, [0, 1].
        sky_zenith_rgb: Sky colour straight up, linear RGB in [0, 1] (rays that hit nothing).
        sky_horizon_rgb: Sky colour at and below the horizon, linear RGB in [0, 1].
        max_depth_m: Camera hits beyond this z-depth count as sky (NaN depth), metres.
        path_start_m: Start of the nominal camera path (world, metres), clear of objects.
        path_yaw_rad: Heading of the path about world z (0: along +x).
        path_length_m: Length of the free path from ``path_start_m``, metres.
    """

    name: str
    seed: int
    primitives: tuple[Primitive, ...]
    light_direction_world: tuple[float, float, float] = (0.3, 0.2, -1.0)
    ambient: float = 0.35
    sky_zenith_rgb: tuple[float, float, float] = (0.35, 0.55, 0.9)
    sky_horizon_rgb: tuple[float, float, float] = (0.8, 0.85, 0.9)
    max_depth_m: float = math.inf
    path_start_m: tuple[float, float, float] = (0.0, 0.0, 1.5)
    path_yaw_rad: float = 0.0
    path_length_m: float = 5.0

    def __post_init__(self) -> None:
        if len(self.primitives) == 0:
            raise ValueError("primitives must hold at least one primitive, got none")
        if len(self.primitives) > np.iinfo(np.int16).max:
            raise ValueError(f"primitives holds too many items ({len(self.primitives)})")
        light = np.asarray(self.light_direction_world, dtype=np.float64)
        if light.shape != (3,) or not np.all(np.isfinite(light)) or np.linalg.norm(light) == 0:
            raise ValueError(
                f"light_direction_world must be a non-zero 3-vector, got "
                f"{self.light_direction_world!r}"
            )
        object.__setattr__(
            self, "light_direction_world", tuple(float(c) for c in light / np.linalg.norm(light))
        )
        if not 0.0 <= self.ambient <= 1.0:
            raise ValueError(f"ambient must be in [0, 1], got {self.ambient!r}")
        if not self.max_depth_m > 0.0:
            raise ValueError(f"max_depth_m must be > 0, got {self.max_depth_m!r}")
        if not (math.isfinite(self.path_length_m) and self.path_length_m >= 0.0):
            raise ValueError(f"path_length_m must be finite and >= 0, got {self.path_length_m!r}")


def cast_rays(
    scene: Scene,
    origin_world: np.ndarray,
    dirs_world: np.ndarray,
    *,
    max_t: float = math.inf,
    regions: list[tuple[slice, ...] | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Finds the nearest primitive along each ray from a common origin.

    Args:
        scene: The scene.
        origin_world: [3] ray origin, world frame, metres.
        dirs_world: [3,...] ray directions, world frame (components first). ``t`` is in
            units of their length. float64 directions are cast in float64 (accurate grazing
            hits), anything else in float32 (fast).
        max_t: Hits with ``t > max_t`` count as misses.
        regions: Optional per-primitive index into the trailing ray dimensions (a tuple of
            slices) outside which that primitive is known to be missed; None means all rays.
            Must be conservative; used by the renderer to skip pixels outside a primitive's
            projected bounding box.

    Returns:
        ``(t, index)``: [...] ray parameter of the nearest hit (inf where missed; float32 or
        float64 like the directions) and [...] int16 index into ``scene.primitives`` (-1
        where missed).
    """
    origin = np.asarray(origin_world, dtype=np.float64).reshape(3)
    dirs = np.asarray(dirs_world)
    if dirs.dtype != np.float64:
        dirs = dirs.astype(np.float32, copy=False)
    if dirs.ndim < 2 or dirs.shape[0] != 3:
        raise ValueError(f"dirs_world must have shape (3, ...), got {dirs.shape}")
    if regions is not None and len(regions) != len(scene.primitives):
        raise ValueError(
            f"regions must hold one entry per primitive ({len(scene.primitives)}), "
            f"got {len(regions)}"
        )
    best_t = np.full(dirs.shape[1:], np.inf, dtype=dirs.dtype)
    best_index = np.full(dirs.shape[1:], -1, dtype=np.int16)
    closer = np.empty(dirs.shape[1:], dtype=bool)
    for i, primitive in enumerate(scene.primitives):
        region = None if regions is None else regions[i]
        if region is None:
            t = primitive.intersect(origin, dirs)
            np.less(t, best_t, out=closer)
            np.copyto(best_t, t, where=closer)
            np.copyto(best_index, np.int16(i), where=closer)
        else:
            sub_dirs = dirs[(slice(None), *region)]
            if sub_dirs.size == 0:
                continue
            t = primitive.intersect(origin, sub_dirs)
            sub_best_t = best_t[region]
            sub_closer = t < sub_best_t
            np.copyto(sub_best_t, t, where=sub_closer)
            np.copyto(best_index[region], np.int16(i), where=sub_closer)
    if math.isfinite(max_t):
        too_far = best_t > max_t
        best_t[too_far] = np.inf
        best_index[too_far] = -1
    return best_t, best_index


def surface_fields(
    scene: Scene,
    px: np.ndarray,
    py: np.ndarray,
    pz: np.ndarray,
    index: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Outward normals and albedo at hit points, as flat per-component arrays.

    Component-wise 1-D arrays keep gathers and scatters cheap at image sizes.

    Args:
        scene: The scene.
        px: [N] hit point x, world frame, metres (ignored where ``index`` is -1).
        py: [N] hit point y.
        pz: [N] hit point z.
        index: [N] primitive index per point, -1 for none.

    Returns:
        ``(nx, ny, nz, red, green, blue)``: [N] float32 outward unit normal components (world
        frame) and albedo channels (linear RGB in [0, 1]); NaN where ``index`` is -1.
    """
    n = index.shape[0]
    fields = [np.full(n, np.nan, dtype=np.float32) for _ in range(6)]
    for i, primitive in enumerate(scene.primitives):
        rows = np.flatnonzero(index == i)
        if rows.size == 0:
            continue
        nx, ny, nz, s_m, t_m = primitive.surface(px[rows], py[rows], pz[rows])
        weight, gain = texture_weight_and_gain(primitive.texture, s_m, t_m)
        fields[0][rows] = nx
        fields[1][rows] = ny
        fields[2][rows] = nz
        for k in range(3):
            a = primitive.texture.color_a[k]
            b = primitive.texture.color_b[k]
            albedo = (a + (b - a) * weight) * gain
            fields[3 + k][rows] = np.clip(albedo, 0.0, 1.0, out=albedo)
    return fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]


def surface_properties(
    scene: Scene, points_world: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Outward normals and albedo at hit points.

    Args:
        scene: The scene.
        points_world: [M,3] hit points, world frame, metres.
        index: [M] primitive index of each point (-1: none, gives NaN).

    Returns:
        ``(normals_world, albedo)``: [M,3] float32 outward unit normals (world frame; not
        oriented towards any viewer) and [M,3] float32 albedo, linear RGB in [0, 1].
    """
    points = np.asarray(points_world, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points_world must have shape (M, 3), got {points.shape}")
    index = np.asarray(index)
    if index.shape != points.shape[:1]:
        raise ValueError(f"index must have shape ({points.shape[0]},), got {index.shape}")
    nx, ny, nz, red, green, blue = surface_fields(
        scene, points[:, 0], points[:, 1], points[:, 2], index
    )
    return np.stack([nx, ny, nz], axis=1), np.stack([red, green, blue], axis=1)
