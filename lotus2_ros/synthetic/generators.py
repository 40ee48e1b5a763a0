"""Seeded procedural scene generators: an indoor room and an outdoor street.

Both use the world frame of :mod:`lotus2_ros.synthetic.scene` (z up, metres, floor/ground at
z = 0) and leave a free corridor along their camera path (``Scene.path_*``) so that
:func:`~lotus2_ros.synthetic.poses.camera_trajectory` never enters an object. The same seed
always gives the same scene; different seeds change layout, sizes and textures.
"""

from __future__ import annotations

import math

import numpy as np

from lotus2_ros.synthetic.primitives import Box, Plane, Primitive, Sphere
from lotus2_ros.synthetic.scene import Scene
from lotus2_ros.synthetic.textures import Texture, random_texture

__all__ = ["SCENE_KINDS", "make_indoor_scene", "make_scene", "make_street_scene"]

SCENE_KINDS = ("indoor", "street")

# Half width of the object-free corridor around the camera path, metres.
_CORRIDOR_HALF_WIDTH_M = 0.9


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def make_indoor_scene(seed: int) -> Scene:
    """A closed room with a floor, a ceiling, four walls, a few boxes and spheres.

    The room spans x in [0, L], y in [-W/2, W/2], z in [0, H] with L in [7, 10] m, W in [4, 6] m,
    H in [2.5, 3.2] m. The camera path runs along +x at y = 0 from x = 0.8 m to 1.5 m before
    the far wall, at 1.2–1.6 m height; objects stay outside |y| < 0.9 m. There is no sky.

    Args:
        seed: Non-negative int.
    """
    rng = np.random.default_rng(_check_seed(seed))
    length = rng.uniform(7.0, 10.0)
    width = rng.uniform(4.0, 6.0)
    height = rng.uniform(2.5, 3.2)
    half_w = width / 2.0

    floor_tex = random_texture(rng, patterns=("checker", "stripes"), period_range_m=(0.4, 1.2))
    ceiling_tex = random_texture(rng, patterns=("noise",), brightness_range=(0.7, 0.9))
    primitives: list[Primitive] = [
        Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), floor_tex),
        Plane((0.0, 0.0, height), (0.0, 0.0, -1.0), ceiling_tex),
    ]
    for point, normal in (
        ((0.0, 0.0, 0.0), (1.0, 0.0, 0.0)),
        ((length, 0.0, 0.0), (-1.0, 0.0, 0.0)),
        ((0.0, half_w, 0.0), (0.0, -1.0, 0.0)),
        ((0.0, -half_w, 0.0), (0.0, 1.0, 0.0)),
    ):
        tex = random_texture(rng, period_range_m=(0.5, 2.0), brightness_range=(0.45, 0.9))
        primitives.append(Plane(point, normal, tex))

    # Furniture-like boxes on the floor, alternating sides, clear of the corridor and walls.
    num_boxes = int(rng.integers(3, 6))
    for i in range(num_boxes):
        side = 1.0 if i % 2 == 0 else -1.0
        hx, hy = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5)
        hz = rng.uniform(0.2, 0.9)
        reach = math.hypot(hx, hy)  # bounding radius in the floor plane, covers any yaw
        y_lo, y_hi = _CORRIDOR_HALF_WIDTH_M + reach, half_w - reach - 0.05
        y = side * rng.uniform(y_lo, max(y_lo, y_hi))
        x = rng.uniform(1.0 + reach, length - reach - 0.1)
        primitives.append(
            Box((x, y, hz), (hx, hy, hz), random_texture(rng), yaw_rad=rng.uniform(-0.6, 0.6))
        )

    num_spheres = int(rng.integers(2, 4))
    for i in range(num_spheres):
        side = -1.0 if i % 2 == 0 else 1.0
        r = rng.uniform(0.15, 0.45)
        y = side * rng.uniform(
            _CORRIDOR_HALF_WIDTH_M + r, max(_CORRIDOR_HALF_WIDTH_M + r, half_w - r)
        )
        x = rng.uniform(1.0 + r, length - r - 0.1)
        z = r if rng.random() < 0.6 else rng.uniform(r + 0.5, height - r - 0.2)  # floor or air
        primitives.append(Sphere((x, y, z), r, random_texture(rng, period_range_m=(0.1, 0.4))))

    light = (rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4), -1.0)
    return Scene(
        name="indoor",
        seed=int(seed),
        primitives=tuple(primitives),
        light_direction_world=light,
        ambient=float(rng.uniform(0.3, 0.45)),
        path_start_m=(0.8, 0.0, float(rng.uniform(1.2, 1.6))),
        path_yaw_rad=0.0,
        path_length_m=float(length - 0.8 - 1.5),
    )


def make_street_scene(seed: int) -> Scene:
    """A street: ground plane, rows of building façades on both sides, parked cars, poles and
    ball-shaped shrubs, and open sky.

    The road runs along +x; its half width is 4–6 m, pavements 2 m wide flank it and the
    façades (boxes 8–20 m deep, 6–25 m tall) start behind them, from x = -20 m to 140 m. The
    camera path runs along +x at y = 0, 1.4–1.7 m high, for 100 m. Sky (rays that hit nothing,
    or ground beyond ``max_depth_m`` = 300 m) has NaN depth.

    Args:
        seed: Non-negative int.
    """
    rng = np.random.default_rng(_check_seed(seed))
    road_half = rng.uniform(4.0, 6.0)
    pavement = 2.0
    asphalt = Texture(
        "noise",
        (0.32, 0.32, 0.33),
        (0.22, 0.22, 0.24),
        period_m=float(rng.uniform(0.5, 1.5)),
        grain=0.25,
        seed=int(rng.integers(0, 2**31 - 1)),
    )
    primitives: list[Primitive] = [Plane((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), asphalt)]
    curb_tex = random_texture(rng, patterns=("checker",), period_range_m=(0.6, 1.2))
    for side in (1.0, -1.0):
        primitives.append(
            Box(
                (60.0, side * (road_half + pavement / 2.0), 0.075),
                (80.0, pavement / 2.0, 0.075),
                curb_tex,
            )
        )

    # Façades: consecutive blocks along each side with random widths, depths and heights.
    for side in (1.0, -1.0):
        x = -20.0
        while x < 140.0:
            block = rng.uniform(12.0, 30.0)
            depth = rng.uniform(8.0, 20.0)
            tall = rng.uniform(6.0, 25.0)
            setback = road_half + pavement + rng.uniform(0.0, 1.5)
            tex = random_texture(
                rng, patterns=("checker", "stripes", "noise"), period_range_m=(1.0, 4.0)
            )
            primitives.append(
                Box(
                    (x + block / 2.0, side * (setback + depth / 2.0), tall / 2.0),
                    (block / 2.0, depth / 2.0, tall / 2.0),
                    tex,
                )
            )
            x += block

    # Parked cars along the kerbs (never in the corridor around y = 0).
    for _ in range(int(rng.integers(3, 7))):
        side = 1.0 if rng.random() < 0.5 else -1.0
        length, car_w, car_h = rng.uniform(3.8, 4.8), rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.7)
        y = side * (road_half - car_w / 2.0 - rng.uniform(0.2, 0.5))
        primitives.append(
            Box(
                (rng.uniform(5.0, 110.0), y, car_h / 2.0),
                (length / 2.0, car_w / 2.0, car_h / 2.0),
                random_texture(rng, patterns=("noise",), brightness_range=(0.2, 0.9)),
                yaw_rad=rng.uniform(-0.08, 0.08),
            )
        )

    # Poles with spherical shrubs on the pavements.
    for _ in range(int(rng.integers(2, 5))):
        side = 1.0 if rng.random() < 0.5 else -1.0
        x, y = rng.uniform(5.0, 110.0), side * (road_half + pavement * 0.5)
        pole_h = rng.uniform(2.5, 5.0)
        primitives.append(
            Box(
                (x, y, pole_h / 2.0),
                (0.08, 0.08, pole_h / 2.0),
                Texture("stripes", (0.6, 0.6, 0.6), (0.3, 0.3, 0.3), 0.5),
            )
        )
        r = rng.uniform(0.5, 0.9)
        primitives.append(
            Sphere(
                (x + 1.5, y, r),
                r,
                random_texture(rng, patterns=("noise",), period_range_m=(0.1, 0.3)),
            )
        )

    azimuth = rng.uniform(0.0, 2.0 * math.pi)
    elevation = rng.uniform(math.radians(25.0), math.radians(60.0))
    light = (
        -math.cos(elevation) * math.cos(azimuth),
        -math.cos(elevation) * math.sin(azimuth),
        -math.sin(elevation),
    )
    return Scene(
        name="street",
        seed=int(seed),
        primitives=tuple(primitives),
        light_direction_world=light,
        ambient=float(rng.uniform(0.3, 0.45)),
        max_depth_m=300.0,
        path_start_m=(0.0, 0.0, float(rng.uniform(1.4, 1.7))),
        path_yaw_rad=0.0,
        path_length_m=100.0,
    )


def make_scene(kind: str, seed: int) -> Scene:
    """Builds a scene by kind name (one of ``SCENE_KINDS``)."""
    if kind == "indoor":
        return make_indoor_scene(seed)
    if kind == "street":
        return make_street_scene(seed)
    raise ValueError(f"kind must be one of {SCENE_KINDS}, got {kind!r}")
