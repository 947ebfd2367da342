"""Experiments benchmark (issue 19): are server/experiments' statistics right, and fast enough?

    python bench/experiments.py --out bench/results/experiments.json
    python bench/experiments.py --aa 200 --aa-readers 500 ...   # smaller, see --help

Simulated readers whose true response is known: each has a visit rate (gamma across readers) and
a chance to click an item shown (beta); a visit is a briefing of 5 items, each clicked with that
chance, times the planted lift in the treatment arm after exposure. Readers are assigned by the
service's hashing (server.experiments.assign) and every figure comes from analysis.py.

- A/A: experiments looked at after every simulated day (peeking): the share with any significant
  look in the sequential mode, in the naive fixed-horizon test under the same peeking, and with
  the fixed-horizon test at the end only (exact binomial intervals).
- power at a planted relative lift on clicks_per_visit (sequential: any look; fixed: the end),
  and CUPED's CI-width ratio with the 14-day pre-period against its theoretical sqrt(1 - rho^2).
- SRM: a planted bug that loses 2% of the treatment's readers (their exposures never logged).
- end-to-end: the first simulated experiments written to SQLite as the service writes them
  (exposure rows in the serving transaction, briefings_served, events through SqlEventStore) and
  read back by metrics.reader_metrics / metrics.daily + analysis.analyse: their numbers must equal
  the arrays', which is what lets the mass sections stand for the SQL path.
- timing: ~1M exposures and 10M events bulk-loaded into SQLite (generation timed apart), then
  metrics.reader_metrics + Experiments.arm_counts + analysis.analyse over the full metric set.

The mass sections compute each reader's clicks_per_visit in numpy with metrics.py's windows
(first exposure up to each look; the 14 days before it for CUPED) and analyse the daily looks of
all experiments at once through analysis.py's sufficient statistics (`Moments`, `estimate`: the
code `compare` and `analyse` run), as the issue allows for peeking at 1,000 experiments.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import binomtest
from sqlalchemy import Engine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, write_results
from bench.experiments_sim import (
    ARMS,
    PRIMARY,
    T0,
    WEIGHTS,
    Actor,
    Log,
    Population,
    arms_of,
    bulk_load,
    definition,
    looks,
    simulate,
    stacked,
    temp_engine,
    write_log,
)
from server.experiments import Experiment
from server.experiments.analysis import SRM_THRESHOLD, Moments, analyse, compare, estimate, srm_p_values
from server.experiments.metrics import daily, reader_metrics
from server.experiments.store import Experiments
from server.stores import SqlEventStore

ROOT = Path(__file__).resolve().parent.parent
PLANTED = 0.2  # the end-to-end check's planted lift: large enough to show in one experiment


# Simulated experiments ---------------------------------------------------------------------------


def run_many(
    prefix: str, count: int, n: int, pop: Population, lift: float, seed: int, keep: int = 0
) -> tuple[Moments, list[tuple[Experiment, Log, Moments, float]]]:
    """`count` simulated experiments: their daily looks (experiments x days x arms) and the
    first `keep` logs for the end-to-end check."""
    rng = np.random.default_rng(seed)
    all_looks, kept = [], []
    for j in range(count):
        e = definition(f"{prefix}-{j:04d}")
        log = simulate(e, n, pop, lift, rng)
        all_looks.append(looks(log, pop))
        if j < keep:
            kept.append((e, log, all_looks[-1], lift))
    return stacked(all_looks), kept


# Statistics --------------------------------------------------------------------------------------


def rate(hits: npt.NDArray[np.bool_]) -> dict[str, Any]:
    k, n = int(hits.sum()), int(hits.size)
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    return {"rate": k / n, "ci95": [round(ci.low, 4), round(ci.high, 4)], "count": k, "experiments": n}


def any_look(p: npt.NDArray[np.float64], alpha: float, sign: Any = True) -> npt.NDArray[np.bool_]:
    return np.asarray(((p < alpha) & sign).any(axis=1))


def aa_section(m: Moments, alpha: float, expected_n: float) -> dict[str, Any]:
    c, t = m[..., 0], m[..., 1]
    seq = estimate(c, t, alpha=alpha, sequential=True, expected_n=expected_n)
    naive = estimate(c, t, alpha=alpha, sequential=False)
    return {
        "experiments": int(m.n.shape[0]),
        "looks": int(m.n.shape[1]),
        "readers_per_arm_at_end": round(float(m.n[:, -1].mean()), 1),
        "sequential": _fpr(any_look(seq.p_value, alpha)),
        "naive_peeking": _fpr(any_look(naive.p_value, alpha)),
        "fixed_horizon_end": _fpr(naive.p_value[:, -1] < alpha),
        "by_day": {"sequential": by_day(seq.p_value, alpha), "naive_peeking": by_day(naive.p_value, alpha)},
    }


def by_day(p: npt.NDArray[np.float64], alpha: float) -> list[float]:
    """Share of experiments with a significant look by each day (the peeking curve)."""
    return [round(float(x), 4) for x in np.maximum.accumulate(p < alpha, axis=1).mean(axis=0)]


def _fpr(hits: npt.NDArray[np.bool_]) -> dict[str, Any]:
    r = rate(hits)
    return {"false_positive_rate": r.pop("rate"), **r}


def power_section(m: Moments, alpha: float, expected_n: float, lift: float) -> dict[str, Any]:
    """Share of lifted experiments found better: sequential at any look, fixed-horizon at the end."""
    c, t = m[..., 0], m[..., 1]
    out: dict[str, Any] = {"lift": lift, "experiments": int(m.n.shape[0])}
    out["readers_per_arm_at_end"] = round(float(m.n[:, -1].mean()), 1)
    for cuped, suffix in ((True, ""), (False, "_no_cuped")):
        seq = estimate(c, t, alpha=alpha, cuped=cuped, sequential=True, expected_n=expected_n)
        end = estimate(c[:, -1], t[:, -1], alpha=alpha, cuped=cuped)
        for name, hits in (
            ("sequential", any_look(seq.p_value, alpha, seq.absolute > 0)),
            ("fixed_horizon_end", (end.p_value < alpha) & (end.absolute > 0)),
        ):
            found = rate(hits)
            out[name + suffix], out[f"{name}{suffix}_ci95"] = found["rate"], found["ci95"]
        if cuped:
            out["relative_effect_mean"] = round(float(np.nanmean(end.relative)), 5)
            covered = (end.rel_ci_low <= lift) & (lift <= end.rel_ci_high)
            out["relative_ci_coverage"] = round(float(np.mean(covered)), 4)
    return out


def cuped_section(m: Moments, alpha: float) -> dict[str, Any]:
    """CI widths at the end with and without the pre-period, and sqrt(1 - rho^2) for the pooled
    within-arm correlation rho of the metric with its pre-period value."""
    c, t = m[:, -1, 0], m[:, -1, 1]
    with_pre, plain = estimate(c, t, alpha=alpha, cuped=True), estimate(c, t, alpha=alpha, cuped=False)
    ratio = (with_pre.ci_high - with_pre.ci_low) / (plain.ci_high - plain.ci_low)
    rho = correlation(c, t)
    return {
        "ci_width_ratio": round(float(ratio.mean()), 4),
        "theoretical_sqrt_1_minus_rho2": round(float(np.sqrt(1 - rho**2).mean()), 4),
        "rho": round(float(rho.mean()), 4),
        "variance_reduction": round(float(with_pre.variance_reduction.mean()), 4),
        "experiments": int(ratio.size),
    }


def correlation(c: Moments, t: Moments) -> npt.NDArray[np.float64]:
    def centred(m: Moments) -> tuple[Any, Any, Any]:
        return (
            m.sum_yy - m.sum_y**2 / m.n,
            m.sum_xx - m.sum_x**2 / m.n,
            m.sum_xy - m.sum_x * m.sum_y / m.n,
        )

    (cy, cx, cxy), (ty, tx, txy) = centred(c), centred(t)
    return np.asarray((cxy + txy) / np.sqrt((cx + tx) * (cy + ty)), dtype=np.float64)


def srm_section(
    count: int, sizes: Sequence[int], bug: float, seed: int, others: Sequence[Moments]
) -> dict[str, Any]:
    """Readers per arm by the service's hashing, with and without a bug that loses `bug` of the
    treatment's readers; nested sizes (the first n readers of each experiment)."""
    rng = np.random.default_rng(seed)
    clean, buggy = np.zeros((count, len(sizes), 2)), np.zeros((count, len(sizes), 2))
    for j in range(count):
        e = definition(f"srm-{j:04d}")
        arm = arms_of(e, [f"{e.key}-{i:07d}" for i in range(max(sizes))])
        kept = ~((arm == 1) & (rng.random(arm.size) < bug))
        for s, size in enumerate(sizes):
            clean[j, s] = np.bincount(arm[:size], minlength=2)
            buggy[j, s] = np.bincount(arm[:size][kept[:size]], minlength=2)
    weights = list(WEIGHTS.values())
    alarms = srm_p_values(clean, weights) < SRM_THRESHOLD
    detected = srm_p_values(buggy, weights) < SRM_THRESHOLD
    ends = [srm_p_values(m.n[:, -1, :], weights) < SRM_THRESHOLD for m in others]
    pooled = np.concatenate([alarms[:, -1], *ends])  # one count per experiment: the largest size
    return {
        "bug": bug,
        "threshold": SRM_THRESHOLD,
        "detection_rate": rate(detected[:, -1])["rate"],
        "false_alarm_rate": rate(pooled)["rate"],
        "false_alarm_ci95": rate(pooled)["ci95"],
        "false_alarm_experiments": int(pooled.size),
        "by_size": [
            {"readers": n, "detection": rate(detected[:, s]), "false_alarms": rate(alarms[:, s])}
            for s, n in enumerate(sizes)
        ],
    }


# End-to-end through SQLite -----------------------------------------------------------------------


def end_to_end(
    kept: Sequence[tuple[Experiment, Log, Moments, float]], pop: Population, alpha: float
) -> dict[str, Any]:
    """Write each kept simulation as the service would, read it back through metrics.py and
    compare analysis.py's answers on the SQL data with the arrays' (every daily look)."""
    started_at = time.perf_counter()
    worst = {"p_value": 0.0, "ci": 0.0, "n_mismatches": 0, "srm_p": 0.0}
    runs, writes = [], {"exposures": 0.0, "exposure_seconds": 0.0, "events": 0.0, "event_seconds": 0.0}
    with tempfile.TemporaryDirectory(prefix="bench-experiments-") as tmp:
        engine = temp_engine(tmp)
        store, events = Experiments(engine), SqlEventStore(engine)
        for e, log, m, lift in kept:
            store.create(Actor(), e)
            running = store.start(Actor(), e.key, T0)
            for name, value in write_log(engine, events, running, log).items():
                writes[name] += value
            runs.append(
                {"key": e.key, "planted_lift": lift, **_check(engine, store, running, m, pop, alpha, worst)}
            )
        engine.dispose()
    return {
        "experiments": len(kept),
        "max_abs_difference": worst,
        "runs": runs,
        "exposure_rows_per_second": round(writes["exposures"] / max(writes["exposure_seconds"], 1e-9)),
        "events_per_second": round(writes["events"] / max(writes["event_seconds"], 1e-9)),
        "seconds": round(time.perf_counter() - started_at, 1),
    }


def _check(
    engine: Engine,
    store: Experiments,
    e: Experiment,
    m: Moments,
    pop: Population,
    alpha: float,
    worst: dict[str, Any],
) -> dict[str, Any]:
    """The SQL path's final report (what the results page shows) and the worst differences."""
    end = T0 + timedelta(days=pop.days)
    data = reader_metrics(engine, e, end, pre_days=pop.pre_days)
    counts = store.arm_counts(e.key)
    report = analyse(data, "control", primary=PRIMARY, alpha=alpha, weights=WEIGHTS, counts=counts)
    arrays = estimate(m[:, 0], m[:, 1], alpha=alpha, sequential=True)
    sql = [
        compare(PRIMARY, *(d.metric[a] for a in ARMS), alpha=alpha, sequential=True)
        for d in daily(engine, e, end)
    ]
    effect = report.effect(PRIMARY, "treatment")
    assert effect is not None and report.srm is not None and len(sql) == pop.days
    sql.append(effect)  # the results page's final analysis is the last look again
    p = np.array([x.p_value for x in sql])
    lows = np.array([x.ci_low for x in sql])
    index = [*range(pop.days), pop.days - 1]
    worst["p_value"] = max(worst["p_value"], float(np.abs(p - arrays.p_value[index]).max()))
    worst["ci"] = max(worst["ci"], float(np.abs(lows - arrays.ci_low[index]).max()))
    ns = np.array([(x.n_control, x.n_arm) for x in sql])
    worst["n_mismatches"] += int((ns != m.n[index]).sum())
    array_srm = float(srm_p_values(m.n[-1], list(WEIGHTS.values())))
    worst["srm_p"] = max(worst["srm_p"], abs(report.srm.p_value - array_srm))
    return {
        "readers": [effect.n_control, effect.n_arm],
        "relative": effect.relative,
        "rel_ci": [effect.rel_ci_low, effect.rel_ci_high],
        "p_value": effect.p_value,
        "srm_p_value": report.srm.p_value,
    }


# Timing: 1M exposures, 10M events ---------------------------------------------------------------


def timing(pop: Population, exposures: int, target_events: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    e = definition("timing", full=True)
    with tempfile.TemporaryDirectory(prefix="bench-experiments-") as tmp:
        engine = temp_engine(tmp)
        store = Experiments(engine)
        store.create(Actor(), e)
        e = store.start(Actor(), e.key, T0)
        t0 = time.perf_counter()
        log = simulate(e, max(2, round(exposures / (pop.visit_rate * pop.days))), pop, 0.0, rng)
        sizes = bulk_load(f"{tmp}/briefing.sqlite", e, log, pop, target_events, rng)
        generate_s = time.perf_counter() - t0
        out = {**sizes, "generate_seconds": round(generate_s, 1), **time_analysis(engine, store, e, pop)}
        engine.dispose()
    return out


def time_analysis(engine: Engine, store: Experiments, e: Experiment, pop: Population) -> dict[str, Any]:
    end, load = T0 + timedelta(days=pop.days), os.getloadavg()
    t0 = time.perf_counter()
    data = reader_metrics(engine, e, end, pre_days=pop.pre_days)
    t1 = time.perf_counter()
    counts = store.arm_counts(e.key)
    t2 = time.perf_counter()
    report = analyse(data, "control", primary=e.primary, secondary=e.secondary, guardrails=e.guardrails,
                     weights=WEIGHTS, counts=counts)  # fmt: skip
    t3 = time.perf_counter()
    days = daily(engine, e, end, pre_days=pop.pre_days)
    t4 = time.perf_counter()
    return {
        "readers_exposed": sum(counts.values()),
        "load_average_before": load,
        "reader_metrics_seconds": round(t1 - t0, 2),
        "arm_counts_seconds": round(t2 - t1, 2),
        "analyse_seconds": round(t3 - t2, 2),
        "analysis_seconds": round(t3 - t0, 2),
        "daily_seconds": round(t4 - t3, 2),
        "daily_looks": len(days),
        "effects": len(report.effects),
        "srm_p_value": None if report.srm is None else report.srm.p_value,
    }


# Command line ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "bench/results/experiments.json")
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument(
        "--expected-n", type=float, default=5000.0, help="the sequential boundary's tuning (service default)"
    )
    p.add_argument("--aa", type=int, default=1000, help="A/A experiments")
    p.add_argument(
        "--aa-readers", type=int, default=6000, help="readers per A/A experiment (~86%% get exposed)"
    )
    p.add_argument("--power", type=int, default=200, help="experiments with the planted lift")
    p.add_argument("--power-readers", type=int, default=60000, help="readers per lifted experiment")
    p.add_argument(
        "--lift", type=float, default=0.03, help="relative lift of the click chance (clicks_per_visit)"
    )
    p.add_argument("--srm", type=int, default=100, help="experiments for the SRM check")
    p.add_argument(
        "--srm-readers", default="50000,100000,250000", help="exposed readers per experiment (nested)"
    )
    p.add_argument("--srm-bug", type=float, default=0.02, help="share of the treatment's readers lost")
    p.add_argument("--sql-aa", type=int, default=2, help="A/A experiments also run end-to-end through SQLite")
    p.add_argument(
        "--sql-planted", type=int, default=1, help=f"experiments with a +{PLANTED:.0%} lift, end-to-end"
    )
    p.add_argument("--timing-exposures", type=int, default=1_000_000, help="0 skips the timing run")
    p.add_argument("--timing-events", type=int, default=10_000_000)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    pop, alpha = Population(), args.alpha
    results: dict[str, Any] = {"machine": machine(), "load_average_at_start": os.getloadavg()}
    results["population"] = vars(pop) | {"readers": "gamma visit rate, beta click chance"}
    clock = time.perf_counter()
    aa, aa_kept = run_many("aa", args.aa, args.aa_readers, pop, 0.0, args.seed, args.sql_aa)
    results["aa"] = aa_section(aa, alpha, args.expected_n) | {
        "seconds": round(time.perf_counter() - clock, 1)
    }
    clock = time.perf_counter()
    lifted, _ = run_many("lift", args.power, args.power_readers, pop, args.lift, args.seed + 1)
    results["power"] = power_section(lifted, alpha, args.expected_n, args.lift)
    results["power"]["seconds"] = round(time.perf_counter() - clock, 1)
    results["cuped"] = cuped_section(lifted, alpha)
    sizes = [int(s) for s in args.srm_readers.split(",")]
    results["srm"] = srm_section(args.srm, sizes, args.srm_bug, args.seed + 2, [aa, lifted])
    _, planted = run_many(
        "planted", args.sql_planted, args.aa_readers, pop, PLANTED, args.seed + 4, args.sql_planted
    )
    results["end_to_end"] = end_to_end([*aa_kept, *planted], pop, alpha)
    if args.timing_exposures:
        results["timing"] = timing(pop, args.timing_exposures, args.timing_events, args.seed + 3)
        results["analysis_seconds_1m"] = results["timing"]["analysis_seconds"]
    results["load_average_at_end"] = os.getloadavg()  # 2 cores shared: the timings depend on it
    print_table(results)
    write_results(results, args.out, args)
    return results


def print_table(r: dict[str, Any]) -> None:
    aa, pw, cu, srm, e2e = r["aa"], r["power"], r["cuped"], r["srm"], r["end_to_end"]
    both = "{:.3f} / {:.3f}".format
    rows = [
        (f"A/A sequential, any of {aa['looks']} looks", _ci(aa["sequential"]), "<= 0.05"),
        ("A/A naive fixed-horizon, any look", _ci(aa["naive_peeking"]), "(inflation)"),
        ("A/A fixed-horizon, end only", _ci(aa["fixed_horizon_end"]), "~ 0.05"),
        (f"power +{pw['lift']:.0%}: sequential / fixed", both(pw["sequential"], pw["fixed_horizon_end"]), ""),
        ("  the same without CUPED", both(pw["sequential_no_cuped"], pw["fixed_horizon_end_no_cuped"]), ""),
        ("CUPED CI width ratio / sqrt(1-rho^2)",
         both(cu["ci_width_ratio"], cu["theoretical_sqrt_1_minus_rho2"]), f"rho {cu['rho']:.2f}"),
        (f"SRM detection, {srm['bug']:.0%} bug, {srm['by_size'][-1]['readers']:,} readers",
         f"{srm['detection_rate']:.3f}", ">= 0.95"),
        ("SRM false alarms", f"{srm['false_alarm_rate']:.4f} of {srm['false_alarm_experiments']}",
         "<= 0.002"),
        ("SQL vs arrays: max |p| difference", f"{e2e['max_abs_difference']['p_value']:.1e}", "~ 0"),
    ]  # fmt: skip
    if "timing" in r:
        tm = r["timing"]
        size = f"{tm['exposures'] / 1e6:.2f}M exposures, {tm['events'] / 1e6:.1f}M events"
        rows += [(f"generate {size}", f"{tm['generate_seconds']:.0f} s", "(apart)"),
                 ("reader_metrics + arm_counts + analyse", f"{tm['analysis_seconds']:.1f} s", "< 10 s"),
                 ("daily looks (metrics.daily)", f"{tm['daily_seconds']:.1f} s", "")]  # fmt: skip
    width = max(len(name) for name, _, _ in rows)
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>24}  {target}")
    for s in srm["by_size"]:
        print(f"  SRM at {s['readers']:>7,} readers: detection {s['detection']['rate']:.3f}, "
              f"false alarms {s['false_alarms']['rate']:.4f}")  # fmt: skip


def _ci(x: dict[str, Any]) -> str:
    return f"{x['false_positive_rate']:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]"


if __name__ == "__main__":
    main()
