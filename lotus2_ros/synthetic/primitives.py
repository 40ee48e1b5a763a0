"""Scene primitives (infinite planes, oriented boxes, spheres) and their ray intersections.

All coordinates are in the scene's world frame (z up, metres). Ray casting is vectorised over
rays that share one origin (a camera centre or a LiDAR centre): directions are passed as a
``[3,...]`` float32 or float64 array (components first, so each component is contiguous; ``t``
comes back in the same dtype), and the ray
parameter ``t`` is in units of the direction's length. With unit directions ``t`` is the range
in metres; with camera rays scaled to unit optical z it is the z-depth.

Each primitive provides:

* ``intersect(origin, dirs) -> t``: nearest hit with ``t > T_MIN``, ``inf`` where missed.
* ``surface(px, py, pz) -> (nx, ny, nz, s_m, t_m)``: outward unit normal (float32 arrays,
  or float32 scalars when constant) and 2-D texture coordinates (metres along the surface) at
  hit points given as 1-D coordinate arrays.
* ``corners()``: [8,3] corners of a bounding box, or None when unbounded (used for culling).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lotus2_ros.synthetic.textures import Texture

__all__ = ["T_MIN", "Box", "Plane", "Primitive", "Sphere", "rotation_z"]

# Per-point surface data: outward normal components, then texture coordinates in metres.
_SurfaceFields = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]

#: Smallest accepted ray parameter; avoids self-hits at the origin.
T_MIN = 1e-4


def _vec3(name: str, value: object) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be 3 finite numbers, got {value!r}")
    return (float(arr[0]), float(arr[1]), float(arr[2]))


def rotation_z(yaw_rad: float) -> np.ndarray:
    """[3,3] rotation about +z by ``yaw_rad`` (counter-clockwise seen from above)."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _tangents(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors completing ``normal`` to a right-handed orthonormal basis."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    t1 = np.cross(helper, normal)
    t1 /= np.linalg.norm(t1)
    return t1, np.cross(normal, t1)


@dataclass(frozen=True)
class Plane:
    """An infinite plane through ``point_m`` with unit normal ``normal`` (normalised here)."""

    point_m: tuple[float, float, float]
    normal: tuple[float, float, float]
    texture: Texture = field(default_factory=Texture)

    def __post_init__(self) -> None:
        object.__setattr__(self, "point_m", _vec3("point_m", self.point_m))
        n = np.asarray(_vec3("normal", self.normal))
        length = float(np.linalg.norm(n))
        if length < 1e-12:
            raise ValueError(f"normal must be non-zero, got {self.normal!r}")
        object.__setattr__(self, "normal", tuple(float(c) for c in n / length))

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        n = self.normal
        numerator = float(np.dot(n, np.subtract(self.point_m, origin)))
        denom = n[0] * dirs[0] + n[1] * dirs[1] + n[2] * dirs[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = numerator / denom
        return np.where(t > T_MIN, t, np.inf).astype(dirs.dtype, copy=False)

    def surface(self, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> _SurfaceFields:
        n = self.normal
        t1, t2 = _tangents(np.asarray(n))
        rx, ry, rz = px - self.point_m[0], py - self.point_m[1], pz - self.point_m[2]
        s_m = rx * float(t1[0]) + ry * float(t1[1]) + rz * float(t1[2])
        t_m = rx * float(t2[0]) + ry * float(t2[1]) + rz * float(t2[2])
        # Constant normal: scalars broadcast where the caller stores them.
        return np.float32(n[0]), np.float32(n[1]), np.float32(n[2]), s_m, t_m

    def corners(self) -> None:
        return None


@dataclass(frozen=True)
class Sphere:
    """A sphere of radius ``radius_m`` centred at ``center_m``."""

    center_m: tuple[float, float, float]
    radius_m: float
    texture: Texture = field(default_factory=Texture)

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_m", _vec3("center_m", self.center_m))
        if not (math.isfinite(self.radius_m) and self.radius_m > 0.0):
            raise ValueError(f"radius_m must be a positive finite number, got {self.radius_m!r}")

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        oc = np.subtract(origin, self.center_m)
        c = float(np.dot(oc, oc)) - self.radius_m**2
        half_b = float(oc[0]) * dirs[0] + float(oc[1]) * dirs[1] + float(oc[2]) * dirs[2]
        a = dirs[0] * dirs[0] + dirs[1] * dirs[1] + dirs[2] * dirs[2]
        disc = half_b * half_b - a * c
        with np.errstate(invalid="ignore"):
            root = np.sqrt(disc)
        # The origin is shared by all rays, so inside/outside is one decision: from outside the
        # near root is the hit, from inside the far root.
        t = (-half_b - root) / a if c > 0.0 else (-half_b + root) / a
        with np.errstate(invalid="ignore"):
            hit = t > T_MIN
        return np.where(hit, t, np.inf).astype(dirs.dtype, copy=False)

    def surface(self, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> _SurfaceFields:
        rx, ry, rz = px - self.center_m[0], py - self.center_m[1], pz - self.center_m[2]
        inv_norm = 1.0 / np.sqrt(rx * rx + ry * ry + rz * rz)
        nx, ny, nz = rx * inv_norm, ry * inv_norm, rz * inv_norm
        azimuth = np.arctan2(ny, nx)
        elevation = np.arcsin(np.clip(nz, -1.0, 1.0))
        r = self.radius_m
        return (
            nx.astype(np.float32),
            ny.astype(np.float32),
            nz.astype(np.float32),
            r * azimuth,
            r * elevation,
        )

    def corners(self) -> np.ndarray:
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return np.asarray(self.center_m) + self.radius_m * signs


@dataclass(frozen=True)
class Box:
    """A solid box: centre, half extents along its own axes, and its orientation.

    Attributes:
        center_m: Centre in the world frame, metres.
        half_extents_m: Half sizes along the box's x, y, z axes, metres (> 0).
        texture: Surface texture (each face uses its two in-face box coordinates).
        yaw_rad: Rotation of the box about the world z axis (0: axis-aligned).
        rotation: Optional [3,3] box-to-world rotation (row-major nested tuples) for a
            general orientation; when given it is used instead of ``yaw_rad``.
    """

    center_m: tuple[float, float, float]
    half_extents_m: tuple[float, float, float]
    texture: Texture = field(default_factory=Texture)
    yaw_rad: float = 0.0
    rotation: tuple[tuple[float, float, float], ...] | None = None
    _R: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "center_m", _vec3("center_m", self.center_m))
        half = _vec3("half_extents_m", self.half_extents_m)
        if min(half) <= 0.0:
            raise ValueError(f"half_extents_m must all be > 0, got {self.half_extents_m!r}")
        object.__setattr__(self, "half_extents_m", half)
        if self.rotation is None:
            R = rotation_z(float(self.yaw_rad))
        else:
            R = np.asarray(self.rotation, dtype=np.float64)
            if (
                R.shape != (3, 3)
                or not np.allclose(R @ R.T, np.eye(3), atol=1e-6)
                or (np.linalg.det(R) < 0.0)
            ):
                raise ValueError(f"rotation must be a proper 3x3 rotation, got {self.rotation!r}")
            object.__setattr__(self, "rotation", tuple(tuple(float(c) for c in r) for r in R))
        object.__setattr__(self, "_R", R)

    @property
    def R_world_box(self) -> np.ndarray:
        """[3,3] box-to-world rotation."""
        return self._R.copy()

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        R = self._R
        o_local = R.T @ np.subtract(origin, self.center_m)  # [3]
        axis_aligned = bool(np.array_equal(R, np.eye(3)))
        t_near = t_far = None
        with np.errstate(divide="ignore", invalid="ignore"):
            for k in range(3):
                if axis_aligned:
                    d = dirs[k]
                else:  # local direction component k: column k of R dotted with the direction
                    d = (
                        float(R[0, k]) * dirs[0]
                        + float(R[1, k]) * dirs[1]
                        + float(R[2, k]) * dirs[2]
                    )
                # Slab test. A zero component gives inv = +-inf and then (-inf, +inf) inside the
                # slab and an empty interval outside it, as it should.
                inv = 1.0 / d
                lo = float(-self.half_extents_m[k] - o_local[k]) * inv
                hi = float(self.half_extents_m[k] - o_local[k]) * inv
                if t_near is None:
                    t_near, t_far = np.minimum(lo, hi), np.maximum(lo, hi)
                else:
                    np.maximum(t_near, np.minimum(lo, hi), out=t_near)
                    np.minimum(t_far, np.maximum(lo, hi), out=t_far)
        inside = bool(np.all(np.abs(o_local) < self.half_extents_m))
        t = t_far if inside else t_near
        hit = (t_near <= t_far) & (t > T_MIN)
        return np.where(hit, t, np.inf).astype(dirs.dtype, copy=False)

    def surface(self, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> _SurfaceFields:
        R = self._R
        rx, ry, rz = px - self.center_m[0], py - self.center_m[1], pz - self.center_m[2]
        # Box coordinates: l_k = column k of R dotted with the offset from the centre.
        local = [rx * float(R[0, k]) + ry * float(R[1, k]) + rz * float(R[2, k]) for k in range(3)]
        ratio = [np.abs(local[k]) / self.half_extents_m[k] for k in range(3)]
        # The face a point lies on is the axis where it is closest to the half extent.
        on_x = (ratio[0] >= ratio[1]) & (ratio[0] >= ratio[2])
        on_y = ~on_x & (ratio[1] >= ratio[2])
        on_z = ~on_x & ~on_y
        signs = [np.where(on, np.sign(c), 0.0) for on, c in zip((on_x, on_y, on_z), local)]
        normals = [
            signs[0] * float(R[j, 0]) + signs[1] * float(R[j, 1]) + signs[2] * float(R[j, 2])
            for j in range(3)
        ]
        # In-face coordinates: the two other box axes (cyclic), offset per face so that
        # opposite and neighbouring faces do not look identical.
        s_m = np.where(on_x, local[1], np.where(on_y, local[2], local[0]))
        t_m = np.where(on_x, local[2], np.where(on_y, local[0], local[1]))
        face = on_y * 1.0 + on_z * 2.0 + (signs[0] + signs[1] + signs[2] > 0.0) * 3.0
        s_m = s_m + 3.7 * face
        return (
            normals[0].astype(np.float32),
            normals[1].astype(np.float32),
            normals[2].astype(np.float32),
            s_m,
            t_m,
        )

    def corners(self) -> np.ndarray:
        signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)
        return np.asarray(self.center_m) + (signs * np.asarray(self.half_extents_m)) @ self._R.T


#: Any scene primitive.
Primitive = Plane | Sphere | Box
