"""Training frames: transforms keep labels consistent; targets follow the documented conventions."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.geometry.normals import model_to_optical
from lotus2_ros.train.datasets import FramePolicy
from lotus2_ros.train.samples import (
    Sample,
    center_crop_to_multiple,
    crop,
    disparity_target,
    hflip,
    normal_target,
    normals_from_depth,
    resize,
)


def _K(f=50.0, cx=31.5, cy=23.5):
    return np.array([[f, 0, cx], [0, f, cy], [0, 0, 1.0]])


def _sample(h=48, w=64):
    rng = np.random.default_rng(0)
    normals = rng.normal(size=(h, w, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    depth = rng.uniform(1, 5, size=(h, w)).astype(np.float32)
    depth[0, 0] = np.nan
    return Sample(rgb=(rng.random((h, w, 3)) * 255).astype(np.uint8), depth_m=depth, normals=normals,
                  sky=np.zeros((h, w), bool), K=_K(), name="t")


def test_hflip_mirrors_images_negates_normal_x_and_moves_the_principal_point():
    s = _sample()
    f = hflip(s)
    np.testing.assert_array_equal(f.rgb, s.rgb[:, ::-1])
    np.testing.assert_array_equal(f.depth_m[:, ::-1], s.depth_m)
    np.testing.assert_array_equal(f.normals[:, ::-1, 0], -s.normals[..., 0])
    np.testing.assert_array_equal(f.normals[:, ::-1, 1:], s.normals[..., 1:])
    assert f.K[0, 2] == pytest.approx(64 - 1 - 31.5)
    np.testing.assert_array_equal(hflip(f).normals, s.normals)  # an involution


def test_hflip_of_a_plane_gives_the_normals_of_the_mirrored_plane():
    # A wall tilted to the right: its depth grows with u. Mirrored, it grows to the left.
    h, w = 40, 60
    K = _K(50.0, (w - 1) / 2, (h - 1) / 2)
    u = np.arange(w)[None, :].repeat(h, 0)
    depth = (3.0 + 0.02 * (u - K[0, 2])).astype(np.float32)
    s = Sample(rgb=np.zeros((h, w, 3), np.uint8), depth_m=depth, normals=normals_from_depth(depth, K), K=K)
    f = hflip(s)
    from_mirrored_depth = normals_from_depth(f.depth_m, f.K)
    ok = np.isfinite(from_mirrored_depth).all(-1)
    np.testing.assert_allclose(f.normals[ok], from_mirrored_depth[ok], atol=1e-5)


def test_crop_and_resize_keep_intrinsics_consistent_with_the_pixels():
    s = _sample()
    c = crop(s, 8, 4, 32, 48)
    assert c.hw == (32, 48) and c.K[0, 2] == pytest.approx(27.5) and c.K[1, 2] == pytest.approx(15.5)
    np.testing.assert_array_equal(c.depth_m, s.depth_m[8:40, 4:52])
    r = resize(s, 24, 32)
    assert r.K[0, 0] == pytest.approx(25.0) and r.K[0, 2] == pytest.approx(15.5)
    # labels use nearest neighbour: every value is one of the originals
    assert np.isin(r.depth_m[np.isfinite(r.depth_m)], s.depth_m).all()
    with pytest.raises(ValueError, match="outside"):
        crop(s, 40, 0, 16, 16)


def test_center_crop_to_multiple_of_16():
    s = _sample(50, 70)
    assert center_crop_to_multiple(s).hw == (48, 64)


def test_frame_policy_kitti_crop_takes_the_bottom_centre():
    s = _sample(64, 96)
    out = FramePolicy(crop_hw=(32, 64), crop_mode="kitti", flip_prob=0.0).apply(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out.rgb, s.rgb[32:64, 16:80])


def test_normals_from_depth_of_analytic_planes():
    h, w = 30, 40
    K = _K(40.0, (w - 1) / 2, (h - 1) / 2)
    # Fronto-parallel wall: facing the camera, (0, 0, -1).
    n = normals_from_depth(np.full((h, w), 2.0, np.float32), K)
    np.testing.assert_allclose(n[1:-1, 1:-1], np.broadcast_to([0, 0, -1.0], (h - 2, w - 2, 3)), atol=1e-6)
    assert np.isnan(n[0]).all() and np.isnan(n[:, -1]).all()  # no central difference on the border
    # Floor 1.5 m below a level camera (y down): z = 1.5·f / (v − cy) for v > cy; normal (0, -1, 0).
    v = np.arange(h)[:, None].repeat(w, 1).astype(np.float64)
    with np.errstate(divide="ignore"):
        floor = np.where(v > K[1, 2] + 2, 1.5 * K[1, 1] / (v - K[1, 2]), np.nan).astype(np.float32)
    n = normals_from_depth(floor, K, max_step=1.0)
    ok = np.isfinite(n).all(-1)
    assert ok.sum() > 100
    np.testing.assert_allclose(n[ok], np.broadcast_to([0, -1.0, 0], (ok.sum(), 3)), atol=1e-5)


def test_normals_from_depth_leave_discontinuities_undefined():
    h, w = 20, 20
    depth = np.full((h, w), 2.0, np.float32)
    depth[:, 10:] = 6.0
    n = normals_from_depth(depth, _K(20.0, 9.5, 9.5))
    assert np.isnan(n[5, 9]).all() and np.isnan(n[5, 10]).all()
    assert np.isfinite(n[5, 5]).all()


def test_disparity_target_is_percentile_normalised_with_far_plane_for_sky_and_holes():
    depth = np.array([[1.0, 2.0, 4.0, np.nan, 8.0]], np.float32)
    valid = np.isfinite(depth)
    sky = np.array([[False, False, False, True, False]])
    t, w = disparity_target(depth, valid, sky, percentiles=(0.0, 100.0))
    disp = 1 / np.array([1.0, 2.0, 4.0, 8.0])
    lo, hi = disp.min(), disp.max()
    np.testing.assert_allclose(t[0, [0, 1, 2, 4]], 2 * (disp - lo) / (hi - lo) - 1, rtol=1e-6)
    assert t[0, 3] == -1.0  # sky: the far plane
    np.testing.assert_array_equal(w, [[1, 1, 1, 1, 1]])  # sky is known, so it has weight
    t2, w2 = disparity_target(depth, valid, None, percentiles=(0.0, 100.0))
    assert w2[0, 3] == 0 and t2[0, 3] == -1.0  # a hole: far plane but no weight


def test_disparity_target_clips_outside_the_robust_percentiles():
    rng = np.random.default_rng(1)
    depth = rng.uniform(1, 10, size=(50, 50)).astype(np.float32)
    t, _ = disparity_target(depth, np.ones_like(depth, bool))
    assert t.min() == -1.0 and t.max() == 1.0
    assert np.mean(t == 1.0) == pytest.approx(0.02, abs=0.005)  # the top 2 % saturate


def test_decoded_targets_give_back_the_engine_outputs():
    # Depth: the engine's disparity is the channel mean of (t + 1) / 2: larger = nearer.
    depth = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    t, _ = disparity_target(depth, np.ones((2, 2), bool), percentiles=(0, 100))
    engine_disp = (np.repeat(t[None], 3, 0) + 1).mean(0) / 2
    assert engine_disp[0, 0] == 1.0 and engine_disp[1, 1] == 0.0
    # Normals: decoding the target colour with the engine's conversion is the identity.
    n = np.array([[[0.0, 0.0, -1.0], [0.6, -0.8, 0.0]]], np.float32)
    target, weight = normal_target(n)
    np.testing.assert_allclose(model_to_optical((target + 1) / 2), n, atol=1e-6)
    np.testing.assert_array_equal(weight, [[1, 1]])
    target, weight = normal_target(np.full((1, 1, 3), np.nan, np.float32))
    np.testing.assert_array_equal(target, np.zeros((1, 1, 3)))
    np.testing.assert_array_equal(weight, [[0]])
