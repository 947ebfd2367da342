"""An experiment's metrics from stored events: per reader and arm, ready for analysis.py.

Owns the metric definitions, once: every reader metric is a ratio of two per-reader sums
(`RATIOS`), taken by SQL (GROUP BY reader, one pass over the exposed readers' events) over the
window from the reader's first exposure to the experiment's stop (or now). `pre` is the same
ratio over the `pre_days` before that first exposure (0 where its denominator is 0), for CUPED.
`return_7d` (0/1 per reader) and `rejection_rate` (0/1 per decided draft of the arm's
templates) are the two that are not reader ratios. The SQL is in metric_sql.py.

What it simplifies, and why:
- Events carry no surface: the briefing page and "more stories" send the same click, read and
  thumbs events (impression ids are hashes of the page's own fields). So a reader's events after
  their first exposure all count, the visit's clicks wherever they happened; `ctr` divides them
  by the items the arm's briefings showed. The pre-period, which has no exposures, divides by the
  reader's briefings served (`visits`) and impressions (`ctr`) before it.
- A reader exposed under two arms (a bug, or weights changed by hand in the database) is left
  out of every metric: their data belongs to neither arm (`Experiments.exposures` lists them
  under both). `Day.exposures` still counts their exposures: that chart shows what was served.
- `return_7d` counts only readers whose 7 days are over (first exposure at least 7 days before
  the end): for the others a 0 could still become a 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine

from server.experiments.analysis import ArmData
from server.experiments.metric_sql import (
    FROM_EVENTS,
    FROM_EXPOSURES,
    RETURN_WITHIN_S,
    Components,
    FloatArray,
    Readers,
    day_rows,
    load_readers,
    rejections,
    served_per_day,
)
from server.experiments.model import Experiment


@dataclass(frozen=True)
class Ratio:
    """A per-reader metric: numerator / denominator over the reader's window; readers whose
    denominator is 0 have no value. `pre` names the components of the same ratio before the
    first exposure (None: no pre-period, as for the serving guardrails)."""

    numerator: str
    denominator: str
    pre: tuple[str, str] | None


RATIOS: dict[str, Ratio] = {
    "clicks_per_visit": Ratio("clicks", "visits", ("pre_clicks", "pre_visits")),
    "ctr": Ratio("clicks", "items", ("pre_clicks", "pre_impressions")),
    "reads_per_visit": Ratio("reads", "visits", ("pre_reads", "pre_visits")),
    "dwell_per_visit": Ratio("dwell", "visits", ("pre_dwell", "pre_visits")),
    "thumbs_up_share": Ratio("up", "thumbs", ("pre_up", "pre_thumbs")),
    "fallback_share": Ratio("fallback", "items", None),
    "latency_ms": Ratio("latency", "visits", None),  # the mean over the reader's briefings
}
DAY = timedelta(days=1)


def window_end(e: Experiment, now: datetime) -> datetime:
    return e.stop if e.stop is not None and e.stop < now else now


def reader_metrics(
    engine: Engine, e: Experiment, now: datetime, *, pre_days: int = 14
) -> dict[str, dict[str, ArmData]]:
    """metric -> arm -> per-reader values (and pre-period values) for every metric the
    experiment names (primary, secondary, guardrails); every arm is present, maybe empty."""
    if e.start is None:
        return {m: {a.name: _empty(a.name) for a in e.arms} for m in _metric_names(e)}
    end = window_end(e, now)
    with engine.connect() as connection:
        readers = load_readers(connection, e, end, pre_days)
        drafts = rejections(connection, e, end) if "rejection_rate" in e.metrics else {}
    return _metrics(e, readers, drafts, (end - e.start).total_seconds())


def metrics_and_days(
    engine: Engine, e: Experiment, now: datetime, *, pre_days: int = 14
) -> tuple[dict[str, dict[str, ArmData]], list[Day]]:
    """`reader_metrics` and `daily` together, one pass over the events fewer than calling both."""
    if e.start is None:
        return reader_metrics(engine, e, now, pre_days=pre_days), []
    end = window_end(e, now)
    with engine.connect() as connection:
        readers = load_readers(connection, e, end, pre_days)
        drafts = rejections(connection, e, end) if "rejection_rate" in e.metrics else {}
        days = _daily(connection, e, end, readers)
    return _metrics(e, readers, drafts, (end - e.start).total_seconds()), days


def _metrics(
    e: Experiment, readers: Readers, drafts: dict[str, FloatArray], horizon: float
) -> dict[str, dict[str, ArmData]]:
    out: dict[str, dict[str, ArmData]] = {}
    for metric in _metric_names(e):
        if metric == "rejection_rate":
            out[metric] = {a.name: ArmData(a.name, drafts.get(a.name, np.zeros(0))) for a in e.arms}
        else:
            out[metric] = per_arm(e, readers, metric, readers.sums, horizon)
    return out


def per_arm(
    e: Experiment, readers: Readers, metric: str, sums: Components, horizon: float
) -> dict[str, ArmData]:
    """The metric's values per arm from per-reader sums as of `horizon` (seconds after start)."""
    values, pre, keep = _values(metric, readers, sums, horizon)
    out = {}
    for arm in e.arms:
        mask = keep & (readers.arms == arm.name)
        out[arm.name] = ArmData(arm.name, values[mask], None if pre is None else pre[mask])
    return out


def _values(
    metric: str, readers: Readers, sums: Components, horizon: float
) -> tuple[FloatArray, FloatArray | None, npt.NDArray[np.bool_]]:
    seen = readers.first <= horizon
    if metric == "return_7d":
        keep = seen & (readers.first <= horizon - RETURN_WITHIN_S)
        return sums["returned"], readers.sums["pre_active"], keep
    ratio = RATIOS[metric]
    values, keep = _divide(sums[ratio.numerator], sums[ratio.denominator])
    if ratio.pre is None:
        return values, None, keep & seen
    pre, _ = _divide(readers.sums[ratio.pre[0]], readers.sums[ratio.pre[1]])
    return values, pre, keep & seen


def _divide(numerator: FloatArray, denominator: FloatArray) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    has = denominator > 0
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=has)
    return out, has


def _metric_names(e: Experiment) -> list[str]:
    return list(dict.fromkeys((e.primary, *e.secondary, *e.guardrails)))


def _empty(name: str) -> ArmData:
    return ArmData(name, np.zeros(0), np.zeros(0))


@dataclass(frozen=True)
class Day:
    """A daily look: everything up to `end` (the start plus `day` + 1 days, or the end of the
    window). `readers` and `exposures` are cumulative per arm; `metric` is the primary metric as
    an analysis at `end` would see it (for the chart of the effect over time and sequential looks)."""

    day: int
    end: datetime
    readers: dict[str, int]
    exposures: dict[str, int]
    metric: dict[str, ArmData]


def daily(engine: Engine, e: Experiment, now: datetime, *, pre_days: int = 14) -> list[Day]:
    """One `Day` per day since the start (the last one may be partial); [] before the start."""
    if e.start is None:
        return []
    end = window_end(e, now)
    with engine.connect() as connection:
        return _daily(connection, e, end, load_readers(connection, e, end, pre_days))


def _daily(connection: Connection, e: Experiment, end: datetime, readers: Readers) -> list[Day]:
    assert e.start is not None
    start = e.start
    cutoffs = [min(start + timedelta(days=d + 1), end) for d in range(max(1, math.ceil((end - start) / DAY)))]
    needed = _components(e.primary)
    rows = day_rows(connection, e, end, {r: i for i, r in enumerate(readers.ids)}, needed)
    served = served_per_day(connection, e, end, len(cutoffs))
    drafts = [rejections(connection, e, c) for c in cutoffs] if e.primary == "rejection_rate" else []
    running = {k: (np.zeros(len(readers.ids)) if k in needed else v) for k, v in readers.sums.items()}
    order = np.argsort(rows.day, kind="stable")
    edges = np.searchsorted(rows.day[order], np.arange(len(cutoffs) + 1))
    looks = []
    for d, cutoff in enumerate(cutoffs):
        today = order[edges[d] : edges[d + 1]]
        for name in needed:
            np.add.at(running[name], rows.reader[today], rows.values[name][today])
        running["thumbs"] = running["up"] + running["down"]
        horizon = (cutoff - start).total_seconds()
        if drafts:
            metric = {a.name: ArmData(a.name, drafts[d].get(a.name, np.zeros(0))) for a in e.arms}
        else:
            metric = per_arm(e, readers, e.primary, running, horizon)
        seen = readers.first <= horizon
        counts = {a.name: int(np.sum(seen & (readers.arms == a.name))) for a in e.arms}
        shown = {a.name: int(served[a.name][: d + 1].sum()) for a in e.arms}
        looks.append(Day(d, cutoff, counts, shown, metric))
    return looks


daily_series = daily  # the name experiments.md gave it


def _components(metric: str) -> tuple[str, ...]:
    """The per-day sums a metric's daily looks need (none for the two that are not ratios)."""
    ratio = RATIOS.get(metric)
    if ratio is None:
        return ()
    names = {ratio.numerator, ratio.denominator}
    if "thumbs" in names:
        names = (names - {"thumbs"}) | {"up", "down"}
    return tuple(n for n in (*FROM_EXPOSURES, *FROM_EVENTS) if n in names)
