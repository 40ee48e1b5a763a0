"""The change of view from two rendered frames (geometry.view_motion) against the true poses and depths."""

from __future__ import annotations

import numpy as np
import pytest

from lotus2_ros.geometry import PinholeCamera
from lotus2_ros.geometry.relative_alignment import RelativeAligner, RelativeAlignmentConfig
from lotus2_ros.geometry.view_motion import move_grid, output_zero, track_view_change, translation_length
from lotus2_ros.synthetic import camera_trajectory, make_scene, render

CAMERA = PinholeCamera.from_fov(320, 240, 70.0)
K = CAMERA.K
#: The "output" the tests align: an affine map of the true inverse depth (scale 2, zero 0.3).
A, ZERO = 2.0, 0.3


@pytest.fixture(scope="module")
def pair():
    scene = make_scene("indoor", 1)
    poses = camera_trajectory(scene, 32)  # frames 30 and 31: 3 m into the room, walls closing in
    f0, f1 = (render(scene, CAMERA, poses[k]) for k in (30, 31))
    T_1_0 = np.linalg.inv(poses[31]) @ poses[30]  # camera 0 -> camera 1
    grey = [np.dot(f.rgb[..., :3], [0.299, 0.587, 0.114]).round().astype(np.uint8) for f in (f0, f1)]
    return f0, f1, T_1_0, grey


def _output(depth_m: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(depth_m), A / depth_m + ZERO, np.nan)


def test_the_tracked_pose_is_the_true_one(pair):
    _, _, T, grey = pair
    view = track_view_change(grey[0], grey[1], K)
    assert view is not None and len(view.px0) >= 50
    angle = np.degrees(np.arccos(np.clip((np.trace(view.R.T @ T[:3, :3]) - 1) / 2, -1, 1)))
    assert angle < 0.3, angle
    t_true = T[:3, 3] / np.linalg.norm(T[:3, 3])
    assert np.degrees(np.arccos(np.clip(view.t_dir @ t_true, -1, 1))) < 6.0, (view.t_dir, t_true)
    # On a reduced image (as the aligner tracks a large one) tracks come in full-image pixels; at
    # 160x120 the direction is much looser (18° here), the rotation still close.
    half = track_view_change(grey[0][::2, ::2].copy(), grey[1][::2, ::2].copy(), K, scale=0.5)
    assert half is not None and half.px0[:, 0].max() > 200
    assert np.degrees(np.arccos(np.clip((np.trace(half.R.T @ T[:3, :3]) - 1) / 2, -1, 1))) < 0.5
    assert np.degrees(np.arccos(np.clip(half.t_dir @ t_true, -1, 1))) < 30.0


def test_zero_length_and_moved_grid_match_the_truth(pair):
    f0, f1, T, grey = pair
    view = track_view_change(grey[0], grey[1], K)
    previous = _output(f0.depth_m)
    # From one pair the zero is biased towards the values' middle (the triangulated inverse depths
    # are noisy, which flattens the fit): the aligner takes the median over its frames.
    zero = output_zero(view, K, previous)
    assert zero == pytest.approx(ZERO, abs=0.2)
    lam = translation_length(view, K, previous, ZERO)
    # q = value − zero = A/Z, so lengths come in units of Z/A: λ = |t|/A.
    assert lam == pytest.approx(np.linalg.norm(T[:3, 3]) / A, rel=0.1)
    aligner = RelativeAligner()
    before, after = aligner._grid(previous.astype(np.float32)), aligner._grid(_output(f1.depth_m).astype(np.float32))
    moved = move_grid(before, ZERO, lam, view, K, previous.shape)
    both = np.isfinite(moved) & np.isfinite(after) & np.isfinite(before)
    assert both.mean() > 0.7
    # The approach raises the disparities in view: the unmoved grid is low by ~2 % of the inverse
    # depth (signed median); moved, it is unbiased. (Cell by cell both are off by about as much at
    # depth edges: a point lands in the nearest cell.)
    moved_bias = np.median((moved[both] - after[both]) / (after[both] - ZERO))
    still_bias = np.median((before[both] - after[both]) / (after[both] - ZERO))
    assert still_bias < -0.01 and abs(moved_bias) < 0.2 * abs(still_bias), (moved_bias, still_bias)


def test_without_images_the_motion_aligner_is_the_plain_one(pair):
    f0, f1, _, _ = pair
    plain, motion = RelativeAligner(), RelativeAligner(RelativeAlignmentConfig(motion=True))
    for k, f in enumerate((f0, f1, f0)):
        d = (0.5 * _output(f.depth_m) + 0.1 * k).astype(np.float32)
        a, b = plain.update(d, k * 100_000_000), motion.update(d, k * 100_000_000)
        np.testing.assert_array_equal(a.values, b.values)
        assert (a.scale, a.shift, a.reset) == (b.scale, b.shift, b.reset)


def test_motion_inputs_are_checked(pair):
    f0, _, _, _ = pair
    aligner = RelativeAligner(RelativeAlignmentConfig(motion=True))
    d = _output(f0.depth_m).astype(np.float32)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        aligner.update(d, 0, rgb=f0.rgb[:100], K=K)
    with pytest.raises(ValueError, match="K must be"):
        aligner.update(d, 0, rgb=f0.rgb, K=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="motion_max_px"):
        RelativeAlignmentConfig(motion=True, motion_max_px=8)
    assert aligner.update(d, 0, rgb=f0.rgb, K=K).reset  # the first frame, with its image kept for the next


def test_images_without_texture_or_motion_give_no_estimate():
    flat = np.full((120, 160), 128, np.uint8)
    assert track_view_change(flat, flat, K) is None  # no corners
    rng = np.random.default_rng(0)
    texture = (rng.random((120, 160)) * 255).astype(np.uint8)
    view = track_view_change(texture, texture, K)  # no motion: no pose, or no translation to speak of
    assert view is None or np.isfinite(view.R).all()
    with pytest.raises(ValueError, match="one size"):
        track_view_change(flat, flat[:10], K)
