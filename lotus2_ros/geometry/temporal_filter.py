"""Temporal filter of the per-frame scale/shift fits of one camera.

For one camera and scene, ``s`` and ``t`` change slowly, so the filter smooths them, refuses a
single bad frame, follows a real change within a few frames, and stops the metric output when
no fit has confirmed the state for a while. Deterministic and clock-free: time comes only from
the ``stamp_ns`` arguments (int nanoseconds, e.g. the image stamps).

Algorithm (:meth:`ScaleShiftFilter.update`):

* Fits are compared by the metric depths they predict, not by ``(s, t)``: the two are strongly
  correlated (a larger scale with a smaller shift can give nearly the same depths over the
  disparities actually seen). The *disagreement* of a fit with another ``(s', t')`` is
  ``max |(s'·d + t') / (s·d + t) − 1|`` over the fit's disparity range (its 5th percentile,
  midpoint and 95th percentile), i.e. the largest relative depth difference where the fit has
  support; infinite when either gives a non-positive inverse depth there.
* An invalid fit changes nothing.
* No state yet: the fit initialises it.
* Disagreement <= ``gate``: the fit is accepted and blended in, ``x ← x + α·(x_fit − x)`` for
  ``x`` in ``(s, t)`` with ``α = 1 − exp(−Δt / time_constant_ns)`` and ``Δt`` the time since
  the last update. Blending ``s`` and ``t`` with one weight blends the inverse depths at every
  disparity with that weight, so this is smoothing in inverse-depth space. The candidate list
  is cleared.
* Disagreement > ``gate``: the fit is rejected (the output does not move) and kept as a
  candidate. Candidates are consecutive rejected fits that agree with each other (each new one
  within ``gate`` of all kept ones; otherwise the list restarts with the new fit). Once
  ``reinit_count`` candidates agree, the scene or camera really changed: the state is
  re-initialised to the newest candidate.
* A stamp older than the last one means time jumped back (a looping bag, a restarted clock):
  the filter resets before processing the fit.
* :meth:`ScaleShiftFilter.state` is valid only while the last update (initialisation,
  acceptance or re-initialisation) is at most ``hold_ns`` old.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lotus2_ros.geometry.scale_fit import FitResult

__all__ = ["FilteredScale", "ScaleFilterConfig", "ScaleShiftFilter", "fit_disagreement"]


@dataclass(frozen=True)
class ScaleFilterConfig:
    """Settings of :class:`ScaleShiftFilter`.

    Attributes:
        time_constant_ns: Smoothing time constant for accepted fits, nanoseconds (0 = take each
            accepted fit as it is).
        gate: Largest disagreement (relative depth difference) of a fit with the state for it
            to be accepted.
        reinit_count: Consecutive rejected fits that agree with each other needed to
            re-initialise the state (>= 2).
        hold_ns: How long the state stays valid after its last update, nanoseconds.
    """

    time_constant_ns: int = 300_000_000
    gate: float = 0.1
    reinit_count: int = 3
    hold_ns: int = 1_000_000_000

    def __post_init__(self) -> None:
        for name in ("time_constant_ns", "hold_ns"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be a non-negative int (nanoseconds), got {value!r}")
        if not (math.isfinite(self.gate) and self.gate > 0.0):
            raise ValueError(f"gate must be a positive number, got {self.gate!r}")
        if (
            isinstance(self.reinit_count, bool)
            or not isinstance(self.reinit_count, (int, np.integer))
            or self.reinit_count < 2
        ):
            raise ValueError(f"reinit_count must be an int >= 2, got {self.reinit_count!r}")


@dataclass(frozen=True)
class FilteredScale:
    """The filter's output at a stamp.

    Attributes:
        valid: True when the scale may be used to publish metres.
        scale: Filtered ``s`` (1/metres per disparity unit); NaN when not valid.
        shift: Filtered ``t`` (1/metres); NaN when not valid.
        last_update_ns: Stamp of the last update of the state, nanoseconds; None before any.
        decision: What the last :meth:`ScaleShiftFilter.update` did: ``"none"``,
            ``"initialised"``, ``"accepted"``, ``"rejected"``, ``"reinitialised"`` or
            ``"invalid_fit"``.
        reason: Why ``valid`` is False; empty when valid.
    """

    valid: bool
    scale: float
    shift: float
    last_update_ns: int | None
    decision: str
    reason: str


_DECISIONS = ("initialised", "accepted", "rejected", "reinitialised", "invalid_fit")


def fit_disagreement(
    scale: float, shift: float, other_scale: float, other_shift: float, disparities: np.ndarray
) -> float:
    """Largest relative depth difference ``|z_other / z − 1|`` over the given disparities.

    Args:
        scale: ``s`` of the reference fit.
        shift: ``t`` of the reference fit.
        other_scale: ``s`` of the other fit.
        other_shift: ``t`` of the other fit.
        disparities: [K] relative disparities to compare at.

    Returns:
        ``max |(s·d + t) / (s'·d + t') − 1|``; inf when an inverse depth is not positive.
    """
    d = np.asarray(disparities, dtype=np.float64)
    inverse = scale * d + shift
    other = other_scale * d + other_shift
    if not (np.all(inverse > 0.0) and np.all(other > 0.0)):
        return math.inf
    return float(np.max(np.abs(inverse / other - 1.0)))


def _check_stamp(stamp_ns: object) -> int:
    if isinstance(stamp_ns, bool) or not isinstance(stamp_ns, (int, np.integer)):
        raise ValueError(f"stamp_ns must be an int (nanoseconds), got {stamp_ns!r}")
    return int(stamp_ns)


class ScaleShiftFilter:
    """Filters per-frame :class:`~lotus2_ros.geometry.scale_fit.FitResult` over time.

    See the module docstring for the algorithm. One instance per camera (and per product
    stream: refined frames get their own).
    """

    def __init__(self, config: ScaleFilterConfig = ScaleFilterConfig()) -> None:
        self.config = config
        self._counts = dict.fromkeys(_DECISIONS, 0)
        self.reset()

    def reset(self) -> None:
        """Forgets the state, the candidates and the last stamp."""
        self._scale = math.nan
        self._shift = math.nan
        self._last_update_ns: int | None = None
        self._last_stamp_ns: int | None = None
        self._candidates: list[tuple[float, float]] = []
        self._decision = "none"

    @property
    def counts(self) -> dict[str, int]:
        """How many updates ended in each decision since construction (not cleared by reset)."""
        return dict(self._counts)

    @property
    def initialised(self) -> bool:
        """True once a fit has set the state (and no reset since)."""
        return self._last_update_ns is not None

    def update(self, fit: FitResult, stamp_ns: int) -> FilteredScale:
        """Feeds one frame's fit; returns the output at ``stamp_ns``.

        Args:
            fit: The frame's fit (invalid fits are counted but change nothing).
            stamp_ns: The frame's stamp, integer nanoseconds.
        """
        stamp = _check_stamp(stamp_ns)
        if self._last_stamp_ns is not None and stamp < self._last_stamp_ns:
            self.reset()  # time jumped back
        self._last_stamp_ns = stamp
        if not fit.valid:
            return self._decide("invalid_fit", stamp)
        s, t = float(fit.scale), float(fit.shift)
        lo, hi = fit.disparity_range
        support = np.array([lo, 0.5 * (lo + hi), hi])
        if not self.initialised:
            self._set(s, t, stamp, "initialised")
            return self.state(stamp)
        if fit_disagreement(s, t, self._scale, self._shift, support) <= self.config.gate:
            elapsed = max(0, stamp - self._last_update_ns)  # type: ignore[operator]
            tau = self.config.time_constant_ns
            alpha = 1.0 if tau == 0 else -math.expm1(-elapsed / tau)
            self._set(
                self._scale + alpha * (s - self._scale),
                self._shift + alpha * (t - self._shift),
                stamp,
                "accepted",
            )
            return self.state(stamp)
        # Rejected: a candidate for re-initialisation if it agrees with the previous ones.
        agrees = all(
            fit_disagreement(s, t, cs, ct, support) <= self.config.gate
            for cs, ct in self._candidates
        )
        if not agrees:
            self._candidates = []
        self._candidates.append((s, t))
        if len(self._candidates) >= self.config.reinit_count:
            self._set(s, t, stamp, "reinitialised")
            return self.state(stamp)
        return self._decide("rejected", stamp)

    def _decide(self, decision: str, stamp: int) -> FilteredScale:
        self._decision = decision
        self._counts[decision] += 1
        return self.state(stamp)

    def _set(self, scale: float, shift: float, stamp: int, decision: str) -> None:
        self._scale, self._shift = scale, shift
        self._last_update_ns = stamp
        self._candidates = []
        self._decide(decision, stamp)

    def state(self, stamp_ns: int) -> FilteredScale:
        """The output at ``stamp_ns``: valid only within ``hold_ns`` of the last update.

        Args:
            stamp_ns: Current stamp, integer nanoseconds.
        """
        stamp = _check_stamp(stamp_ns)
        if self._last_update_ns is None:
            valid, reason = False, "no valid fit yet"
        elif stamp - self._last_update_ns > self.config.hold_ns:
            age_s = (stamp - self._last_update_ns) * 1e-9
            valid = False
            reason = f"hold time expired: last update {age_s:.3g} s ago"
        else:
            valid, reason = True, ""
        return FilteredScale(
            valid=valid,
            scale=self._scale if valid else math.nan,
            shift=self._shift if valid else math.nan,
            last_update_ns=self._last_update_ns,
            decision=self._decision,
            reason=reason,
        )
