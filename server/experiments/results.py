"""An experiment's results as the API, the results page and the CLI give them: one computation.

Owns `Results` (the report of analysis.py over the metrics of metrics.py, the readers and
briefings exposed per arm, the primary metric's effect by day, and the provenance a reader of the
figures needs: when, over which window, with which method and grounding checker) and its two
exports, `results_json` and `results_csv`. Nothing here writes.

Simplification: the effect over time is the primary metric's only (the chart a product person
reads first); the JSON carries it for every arm, the tables carry every metric as of now.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from server.experiments.analysis import SRM_THRESHOLD, Effect, Report, analyse, compare
from server.experiments.metrics import metrics_and_days, window_end
from server.experiments.model import METRICS, Experiment, MetricSpec, to_json
from server.experiments.store import Experiments

ALPHA = 0.05
PRE_DAYS = 14  # the CUPED pre-period before each reader's first exposure
MIN_N = 100  # readers per arm below which an interval is flagged as not reliable yet
CSV_FIELDS = (
    "metric", "role", "arm", "control", "n_control", "n_arm", "mean_control", "mean_arm", "absolute",
    "relative", "ci_low", "ci_high", "rel_ci_low", "rel_ci_high", "p_value", "p_adjusted",
    "chance_to_win", "cuped", "variance_reduction", "sequential", "flagged", "warnings",
)  # fmt: skip


@dataclass(frozen=True)
class ArmExposure:
    name: str
    weight: float
    readers: int  # distinct readers exposed (the sample-ratio check's unit)
    briefings: int  # briefings served under the arm (an exposure each)


@dataclass(frozen=True)
class Look:
    """One arm as of the end of one day: cumulative readers and the primary metric's effect."""

    day: int
    end: datetime
    arm: str
    readers: int
    briefings: int
    effect: float | None  # None for the control, and where no interval exists yet
    ci_low: float | None
    ci_high: float | None


@dataclass(frozen=True)
class Results:
    experiment: Experiment
    computed_at: datetime
    window_end: datetime | None  # None before the start
    report: Report | None  # None before the start: nothing to analyse
    arms: tuple[ArmExposure, ...]
    looks: tuple[Look, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return self.report is not None and self.report.blocked

    def metric_effects(self) -> list[tuple[MetricSpec, str, list[Effect]]]:
        """Per metric the experiment names, in its order: the spec, its role and its effects."""
        effects = self.report.effects if self.report else ()
        e = self.experiment
        roles = [(e.primary, "primary"), *((m, "secondary") for m in e.secondary)]
        roles += [(m, "guardrail") for m in e.guardrails]
        return [(METRICS[m], role, [x for x in effects if x.metric == m]) for m, role in roles]


def results(store: Experiments, key: str, now: datetime, *, checker: str | None = None) -> Results:
    """The experiment's results as of `now` (its stop, if earlier). `checker`: the grounding
    checker serving (the fallback guardrail depends on it), recorded in the provenance."""
    e = store.get(key)
    provenance = _provenance(e, checker)
    if e.start is None:
        empty = tuple(ArmExposure(a.name, a.weight, 0, 0) for a in e.arms)
        return Results(e, now, None, None, empty, (), provenance)
    engine: Engine = store.engine
    metrics, days = metrics_and_days(engine, e, now, pre_days=PRE_DAYS)  # one pass over the events
    counts = store.arm_counts(key)
    report = analyse(
        metrics,
        e.control.name,
        primary=e.primary,
        secondary=e.secondary,
        guardrails=e.guardrails,
        sequential=e.sequential,
        alpha=ALPHA,
        min_n=MIN_N,
        higher_is_better={m: METRICS[m].higher_is_better for m in e.metrics},
        weights={a.name: a.weight for a in e.arms},
        counts=counts,
    )
    looks = _looks(e, days)
    last = {look.arm: look.briefings for look in looks}  # the last day's: cumulative
    arms = tuple(ArmExposure(a.name, a.weight, counts.get(a.name, 0), last.get(a.name, 0)) for a in e.arms)
    return Results(e, now, window_end(e, now), report, arms, tuple(looks), provenance)


def _looks(e: Experiment, days: Sequence[Any]) -> list[Look]:
    """Per day and arm, the primary metric's effect as an analysis at the day's end saw it."""
    spec = METRICS[e.primary]
    control = e.control.name
    out = []
    for d in days:
        for arm in e.arms:
            effect = None
            if arm.name != control and control in d.metric and arm.name in d.metric:
                effect = compare(
                    e.primary,
                    d.metric[control],
                    d.metric[arm.name],
                    alpha=ALPHA,
                    sequential=e.sequential,
                    bayesian=False,
                    min_n=MIN_N,
                    higher_is_better=spec.higher_is_better,
                )
            readers, briefings = d.readers.get(arm.name, 0), d.exposures.get(arm.name, 0)
            out.append(_look(d.day, d.end, arm.name, readers, briefings, effect))
    return out


def _look(day: int, end: datetime, arm: str, readers: int, briefings: int, effect: Effect | None) -> Look:
    if effect is None or not all(math.isfinite(v) for v in (effect.absolute, effect.ci_low, effect.ci_high)):
        return Look(day, end, arm, readers, briefings, None, None, None)
    return Look(day, end, arm, readers, briefings, effect.absolute, effect.ci_low, effect.ci_high)


def _provenance(e: Experiment, checker: str | None) -> dict[str, Any]:
    interval = "always-valid (mixture sequential, GrowthBook/Eppo form)" if e.sequential else "fixed-horizon"
    return {
        "method": f"Difference of means, Welch/normal {interval} intervals at alpha {ALPHA}; "
        f"CUPED on the {PRE_DAYS} days before first exposure; Holm across primary and secondary "
        f"metrics x arms; sample-ratio check: chi-square, p < {SRM_THRESHOLD}",
        "alpha": ALPHA,
        "sequential": e.sequential,
        "pre_days": PRE_DAYS,
        "min_n": MIN_N,
        "correction": "holm",
        "srm_threshold": SRM_THRESHOLD,
        "unit": "reader (values per reader since first exposure)",
        "checker": checker,
    }


# Exports ------------------------------------------------------------------------------------------


def results_json(r: Results) -> dict[str, Any]:
    """Everything the page shows, as JSON (non-finite numbers become null)."""
    report = r.report
    body = {
        "experiment": to_json(r.experiment),
        "computed_at": r.computed_at.isoformat(),
        "window": {
            "start": r.experiment.start.isoformat() if r.experiment.start else None,
            "end": r.window_end.isoformat() if r.window_end else None,
        },
        "exposures": {a.name: a.readers for a in r.arms},
        "arms": [asdict(a) for a in r.arms],
        "srm": asdict(report.srm) if report and report.srm else None,
        "blocked": r.blocked,
        "warnings": list(report.warnings) if report else ["not started: nothing to analyse yet"],
        "metrics": [_metric_json(spec, role, effects) for spec, role, effects in r.metric_effects()],
        "over_time": [{**asdict(look), "end": look.end.isoformat()} for look in r.looks],
        "provenance": r.provenance,
    }
    out: dict[str, Any] = _finite(body)
    return out


def _metric_json(spec: MetricSpec, role: str, effects: Sequence[Effect]) -> dict[str, Any]:
    return {
        "name": spec.name,
        "label": spec.label,
        "role": role,
        "kind": spec.kind,
        "unit": spec.unit,
        "higher_is_better": spec.higher_is_better,
        "effects": [{**asdict(e), "warnings": list(e.warnings)} for e in effects],
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def results_csv(r: Results) -> str:
    """One row per metric and arm (the control is each row's baseline), `CSV_FIELDS` columns."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for _, role, effects in r.metric_effects():
        for e in effects:
            row = {k: _cell(v) for k, v in asdict(e).items() if k in CSV_FIELDS}
            writer.writerow({**row, "role": role, "warnings": "; ".join(e.warnings)})
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else repr(value)
    return "" if value is None else value


# Figures in words (the page and the CLI) ---------------------------------------------------------


def value(x: float, unit: str) -> str:
    if not math.isfinite(x):
        return "—"
    if unit == "%":
        return f"{x:.1%}"
    return f"{x:,.3g} {unit}".rstrip() if unit else f"{x:,.3g}"


def difference(x: float, unit: str) -> str:
    """A signed difference: percentage points for shares, else the metric's unit."""
    if not math.isfinite(x):
        return "—"
    if unit == "%":
        return f"{x * 100:+.2f} pp"
    return f"{x:+,.3g} {unit}".rstrip()


def p_value(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
