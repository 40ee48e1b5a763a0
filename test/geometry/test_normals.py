"""Normal conventions: the model's DSINE/Lotus frame (x left, y up, z toward the viewer) ⇄ ROS optical."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.geometry.normals import MIN_NORM, model_to_optical, normalize, optical_to_model


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
