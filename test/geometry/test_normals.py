"""Normal conventions: the model's DSINE/Lotus frame (x left, y up, z toward the viewer) ⇄ ROS optical."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.geometry.normals import MIN_NORM, model_to_optical, normalize, optical_to_model, planar_model_to_optical


def _decode(n_model):
    """What the model's decoder outputs for a model-convention normal: u = (n + 1) / 2."""
    return (np.asarray(n_model, dtype=np.float32) + 1.0) / 2.0


@pytest.mark.parametrize(
    "n_model, n_optical",
    [
        ((0, 0, 1), (0, 0, -1)),  # toward the viewer: a wall facing the camera
        ((0, 1, 0), (0, -1, 0)),  # up: a floor seen by a level camera
        ((1, 0, 0), (-1, 0, 0)),  # left in the image
        ((0, 0, -1), (0, 0, 1)),  # away from the viewer
    ],
)
def test_model_to_optical_on_known_directions(n_model, n_optical):
    out = model_to_optical(_decode(n_model))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, n_optical, atol=1e-7)


def test_toward_the_viewer_decodes_to_half_half_one():
    np.testing.assert_array_equal(_decode((0, 0, 1)), [0.5, 0.5, 1.0])
    np.testing.assert_array_equal(model_to_optical([0.5, 0.5, 1.0]), [0.0, 0.0, -1.0])


def test_a_diagonal_normal_flips_every_axis():
    d = np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)
    np.testing.assert_allclose(model_to_optical(_decode(d)), -d, atol=1e-6)


def test_optical_to_model_inverts_model_to_optical_on_unit_vectors():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(4, 5, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)  # [4,5,3] unit, optical frame
    u = optical_to_model(n)
    assert u.shape == (4, 5, 3) and u.dtype == np.float32
    assert u.min() >= 0.0 and u.max() <= 1.0
    np.testing.assert_allclose(model_to_optical(u), n, atol=1e-6)
    np.testing.assert_allclose(optical_to_model(model_to_optical(u)), u, atol=1e-6)


def test_model_to_optical_returns_unit_vectors_for_any_decoded_direction():
    u = np.random.default_rng(1).random((2, 6, 7, 3)).astype(np.float32)  # [B,H,W,3] in [0,1]
    out = model_to_optical(u)
    assert out.shape == u.shape
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-6)
    # the direction is kept: parallel to -(2u - 1)
    expected = 1.0 - 2.0 * u
    expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_a_decoded_zero_vector_has_no_direction_and_becomes_nan():
    out = model_to_optical(np.array([[0.5, 0.5, 0.5], [0.5, 0.5, 1.0]], np.float32))
    assert np.isnan(out[0]).all()
    np.testing.assert_allclose(out[1], [0, 0, -1])


def test_non_finite_and_tiny_vectors_normalise_to_nan():
    v = np.array([[np.nan, 0, 1], [np.inf, 0, 0], [MIN_NORM / 10, 0, 0], [MIN_NORM * 10, 0, 0]], np.float32)
    out = normalize(v)
    assert np.isnan(out[:3]).all()
    np.testing.assert_allclose(out[3], [1, 0, 0], atol=1e-6)


def test_nan_stays_nan_in_optical_to_model():
    assert np.isnan(optical_to_model([np.nan, np.nan, np.nan])).all()


@pytest.mark.parametrize("func", [model_to_optical, optical_to_model, normalize])
@pytest.mark.parametrize("shape", [(3, 2), (4,), (2, 2, 4)])
def test_a_last_axis_other_than_3_is_rejected(func, shape):
    with pytest.raises(ValueError, match=r"\[\.\.\., 3\]"):
        func(np.zeros(shape, np.float32))


# ----------------------------------------------------------------------------- exactness
def _reference_normalize(v):
    """The textbook form: float32 x*x + y*y + z*z, sqrt, divide; NaN where too short or not finite."""
    v = np.asarray(v, np.float32)
    norm = np.sqrt(v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1] + v[..., 2] * v[..., 2])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = v / norm[..., None]
    out[~((norm >= MIN_NORM) & (norm < np.inf))] = np.nan
    return out


def _awkward_decoded(shape, seed=0):
    """Decoded-normal values in [0, 1] plus every special case: zero-length, tiny, NaN, Inf."""
    u = np.random.default_rng(seed).random(shape, dtype=np.float32)
    flat = u.reshape(-1, 3)
    flat[0] = 0.5  # zero vector
    flat[1] = (0.5, 0.5, 0.5 + 1e-7)  # shorter than MIN_NORM
    flat[2] = (np.nan, 0.2, 0.3)
    flat[3] = (np.inf, 0.5, 0.5)
    flat[4] = (0.5, 0.5, 1.0)  # toward the viewer
    flat[5] = (0.5, 0.5, 0.5 + 4e-6)  # just long enough
    return u


def _assert_bitwise_equal(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert np.array_equal(actual.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("shape", [(7, 3), (5, 9, 3), (2, 4, 6, 3)])
def test_normalize_is_bit_identical_to_the_textbook_form(shape):
    v = 1.0 - 2.0 * _awkward_decoded(shape)
    _assert_bitwise_equal(normalize(v), _reference_normalize(v))
    single = np.array([0.3, -0.4, 1.2], np.float32)  # one vector: 0-d components
    _assert_bitwise_equal(normalize(single), _reference_normalize(single))


def test_normalize_of_a_strided_view_is_c_contiguous_and_exact():
    v = 1.0 - 2.0 * np.moveaxis(_awkward_decoded((3, 6, 8)).reshape(3, 6, 8), 0, -1)  # [6,8,3] planar memory
    out = normalize(v)
    assert out.flags["C_CONTIGUOUS"]
    _assert_bitwise_equal(out, _reference_normalize(v))


@pytest.mark.parametrize("shape", [(3, 6, 8), (2, 3, 5, 7), (1, 3, 48, 64)])
def test_planar_model_to_optical_is_bit_identical_to_model_to_optical_on_the_hwc_view(shape):
    planes = np.moveaxis(_awkward_decoded((*shape[:-3], *shape[-2:], 3)), -1, -3).copy()  # [...,3,H,W]
    out = planar_model_to_optical(planes)
    assert out.shape == (*shape[:-3], *shape[-2:], 3) and out.flags["C_CONTIGUOUS"]
    expected = model_to_optical(np.moveaxis(planes, -3, -1))
    _assert_bitwise_equal(out, expected)
    _assert_bitwise_equal(out, _reference_normalize(1.0 - 2.0 * np.moveaxis(planes, -3, -1)))
    flat = out.reshape(-1, 3)
    assert np.isnan(flat[:4]).all() and not np.isnan(flat[4:6]).any()
    np.testing.assert_array_equal(flat[4], [0.0, 0.0, -1.0])


def test_planar_model_to_optical_accepts_float64_and_rejects_a_non_planar_shape():
    planes = np.full((1, 3, 2, 2), 0.25)
    np.testing.assert_allclose(planar_model_to_optical(planes), np.full((1, 2, 2, 3), 1 / np.sqrt(3)), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[\.\.\., 3, H, W\]"):
        planar_model_to_optical(np.zeros((2, 4, 4), np.float32))


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 4, 6), (1, 3, 480, 640)])
def test_normalize_planes_is_bit_identical_to_normalize_on_the_hwc_view(shape):
    from lotus2_ros.geometry.normals import normalize_planes

    v = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    flat = v.reshape(-1, 3, *shape[-2:])
    flat[0, :, 0, 0] = 0.0  # no direction: NaN
    flat[-1, 1, 1, 2] = np.inf
    got = normalize_planes(v)
    want = normalize(np.moveaxis(v, -3, -1))
    assert got.shape == want.shape and got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("shape", [(3, 6, 8), (2, 3, 5, 7), (1, 3, 200, 640)])
def test_planar_model_to_optical_draws_the_colour_image_colorize_normals_gives_in_the_same_pass(shape):
    from lotus2_ros.io.visualize import colorize_normals

    planes = np.moveaxis(_awkward_decoded((*shape[:-3], *shape[-2:], 3)), -1, -3).copy()  # [...,3,H,W]
    hwc = (*shape[:-3], *shape[-2:], 3)
    out, colorized = np.full(hwc, 7.0, np.float32), np.full(hwc, 7, np.uint8)
    assert planar_model_to_optical(planes, out, colorized) is out
    _assert_bitwise_equal(out, planar_model_to_optical(planes))
    for normals, rgb in zip(out.reshape(-1, *hwc[-3:]), colorized.reshape(-1, *hwc[-3:]), strict=True):
        np.testing.assert_array_equal(rgb, colorize_normals(normals))
    np.testing.assert_array_equal(colorized.reshape(-1, 3)[:4], 0)  # no direction: black


def test_planar_model_to_optical_refuses_output_arrays_of_another_shape_type_or_layout():
    planes = np.full((1, 3, 4, 5), 0.25, np.float32)
    with pytest.raises(ValueError, match=r"out must be a C-contiguous float32 \(1, 4, 5, 3\)"):
        planar_model_to_optical(planes, np.empty((1, 5, 4, 3), np.float32))
    with pytest.raises(ValueError, match="out must be"):
        planar_model_to_optical(planes, np.empty((1, 4, 5, 3), np.float64))
    with pytest.raises(ValueError, match=r"colorized must be a C-contiguous uint8 \(1, 4, 5, 3\)"):
        planar_model_to_optical(planes, colorized=np.empty((1, 4, 10, 3), np.uint8)[:, :, ::2])
