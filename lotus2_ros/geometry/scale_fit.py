"""Robust fit of an affine-invariant prediction to metric depth: ``1 / z ≈ s·d + t`` (disparity)
or ``z ≈ s·d + t`` (models that predict affine-invariant depth, :func:`fit_depth_affine`).

The model predicts disparity ``d`` up to an unknown scale ``s > 0`` and shift ``t``; sparse
metric depths ``z`` (LiDAR, a sparse depth image) fix both. The model is fitted in disparity
space, where it is linear, but residuals are measured as the relative depth error
``e = z·(s·d + t) − 1`` (``= z / ẑ − 1`` with ``ẑ = 1 / (s·d + t)``): a plain disparity residual
would let the few nearest points decide the fit and ignore the far ones. So the thresholds below
are fractions of depth, the same for a point at 2 m and at 60 m.

Steps (:func:`fit_disparity_affine`):

1. Drop non-finite pairs and ``z <= 0``; too few points -> invalid.
2. RANSAC: ``ransac_hypotheses`` two-point hypotheses, drawn with a seeded generator, each
   scored at once on up to ``ransac_sample_size`` points with the MSAC cost
   ``Σ min(e², τ²)`` (τ = ``inlier_threshold``). Every hypothesis is scored, also those with
   ``s <= 0``: when the best one has a negative scale the prediction runs opposite to the
   metric depth and the fit is refused instead of settling for a poor positive one.
3. IRLS with Tukey's biweight from the best hypothesis on up to ``max_fit_points`` points: the
   residual scale σ is 1.4826·MAD of the RANSAC inliers, the cut-off ``c = tukey_c·σ`` is kept
   in ``[0.001, 2τ]``, and each step solves the weighted least squares of ``s·d + t − 1/z`` with
   weights ``w(e)·z²`` (the relative residual, squared).
4. Checks, each with its own ``reason`` (text) and :class:`FitReason` (code): scale positive, enough inliers (``|e| < c`` on all
   points), spread of the inlier depths (``P95/P5`` at least ``min_depth_ratio``: one flat
   wall fixes no scale; also checked on the RANSAC sample before fitting), and a scale
   significantly above zero (``s / SE(s)`` at least ``min_scale_significance``; catches a
   prediction that carries no depth information).

An invalid fit has NaN scale and shift: nothing can turn it into metres by accident.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FIT_SPACES",
    "FitReason",
    "FitResult",
    "ScaleFitConfig",
    "fit_affine",
    "fit_depth_affine",
    "fit_disparity_affine",
    "invalid_fit",
    "metric_depth_from_depth",
    "metric_depth_from_disparity",
    "metric_depth_from_relative",
]

#: Fit space reported in diagnostics and the ``ScaleFit`` message (the default).
FIT_SPACE = "disparity"
#: ``disparity``: ``1/z ≈ s·d + t``; ``depth``: ``z ≈ s·d + t``.
FIT_SPACES = ("disparity", "depth")
_MAD_TO_SIGMA = 1.4826
_MIN_CUTOFF = 1e-3  # relative depth; keeps the biweight finite for a perfect prediction


class FitReason(enum.IntEnum):
    """Why a frame's fit was not used: the ``REASON_*`` constants of ``msg/ScaleFit.msg`` (same values).

    The fit gives ``TOO_FEW_POINTS`` … ``SCALE_NOT_SIGNIFICANT``; the metric stage adds the others.
    """

    OK = 0  #: the fit was valid and used
    NO_POINTS_IN_VIEW = 1  #: no reference point falls in the image (extrinsic, frame ids, range window)
    TOO_FEW_POINTS = 2  #: fewer usable points than min_points (occluded, on depth edges, invalid)
    NO_DEPTH_SPREAD = 3  #: the reference depths span too little (one flat wall fixes no scale)
    NO_DISPARITY_SPREAD = 4  #: the prediction does not vary at the reference points
    NEGATIVE_SCALE = 5  #: the prediction runs opposite to the metric depth
    TOO_FEW_INLIERS = 6  #: the robust fit explains too few points
    SCALE_NOT_SIGNIFICANT = 7  #: the prediction does not follow the depth
    REJECTED_BY_FILTER = 8  #: a valid fit that disagrees with the temporal filter's state (an outlier frame)
    NO_CAMERA_INFO = 9  #: no calibration to project the reference with

    @property
    def label(self) -> str:
        """Lower-case name, e.g. ``too_few_inliers`` (diagnostics keys, file metadata)."""
        return self.name.lower()


@dataclass(frozen=True)
class ScaleFitConfig:
    """Settings of :func:`fit_disparity_affine`.

    Attributes:
        min_points: Fewer finite pairs (or inliers) than this give an invalid fit.
        min_inlier_fraction: Fewer inliers than this fraction of the finite pairs give an
            invalid fit.
        inlier_threshold: RANSAC inlier threshold τ, relative depth error (0.1 = 10 %).
        ransac_hypotheses: Number of two-point hypotheses.
        ransac_sample_size: Points (drawn with replacement) on which hypotheses are scored.
        max_fit_points: Points used by the IRLS refinement (an even subsample beyond this).
        irls_iterations: Maximum IRLS iterations (stops earlier once converged).
        tukey_c: Biweight cut-off in units of the robust residual scale σ.
        min_depth_ratio: Minimum ratio of the 95th to the 5th percentile of the inlier depths.
        min_scale_significance: Minimum ``s / SE(s)``.
        seed: Seed of the hypothesis generator (the fit is deterministic).
    """

    min_points: int = 30
    min_inlier_fraction: float = 0.5
    inlier_threshold: float = 0.1
    ransac_hypotheses: int = 200
    ransac_sample_size: int = 256
    max_fit_points: int = 2048
    irls_iterations: int = 10
    tukey_c: float = 4.685
    min_depth_ratio: float = 1.15
    min_scale_significance: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_points", "ransac_hypotheses", "ransac_sample_size", "max_fit_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 2:
                raise ValueError(f"{name} must be an int >= 2, got {value!r}")
        if (
            isinstance(self.irls_iterations, bool)
            or not isinstance(self.irls_iterations, (int, np.integer))
            or self.irls_iterations < 0
        ):
            raise ValueError(f"irls_iterations must be an int >= 0, got {self.irls_iterations!r}")
        if not 0.0 <= self.min_inlier_fraction <= 1.0:
            raise ValueError(
                f"min_inlier_fraction must be in [0, 1], got {self.min_inlier_fraction!r}"
            )
        for name in ("inlier_threshold", "tukey_c"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not (math.isfinite(self.min_depth_ratio) and self.min_depth_ratio >= 1.0):
            raise ValueError(f"min_depth_ratio must be >= 1, got {self.min_depth_ratio!r}")
        if not (math.isfinite(self.min_scale_significance) and self.min_scale_significance >= 0):
            raise ValueError(
                f"min_scale_significance must be >= 0, got {self.min_scale_significance!r}"
            )


@dataclass(frozen=True, eq=False)
class FitResult:
    """Scale and shift mapping relative disparity to metric inverse depth.

    Metric depth is ``1 / (scale·d + shift)`` metres (see :func:`metric_depth_from_disparity`).

    Attributes:
        valid: True when the fit passed every check; only then may it produce metres.
        reason: Why the fit is invalid; empty when valid.
        scale: ``s``, 1/metres per disparity unit; NaN when invalid.
        shift: ``t``, 1/metres; NaN when invalid.
        num_points: Finite pairs with positive depth that entered the fit.
        num_inliers: Pairs whose relative depth error is inside the final cut-off.
        rmse_m: Root-mean-square depth error of the inliers, metres (NaN without inliers).
        abs_rel: Mean ``|ẑ − z| / z`` of the inliers (NaN without inliers).
        disparity_range: (5th, 95th) percentile of the inliers' predicted disparity: where the
            fit is supported (the temporal filter compares fits there). NaN without inliers.
        inliers: [N] bool over the input arrays (False for dropped pairs).
        fit_space: ``"disparity"`` (``1/z ≈ s·d + t``) or ``"depth"`` (``z ≈ s·d + t``).
        reason_code: :class:`FitReason` of ``reason`` (``OK`` when valid).
    """

    valid: bool
    reason: str
    scale: float
    shift: float
    num_points: int
    num_inliers: int
    rmse_m: float
    abs_rel: float
    disparity_range: tuple[float, float]
    inliers: np.ndarray = field(repr=False)
    fit_space: str = FIT_SPACE
    reason_code: FitReason = FitReason.OK


def _invalid(
    code: FitReason,
    reason: str,
    num_points: int,
    size: int,
    num_inliers: int = 0,
    inliers: np.ndarray | None = None,
    fit_space: str = FIT_SPACE,
) -> FitResult:
    return FitResult(
        fit_space=fit_space,
        reason_code=code,
        valid=False,
        reason=reason,
        scale=math.nan,
        shift=math.nan,
        num_points=num_points,
        num_inliers=num_inliers,
        rmse_m=math.nan,
        abs_rel=math.nan,
        disparity_range=(math.nan, math.nan),
        inliers=np.zeros(size, dtype=bool) if inliers is None else inliers,
    )


def invalid_fit(code: FitReason, reason: str, num_points: int = 0, fit_space: str = FIT_SPACE) -> FitResult:
    """An invalid fit (NaN scale and shift) for a frame the fit could not even start on."""
    return _invalid(code, reason, num_points, 0, fit_space=fit_space)


def _no_depth_spread(z_lo: float, z_hi: float, config: ScaleFitConfig) -> str:
    return (
        f"no depth spread: depths {z_lo:.3g}..{z_hi:.3g} m (5th..95th percentile, ratio < "
        f"min_depth_ratio={config.min_depth_ratio})"
    )


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    # einsum, not BLAS: a threaded BLAS dot costs milliseconds on a busy CPU.
    return float(np.einsum("i,i->", a, b))


def _weighted_line(moments: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """Weighted least squares ``y ≈ s·d + t`` from the rows ``(1, d, y, d², d·y)`` of
    ``moments`` ([5,m], ``d`` centred for conditioning); NaN when ``d`` does not vary."""
    sw, swd, swy, swdd, swdy = np.einsum("ij,j->i", moments, weights).tolist()
    if not sw > 0.0:
        return math.nan, math.nan
    sxx = swdd - swd * swd / sw
    if not sxx > 1e-12 * swdd:
        return math.nan, math.nan
    s = (swdy - swd * swy / sw) / sxx
    return s, (swy - s * swd) / sw


@functools.lru_cache(maxsize=8)
def _uniform_draws(seed: int, count: int) -> np.ndarray:
    """``count`` uniform numbers in [0, 1) for ``seed`` (cached: a new Generator costs ~0.1 ms)."""
    draws = np.random.default_rng(seed).random(count)
    draws.flags.writeable = False
    return draws


def _percentiles(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Two percentiles (linear interpolation); a SIMD sort beats ``np.percentile`` here."""
    ordered = np.sort(values)
    result = []
    for q in (low, high):
        position = (ordered.size - 1) * q / 100.0
        i = int(position)
        j = min(i + 1, ordered.size - 1)
        result.append(float(ordered[i] + (position - i) * (ordered[j] - ordered[i])))
    return result[0], result[1]


def fit_disparity_affine(
    disparity: np.ndarray,
    z_m: np.ndarray,
    config: ScaleFitConfig = ScaleFitConfig(),
) -> FitResult:
    """Fits ``1 / z ≈ s·d + t`` robustly (RANSAC + Tukey IRLS, see the module docstring).

    Args:
        disparity: [N] predicted relative disparity at the reference points.
        z_m: [N] metric z-depth of the same points, metres; non-finite or <= 0 is dropped.
        config: Fit settings (including the seed).

    Returns:
        The fit with its quality figures; ``valid`` is False (NaN scale and shift) when the data
        cannot determine a positive scale.
    """
    return fit_affine(disparity, z_m, config, space="disparity")


def fit_depth_affine(
    depth: np.ndarray,
    z_m: np.ndarray,
    config: ScaleFitConfig = ScaleFitConfig(),
) -> FitResult:
    """Fits ``z ≈ s·d + t`` robustly for models that predict affine-invariant *depth* ``d``.

    The same algorithm as :func:`fit_disparity_affine` with the same relative-depth residual
    ``e = (s·d + t) / z − 1`` (so thresholds mean the same); ``scale`` is metres per unit of ``d``,
    ``shift`` metres; ``disparity_range`` is the range of ``d``.
    """
    return fit_affine(depth, z_m, config, space="depth")


def fit_affine(
    prediction: np.ndarray,
    z_m: np.ndarray,
    config: ScaleFitConfig = ScaleFitConfig(),
    space: str = FIT_SPACE,
) -> FitResult:
    """:func:`fit_disparity_affine` (``space="disparity"``) or :func:`fit_depth_affine` (``"depth"``)."""
    if space not in FIT_SPACES:
        raise ValueError(f"space must be one of {FIT_SPACES}, got {space!r}")
    inverse = space == "disparity"
    disparity = prediction
    _invalid_ = functools.partial(_invalid, fit_space=space)
    d_all = np.asarray(disparity)
    z_all = np.asarray(z_m)
    if d_all.ndim != 1 or z_all.shape != d_all.shape:
        raise ValueError(
            f"prediction and z_m must be 1-D arrays of one length, got shapes {d_all.shape} and "
            f"{z_all.shape}"
        )
    size = d_all.shape[0]

    # 1. Finite pairs with positive depth.
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero(np.isfinite(d_all) & np.isfinite(z_all) & (z_all > 0.0))
    n = int(rows.size)
    if n < config.min_points:
        return _invalid_(FitReason.TOO_FEW_POINTS, f"too few points: {n} < min_points={config.min_points}", n, size)
    # All points stay in their (usually float32) dtype; the samples that determine s and t are
    # float64.
    d, z = d_all[rows], z_all[rows]
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float64)
    if not np.issubdtype(z.dtype, np.floating):
        z = z.astype(np.float64)
    tau = config.inlier_threshold

    # 2. RANSAC: all hypotheses scored at once (MSAC, float32) on a random sample.
    draws = _uniform_draws(config.seed, config.ransac_sample_size + 2 * config.ransac_hypotheses)
    if n > config.ransac_sample_size:
        sample = (draws[: config.ransac_sample_size] * n).astype(np.intp)
        ds, zs = d[sample].astype(np.float64), z[sample].astype(np.float64)
    else:
        ds, zs = d.astype(np.float64), z.astype(np.float64)
    ys = 1.0 / zs if inverse else zs
    z_lo, z_hi = _percentiles(zs, 5.0, 95.0)
    if z_hi < config.min_depth_ratio * z_lo:
        return _invalid_(FitReason.NO_DEPTH_SPREAD, _no_depth_spread(z_lo, z_hi, config), n, size)
    pairs = (draws[config.ransac_sample_size :] * ds.size).astype(np.intp)
    first, second = pairs[: config.ransac_hypotheses], pairs[config.ransac_hypotheses :]
    with np.errstate(divide="ignore", invalid="ignore"):
        s_h = (ys[first] - ys[second]) / (ds[first] - ds[second])  # [h]
        t_h = ys[first] - s_h * ds[first]
    usable = np.flatnonzero(np.isfinite(s_h) & np.isfinite(t_h))
    if usable.size == 0:
        return _invalid_(FitReason.NO_DISPARITY_SPREAD,
                         f"no spread in predicted {space}: no two points differ in d", n, size)
    s_h, t_h = s_h[usable], t_h[usable]
    ds32, zs32 = ds.astype(np.float32), zs.astype(np.float32)
    residual = s_h.astype(np.float32)[:, None] * ds32  # [h,m]
    residual += t_h.astype(np.float32)[:, None]
    if inverse:
        residual *= zs32  # z·(s·d + t) − 1
    else:
        residual /= zs32  # (s·d + t)/z − 1
    residual -= np.float32(1.0)
    np.square(residual, out=residual)
    np.minimum(residual, np.float32(tau * tau), out=residual)
    best = int(np.argmin(residual.sum(axis=1)))
    s, t = float(s_h[best]), float(t_h[best])
    if s <= 0.0:
        return _invalid_(
            FitReason.NEGATIVE_SCALE,
            f"negative scale: the best hypothesis has s={s:.4g} <= 0 (prediction runs opposite "
            "to the metric depth)",
            n,
            size,
        )

    # 3. Tukey IRLS on an even subsample, started from the best hypothesis; residual scale
    #    from the MAD of the hypothesis' inliers in the RANSAC sample.
    e_sample = np.abs((s * ds + t) * zs - 1.0) if inverse else np.abs((s * ds + t) / zs - 1.0)
    sigma = _MAD_TO_SIGMA * float(np.median(e_sample[e_sample < tau]))
    cutoff = min(max(config.tukey_c * sigma, _MIN_CUTOFF), 2.0 * tau)
    step = max(1, -(-n // config.max_fit_points))
    df, zf = d[::step].astype(np.float64), z[::step].astype(np.float64)
    yf = 1.0 / zf if inverse else zf
    z2 = zf * zf if inverse else 1.0 / (zf * zf)  # relative residual = (line residual)·z or /z
    d_scale = float(np.abs(df).mean())
    d_centre = float(df.mean())
    dc = df - d_centre
    moments = np.stack([np.ones_like(dc), dc, yf, dc * dc, dc * yf])  # [5,m]
    for _ in range(config.irls_iterations):
        u = (s * df + t) * zf - 1.0 if inverse else (s * df + t) / zf - 1.0
        u *= 1.0 / cutoff
        np.square(u, out=u)
        np.subtract(1.0, u, out=u)
        np.maximum(u, 0.0, out=u)
        np.square(u, out=u)
        u *= z2  # weights w(e)·z²
        s_new, t_centred = _weighted_line(moments, u)
        if not math.isfinite(s_new):
            break
        t_new = t_centred - s_new * d_centre
        # Converged when the inverse depth at a typical disparity moves by < 1e-5 relative.
        change = abs(s_new - s) * d_scale + abs(t_new - t)
        converged = change <= 1e-5 * (abs(s_new) * d_scale + abs(t_new))
        s, t = s_new, t_new
        if converged:
            break
    if not (math.isfinite(s) and s > 0.0):
        return _invalid_(FitReason.NEGATIVE_SCALE, f"negative scale after refinement: s={s:.4g}", n, size)

    # 4. Inliers on all points, checks (spreads on the subsample) and quality figures.
    e = (s * d + t) * z - 1.0 if inverse else (s * d + t) / z - 1.0
    inlier_rows = np.flatnonzero(np.abs(e) < cutoff)
    inliers = np.zeros(size, dtype=bool)
    inliers[rows[inlier_rows]] = True
    num_inliers = int(inlier_rows.size)
    needed = max(config.min_points, math.ceil(config.min_inlier_fraction * n))
    if num_inliers < needed:
        return _invalid_(
            FitReason.TOO_FEW_INLIERS,
            f"too few inliers: {num_inliers} of {n} points (need {needed})",
            n,
            size,
            num_inliers,
            inliers,
        )
    z_in, d_in, e_in = z[inlier_rows], d[inlier_rows], e[inlier_rows]
    stride = max(1, -(-num_inliers // config.max_fit_points))  # percentiles on a subsample
    z_lo, z_hi = _percentiles(z_in[::stride], 5.0, 95.0)
    if z_hi < config.min_depth_ratio * z_lo:
        return _invalid_(FitReason.NO_DEPTH_SPREAD, _no_depth_spread(z_lo, z_hi, config), n, size,
                         num_inliers, inliers)
    weights_in = z_in * z_in if inverse else 1.0 / (z_in * z_in)
    dc = d_in - _dot(weights_in, d_in) / float(weights_in.sum())
    sxx = _dot(weights_in * dc, dc)
    dof = max(num_inliers - 2, 1)
    residual_var = _dot(e_in, e_in) / dof  # relative residual e = z·r
    significance = s * math.sqrt(sxx / residual_var) if residual_var > 0.0 else math.inf
    if not significance >= config.min_scale_significance:
        return _invalid_(
            FitReason.SCALE_NOT_SIGNIFICANT,
            f"scale not significant: s/SE(s)={significance:.3g} < "
            f"{config.min_scale_significance} (the prediction does not follow the depth)",
            n,
            size,
            num_inliers,
            inliers,
        )
    d_lo, d_hi = _percentiles(d_in[::stride], 5.0, 95.0)
    z_hat = 1.0 / (s * d_in + t) if inverse else s * d_in + t
    error = z_hat - z_in
    return FitResult(
        valid=True,
        reason="",
        scale=s,
        shift=t,
        num_points=n,
        num_inliers=num_inliers,
        rmse_m=math.sqrt(_dot(error, error) / num_inliers),
        abs_rel=float(np.mean(np.abs(error) / z_in)),
        disparity_range=(float(d_lo), float(d_hi)),
        inliers=inliers,
        fit_space=space,
    )


def _check_metric_map(scale: float, shift: float, min_depth_m: float, max_depth_m: float) -> None:
    """Raises ValueError unless the metric map is usable: scale positive and finite, shift finite,
    ``0 <= min_depth_m < max_depth_m``."""
    if not (math.isfinite(scale) and scale > 0.0):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    if not math.isfinite(shift):
        raise ValueError(f"shift must be finite, got {shift!r}")
    if not (math.isfinite(min_depth_m) and min_depth_m >= 0.0 and max_depth_m > min_depth_m):
        raise ValueError(
            f"need 0 <= min_depth_m < max_depth_m, got min_depth_m={min_depth_m!r}, "
            f"max_depth_m={max_depth_m!r}"
        )


def _check_out(out: np.ndarray | None, shape: tuple[int, ...]) -> None:
    if out is not None and (out.shape != shape or out.dtype != np.float32):
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")


def metric_depth_from_disparity(
    disparity: np.ndarray,
    scale: float,
    shift: float,
    min_depth_m: float = 0.0,
    max_depth_m: float = math.inf,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Metric z-depth ``1 / (scale·d + shift)`` from relative disparity.

    Args:
        disparity: [...] predicted relative disparity (e.g. [H,W]).
        scale: Fitted ``s`` (> 0), 1/metres per disparity unit.
        shift: Fitted ``t``, 1/metres.
        min_depth_m: Depths below this are invalid, metres (>= 0).
        max_depth_m: Depths above this are invalid, metres (may be inf).
        out: float32 array like ``disparity`` to write the result to (default: a new one).

    Returns:
        float32 array like ``disparity`` (``out`` if given), metres; NaN where ``scale·d + shift <= 0``, where the
        depth leaves ``[min_depth_m, max_depth_m]`` or the disparity is not finite. Never
        relative values: a non-positive or non-finite scale raises.
    """
    _check_metric_map(scale, shift, min_depth_m, max_depth_m)
    d = np.asarray(disparity)
    if d.dtype != np.float32:
        d = d.astype(np.float32)
    _check_out(out, d.shape)
    inverse = np.multiply(d, np.float32(scale), out=out)
    inverse += np.float32(shift)  # [...] 1/metres
    # depth in [min, max] <=> inverse depth in [1/max, 1/min] and > 0; the largest float32
    # stands for 1/0 so that an infinite inverse depth (depth 0) is refused too.
    lo = np.float32(1.0 / max_depth_m if math.isfinite(max_depth_m) else 0.0)
    hi = 1.0 / min_depth_m if min_depth_m > 0.0 else float(np.finfo(np.float32).max)
    hi = np.float32(hi)
    # Usually every pixel is valid: then the extremes are in range (and not NaN, which min/max
    # propagate and which fails every comparison), and the mask passes can be skipped.
    i_min, i_max = (inverse.min(), inverse.max()) if inverse.size else (hi, hi)
    if (i_min > 0.0 if lo == 0.0 else i_min >= lo) and i_max <= hi:
        with np.errstate(divide="ignore"):
            return np.reciprocal(inverse, out=inverse)
    with np.errstate(invalid="ignore", divide="ignore"):
        invalid = inverse <= 0.0 if lo == 0.0 else inverse < lo
        invalid |= inverse > hi  # NaN compares False and stays NaN below
        depth = np.reciprocal(inverse, out=inverse)
    depth[invalid] = np.nan
    return depth


def metric_depth_from_depth(
    depth: np.ndarray,
    scale: float,
    shift: float,
    min_depth_m: float = 0.0,
    max_depth_m: float = math.inf,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Metric z-depth ``scale·d + shift`` from relative (affine-invariant) depth.

    Returns float32 metres like ``depth``; NaN outside ``[min_depth_m, max_depth_m]``, where the
    result is not positive or ``d`` is not finite (written to ``out`` if given). Raises on a
    non-positive or non-finite scale.
    """
    _check_metric_map(scale, shift, min_depth_m, max_depth_m)
    d = np.asarray(depth, dtype=np.float32)
    _check_out(out, d.shape)
    z = np.multiply(d, np.float32(scale), out=out)
    z += np.float32(shift)
    with np.errstate(invalid="ignore"):
        invalid = ~((z > 0.0) & (z >= min_depth_m) & (z <= max_depth_m))
    z[invalid] = np.nan
    return z


def metric_depth_from_relative(relative: np.ndarray, space: str, scale: float, shift: float,
                               min_depth_m: float = 0.0, max_depth_m: float = math.inf,
                               out: np.ndarray | None = None) -> np.ndarray:
    """Metric depth from a relative output in ``space`` (``"disparity"`` or ``"depth"``), into ``out`` if given."""
    if space == "disparity":
        return metric_depth_from_disparity(relative, scale, shift, min_depth_m, max_depth_m, out)
    if space == "depth":
        return metric_depth_from_depth(relative, scale, shift, min_depth_m, max_depth_m, out)
    raise ValueError(f"space must be one of {FIT_SPACES}, got {space!r}")
