"""The SQL under metrics.py: per-reader sums of an experiment's exposures, events and earlier
briefings, grouped by reader in the database, and the same per day for the daily looks.

One statement per analysis: `exposed` (a materialized CTE, one row per exposed reader with the
edges of their windows computed once, not per event) joined to three aggregates (events,
later exposures, briefings before the first exposure). Both engines run it; the time arithmetic
is the one place they differ (`shift`, `day_of`). Events are the bulk of the work, one keyed
lookup per event: measured on 2 busy cores with 1M events of 20k readers, about 6.5 s on SQLite
and 2.7 s on PostgreSQL for `load_readers` (a covering index events(reader_id, at, type, dwell_s)
would halve SQLite's; it is not added, as every event insert would pay for it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, Integer, Interval, and_, case, cast, extract, func, literal, select
from sqlalchemy.sql.elements import ColumnElement

from briefing import Status
from server.db import BriefingRow, EventRow, ExposureRow, SummaryRow, UTCDateTime
from server.experiments.model import Experiment

FloatArray = npt.NDArray[np.float64]
Components = dict[str, FloatArray]
DAY_S = 86_400
RETURN_AFTER_S = 3_600  # an event within the hour is still the first visit, not a return
RETURN_WITHIN_S = 7 * DAY_S
SQLITE_MMAP = 4 << 30  # bytes of the database file mapped for the analysis' reads
PG_WORK_MEM = "256MB"
DECIDED = (Status.APPROVED.value, Status.EDITED.value, Status.REJECTED.value)
FROM_EXPOSURES = ("visits", "items", "fallback", "latency")
FROM_EVENTS = ("clicks", "reads", "dwell", "up", "down")
X = ExposureRow.__table__
E = EventRow.__table__
B = BriefingRow.__table__


@dataclass(frozen=True)
class Readers:
    """The exposed readers (one arm each) and their per-reader sums, in one order."""

    ids: list[str]
    arms: npt.NDArray[np.str_]
    first: FloatArray  # first exposure, seconds since the experiment's start
    sums: Components


@dataclass(frozen=True)
class DayRows:
    """Per (reader, day) sums of some components: reader positions, days, and one array each."""

    reader: npt.NDArray[np.intp]
    day: npt.NDArray[np.intp]
    values: dict[str, FloatArray]


def exposed(dialect: str, e: Experiment, end: datetime, pre_days: int) -> Any:
    """Per exposed reader: first and last arm name (equal unless they saw two), first exposure,
    the exposures' sums, and the window's edges, computed once per reader (per event they would
    cost seconds on SQLite)."""
    g = (
        select(
            X.c.reader_id,
            func.min(X.c.arm).label("arm"),
            func.max(X.c.arm).label("last_arm"),
            func.min(X.c.served_at).label("first_at"),
            func.count().label("visits"),
            func.sum(X.c["items"]).label("items"),
            func.sum(X.c.fallback_items).label("fallback"),
            func.sum(X.c.latency_ms).label("latency"),
        )
        .where(X.c.experiment == e.key, X.c.served_at < end)
        .group_by(X.c.reader_id)
        .subquery("g")  # no HAVING: PostgreSQL then misjudges the rows 100-fold and picks nested loops
    )
    edges = {
        "pre_from": shift(dialect, g.c.first_at, -pre_days * DAY_S),
        "return_from": shift(dialect, g.c.first_at, RETURN_AFTER_S),
        "return_to": shift(dialect, g.c.first_at, RETURN_WITHIN_S),
    }
    f = select(g, *(c.label(n) for n, c in edges.items())).cte("exposed")
    return f.prefix_with("MATERIALIZED")  # used three times; SQLite and PostgreSQL keep one copy


def load_readers(connection: Connection, e: Experiment, end: datetime, pre_days: int) -> Readers:
    """Every exposed reader's sums in one statement: one pass over their exposures, events and
    earlier briefings, grouped by reader in SQL."""
    assert e.start is not None
    f = exposed(connection.dialect.name, e, end, pre_days)
    parts = (_event_sums(f, end), _returns_by_exposure(f, e, end), _pre_visits(f))
    joined = f
    for part in parts:
        joined = joined.outerjoin(part, part.c.rid == f.c.reader_id)
    own = ("arm", "last_arm", "first_at", "visits", "items", "fallback", "latency")
    columns = [f.c.reader_id, *(f.c[n] for n in own), *(c for p in parts for c in p.c if c.name != "rid")]
    tune(connection)
    found = connection.execute(select(*columns).select_from(joined).order_by(f.c.reader_id)).all()
    rows = [r for r in found if r.arm == r.last_arm]  # a reader seen in two arms belongs to neither
    names = [c.name for c in columns[4:]]
    sums: Components = {n: _floats(r[i + 4] for r in rows) for i, n in enumerate(names)}
    sums["returned"] = np.minimum(sums.pop("returns") + sums.pop("exposure_returns"), 1)
    sums["pre_active"] = np.minimum(sums.pop("pre_events") + sums["pre_visits"], 1)
    sums["thumbs"] = sums["up"] + sums["down"]
    sums["pre_thumbs"] = sums["pre_up"] + sums["pre_down"]
    first = _floats((r.first_at - e.start).total_seconds() for r in rows)
    return Readers([r.reader_id for r in rows], np.array([r.arm for r in rows], dtype=np.str_), first, sums)


def tune(connection: Connection) -> None:
    """Settings for one big read. SQLite: map the file, so the per-reader lookups into events
    (scattered over the table in time order) are memory reads, not a system call each.
    PostgreSQL: memory for the sorts and hashes of this transaction (the 4 MB default spills)."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql(f"PRAGMA mmap_size={SQLITE_MMAP}")
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL work_mem = '{PG_WORK_MEM}'")


def _event_sums(f: Any, end: datetime) -> Any:
    """The readers' event counts after (and before) their first exposure, one pass over events."""
    post, pre = E.c.at >= f.c.first_at, E.c.at < f.c.first_at
    returned = and_(E.c.at > f.c.return_from, E.c.at <= f.c.return_to)
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
    on = and_(E.c.reader_id == f.c.reader_id, E.c.at >= f.c.pre_from, E.c.at < end)
    return (
        select(f.c.reader_id.label("rid"), *(c.label(n) for n, c in columns.items()))
        .select_from(f.join(E, on))
        .group_by(f.c.reader_id)
        .subquery("ev")
    )


def _count(window: ColumnElement[bool], kind: str) -> ColumnElement[Any]:
    return func.sum(case((and_(window, E.c.type == kind), 1), else_=0))


def _total(window: ColumnElement[bool], kind: str, column: Any) -> ColumnElement[Any]:
    return func.sum(case((and_(window, E.c.type == kind), column), else_=0.0))


def _pre_visits(f: Any) -> Any:
    """Briefings served to each reader in the pre-period (a cached one served again is no visit)."""
    on = and_(B.c.reader_id == f.c.reader_id, B.c.served_at >= f.c.pre_from, B.c.served_at < f.c.first_at)
    return (
        select(f.c.reader_id.label("rid"), func.count().label("pre_visits"))
        .select_from(f.join(B, on))
        .where(B.c.cached.is_(False))
        .group_by(f.c.reader_id)
        .subquery("pv")
    )


def _returns_by_exposure(f: Any, e: Experiment, end: datetime) -> Any:
    on = and_(
        X.c.experiment == e.key,
        X.c.reader_id == f.c.reader_id,
        X.c.served_at > f.c.return_from,
        X.c.served_at <= f.c.return_to,
        X.c.served_at < end,
    )
    return (
        select(f.c.reader_id.label("rid"), func.count().label("exposure_returns"))
        .select_from(f.join(X, on))
        .group_by(f.c.reader_id)
        .subquery("xr")
    )


def rejections(connection: Connection, e: Experiment, end: datetime) -> dict[str, FloatArray]:
    """Per arm, one 0/1 per decided draft its templates (and adapter) wrote during the experiment."""
    s = SummaryRow.__table__
    query = (
        select(s.c.prompt, s.c.adapter, s.c.status, func.count())
        .where(s.c.created_at >= e.start, s.c.created_at < end, s.c.status.in_(DECIDED))
        .group_by(s.c.prompt, s.c.adapter, s.c.status)
    )
    counts = connection.execute(query).all()
    # an arm without an adapter drafts with whatever writes drafts (the base model or the promoted
    # adapter, which changes over time): its drafts are those no other arm's adapter wrote
    named = {arm.variant.adapter for arm in e.arms if arm.variant.adapter}
    out = {}
    for arm in e.arms:
        v = arm.variant
        prompts = {v.article_prompt, v.update_prompt, v.greeting_prompt}
        mine = [
            (status, n)
            for prompt, adapter, status, n in counts
            if _written_by(prompt, prompts) and (adapter == v.adapter if v.adapter else adapter not in named)
        ]
        rejected = sum(n for status, n in mine if status == Status.REJECTED.value)
        out[arm.name] = np.repeat([1.0, 0.0], [rejected, sum(n for _, n in mine) - rejected])
    return out


def _written_by(prompt: str, templates: set[str]) -> bool:
    """An arm names a template as "name" (any version) or "name@version"; summaries record the latter."""
    return prompt in templates or prompt.split("@", 1)[0] in templates


def day_rows(
    connection: Connection, e: Experiment, end: datetime, index: Mapping[str, int], names: Sequence[str]
) -> DayRows:
    """Per (reader, day since start) sums of `names`, after each reader's first exposure."""
    parts = [
        (query, got)
        for query, got in (_exposure_days(connection, e, end, names), _event_days(connection, e, end, names))
        if got
    ]
    tune(connection)
    return _stack([_columns(connection.execute(q).all(), index, got) for q, got in parts], names)


def _exposure_days(
    connection: Connection, e: Experiment, end: datetime, names: Sequence[str]
) -> tuple[Any, list[str]]:
    assert e.start is not None
    day = day_of(connection.dialect.name, X.c.served_at, e.start).label("day")
    sums: dict[str, ColumnElement[Any]] = {
        "visits": func.count(),
        "items": func.sum(X.c["items"]),
        "fallback": func.sum(X.c.fallback_items),
        "latency": func.sum(X.c.latency_ms),
    }
    got = [n for n in names if n in sums]
    query = (
        select(X.c.reader_id, day, *(sums[n].label(n) for n in got))
        .where(X.c.experiment == e.key, X.c.served_at < end)
        .group_by(X.c.reader_id, day)
    )
    return query, got


def _event_days(
    connection: Connection, e: Experiment, end: datetime, names: Sequence[str]
) -> tuple[Any, list[str]]:
    assert e.start is not None
    f = exposed(connection.dialect.name, e, end, 0)
    day = day_of(connection.dialect.name, E.c.at, e.start).label("day")
    post = E.c.at >= f.c.first_at
    sums: dict[str, ColumnElement[Any]] = {
        "clicks": _count(post, "click"),
        "reads": _count(post, "read"),
        "up": _count(post, "thumbs_up"),
        "down": _count(post, "thumbs_down"),
        "dwell": _total(post, "read", E.c.dwell_s),
    }
    got = [n for n in names if n in sums]
    on = and_(E.c.reader_id == f.c.reader_id, post, E.c.at < end)
    query = select(f.c.reader_id, day, *(sums[n].label(n) for n in got)).select_from(f.join(E, on))
    return query.group_by(f.c.reader_id, day), got


def _columns(rows: Sequence[Any], index: Mapping[str, int], names: Sequence[str]) -> DayRows:
    """Rows (reader, day, *sums) as arrays; readers not in `index` (seen in two arms) left out."""
    columns = list(zip(*rows, strict=True)) if rows else [()] * (2 + len(names))
    reader = np.fromiter((index.get(r, -1) for r in columns[0]), dtype=np.intp, count=len(rows))
    keep = reader >= 0
    day = np.asarray(columns[1], dtype=np.intp).reshape(-1)
    values = {n: np.asarray(columns[2 + i], dtype=np.float64).reshape(-1)[keep] for i, n in enumerate(names)}
    return DayRows(reader[keep], day[keep], values)


def _stack(parts: Sequence[DayRows], names: Sequence[str]) -> DayRows:
    """One DayRows with every name; a part lacking a name contributes zeros to it."""
    sizes = [len(p.reader) for p in parts]
    values = {
        n: np.concatenate(
            [p.values.get(n, np.zeros(k)) for p, k in zip(parts, sizes, strict=True)] or [np.zeros(0)]
        )
        for n in names
    }
    reader = np.concatenate([p.reader for p in parts] or [np.zeros(0, dtype=np.intp)])
    day = np.concatenate([p.day for p in parts] or [np.zeros(0, dtype=np.intp)])
    return DayRows(reader, day, values)


def served_per_day(connection: Connection, e: Experiment, end: datetime, days: int) -> dict[str, FloatArray]:
    """Exposures per arm and day (every exposure, also those of readers seen in two arms)."""
    assert e.start is not None
    day = day_of(connection.dialect.name, X.c.served_at, e.start)
    query = (
        select(day, X.c.arm, func.count())
        .where(X.c.experiment == e.key, X.c.served_at < end)
        .group_by(day, X.c.arm)
    )
    out = {a.name: np.zeros(days) for a in e.arms}
    for d, arm, n in connection.execute(query):
        if arm in out and 0 <= d < days:
            out[arm][int(d)] += n
    return out


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
