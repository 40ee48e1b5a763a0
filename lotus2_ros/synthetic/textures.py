"""Procedural surface textures evaluated on 2-D surface coordinates in metres.

Every primitive maps a hit point to surface coordinates ``(s, t)`` in metres (see
:mod:`lotus2_ros.synthetic.primitives`); a :class:`Texture` turns those into an albedo. Textures
are pure functions of their parameters, so a scene built from a seed always looks the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "TEXTURE_PATTERNS",
    "Texture",
    "evaluate_texture",
    "random_texture",
    "texture_weight_and_gain",
    "value_noise",
]

TEXTURE_PATTERNS = ("solid", "checker", "stripes", "noise")


def _check_color(name: str, color: tuple[float, float, float]) -> tuple[float, float, float]:
    values = tuple(float(c) for c in color)
    if len(values) != 3 or not all(0.0 <= c <= 1.0 for c in values):
        raise ValueError(f"{name} must be 3 values in [0, 1] (linear RGB), got {color!r}")
    return values  # type: ignore[return-value]


@dataclass(frozen=True)
class Texture:
    """A procedural albedo pattern.

    Attributes:
        pattern: One of ``TEXTURE_PATTERNS``: ``solid`` (color_a), ``checker`` (squares of
            ``period_m / 2``), ``stripes`` (along s, period ``period_m``) or ``noise``
            (smooth value noise blending color_a and color_b, feature size ``period_m``).
        color_a: First albedo, linear RGB in [0, 1].
        color_b: Second albedo, linear RGB in [0, 1].
        period_m: Pattern period, metres (> 0).
        grain: Strength of fine multiplicative noise on top of the pattern, in [0, 1]; gives
            every surface some texture to match on.
        seed: Seed of the noise lattice.
    """

    pattern: str = "solid"
    color_a: tuple[float, float, float] = (0.7, 0.7, 0.7)
    color_b: tuple[float, float, float] = (0.3, 0.3, 0.3)
    period_m: float = 1.0
    grain: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pattern not in TEXTURE_PATTERNS:
            raise ValueError(f"pattern must be one of {TEXTURE_PATTERNS}, got {self.pattern!r}")
        object.__setattr__(self, "color_a", _check_color("color_a", self.color_a))
        object.__setattr__(self, "color_b", _check_color("color_b", self.color_b))
        if not (math.isfinite(self.period_m) and self.period_m > 0.0):
            raise ValueError(f"period_m must be a positive finite number, got {self.period_m!r}")
        if not 0.0 <= self.grain <= 1.0:
            raise ValueError(f"grain must be in [0, 1], got {self.grain!r}")


_HASH_X = np.uint32(0x8DA6B343)
_HASH_Y = np.uint32(0xD8163841)


def _finalize_hash(h: np.ndarray) -> np.ndarray:
    """Mixes uint32 lattice keys (in place) into pseudo-random floats in [0, 1)."""
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x2C1B3C6D)
    h ^= h >> np.uint32(12)
    h *= np.uint32(0x297A2D39)
    h ^= h >> np.uint32(15)
    return h.astype(np.float32) * np.float32(1.0 / 4294967296.0)


def value_noise(s: np.ndarray, t: np.ndarray, seed: int) -> np.ndarray:
    """Smooth 2-D value noise in [0, 1] with unit feature size.

    Random values on the integer lattice (a hash of the lattice point and the seed, wrapping
    uint32 arithmetic) blended with smoothstep weights.

    Args:
        s: First coordinate, any shape (lattice units).
        t: Second coordinate, same shape.
        seed: Lattice seed.

    Returns:
        float32 array of the same shape.
    """
    s = np.asarray(s, dtype=np.float32)
    t = np.asarray(t, dtype=np.float32)
    fs = np.floor(s)
    ft = np.floor(t)
    with np.errstate(invalid="ignore"):  # far-away coordinates may overflow: texture only
        ix = fs.astype(np.int32).view(np.uint32)
        iy = ft.astype(np.int32).view(np.uint32)
    ws = s - fs
    wt = t - ft
    ws = ws * ws * (3.0 - 2.0 * ws)  # smoothstep: continuous first derivative
    wt = wt * wt * (3.0 - 2.0 * wt)
    # Keys of the four corners: (ix + 1) * A = ix * A + A in wrapping arithmetic.
    kx0 = ix * _HASH_X
    kx1 = kx0 + _HASH_X
    ky0 = iy * _HASH_Y
    ky0 ^= np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF)
    ky1 = (iy + np.uint32(1)) * _HASH_Y
    ky1 ^= np.uint32((seed * 0x9E3779B1) & 0xFFFFFFFF)
    v00 = _finalize_hash(kx0 ^ ky0)
    v10 = _finalize_hash(kx1 ^ ky0)
    v01 = _finalize_hash(kx0 ^ ky1)
    v11 = _finalize_hash(kx1 ^ ky1)
    bottom = v00 + ws * (v10 - v00)
    top = v01 + ws * (v11 - v01)
    return bottom + wt * (top - bottom)


def texture_weight_and_gain(
    texture: Texture, s_m: np.ndarray, t_m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The two scalar fields a texture is made of.

    ``albedo = (color_a + weight * (color_b - color_a)) * gain``, clipped to [0, 1].

    Args:
        texture: The pattern.
        s_m: [N] first surface coordinate, metres.
        t_m: [N] second surface coordinate, metres.

    Returns:
        ``(weight, gain)``: [N] float32 blend weight in [0, 1] and [N] float32 grain gain.
    """
    inv_period = np.float32(1.0 / texture.period_m)
    s = np.asarray(s_m, dtype=np.float32) * inv_period
    t = np.asarray(t_m, dtype=np.float32) * inv_period
    if texture.pattern == "solid":
        weight = np.zeros_like(s)
    elif texture.pattern == "checker":
        weight = ((np.floor(2.0 * s) + np.floor(2.0 * t)) % 2.0).astype(np.float32)
    elif texture.pattern == "stripes":
        weight = (np.floor(2.0 * s) % 2.0).astype(np.float32)
    else:  # noise
        weight = value_noise(s, t, texture.seed)
    if texture.grain > 0.0:
        # Fine grain at 1/8 of the period, independent of the pattern's own lattice.
        fine = value_noise(8.0 * s + 17.0, 8.0 * t - 31.0, texture.seed + 1)
        gain = 1.0 + np.float32(texture.grain) * (2.0 * fine - 1.0)
    else:
        gain = np.ones_like(s)
    return weight, gain


def evaluate_texture(texture: Texture, s_m: np.ndarray, t_m: np.ndarray) -> np.ndarray:
    """Albedo of a texture at surface coordinates.

    Args:
        texture: The pattern.
        s_m: [N] first surface coordinate, metres.
        t_m: [N] second surface coordinate, metres.

    Returns:
        [N,3] float32 albedo, linear RGB in [0, 1].
    """
    weight, gain = texture_weight_and_gain(texture, s_m, t_m)
    a = np.asarray(texture.color_a, dtype=np.float32)
    b = np.asarray(texture.color_b, dtype=np.float32)
    albedo = (a + weight[:, None] * (b - a)) * gain[:, None]  # [N,3]
    return np.clip(albedo, 0.0, 1.0)


def random_texture(
    rng: np.random.Generator,
    *,
    patterns: tuple[str, ...] = TEXTURE_PATTERNS[1:],
    period_range_m: tuple[float, float] = (0.3, 2.0),
    brightness_range: tuple[float, float] = (0.25, 0.9),
) -> Texture:
    """Draws a random texture (pattern, two colours, period, grain, seed) from ``rng``.

    Args:
        rng: Source of randomness; consumed in a fixed order so results follow the seed.
        patterns: Patterns to choose from.
        period_range_m: Range of the period, metres.
        brightness_range: Range of the mean brightness of colour a.

    Returns:
        The texture.
    """
    pattern = patterns[int(rng.integers(len(patterns)))]
    brightness = rng.uniform(*brightness_range)
    hue = rng.uniform(0.0, 1.0, size=3)
    color_a = np.clip(brightness * (0.6 + 0.8 * hue / hue.mean()), 0.0, 1.0)
    contrast = rng.uniform(0.35, 0.75)
    color_b = np.clip(color_a * contrast + rng.uniform(0.0, 0.15, size=3), 0.0, 1.0)
    return Texture(
        pattern=pattern,
        color_a=tuple(float(c) for c in color_a),  # type: ignore[arg-type]
        color_b=tuple(float(c) for c in color_b),  # type: ignore[arg-type]
        period_m=float(rng.uniform(*period_range_m)),
        grain=float(rng.uniform(0.08, 0.25)),
        seed=int(rng.integers(0, 2**31 - 1)),
    )
