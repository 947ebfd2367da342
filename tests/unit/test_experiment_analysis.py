"""Experiment statistics against known answers: Welch by hand, planted CUPED correlation, A/A peeking,
SRM at known counts, Holm by hand, and inputs that must not break the results page."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from server.experiments.analysis import (
    ArmData,
    Moments,
    analyse,
    compare,
    compare_moments,
    estimate,
    holm,
    srm,
    srm_p_values,
)


def arm(name: str, values: list[float] | np.ndarray, pre: np.ndarray | None = None) -> ArmData:
    return ArmData(name, np.asarray(values, dtype=np.float64), pre)


def test_welch_matches_the_hand_computed_answer() -> None:
    # control mean 3, var 2.5; arm mean 6, var 10: se^2 = 2.5/5 + 10/5 = 2.5,
    # df = 2.5^2 / (0.5^2/4 + 2^2/4) = 6.25 / 1.0625 = 5.882..., t = 3 / sqrt(2.5) = 1.897...
    e = compare("m", arm("c", [1, 2, 3, 4, 5]), arm("b", [2, 4, 6, 8, 10]), min_n=2, cuped=False)
    df, se = 6.25 / 1.0625, math.sqrt(2.5)
    assert (e.mean_control, e.mean_arm, e.absolute) == (3.0, 6.0, 3.0)
    assert e.p_value == pytest.approx(2 * stats.t.sf(3 / se, df), rel=1e-12)
    assert e.p_value == pytest.approx(0.1075, abs=5e-4)
    half = stats.t.ppf(0.975, df) * se
    assert (e.ci_low, e.ci_high) == pytest.approx((3 - half, 3 + half), rel=1e-12)
    # relative 3/3 = 1; delta method: var = 2/9 + 6^2 * 0.5 / 3^4 = 4/9, se = 2/3
    assert e.relative == pytest.approx(1.0)
    assert (e.rel_ci_low, e.rel_ci_high) == pytest.approx((1 - half / se * 2 / 3, 1 + half / se * 2 / 3))
    scipy_p = stats.ttest_ind([2, 4, 6, 8, 10], [1, 2, 3, 4, 5], equal_var=False).pvalue
    assert e.p_value == pytest.approx(scipy_p, rel=1e-10)
    assert e.warnings == () and not e.cuped and e.variance_reduction is None


@pytest.mark.parametrize("noise_sd", [1.0, 0.5])
def test_cuped_removes_the_planted_share_of_variance(noise_sd: float) -> None:
    # y = x + noise: the pre-period explains var(x) / var(y) = 1 / (1 + sd^2) of the variance.
    rng = np.random.default_rng(7)
    n, lift = 20_000, 0.05
    xc, xt = rng.normal(size=n), rng.normal(size=n)
    yc, yt = xc + rng.normal(0, noise_sd, n), xt + lift + rng.normal(0, noise_sd, n)
    plain = compare("m", arm("c", yc), arm("b", yt), cuped=False)
    adjusted = compare("m", arm("c", yc, xc), arm("b", yt, xt))
    planted = 1 / (1 + noise_sd**2)
    assert adjusted.cuped and adjusted.variance_reduction == pytest.approx(planted, abs=0.02)
    width = (adjusted.ci_high - adjusted.ci_low) / (plain.ci_high - plain.ci_low)
    assert width == pytest.approx(math.sqrt(1 - planted), abs=0.02)
    assert adjusted.ci_low < lift < adjusted.ci_high
    assert abs(adjusted.absolute - lift) < abs(plain.absolute - lift) + 0.01


def test_cuped_needs_a_pre_period_in_both_arms_that_varies() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=(2, 500))
    one_sided = compare("m", arm("c", y[0], y[0]), arm("b", y[1]))
    assert not one_sided.cuped and one_sided.variance_reduction is None
    flat = compare("m", arm("c", y[0], np.ones(500)), arm("b", y[1], np.ones(500)))
    assert not flat.cuped and "CUPED not applied" in " ".join(flat.warnings)
    assert flat.absolute == pytest.approx(one_sided.absolute)


def aa_looks(sims: int, looks: int, per_look: int, seed: int) -> tuple[Moments, Moments]:
    rng = np.random.default_rng(seed)
    daily = [Moments.of(rng.exponential(2.0, size=(sims, looks, per_look))) for _ in range(2)]
    return daily[0].cumsum(axis=1), daily[1].cumsum(axis=1)


def test_sequential_intervals_cover_at_every_look_where_peeking_at_fixed_ones_does_not() -> None:
    control, treated = aa_looks(sims=200, looks=20, per_look=100, seed=19)
    fixed = estimate(control, treated)
    always = estimate(control, treated, sequential=True)
    assert fixed.absolute.shape == (200, 20)
    assert (always.ci_high - always.ci_low > fixed.ci_high - fixed.ci_low).all()
    ever_fixed = ((fixed.ci_low > 0) | (fixed.ci_high < 0)).any(axis=1).mean()
    ever_always = ((always.ci_low > 0) | (always.ci_high < 0)).any(axis=1).mean()
    assert ever_always <= 0.05
    assert ever_fixed > 0.10  # peeking 20 times at a 5% test inflates its error, as is well known
    # the always-valid p-value and interval agree at every look
    excludes = (always.ci_low > 0) | (always.ci_high < 0)
    assert ((always.p_value <= 0.05) == excludes).all()


def test_sequential_interval_finds_a_real_effect() -> None:
    rng = np.random.default_rng(3)
    c, b = rng.normal(10, 2, 5000), rng.normal(10.3, 2, 5000)
    e = compare("m", arm("c", c), arm("b", b), sequential=True, cuped=False)
    fixed = compare("m", arm("c", c), arm("b", b), cuped=False)
    assert e.sequential and e.ci_low > 0 and e.p_value < 0.05
    # the same estimate, a wider interval around it and a larger p-value: the price of looking daily
    assert e.absolute == fixed.absolute and e.ci_low < fixed.ci_low and e.ci_high > fixed.ci_high
    assert e.p_value > fixed.p_value


def test_moments_add_up_and_group_like_the_raw_arrays() -> None:
    rng = np.random.default_rng(5)
    y, x = rng.normal(size=1000), rng.normal(size=1000)
    whole = Moments.of(y, x)
    parts = Moments.of(y[:300], x[:300]) + Moments.of(y[300:], x[300:])
    assert float(parts.sum_xy) == pytest.approx(float(whole.sum_xy))
    group = rng.integers(0, 4, 1000)
    grouped = Moments.grouped(group, 4, y, x)
    assert float(grouped[2].sum_yy) == pytest.approx(float(Moments.of(y[group == 2], x[group == 2]).sum_yy))
    by_moments = compare_moments("m", ("c", grouped[0]), ("b", grouped[1]))
    by_values = compare("m", arm("c", y[group == 0], x[group == 0]), arm("b", y[group == 1], x[group == 1]))
    assert by_moments.ci_low == pytest.approx(by_values.ci_low)
    assert by_moments.variance_reduction == pytest.approx(by_values.variance_reduction)


def test_chance_to_win_is_the_flat_prior_posterior_and_follows_the_metric_direction() -> None:
    rng = np.random.default_rng(11)
    c, b = rng.normal(0, 1, 400), rng.normal(0.1, 1, 400)
    up = compare("m", arm("c", c), arm("b", b), cuped=False)
    down = compare("m", arm("c", c), arm("b", b), cuped=False, higher_is_better=False)
    se = math.sqrt(c.var(ddof=1) / 400 + b.var(ddof=1) / 400)
    assert up.chance_to_win == pytest.approx(stats.norm.cdf(up.absolute / se))
    assert up.chance_to_win is not None and down.chance_to_win == pytest.approx(1 - up.chance_to_win)
    assert compare("m", arm("c", c), arm("b", b), bayesian=False).chance_to_win is None


def test_srm_at_known_counts() -> None:
    fine = srm([5100, 4900], [0.5, 0.5])  # chi2 = 4, p = 0.0455: suspicious, not an alarm
    assert fine.p_value == pytest.approx(stats.chi2.sf(4, 1)) and not fine.mismatch
    broken = srm([5500, 4500], [0.5, 0.5])  # chi2 = 100
    assert broken.mismatch and broken.expected == (5000.0, 5000.0) and broken.observed == (5500, 4500)
    three = srm([3300, 3300, 3400], [1 / 3, 1 / 3, 1 / 3])
    assert three.p_value == pytest.approx(stats.chisquare([3300, 3300, 3400]).pvalue)
    assert not srm([0, 0], [0.5, 0.5]).mismatch
    assert srm([10, 5, 5], [0.0, 0.5, 0.5]).mismatch  # readers in an arm that should get none
    many = srm_p_values(np.array([[5100, 4900], [5500, 4500]]), [0.5, 0.5])
    assert many == pytest.approx([fine.p_value, broken.p_value])
    with pytest.raises(ValueError):
        srm([1, 2, 3], [0.5, 0.5])


def test_holm_matches_the_hand_computation_and_statsmodels() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, then max(0.04*1, 0.06) = 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    with_nan = holm([0.01, float("nan"), 0.04])
    assert math.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.04])


def experiment_data(seed: int = 2, n: int = 2000) -> dict[str, dict[str, ArmData]]:
    rng = np.random.default_rng(seed)

    def metric(means: tuple[float, float, float], sd: float) -> dict[str, ArmData]:
        return {
            name: arm(name, rng.normal(mu, sd, n))
            for name, mu in zip(("control", "a", "b"), means, strict=True)
        }

    return {
        "clicks_per_visit": metric((1.0, 1.2, 1.0), 1.0),
        "dwell_per_visit": metric((30.0, 30.0, 30.5), 10.0),
        "latency_ms": metric((200.0, 200.0, 260.0), 50.0),
    }


def test_analyse_adjusts_non_guardrails_and_flags_a_worse_guardrail() -> None:
    report = analyse(
        experiment_data(),
        "control",
        primary="clicks_per_visit",
        secondary=["dwell_per_visit"],
        guardrails=["latency_ms"],
        sequential=False,
        weights={"control": 1 / 3, "a": 1 / 3, "b": 1 / 3},
    )
    assert [(e.metric, e.arm, e.role) for e in report.effects][::2] == [
        ("clicks_per_visit", "a", "primary"),
        ("dwell_per_visit", "a", "secondary"),
        ("latency_ms", "a", "guardrail"),
    ]
    tested = [e for e in report.effects if e.role != "guardrail"]
    assert [e.p_adjusted for e in tested] == pytest.approx(list(holm([e.p_value for e in tested])))
    assert all(e.p_adjusted is None for e in report.effects if e.role == "guardrail")
    latency_b = report.effect("latency_ms", "b")
    assert latency_b is not None and latency_b.flagged and latency_b.chance_to_win is not None
    assert latency_b.chance_to_win < 0.01  # higher latency is worse
    assert not any(e.flagged for e in report.effects if e is not latency_b)
    assert report.warnings == ("guardrail latency_ms: b is significantly worse than control",)
    assert report.srm is not None and not report.blocked
    clicks_a = report.effect("clicks_per_visit", "a")
    assert clicks_a is not None and clicks_a.p_adjusted is not None and clicks_a.p_adjusted < 0.001


def test_analyse_blocks_on_sample_ratio_mismatch_and_notes_missing_metrics() -> None:
    data = experiment_data()
    report = analyse(
        data,
        "control",
        primary="clicks_per_visit",
        secondary=["return_7d"],
        sequential=True,
        weights={"control": 0.5, "a": 0.25, "b": 0.25},
    )
    assert report.blocked and report.warnings[0].startswith("sample ratio mismatch")
    assert "return_7d: no data for the control arm 'control'" in report.warnings
    assert all(e.sequential for e in report.effects)


def test_empty_arms_give_warnings_not_exceptions() -> None:
    e = compare("m", arm("c", []), arm("b", [1.0, 2.0, 3.0]))
    assert e.n_control == 0 and math.isnan(e.absolute) and math.isnan(e.p_value)
    assert e.relative is None and e.chance_to_win is None
    assert any("c has 0 readers" in w for w in e.warnings)
    report = analyse(
        {"m": {"c": arm("c", []), "b": arm("b", [])}}, "c", primary="m", weights={"c": 1, "b": 1}
    )
    assert report.effects[0].p_adjusted is None and report.srm is not None and not report.blocked


def test_missing_values_are_left_out_and_said_so() -> None:
    rng = np.random.default_rng(4)
    c, b = rng.normal(size=300), rng.normal(size=300)
    holes = np.concatenate([c, [np.nan, np.inf]])
    pre = np.concatenate([c + 1, [np.nan, np.nan]])
    clean = compare("m", arm("c", c, c + 1), arm("b", b, b + 1))
    with_holes = compare("m", arm("c", holes, pre), arm("b", b, b + 1))
    assert with_holes.n_control == 300 and with_holes.ci_low == pytest.approx(clean.ci_low)
    assert "2 readers in c had no value and were left out" in with_holes.warnings


def test_equal_values_and_a_zero_control_mean() -> None:
    same = compare("m", arm("c", [0.1] * 300), arm("b", [0.1] * 700))
    assert same.p_value == 1.0 and same.ci_low == same.ci_high == pytest.approx(0.0, abs=1e-12)
    assert "all values equal" in " ".join(same.warnings)
    apart = compare("m", arm("c", [0.0] * 200), arm("b", [1.0] * 200))
    assert apart.p_value == 0.0 and apart.absolute == 1.0 and apart.relative is None
    assert "the control mean is 0: no relative effect" in apart.warnings
    few = compare("m", arm("c", [1.0, 2.0, 3.0]), arm("b", [2.0, 3.0, 4.0]))
    assert sum("minimum 100" in w for w in few.warnings) == 2 and math.isfinite(few.p_value)
