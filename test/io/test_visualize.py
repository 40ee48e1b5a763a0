"""Colour images of predictions: colour-mapped disparity and the usual normal colouring."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lotus2_ros.io.visualize import colorize_disparity, colorize_normals


def _turbo_rgb(index: int) -> np.ndarray:
    """OpenCV's Turbo colour of one index, as RGB."""
    return cv2.applyColorMap(np.array([[index]], np.uint8), cv2.COLORMAP_TURBO)[0, 0, ::-1]


# ----------------------------------------------------------------------------- disparity
def test_colorize_disparity_gives_uint8_rgb_of_the_input_size():
    rgb = colorize_disparity(np.random.default_rng(0).random((5, 7)).astype(np.float32))
    assert rgb.shape == (5, 7, 3) and rgb.dtype == np.uint8
    assert rgb.flags["C_CONTIGUOUS"]


def test_colorize_disparity_maps_the_finite_range_onto_the_colour_map_ends():
    ramp = np.linspace(0.2, 0.8, 11, dtype=np.float32)[None, :]  # [1,11], far -> near
    rgb = colorize_disparity(ramp)
    np.testing.assert_array_equal(rgb[0, 0], _turbo_rgb(0))  # min: far, blue end
    np.testing.assert_array_equal(rgb[0, -1], _turbo_rgb(255))  # max: near, red end
    assert not np.array_equal(rgb[0, 0], rgb[0, -1])
    assert rgb[0, 0, 2] > rgb[0, 0, 0]  # far is blue
    assert rgb[0, -1, 0] > rgb[0, -1, 2]  # near is red
    # monotone: colours along the ramp are all different from their neighbours
    assert all(not np.array_equal(rgb[0, i], rgb[0, i + 1]) for i in range(10))


def test_colorize_disparity_draws_nan_and_inf_black_and_ignores_them_for_the_range():
    d = np.array([[0.0, np.nan, 1.0, np.inf, -np.inf]], np.float32)
    rgb = colorize_disparity(d)
    np.testing.assert_array_equal(rgb[0, [1, 3, 4]], 0)
    np.testing.assert_array_equal(rgb[0, 0], _turbo_rgb(0))
    np.testing.assert_array_equal(rgb[0, 2], _turbo_rgb(255))


def test_colorize_disparity_with_a_fixed_range_clamps_outside_values():
    d = np.array([[-5.0, 0.0, 0.5, 1.0, 5.0]], np.float32)
    rgb = colorize_disparity(d, lo=0.0, hi=1.0)
    np.testing.assert_array_equal(rgb[0, 0], rgb[0, 1])
    np.testing.assert_array_equal(rgb[0, 3], rgb[0, 4])
    np.testing.assert_array_equal(rgb[0, 2], _turbo_rgb(127))  # 0.5 * 255 = 127.5, truncated


@pytest.mark.parametrize("value", [0.0, 0.37, 7.0])
def test_colorize_disparity_of_a_constant_image_is_one_colour(value):
    rgb = colorize_disparity(np.full((3, 4), value, np.float32))
    assert (rgb == rgb[0, 0]).all()
    np.testing.assert_array_equal(rgb[0, 0], _turbo_rgb(0))


def test_colorize_disparity_of_an_all_nan_image_is_black():
    assert not colorize_disparity(np.full((2, 3), np.nan, np.float32)).any()


@pytest.mark.parametrize("shape", [(4,), (2, 3, 1)])
def test_colorize_disparity_rejects_a_non_2d_input(shape):
    with pytest.raises(ValueError, match=r"\[H,W\]"):
        colorize_disparity(np.zeros(shape, np.float32))


# ----------------------------------------------------------------------------- normals
@pytest.mark.parametrize(
    "n_optical, expected",
    [
        ((0, 0, -1), (128, 128, 255)),  # a wall facing the camera: light blue
        ((0, -1, 0), (128, 255, 128)),  # a floor seen by a level camera: green
        ((-1, 0, 0), (255, 128, 128)),  # facing left in the image (model +x): red
    ],
)
def test_colorize_normals_of_known_surfaces(n_optical, expected):
    normals = np.broadcast_to(np.array(n_optical, np.float32), (2, 3, 3))
    rgb = colorize_normals(normals)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert (rgb == np.array(expected, np.uint8)).all()


def test_colorize_normals_draws_nan_black():
    normals = np.array([[[0, 0, -1], [np.nan, np.nan, np.nan]]], np.float32)
    rgb = colorize_normals(normals)
    np.testing.assert_array_equal(rgb[0, 0], (128, 128, 255))
    np.testing.assert_array_equal(rgb[0, 1], (0, 0, 0))


@pytest.mark.parametrize("shape", [(4, 3), (2, 2, 2), (1, 2, 2, 3)])
def test_colorize_normals_rejects_a_non_hw3_input(shape):
    with pytest.raises(ValueError, match=r"\[H,W,3\]"):
        colorize_normals(np.zeros(shape, np.float32))


# ----------------------------------------------------------------------------- exactness
def _reference_colorize_disparity(d, lo=None, hi=None):
    """The straightforward form: mask, float index, clip, truncate, Turbo, BGR -> RGB."""
    d = np.asarray(d, np.float32)
    finite = np.isfinite(d)
    if lo is None or hi is None:
        vals = d[finite]
        lo_, hi_ = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
        lo = lo_ if lo is None else lo
        hi = hi_ if hi is None else hi
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    idx = np.clip((np.where(finite, d, lo) - lo) * scale, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(idx, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    rgb[~finite] = 0
    return rgb


def _reference_colorize_normals(n):
    """(n_model + 1) / 2 * 255 rounded half up, clipped; black where any channel is not finite."""
    n = np.asarray(n, np.float32)
    x = np.clip((1.0 - n) / 2.0 * 255.0 + 0.5, 0, 255)
    x[~np.isfinite(n).all(axis=-1)] = 0
    return x.astype(np.uint8)


def _disparities():
    rng = np.random.default_rng(3)
    smooth = rng.random((48, 64), dtype=np.float32)
    with_bad = smooth.copy()
    with_bad[3, 4], with_bad[5, 6], with_bad[7, 8] = np.nan, np.inf, -np.inf
    return {
        "random": smooth,
        "non-finite": with_bad,
        "wide": rng.uniform(-1e6, 1e6, (9, 11)).astype(np.float32),
        "tiny range": (1.0 + rng.integers(0, 3, (5, 7)) * np.finfo(np.float32).eps).astype(np.float32),
        "constant": np.full((4, 5), 0.3, np.float32),
        "all NaN": np.full((2, 3), np.nan, np.float32),
    }


@pytest.mark.parametrize("name", list(_disparities()))
@pytest.mark.parametrize(
    "bounds", [(None, None), (0.2, 0.7), (0.9, None), (None, 0.1), (0.5, 0.5), (np.float64(0.2), np.float64(0.7))]
)
def test_colorize_disparity_equals_the_straightforward_form(name, bounds):
    d = _disparities()[name]
    rgb = colorize_disparity(d, *bounds)
    assert rgb.dtype == np.uint8 and rgb.shape == (*d.shape, 3) and rgb.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(rgb, _reference_colorize_disparity(d, *bounds))


def test_colorize_disparity_at_every_index_is_the_turbo_colour():
    ramp = np.arange(256, dtype=np.float32)[None, :]  # indices 0..255 exactly
    expected = np.stack([_turbo_rgb(i) for i in range(256)])[None]
    np.testing.assert_array_equal(colorize_disparity(ramp), expected)


def test_colorize_normals_equals_the_straightforward_form():
    rng = np.random.default_rng(4)
    n = rng.normal(size=(40, 50, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    # Exact halves (ties of the rounding) and the ends of the range.
    n[0, :6] = [[0, 0, -1], [1, -1, 0], [0.5, -0.5, 0.25], [1 / 255, -1 / 255, 3 / 255], [-1, -1, -1], [1, 1, 1]]
    np.testing.assert_array_equal(colorize_normals(n), _reference_colorize_normals(n))
    # Every float32 in [-1, 1] with a short mantissa, and a dense sweep: all 256 levels and their edges.
    sweep = np.linspace(-1, 1, 300_000, dtype=np.float32).reshape(-1, 1000, 3)
    np.testing.assert_array_equal(colorize_normals(sweep), _reference_colorize_normals(sweep))
    assert set(np.unique(colorize_normals(sweep))) == set(range(256))


def test_colorize_normals_of_non_finite_and_out_of_range_values_equals_the_straightforward_form():
    n = np.array([[[0, 0, -1], [np.nan, 0, 0], [0, np.inf, 0], [0, 0, -np.inf], [3, -3, 0.5], [-1e38, 1e38, 0]]],
                 np.float32)
    with np.errstate(over="ignore"):  # (1 - n) * 255 of ±1e38 overflows to ±Inf, then clipped
        rgb = colorize_normals(n)
        np.testing.assert_array_equal(rgb, _reference_colorize_normals(n))
    np.testing.assert_array_equal(rgb[0, 1:4], 0)
    np.testing.assert_array_equal(rgb[0, 4], (0, 255, 64))


def test_colourisers_draw_into_a_given_image_and_refuse_one_of_another_shape_or_layout():
    d = _disparities()["non-finite"]
    out = np.full((*d.shape, 3), 7, np.uint8)
    assert colorize_disparity(d, 0.2, 0.7, out=out) is out
    np.testing.assert_array_equal(out, _reference_colorize_disparity(d, 0.2, 0.7))
    n = np.random.default_rng(5).normal(size=(6, 9, 3)).astype(np.float32)
    n[2, 3] = np.nan
    out = np.full((6, 9, 3), 7, np.uint8)
    assert colorize_normals(n, out=out) is out
    np.testing.assert_array_equal(out, _reference_colorize_normals(n))
    with pytest.raises(ValueError, match=r"out must be a C-contiguous uint8 \(48, 64, 3\)"):
        colorize_disparity(d, out=np.empty((48, 64, 4), np.uint8))
    with pytest.raises(ValueError, match="out must be a C-contiguous uint8"):
        colorize_normals(n, out=np.empty((6, 18, 3), np.uint8)[:, ::2])
