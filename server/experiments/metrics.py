"""An experiment's metrics from stored events: per reader and arm, ready for analysis.py.

Owns the metric definitions, once: every reader metric is a ratio of two per-reader sums
(`RATIOS`), taken by SQL (GROUP BY reader, one pass over the exposed readers' events) over the
window from the reader's first exposure to the experiment's stop (or now). `pre` is the same
ratio over the `pre_days` before that first exposure (0 where its denominator is 0), for CUPED.
`return_7d` and the per-draft `rejection_rate` are the two that are not reader ratios.

What it simplifies, and why:
- Events carry no surface: the briefing page and "more stories" send the same click, read and
  thumbs events (impression ids are hashes of the page's own fields). So a reader's events after
  their first exposure all count, the visit's clicks wherever they happened; `ctr` divides them
  by the items the arm's briefings showed. The pre-period, which has no exposures, divides by the
  reader's briefings served (`visits`) and impressions (`ctr`) before it.
- A reader exposed under two arms (a bug, or weights changed by hand in the database) is left
  out of every metric: their data belongs to neither arm. `crossovers` counts them.
- `return_7d` counts only readers whose 7 days are over (first exposure at least 7 days before
  the end): for the others a 0 could still become a 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Engine, Integer, Interval, and_, case, cast, extract, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from briefing import Status
from server.db import BriefingRow, EventRow, ExposureRow, SummaryRow, UTCDateTime
from server.experiments.analysis import ArmData
from server.experiments.model import Experiment

FloatArray = npt.NDArray[np.float64]
DAY_S = 86_400
RETURN_AFTER_S = 3_600  # an event within the hour is still the first visit, not a return
RETURN_WITHIN_S = 7 * DAY_S
DECIDED = (Status.APPROVED.value, Status.EDITED.value, Status.REJECTED.value)


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
SPECIAL = ("return_7d", "rejection_rate")
Components = dict[str, FloatArray]


@dataclass(frozen=True)
class Readers:
    """The exposed readers (one arm each) and their per-reader sums, in one order."""

    ids: list[str]
    arms: npt.NDArray[np.str_]
    first: FloatArray  # first exposure, seconds since the experiment's start
    sums: Components


def window_end(e: Experiment, now: datetime) -> datetime:
    return e.stop if e.stop is not None and e.stop < now else now


def reader_metrics(
    engine: Engine, e: Experiment, now: datetime, *, pre_days: int = 14
) -> dict[str, dict[str, ArmData]]:
    """metric -> arm -> per-reader values (and pre-period values) for every metric the
    experiment names (primary, secondary, guardrails); every arm is present, maybe empty."""
    names = _metric_names(e)
    if e.start is None:
        return {m: {a.name: _empty(a.name) for a in e.arms} for m in names}
    end = window_end(e, now)
    with engine.connect() as connection:
        readers = load_readers(connection, e, end, pre_days)
        drafts = _rejections(connection, e, end) if "rejection_rate" in names else {}
    horizon = (end - e.start).total_seconds()
    out: dict[str, dict[str, ArmData]] = {}
    for metric in names:
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


# SQL ---------------------------------------------------------------------------------------------

X = ExposureRow.__table__
E = EventRow.__table__


def exposed(e: Experiment, end: datetime) -> Any:
    """Per reader seen in exactly one arm: arm, first exposure and the exposures' sums."""
    return (
        select(
            X.c.reader_id,
            func.min(X.c.arm).label("arm"),
            func.min(X.c.served_at).label("first_at"),
            func.count().label("visits"),
            func.sum(X.c["items"]).label("items"),
            func.sum(X.c.fallback_items).label("fallback"),
            func.sum(X.c.latency_ms).label("latency"),
        )
        .where(X.c.experiment == e.key, X.c.served_at < end)
        .group_by(X.c.reader_id)
        .having(func.min(X.c.arm) == func.max(X.c.arm))
        .cte("exposed")
    )


def load_readers(connection: Connection, e: Experiment, end: datetime, pre_days: int) -> Readers:
    assert e.start is not None
    f = exposed(e, end)
    rows = connection.execute(select(f).order_by(f.c.reader_id)).all()
    ids = [r.reader_id for r in rows]
    start = e.start
    sums: Components = {
        "visits": _floats(r.visits for r in rows),
        "items": _floats(r.items for r in rows),
        "fallback": _floats(r.fallback for r in rows),
        "latency": _floats(r.latency for r in rows),
    }
    index = {reader: i for i, reader in enumerate(ids)}
    for name, column in _event_sums(connection, f, end, pre_days, index).items():
        sums[name] = column
    sums["pre_visits"] = _by_reader(connection, _pre_visits(f, pre_days, connection), index)
    sums["returned"] = np.minimum(sums.pop("returns") + _returns_by_exposure(connection, f, e, end, index), 1)
    sums["pre_active"] = np.minimum(sums.pop("pre_events") + sums["pre_visits"], 1)
    sums["thumbs"] = sums["up"] + sums["down"]
    sums["pre_thumbs"] = sums["pre_up"] + sums["pre_down"]
    first = _floats((r.first_at - start).total_seconds() for r in rows)
    return Readers(ids, np.array([r.arm for r in rows], dtype=np.str_), first, sums)


def _event_sums(
    connection: Connection, f: Any, end: datetime, pre_days: int, index: Mapping[str, int]
) -> Components:
    """The readers' event counts after (and before) their first exposure, one pass over events."""
    dialect = connection.dialect.name
    post, pre = E.c.at >= f.c.first_at, E.c.at < f.c.first_at
    returned = and_(
        E.c.at > shift(dialect, f.c.first_at, RETURN_AFTER_S),
        E.c.at <= shift(dialect, f.c.first_at, RETURN_WITHIN_S),
    )
    columns = {
        "clicks": _count(post, "click"),
        "reads": _count(post, "read"),
        "dwell": _total(post, "read", E.c.dwell_s),
        "up": _count(post, "thumbs_up"),
        "down": _count(post, "thumbs_down"),
        "returns": func.sum(case((returned, 1), else_=0)),
        "pre_clicks": _count(pre, "click"),
        "pre_reads": _count(pre, "read"),
        "pre_dwell": _total(pre, "read", E.c.dwell_s),
        "pre_up": _count(pre, "thumbs_up"),
        "pre_down": _count(pre, "thumbs_down"),
        "pre_impressions": _count(pre, "impression"),
        "pre_events": func.sum(case((pre, 1), else_=0)),
    }
    joined = f.join(
        E,
        and_(
            E.c.reader_id == f.c.reader_id,
            E.c.at >= shift(dialect, f.c.first_at, -pre_days * DAY_S),
            E.c.at < end,
        ),
    )
    query = (
        select(f.c.reader_id, *(c.label(n) for n, c in columns.items()))
        .select_from(joined)
        .group_by(f.c.reader_id)
    )
    out = {name: np.zeros(len(index)) for name in columns}
    for row in connection.execute(query):
        i = index[row.reader_id]
        for name in columns:
            out[name][i] = row._mapping[name] or 0
    return out


def _count(window: ColumnElement[bool], kind: str) -> ColumnElement[Any]:
    return func.sum(case((and_(window, E.c.type == kind), 1), else_=0))


def _total(window: ColumnElement[bool], kind: str, column: Any) -> ColumnElement[Any]:
    return func.sum(case((and_(window, E.c.type == kind), column), else_=0.0))


def _pre_visits(f: Any, pre_days: int, connection: Connection) -> Any:
    """Briefings served to each reader in the pre-period (a cached one served again is no visit)."""
    b = BriefingRow.__table__
    lo = shift(connection.dialect.name, f.c.first_at, -pre_days * DAY_S)
    on = and_(b.c.reader_id == f.c.reader_id, b.c.served_at >= lo, b.c.served_at < f.c.first_at)
    return (
        select(f.c.reader_id, func.count().label("n"))
        .select_from(f.join(b, on))
        .where(b.c.cached.is_(False))
        .group_by(f.c.reader_id)
    )


def _returns_by_exposure(
    connection: Connection, f: Any, e: Experiment, end: datetime, index: Mapping[str, int]
) -> FloatArray:
    dialect = connection.dialect.name
    on = and_(
        X.c.experiment == e.key,
        X.c.reader_id == f.c.reader_id,
        X.c.served_at > shift(dialect, f.c.first_at, RETURN_AFTER_S),
        X.c.served_at <= shift(dialect, f.c.first_at, RETURN_WITHIN_S),
        X.c.served_at < end,
    )
    query = select(f.c.reader_id, func.count().label("n")).select_from(f.join(X, on)).group_by(f.c.reader_id)
    return _by_reader(connection, query, index)


def _by_reader(connection: Connection, query: Any, index: Mapping[str, int]) -> FloatArray:
    out = np.zeros(len(index))
    for reader, n in connection.execute(query):
        out[index[reader]] = n
    return out


def _rejections(connection: Connection, e: Experiment, end: datetime) -> dict[str, FloatArray]:
    """Per arm, one 0/1 per decided draft its templates (and adapter) wrote during the experiment."""
    s = SummaryRow.__table__
    query = (
        select(s.c.prompt, s.c.adapter, s.c.status, func.count())
        .where(s.c.created_at >= e.start, s.c.created_at < end, s.c.status.in_(DECIDED))
        .group_by(s.c.prompt, s.c.adapter, s.c.status)
    )
    counts = connection.execute(query).all()
    out = {}
    for arm in e.arms:
        v = arm.variant
        prompts = {v.article_prompt, v.update_prompt, v.greeting_prompt}
        mine = [
            (status, n)
            for prompt, adapter, status, n in counts
            if _written_by(prompt, prompts) and adapter == v.adapter
        ]
        rejected = sum(n for status, n in mine if status == Status.REJECTED.value)
        out[arm.name] = np.repeat([1.0, 0.0], [rejected, sum(n for _, n in mine) - rejected])
    return out


def _written_by(prompt: str, templates: set[str]) -> bool:
    """An arm names a template as "name" (any version) or "name@version"; summaries record the latter."""
    return prompt in templates or prompt.split("@", 1)[0] in templates


def shift(dialect: str, column: Any, seconds: int) -> Any:
    """`column` + `seconds` as a time both engines compare with stored times."""
    if dialect == "sqlite":  # stored as text, 'YYYY-MM-DD HH:MM:SS.ffffff'; strftime keeps ms
        return func.strftime("%Y-%m-%d %H:%M:%f000", column, f"{seconds:+d} seconds")
    return column + literal(timedelta(seconds=seconds), Interval())


def day_of(dialect: str, column: Any, start: datetime) -> Any:
    """Whole days from `start` to `column` (0 in the experiment's first 24 hours)."""
    origin = literal(start, UTCDateTime())
    if dialect == "sqlite":
        return cast(func.julianday(column) - func.julianday(origin), Integer)
    return cast(func.floor(extract("epoch", column - origin) / DAY_S), Integer)


def _floats(values: Any) -> FloatArray:
    return np.fromiter((float(v or 0) for v in values), dtype=np.float64)


# Over time ---------------------------------------------------------------------------------------

DAILY = ("visits", "items", "fallback", "latency", "clicks", "reads", "dwell", "up", "down")


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
    start, end = e.start, window_end(e, now)
    days = max(1, math.ceil((end - start).total_seconds() / DAY_S))
    with engine.connect() as connection:
        readers = load_readers(connection, e, end, pre_days)
        index = {reader: i for i, reader in enumerate(readers.ids)}
        rows, served = _daily_sums(connection, e, end, index)
        cutoffs = [min(start + timedelta(days=d + 1), end) for d in range(days)]
        drafts = [_rejections(connection, e, c) for c in cutoffs] if e.primary == "rejection_rate" else []
    running = {k: (np.zeros(len(index)) if k in DAILY else v) for k, v in readers.sums.items()}
    looks = []
    for d, cutoff in enumerate(cutoffs):
        for name, (where, values) in rows.get(d, {}).items():
            np.add.at(running[name], where, values)
        running["thumbs"] = running["up"] + running["down"]
        horizon = (cutoff - start).total_seconds()
        if drafts:
            metric = {a.name: ArmData(a.name, drafts[d].get(a.name, np.zeros(0))) for a in e.arms}
        else:
            metric = per_arm(e, readers, e.primary, running, horizon)
        counts = {a.name: int(np.sum((readers.first <= horizon) & (readers.arms == a.name))) for a in e.arms}
        shown = {a.name: int(sum(n for day, arm, n in served if day <= d and arm == a.name)) for a in e.arms}
        looks.append(Day(d, cutoff, counts, shown, metric))
    return looks


daily_series = daily  # the name experiments.md gave it


def _daily_sums(
    connection: Connection, e: Experiment, end: datetime, index: Mapping[str, int]
) -> tuple[dict[int, dict[str, tuple[npt.NDArray[np.intp], FloatArray]]], list[tuple[int, str, int]]]:
    """Per day: (reader positions, values) of each component, and exposures per (day, arm)."""
    assert e.start is not None
    dialect = connection.dialect.name
    f = exposed(e, end)
    x_day = day_of(dialect, X.c.served_at, e.start).label("day")
    x_query = (
        select(
            X.c.reader_id,
            x_day,
            func.count().label("visits"),
            func.sum(X.c["items"]).label("items"),
            func.sum(X.c.fallback_items).label("fallback"),
            func.sum(X.c.latency_ms).label("latency"),
        )
        .where(X.c.experiment == e.key, X.c.served_at < end)
        .group_by(X.c.reader_id, x_day)
    )
    post = E.c.at >= f.c.first_at
    e_day = day_of(dialect, E.c.at, e.start).label("day")
    e_columns = {
        "clicks": _count(post, "click"),
        "reads": _count(post, "read"),
        "up": _count(post, "thumbs_up"),
        "down": _count(post, "thumbs_down"),
        "dwell": _total(post, "read", E.c.dwell_s),
    }
    joined = f.join(E, and_(E.c.reader_id == f.c.reader_id, post, E.c.at < end))
    e_query = (
        select(f.c.reader_id, e_day, *(c.label(n) for n, c in e_columns.items()))
        .select_from(joined)
        .group_by(f.c.reader_id, e_day)
    )
    out: dict[int, dict[str, tuple[list[int], list[float]]]] = {}
    for query, names in ((x_query, DAILY[:4]), (e_query, tuple(e_columns))):
        for row in connection.execute(query):
            i = index.get(row.reader_id)
            if i is None:  # a reader seen in two arms
                continue
            day = out.setdefault(int(row.day), {})
            for name in names:
                where, values = day.setdefault(name, ([], []))
                where.append(i)
                values.append(float(row._mapping[name] or 0))
    arm_day = day_of(dialect, X.c.served_at, e.start)
    served_query = (
        select(arm_day, X.c.arm, func.count())
        .where(X.c.experiment == e.key, X.c.served_at < end)
        .group_by(arm_day, X.c.arm)
    )
    served = [(int(day), str(arm), int(n)) for day, arm, n in connection.execute(served_query)]
    arrays = {
        d: {k: (np.array(w, dtype=np.intp), np.array(v, dtype=np.float64)) for k, (w, v) in comps.items()}
        for d, comps in out.items()
    }
    return arrays, served
