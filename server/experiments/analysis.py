"""The statistics of an experiment: effects with intervals, CUPED, sequential mode, Holm, SRM.

Owns every number on the results page; pure numpy/scipy/statsmodels, no SQL (metrics.py turns
events into per-reader values, this module turns those into effects).

Library choice: GrowthBook's engine (gbstats 0.8) pins numpy<2 and pandas<2, which this project's
torch/transformers stack cannot take, so the tests come from scipy.stats (Welch t, normal,
chi-square) and statsmodels (`multipletests`, Holm), and the sequential boundary is the published
formula GrowthBook and Eppo use (sequential.py). What is ours is only the algebra on sufficient
statistics (moments.py: `Moments`, the vectorized `estimate`), which keeps the daily looks of
1,000 simulated experiments one call. Here `compare_moments` and `compare` wrap one comparison
into an `Effect` with the warnings it needs; `analyse` makes the `Report` over metrics x arms.

Method: absolute effect = difference of means, Welch t interval and p-value (normal asymptotics in
sequential mode); relative effect = absolute / control mean with a delta-method interval. CUPED
(Deng et al. 2013) subtracts theta * (pre - mean pre) with theta = cov(y, x) / var(x) pooled
within both arms; theta is treated as known, as GrowthBook and Eppo do. Chance to win is the
probability that the arm is better under a flat prior (normal posterior N(effect, se^2)): P(effect
> 0), or P(effect < 0) where lower is better (`higher_is_better=False`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from server.experiments import sequential as seq
from server.experiments.moments import Estimate, Moments, estimate

__all__ = [
    "SRM_THRESHOLD",
    "ArmData",
    "Effect",
    "Moments",
    "Report",
    "Srm",
    "analyse",
    "compare",
    "compare_moments",
    "estimate",
    "holm",
    "srm",
    "srm_p_values",
]

FloatArray = npt.NDArray[np.float64]
Role = Literal["primary", "secondary", "guardrail"]

SRM_THRESHOLD = 0.001  # the usual alarm level: at 0.05 one experiment in twenty would be blocked falsely


@dataclass(frozen=True, eq=False)
class ArmData:
    """Per-reader values of one metric in one arm; `pre` (same order) is the pre-exposure value."""

    name: str
    values: FloatArray
    pre: FloatArray | None = None


@dataclass(frozen=True)
class Effect:
    """One arm against the control on one metric. `chance_to_win` is P(arm better than control)."""

    metric: str
    arm: str
    control: str
    n_control: int
    n_arm: int
    mean_control: float
    mean_arm: float
    absolute: float
    relative: float | None
    ci_low: float
    ci_high: float
    rel_ci_low: float | None
    rel_ci_high: float | None
    p_value: float
    p_adjusted: float | None
    cuped: bool
    variance_reduction: float | None
    sequential: bool
    chance_to_win: float | None
    warnings: tuple[str, ...]
    role: Role = "primary"
    flagged: bool = False  # a guardrail the arm made significantly worse


@dataclass(frozen=True)
class Srm:
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    p_value: float
    mismatch: bool


@dataclass(frozen=True)
class Report:
    effects: tuple[Effect, ...]
    srm: Srm | None
    warnings: tuple[str, ...]
    alpha: float = 0.05
    sequential: bool = False

    @property
    def blocked(self) -> bool:
        """An SRM means assignment or logging is broken: no effect on the page can be trusted."""
        return self.srm is not None and self.srm.mismatch

    def effect(self, metric: str, arm: str) -> Effect | None:
        return next((e for e in self.effects if e.metric == metric and e.arm == arm), None)


def compare_moments(
    metric: str,
    control: tuple[str, Moments],
    arm: tuple[str, Moments],
    *,
    alpha: float = 0.05,
    cuped: bool = True,
    sequential: bool = False,
    bayesian: bool = True,
    min_n: int = 100,
    higher_is_better: bool = True,
    expected_n: float = seq.DEFAULT_EXPECTED_N,
) -> Effect:
    """One comparison from (name, scalar moments) pairs, with the warnings a reader of it needs."""
    est = estimate(control[1], arm[1], alpha=alpha, cuped=cuped, sequential=sequential, expected_n=expected_n)
    win = float(est.chance_to_win)
    rel = _optional(est.relative)
    return Effect(
        *(metric, arm[0], control[0], int(est.n_control), int(est.n_arm)),
        *(float(est.mean_control), float(est.mean_arm), float(est.absolute), rel),
        *(float(est.ci_low), float(est.ci_high), _optional(est.rel_ci_low), _optional(est.rel_ci_high)),
        p_value=float(est.p_value),
        p_adjusted=None,
        cuped=bool(est.cuped),
        variance_reduction=float(est.variance_reduction) if est.cuped else None,
        sequential=sequential,
        chance_to_win=(win if higher_is_better else 1.0 - win) if bayesian and np.isfinite(win) else None,
        warnings=_warnings(control, arm, est, min_n, cuped),
    )


def _optional(a: FloatArray) -> float | None:
    return float(a) if np.isfinite(a) else None


def _warnings(
    control: tuple[str, Moments], arm: tuple[str, Moments], est: Estimate, min_n: int, cuped: bool
) -> tuple[str, ...]:
    out: list[str] = []
    for name, m in (control, arm):
        n, missing = int(m.n), int(m.missing)
        if missing:
            out.append(f"{missing} readers in {name} had no value and were left out")
        if n < 2:
            out.append(f"{name} has {n} readers: no interval can be computed")
        elif n < min_n:
            out.append(f"{name} has only {n} readers (minimum {min_n}): the interval is not reliable yet")
    if bool(est.zero_variance):
        out.append("the metric does not vary within either arm (all values equal)")
    if np.isfinite(est.absolute) and not np.isfinite(est.relative):
        out.append("the control mean is 0: no relative effect")
    has_pre = float(control[1].sum_xx + arm[1].sum_xx) > 0
    if cuped and has_pre and not bool(est.cuped) and int(control[1].n) >= 2 and int(arm[1].n) >= 2:
        out.append("the pre-period value does not vary: CUPED not applied")
    return tuple(out)


def compare(
    metric: str,
    control: ArmData,
    arm: ArmData,
    *,
    alpha: float = 0.05,
    cuped: bool = True,
    sequential: bool = False,
    bayesian: bool = True,
    min_n: int = 100,
    higher_is_better: bool = True,
    expected_n: float = seq.DEFAULT_EXPECTED_N,
) -> Effect:
    """`arm` against `control` on one metric from per-reader values (see `compare_moments`)."""
    use_pre = cuped and control.pre is not None and arm.pre is not None  # x is needed in both arms
    c, t = ((a.name, Moments.of(a.values, a.pre if use_pre else None)) for a in (control, arm))
    return compare_moments(
        metric,
        c,
        t,
        alpha=alpha,
        cuped=cuped,
        sequential=sequential,
        bayesian=bayesian,
        min_n=min_n,
        higher_is_better=higher_is_better,
        expected_n=expected_n,
    )


def holm(p_values: Sequence[float]) -> FloatArray:
    """Holm-adjusted p-values (statsmodels); NaN stays NaN and takes no part in the correction."""
    from statsmodels.stats.multitest import multipletests  # heavy import, only when analysing

    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def srm(counts: Sequence[int], weights: Sequence[float]) -> Srm:
    """Sample-ratio mismatch: chi-square goodness of fit of exposed readers per arm to the weights."""
    observed = np.asarray(counts, dtype=np.float64)
    expected = observed.sum() * _shares(observed, weights)
    p = float(srm_p_values(observed, weights))
    return Srm(tuple(int(c) for c in counts), tuple(float(e) for e in expected), p, p < SRM_THRESHOLD)


def srm_p_values(counts: npt.ArrayLike, weights: Sequence[float]) -> FloatArray:
    """SRM p-values for many experiments at once: `counts` has arms on its last axis.

    Pearson's statistic as scipy.stats.chisquare computes it, written out so that rows without
    readers (p = 1) and arms of weight 0 that got readers (p = 0: always a bug) need no special
    call. Degrees of freedom: arms of positive weight - 1.
    """
    observed = np.asarray(counts, dtype=np.float64)
    live = _shares(observed, weights) > 0
    seen = observed[..., live]
    expected = seen.sum(axis=-1, keepdims=True) * _shares(seen, np.asarray(weights)[live])
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.nansum(np.square(seen - expected) / expected, axis=-1)
    p = np.asarray(stats.chi2.sf(chi2, max(int(live.sum()) - 1, 1)), dtype=np.float64)
    p = np.where(observed.sum(axis=-1) > 0, p, 1.0)
    return np.asarray(np.where((observed[..., ~live] > 0).any(axis=-1), 0.0, p), dtype=np.float64)


def _shares(observed: FloatArray, weights: Sequence[float] | FloatArray) -> FloatArray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != observed.shape[-1:] or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one non-negative weight per arm (sum > 0), got {list(weights)}")
    return np.asarray(w / w.sum(), dtype=np.float64)


def analyse(
    metrics: Mapping[str, Mapping[str, ArmData]],
    control: str,
    *,
    primary: str,
    secondary: Sequence[str] = (),
    guardrails: Sequence[str] = (),
    sequential: bool = True,
    alpha: float = 0.05,
    cuped: bool = True,
    bayesian: bool = True,
    min_n: int = 100,
    higher_is_better: Mapping[str, bool] | None = None,
    weights: Mapping[str, float] | None = None,
    counts: Mapping[str, int] | None = None,
    expected_n: float = seq.DEFAULT_EXPECTED_N,
) -> Report:
    """Every non-control arm on every metric, Holm across primary and secondary, guardrails, SRM.

    `higher_is_better` defaults to True for primary/secondary and False for guardrails (fallbacks,
    rejections and latency are bad when they grow); pass `METRICS[name].higher_is_better` to be
    exact. SRM runs when `weights` (arm -> traffic weight) is given, on `counts` (exposed readers
    per arm) or else on the number of readers with a primary metric value.
    """
    direction = dict(higher_is_better or {})
    roles: list[tuple[str, Role]] = [(primary, "primary"), *((m, "secondary") for m in secondary)]
    roles += [(m, "guardrail") for m in guardrails]
    effects: list[Effect] = []
    notes: list[str] = []

    def one(metric: str, role: Role, control_data: ArmData, data: ArmData) -> Effect:
        better = direction.get(metric, role != "guardrail")
        e = compare(
            *(metric, control_data, data),
            alpha=alpha,
            cuped=cuped,
            sequential=sequential,
            bayesian=bayesian,
            min_n=min_n,
            higher_is_better=better,
            expected_n=expected_n,
        )
        return replace(e, role=role, flagged=role == "guardrail" and _worse(e, better))

    for metric, role in roles:
        arms = metrics.get(metric, {})
        if control not in arms:
            notes.append(f"{metric}: no data for the control arm {control!r}")
            continue
        effects += [one(metric, role, arms[control], data) for name, data in arms.items() if name != control]
    effects = _adjust(effects)
    notes += [
        f"guardrail {e.metric}: {e.arm} is significantly worse than {e.control}" for e in effects if e.flagged
    ]
    check = None if weights is None else _srm_of(metrics.get(primary, {}), weights, counts)
    if check is not None and check.mismatch:
        notes.insert(0, f"sample ratio mismatch (p = {check.p_value:.2g}): assignment or logging is broken")
    return Report(tuple(effects), check, tuple(notes), alpha=alpha, sequential=sequential)


def _worse(e: Effect, higher_is_better: bool) -> bool:
    return bool(e.ci_high < 0) if higher_is_better else bool(e.ci_low > 0)


def _adjust(effects: list[Effect]) -> list[Effect]:
    """Holm across the non-guardrail effects: a family of (metric x arm) decisions."""
    tested = [i for i, e in enumerate(effects) if e.role != "guardrail"]
    adjusted = holm([effects[i].p_value for i in tested])
    out = list(effects)
    for i, p in zip(tested, adjusted, strict=True):
        out[i] = replace(out[i], p_adjusted=float(p) if np.isfinite(p) else None)
    return out


def _srm_of(
    arms: Mapping[str, ArmData], weights: Mapping[str, float], counts: Mapping[str, int] | None
) -> Srm:
    if counts is None:
        counts = {
            name: int(np.isfinite(np.asarray(a.values, dtype=np.float64)).sum()) for name, a in arms.items()
        }
    return srm([counts.get(name, 0) for name in weights], list(weights.values()))
