"""Temporal filter of per-frame scale/shift fits: gating, re-initialisation, hold time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lotus2_ros.geometry import (
    FitResult,
    ScaleFilterConfig,
    ScaleShiftFilter,
    fit_disagreement,
)

FRAME_NS = 100_000_000  # 10 Hz
D_RANGE = (0.05, 0.6)


def _fit(scale: float, shift: float, *, valid: bool = True) -> FitResult:
    return FitResult(
        valid=valid,
        reason="" if valid else "too few points: 3 < min_points=30",
        scale=scale if valid else math.nan,
        shift=shift if valid else math.nan,
        num_points=500,
        num_inliers=450,
        rmse_m=0.1,
        abs_rel=0.02,
        disparity_range=D_RANGE if valid else (math.nan, math.nan),
        inliers=np.ones(500, dtype=bool),
    )


def _depth(scale: float, shift: float, d: float = 0.3) -> float:
    return 1.0 / (scale * d + shift)


def _run(filter_: ScaleShiftFilter, fits, start_frame: int = 0):
    return [filter_.update(fit, (start_frame + i) * FRAME_NS) for i, fit in enumerate(fits)]


def test_the_first_valid_fit_initialises_the_output():
    filter_ = ScaleShiftFilter()
    assert not filter_.state(0).valid and filter_.state(0).reason == "no valid fit yet"
    out = filter_.update(_fit(2.0, 0.05), 0)
    assert out.valid and out.decision == "initialised"
    assert (out.scale, out.shift) == (2.0, 0.05)
    assert out.last_update_ns == 0


def test_a_single_corrupted_frame_does_not_move_the_output():
    filter_ = ScaleShiftFilter()
    steady = _run(filter_, [_fit(2.0, 0.05)] * 5)
    before = steady[-1]
    corrupted = filter_.update(_fit(3.0, 0.01), 5 * FRAME_NS)  # 30 % off in depth
    assert corrupted.decision == "rejected" and corrupted.valid
    assert (corrupted.scale, corrupted.shift) == (before.scale, before.shift)
    after = _run(filter_, [_fit(2.0, 0.05)] * 3, start_frame=6)
    assert all(out.decision == "accepted" for out in after)
    assert after[-1].scale == pytest.approx(2.0) and after[-1].shift == pytest.approx(0.05)
    assert filter_.counts == dict(
        initialised=1, accepted=7, rejected=1, reinitialised=0, invalid_fit=0
    )


def test_a_real_scale_change_is_followed_within_reinit_count_frames():
    filter_ = ScaleShiftFilter(ScaleFilterConfig(reinit_count=3))
    _run(filter_, [_fit(2.0, 0.05)] * 5)
    changed = _run(filter_, [_fit(2.6, 0.04)] * 4, start_frame=5)
    assert [out.decision for out in changed] == [
        "rejected",
        "rejected",
        "reinitialised",
        "accepted",
    ]
    assert _depth(changed[1].scale, changed[1].shift) == pytest.approx(_depth(2.0, 0.05))
    assert _depth(changed[2].scale, changed[2].shift) == pytest.approx(_depth(2.6, 0.04))


def test_rejected_fits_that_disagree_with_each_other_do_not_reinitialise():
    filter_ = ScaleShiftFilter(ScaleFilterConfig(reinit_count=3))
    _run(filter_, [_fit(2.0, 0.05)] * 3)
    chaos = _run(filter_, [_fit(3.0, 0.05), _fit(1.2, 0.05), _fit(3.0, 0.05), _fit(1.2, 0.05)], 3)
    assert all(out.decision == "rejected" for out in chaos)
    assert chaos[-1].scale == pytest.approx(2.0)


def test_small_changes_are_smoothed_with_the_time_constant():
    config = ScaleFilterConfig(time_constant_ns=300_000_000)
    filter_ = ScaleShiftFilter(config)
    filter_.update(_fit(2.0, 0.05), 0)
    out = filter_.update(_fit(2.1, 0.05), FRAME_NS)  # 4 % nearer: accepted, blended
    alpha = 1.0 - math.exp(-FRAME_NS / config.time_constant_ns)
    assert out.decision == "accepted"
    assert out.scale == pytest.approx(2.0 + alpha * 0.1)
    # Holding the new value, the output converges to it.
    outs = _run(filter_, [_fit(2.1, 0.05)] * 30, start_frame=2)
    assert outs[-1].scale == pytest.approx(2.1, rel=1e-4)


def test_correlated_scale_and_shift_are_compared_by_the_depths_they_give():
    # Very different (s, t) that agree on depth over the disparities seen: not a bad frame.
    d = np.array([0.1, 0.2, 0.3])
    # |z_other / z - 1| with z = 1 / (s·d + t)
    assert fit_disagreement(2.0, 0.05, 2.2, 0.03, d) == pytest.approx(
        max(abs((2.0 * x + 0.05) / (2.2 * x + 0.03) - 1.0) for x in d)
    )
    filter_ = ScaleShiftFilter(ScaleFilterConfig(gate=0.06))
    filter_.update(_fit(2.0, 0.10), 0)
    support = np.array([D_RANGE[0], np.mean(D_RANGE), D_RANGE[1]])
    # Scale 7 % smaller, shift 17 % larger: the depths still agree within 5 %.
    assert fit_disagreement(1.864, 0.1168, 2.0, 0.10, support) < 0.051
    out = filter_.update(_fit(1.864, 0.1168), FRAME_NS)
    assert out.decision == "accepted"
    # A fit with the same scale but a shift that moves the far depths is refused.
    assert fit_disagreement(2.0, 0.13, 2.0, 0.10, support) > 0.06
    assert filter_.update(_fit(2.0, 0.13), 2 * FRAME_NS).decision == "rejected"
    assert fit_disagreement(1.0, -0.5, 1.0, 0.1, d) == math.inf  # non-positive inverse depth


def test_the_output_stops_after_the_hold_time_without_a_valid_fit():
    config = ScaleFilterConfig(hold_ns=1_000_000_000)
    filter_ = ScaleShiftFilter(config)
    filter_.update(_fit(2.0, 0.05), 0)
    invalid = _run(filter_, [_fit(0, 0, valid=False)] * 10, start_frame=1)  # up to 1.0 s
    assert all(out.decision == "invalid_fit" for out in invalid)
    assert invalid[-1].valid and invalid[-1].scale == 2.0
    expired = filter_.update(_fit(0, 0, valid=False), 11 * FRAME_NS)
    assert not expired.valid and "hold time expired" in expired.reason
    assert math.isnan(expired.scale) and math.isnan(expired.shift)
    assert not filter_.state(2_000_000_000).valid
    # Rejected (inconsistent) fits do not extend the hold either; a consistent one revives it.
    filter_.update(_fit(2.0, 0.05), 12 * FRAME_NS)
    assert filter_.state(12 * FRAME_NS).valid


def test_time_going_backwards_resets_the_filter():
    filter_ = ScaleShiftFilter()
    _run(filter_, [_fit(2.0, 0.05)] * 3, start_frame=100)
    out = filter_.update(_fit(3.0, 0.02), 0)  # a looping bag
    assert out.decision == "initialised" and out.scale == 3.0


def test_invalid_configuration_and_stamps_are_rejected():
    with pytest.raises(ValueError, match="reinit_count"):
        ScaleFilterConfig(reinit_count=1)
    with pytest.raises(ValueError, match="hold_ns"):
        ScaleFilterConfig(hold_ns=-1)
    with pytest.raises(ValueError, match="stamp_ns"):
        ScaleShiftFilter().update(_fit(2.0, 0.05), 1.5)  # type: ignore[arg-type]
