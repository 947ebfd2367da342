"""Sufficient statistics of an experiment's arms and the vectorized effect estimate over them.

Owns the algebra under server/experiments/analysis.py: `Moments` (n and the sums of y, y^2, x,
x^2, xy of one arm; y the metric since exposure, x its pre-period value) and `estimate`, which
turns a control's and an arm's moments into effect, interval, p-value, relative effect, CUPED
variance reduction and chance to win. Moments add up, so a daily look adds one day's moments
instead of re-reading raw arrays, and every field may be an array (one entry per simulated
experiment or day): the benchmark's 1,000 A/A experiments x 30 daily looks are one call.

The tests are scipy's (Welch t, normal); the sequential boundary is sequential.py's. Sums of
squares lose precision when a metric's spread is below ~1e-5 of its mean; our metrics (counts,
shares, seconds) are nowhere near that, and it buys additivity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from server.experiments import sequential as seq

FloatArray = npt.NDArray[np.float64]
# Squared deviations below this share of the sum of squares are rounding (sum-of-squares cancellation)
_ZERO_VAR = 1e-10


@dataclass(frozen=True, eq=False)
class Moments:
    """Sufficient statistics of one arm (y: metric since exposure, x: its pre-period value)."""

    n: FloatArray
    sum_y: FloatArray
    sum_yy: FloatArray
    sum_x: FloatArray
    sum_xx: FloatArray
    sum_xy: FloatArray
    missing: FloatArray = field(default_factory=lambda: np.zeros(()))  # readers dropped: y not a number

    @classmethod
    def of(cls, values: npt.ArrayLike, pre: npt.ArrayLike | None = None, axis: int = -1) -> Moments:
        """Moments over `axis`. A NaN value drops the reader; a NaN pre value counts as 0.

        Any fixed stand-in for a missing pre value keeps CUPED unbiased (x only has to be
        independent of the arm); 0 is what "no activity before exposure" means for our metrics.
        """
        cols = _columns(values, pre)
        return cls(*(np.asarray(np.sum(c, axis=axis), dtype=np.float64) for c in cols))

    @classmethod
    def grouped(
        cls, group: npt.ArrayLike, size: int, values: npt.ArrayLike, pre: npt.ArrayLike | None = None
    ) -> Moments:
        """Moments per group id in [0, size) (e.g. simulation * arms + arm) from flat arrays."""
        g = np.asarray(group, dtype=np.intp)
        cols = _columns(values, pre)
        return cls(*(np.bincount(g, weights=c, minlength=size).astype(np.float64) for c in cols))

    def _fields(self) -> tuple[FloatArray, ...]:
        return (self.n, self.sum_y, self.sum_yy, self.sum_x, self.sum_xx, self.sum_xy, self.missing)

    def __add__(self, other: Moments) -> Moments:
        return Moments(*(a + b for a, b in zip(self._fields(), other._fields(), strict=True)))

    def cumsum(self, axis: int = 0) -> Moments:
        """Cumulative moments along `axis`: daily increments -> what each day's look sees."""
        return Moments(*(np.cumsum(a, axis=axis) for a in self._fields()))

    def __getitem__(self, index: Any) -> Moments:
        return Moments(*(np.asarray(a)[index] for a in self._fields()))


def _columns(values: npt.ArrayLike, pre: npt.ArrayLike | None) -> tuple[FloatArray, ...]:
    """Per-reader terms of the sums, in `Moments` field order (the last one counts dropped readers)."""
    y = np.asarray(values, dtype=np.float64)
    x = np.zeros_like(y) if pre is None else np.asarray(pre, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"pre has shape {x.shape}, values {y.shape}")
    ok = np.isfinite(y)
    y, x = np.where(ok, y, 0.0), np.where(ok & np.isfinite(x), x, 0.0)
    return (ok.astype(np.float64), y, y * y, x, x * x, x * y, (~ok).astype(np.float64))


@dataclass(frozen=True, eq=False)
class Estimate:
    """Vectorized result of `estimate` (every field has the broadcast shape of the inputs)."""

    n_control: FloatArray
    n_arm: FloatArray
    mean_control: FloatArray
    mean_arm: FloatArray
    absolute: FloatArray
    se: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    p_value: FloatArray
    relative: FloatArray  # NaN where the control mean is 0
    rel_ci_low: FloatArray
    rel_ci_high: FloatArray
    chance_to_win: FloatArray  # P(absolute > 0)
    variance_reduction: FloatArray  # 1 - var(CUPED estimate) / var(plain estimate); 0 without CUPED
    cuped: npt.NDArray[np.bool_]
    zero_variance: npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class _Arm:
    """Means and centred sums of squares/products of one arm."""

    n: FloatArray
    mean_y: FloatArray
    mean_x: FloatArray
    cyy: FloatArray
    cxx: FloatArray
    cxy: FloatArray

    @classmethod
    def of(cls, m: Moments) -> _Arm:
        with np.errstate(divide="ignore", invalid="ignore"):
            mean_y, mean_x = m.sum_y / m.n, m.sum_x / m.n
            cyy = _centred(m.sum_yy, m.sum_y * mean_y)
            cxx = _centred(m.sum_xx, m.sum_x * mean_x)
            bound = np.sqrt(cxx * cyy)  # Cauchy-Schwarz, against rounding in sum_xy
            cxy = np.clip(np.nan_to_num(m.sum_xy - m.sum_x * mean_y), -bound, bound)
        return cls(m.n, mean_y, mean_x, cyy, cxx, cxy)

    def adjusted_ss(self, theta: FloatArray) -> FloatArray:
        """Sum of squared deviations of y - theta x (the CUPED-adjusted metric)."""
        return np.maximum(self.cyy - 2.0 * theta * self.cxy + theta * theta * self.cxx, 0.0)


def _centred(sum_sq: FloatArray, correction: FloatArray) -> FloatArray:
    c = np.nan_to_num(sum_sq - correction)
    return np.where(c <= _ZERO_VAR * np.abs(sum_sq), 0.0, c)


def estimate(
    control: Moments,
    arm: Moments,
    *,
    alpha: float = 0.05,
    cuped: bool = True,
    sequential: bool = False,
    expected_n: float = seq.DEFAULT_EXPECTED_N,
) -> Estimate:
    """Effect of `arm` over `control` for every entry of the moments' arrays at once."""
    c, t = _Arm.of(control), _Arm.of(arm)
    theta, applied = _theta(c, t) if cuped else (np.zeros(()), np.zeros((), dtype=bool))
    with np.errstate(divide="ignore", invalid="ignore"):
        ss_c, ss_t = c.adjusted_ss(theta), t.adjusted_ss(theta)
        vc, vt = ss_c / (c.n - 1.0) / c.n, ss_t / (t.n - 1.0) / t.n  # variance of each adjusted mean
        raw = c.cyy / (c.n - 1.0) / c.n + t.cyy / (t.n - 1.0) / t.n
        valid = (c.n >= 2) & (t.n >= 2)
        se = np.where(valid, np.sqrt(vc + vt), np.nan)
        diff = (t.mean_y - c.mean_y) - theta * (t.mean_x - c.mean_x)
        df = (vc + vt) ** 2 / (vc * vc / (c.n - 1.0) + vt * vt / (t.n - 1.0))
        mult = _multiplier(c.n + t.n, df, alpha, sequential, expected_n)
        z = diff / se
        p = _p_value(z, df, c.n + t.n, alpha, sequential, expected_n)
        rel, rel_se = _relative(diff, se, c, theta)
        reduction = np.where(applied & (raw > 0), 1.0 - (vc + vt) / raw, 0.0)
    zero = valid & (se == 0)
    same = np.abs(diff) <= 1e-9 * np.maximum(np.abs(c.mean_y), np.abs(t.mean_y))
    # Both arms constant: no noise to test against; equal constants are no effect at all.
    p = np.where(zero, np.where(same, 1.0, 0.0), p)
    half, rel_half = np.where(zero, 0.0, mult * se), np.where(zero, 0.0, mult * rel_se)
    win = np.where(zero, np.where(same, 0.5, (diff > 0).astype(np.float64)), stats.norm.cdf(z))
    return Estimate(
        *(c.n, t.n, c.mean_y, t.mean_y, diff, se, diff - half, diff + half, p),
        *(rel, rel - rel_half, rel + rel_half, np.where(valid, win, np.nan), reduction),
        cuped=applied & valid,
        zero_variance=zero,
    )


def _theta(c: _Arm, t: _Arm) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """CUPED's theta = cov(y, x) / var(x) pooled within both arms (0 where x does not vary)."""
    sxx = c.cxx + t.cxx
    applied = sxx > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(applied, (c.cxy + t.cxy) / sxx, 0.0), applied


def _multiplier(
    n: FloatArray, df: FloatArray, alpha: float, sequential: bool, expected_n: float
) -> FloatArray:
    if sequential:
        return seq.multiplier(n, alpha, expected_n)
    return np.asarray(stats.t.ppf(1.0 - alpha / 2.0, df), dtype=np.float64)


def _p_value(
    z: FloatArray, df: FloatArray, n: FloatArray, alpha: float, sequential: bool, expected_n: float
) -> FloatArray:
    if sequential:
        return seq.p_value(z, n, alpha, expected_n)
    return np.asarray(2.0 * stats.t.sf(np.abs(z), df), dtype=np.float64)


def _relative(diff: FloatArray, se: FloatArray, c: _Arm, theta: FloatArray) -> tuple[FloatArray, FloatArray]:
    """diff / control mean and its delta-method standard error.

    Var(d/m) ~ Var(d)/m^2 + d^2 Var(m)/m^4 - 2 d Cov(d, m)/m^3, where m is the control mean and
    Cov(d, m) = -(Var(m) - theta Cov(mean x, m)) because d contains -(mean y - theta mean x) of the
    control. Without CUPED this is the usual Var(t)/m^2 + t^2 Var(m)/m^4.
    """
    m = c.mean_y
    var_m = c.cyy / (c.n - 1.0) / c.n
    cov = -(c.cyy - theta * c.cxy) / (c.n - 1.0) / c.n
    var = se * se / m**2 + diff * diff * var_m / m**4 - 2.0 * diff * cov / m**3
    ok = m != 0
    return np.where(ok, diff / m, np.nan), np.where(ok, np.sqrt(np.maximum(var, 0.0)), np.nan)
