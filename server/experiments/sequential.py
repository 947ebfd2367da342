"""Always-valid inference for experiments people look at every day: asymptotic confidence sequences.

Owns the boundary of the sequential mode of server/experiments/analysis.py and nothing else. A
fixed-horizon interval covers the truth with 95% at one pre-planned look; looked at daily and
stopped at the first "significant" day, it is wrong far more often than 5% (bench/experiments.py
measures by how much). A confidence sequence covers the truth at every look at once.

The formula is the normal-mixture boundary of Howard, Ramdas, McAuliffe and Sekhon (2021),
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2), eq. (14),
used asymptotically (Waudby-Smith et al. 2021, "Time-uniform central limit theory and asymptotic
confidence sequences"): the estimate's own standard error takes the place of a known variance. It
is the boundary GrowthBook (gbstats `SequentialTwoSidedTTest`) and Eppo ship, with the mixing
parameter rho tuned for an expected total sample size (GrowthBook's default 5,000). A sample far
from that size still gets a valid interval, only a wider one than the best possible.

Everything here is vectorized: `n` and `se` may be arrays (one entry per simulated experiment and
day), so the benchmark's 1,000 experiments x 30 looks cost one call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DEFAULT_EXPECTED_N = 5000.0  # readers in both arms together when the boundary is tightest


def rho_squared(alpha: float, expected_n: float = DEFAULT_EXPECTED_N) -> float:
    """The mixing variance rho^2 that makes the boundary (nearly) tightest at `expected_n`.

    Howard et al. 2021's closed-form approximation of the optimum (as in GrowthBook's gbstats:
    rho = sqrt((-2 log a + log(-2 log a + 1)) / N)).
    """
    if not 0.0 < alpha < 1.0 or expected_n <= 0:
        raise ValueError(f"alpha must be in (0, 1) and expected_n positive, got {alpha}, {expected_n}")
    log_term = -2.0 * np.log(alpha)
    return float((log_term + np.log(log_term + 1.0)) / expected_n)


def multiplier(n: npt.ArrayLike, alpha: float, expected_n: float = DEFAULT_EXPECTED_N) -> FloatArray:
    """Half-width of the always-valid interval in units of the estimate's standard error.

    The boundary for a mean of n unit-variance terms is sqrt(2(n r + 1)/(n^2 r) log(sqrt(n r + 1)/alpha))
    with r = rho^2; an estimate with standard error se has sigma = se sqrt(n), so the half-width is
    se * sqrt(2(n r + 1)/(n r) * log(sqrt(n r + 1)/alpha)). Two-sided at level alpha as published
    (the normal mixture is symmetric in the sign of the drift). NaN where n <= 0.
    """
    nr = _n_rho2(n, alpha, expected_n)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.sqrt(2.0 * (nr + 1.0) / nr * np.log(np.sqrt(nr + 1.0) / alpha))
    return _floats(np.where(nr > 0, out, np.nan))


def p_value(
    z: npt.ArrayLike, n: npt.ArrayLike, alpha: float, expected_n: float = DEFAULT_EXPECTED_N
) -> FloatArray:
    """Always-valid p-value: 1 / (the normal-mixture martingale), capped at 1.

    z is the estimate over its standard error. p <= alpha exactly when the interval of
    `multiplier(n, alpha)` excludes 0, so the reported p-value and interval never disagree; rho
    stays the one tuned for the design alpha, which keeps the p-value a single martingale (anytime
    valid at every level) rather than one boundary per level.
    """
    nr = _n_rho2(n, alpha, expected_n)
    z2 = np.square(np.asarray(z, dtype=np.float64))
    with np.errstate(over="ignore", invalid="ignore"):
        log_p = 0.5 * np.log1p(nr) - z2 * nr / (2.0 * (1.0 + nr))
    out = np.minimum(1.0, np.exp(log_p))
    return _floats(np.where(nr > 0, out, np.nan))


def _n_rho2(n: npt.ArrayLike, alpha: float, expected_n: float) -> FloatArray:
    return _floats(np.asarray(n, dtype=np.float64) * rho_squared(alpha, expected_n))


def _floats(a: Any) -> FloatArray:
    return np.asarray(a, dtype=np.float64)
