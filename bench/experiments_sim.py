"""The simulated world of bench/experiments.py: readers whose true response is known, and how
their log reaches the service's storage.

Owns `Population` (the truth: a visit rate per reader, gamma across readers; a chance to click an
item shown, beta across readers; 5 items per briefing), `simulate` (one experiment's raw log:
visits over the 14 days before the start and the experiment's days, clicks, the treatment's
planted lift after exposure; arms by the service's hashing), `looks` (each reader's
clicks_per_visit as metrics.py computes it, per daily look, as `Moments`), and two ways into SQL:
`write_log` (as the service writes: briefings served and exposure rows in one transaction per
batch, as server/visits.py does, clicks through `SqlEventStore`) and `bulk_load` (executemany in
the service's schema, for the 1M-exposure timing run, where the service's writers would take
hours on 2 cores).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, insert

from recsys.events import Event, EventType
from server.db import BriefingRow, connect, migrate, write_lock
from server.experiments import GUARDRAILS, Experiment, ReaderFacts, parse_experiment
from server.experiments.analysis import Moments
from server.experiments.assign import arm_salt, bucket
from server.experiments.serving import Arms
from server.experiments.store import briefing_id, exposure_rows, insert_exposures
from server.stores import SqlEventStore

IntArray = npt.NDArray[np.int64]
DAY = 86_400
T0 = datetime(2025, 1, 6, tzinfo=UTC)
ARMS = ("control", "treatment")
WEIGHTS = {"control": 0.5, "treatment": 0.5}
PRIMARY = "clicks_per_visit"
LATE = 700  # a visit starts at least this long before midnight, so its clicks fall on its day
FIELDS = [f.name for f in fields(Moments)]


@dataclass(frozen=True)
class Population:
    """How simulated readers behave: the truth the analysis should recover."""

    visit_rate: float = 0.3  # mean briefings per reader per day
    visit_shape: float = 1.5  # gamma shape of the rate across readers (lower: more unequal)
    click_a: float = 1.0  # beta(a, b): a reader's chance to click an item shown (mean 0.125)
    click_b: float = 7.0
    items: int = 5
    days: int = 14
    pre_days: int = 14


@dataclass(frozen=True)
class Log:
    """One simulated experiment's raw log; times in seconds from its start (negative: before)."""

    ids: list[str]
    arm: IntArray  # per reader, an index into ARMS, from the service's hashing
    visit_reader: IntArray
    visit_t: IntArray
    click_reader: IntArray
    click_t: IntArray


@dataclass(frozen=True)
class Actor:
    id: str = "bench"
    role: str = "product"


# Simulation --------------------------------------------------------------------------------------


def definition(key: str, *, full: bool = False) -> Experiment:
    """A 50/50 control vs one-sentence experiment in its own layer, running from T0."""
    data = {
        "key": key,
        "hypothesis": "simulated (bench/experiments.py)",
        "arms": [
            {"name": "control", "weight": 0.5},
            {"name": "treatment", "weight": 0.5, "article_prompt": "article-one-sentence"},
        ],
        "primary": PRIMARY,
        "secondary": ["ctr", "reads_per_visit", "dwell_per_visit", "thumbs_up_share", "return_7d"]
        if full
        else [],
        "guardrails": list(GUARDRAILS) if full else [],
        "layer": key,
    }
    return parse_experiment(data)


def arms_of(e: Experiment, ids: Sequence[str]) -> IntArray:
    """Each reader's arm (index into `e.arms`) as `assign.pick_arm` picks it: their bucket under
    the experiment's salt against the cumulative weights (one hash each; end_to_end checks it)."""
    salt = arm_salt(e.key)
    places = np.fromiter((bucket(salt, r) for r in ids), dtype=np.float64, count=len(ids))
    upper = np.cumsum([a.weight for a in e.arms])
    return np.minimum(np.searchsorted(upper, places, side="right"), len(e.arms) - 1).astype(np.int64)


def simulate(e: Experiment, n: int, pop: Population, lift: float, rng: np.random.Generator) -> Log:
    """`n` readers over the pre-period and the experiment; visits after the start are exposures."""
    ids = [f"{e.key}-{i:07d}" for i in range(n)]
    arm = arms_of(e, ids)
    rate = rng.gamma(pop.visit_shape, pop.visit_rate / pop.visit_shape, n)
    chance = rng.beta(pop.click_a, pop.click_b, n)
    span = pop.pre_days + pop.days
    cell = np.repeat(np.arange(n * span), rng.poisson(np.repeat(rate, span)))
    reader, day = cell // span, cell % span - pop.pre_days
    t = day * DAY + rng.integers(0, DAY - LATE, cell.size)
    treated = (t >= 0) & (arm[reader] == 1)
    clicks = rng.binomial(pop.items, np.minimum(chance[reader] * np.where(treated, 1 + lift, 1.0), 1.0))
    click_t = np.repeat(t, clicks) + rng.integers(1, LATE - 100, int(clicks.sum()))
    return Log(ids, arm, reader, t, np.repeat(reader, clicks), click_t)


def first_exposure(log: Log) -> npt.NDArray[np.float64]:
    first = np.full(len(log.ids), np.inf)
    post = log.visit_t >= 0
    np.minimum.at(first, log.visit_reader[post], log.visit_t[post])
    return first


def looks(log: Log, pop: Population) -> Moments:
    """clicks_per_visit per arm after each day (fields shaped (days, arms)), as metrics.py
    computes it: clicks and visits from the first exposure on, pre from the 14 days before it."""
    n, first = len(log.ids), first_exposure(log)
    vr, vt, cr, ct = log.visit_reader, log.visit_t, log.click_reader, log.click_t
    low = first - pop.pre_days * DAY
    pre_visits = np.bincount(vr[(vt >= low[vr]) & (vt < first[vr])], minlength=n)
    pre_clicks = np.bincount(cr[(ct >= low[cr]) & (ct < first[cr])], minlength=n)
    pre = np.divide(pre_clicks, pre_visits, out=np.zeros(n), where=pre_visits > 0)
    groups, values, pres = [], [], []
    for d in range(pop.days):
        cut = (d + 1) * DAY
        visits = np.bincount(vr[(vt >= 0) & (vt < cut)], minlength=n)
        clicks = np.bincount(cr[(ct >= first[cr]) & (ct < cut)], minlength=n)
        seen = first < cut
        groups.append(d * len(ARMS) + log.arm[seen])
        values.append(clicks[seen] / visits[seen])
        pres.append(pre[seen])
    m = Moments.grouped(
        np.concatenate(groups), pop.days * len(ARMS), np.concatenate(values), np.concatenate(pres)
    )
    return Moments(*(getattr(m, f).reshape(pop.days, len(ARMS)) for f in FIELDS))


def stacked(ms: Sequence[Moments]) -> Moments:
    return Moments(*(np.stack([getattr(m, f) for m in ms]) for f in FIELDS))


# Into SQL ---------------------------------------------------------------------------------------


def temp_engine(tmp: str) -> Engine:
    engine = connect(f"sqlite:///{tmp}/briefing.sqlite")
    migrate(engine)
    return engine


def write_log(
    engine: Engine, events: SqlEventStore, e: Experiment, log: Log, batch: int = 2000
) -> dict[str, float]:
    """Briefings served (and, once running, their exposures) in the serving transaction as
    server/visits.py writes them; clicks through the event store as the API stores them.
    Returns the rows written and the seconds each writer took."""
    arms, spent = Arms(lambda: [e]), {"exposures": 0.0, "exposure_seconds": 0.0}
    order = np.argsort(log.visit_t, kind="stable")
    for start in range(0, order.size, batch):
        served, exposed = [], []
        for i in order[start : start + batch]:
            rid, t = log.ids[log.visit_reader[i]], int(log.visit_t[i])
            at, variant = T0 + timedelta(seconds=t), "control"
            if t >= 0:
                assignment = arms.of(ReaderFacts(rid, "en", False))
                assert assignment.arms[e.key].name == ARMS[log.arm[log.visit_reader[i]]]
                variant = assignment.variant.name
                exposed += exposure_rows(rid, assignment.arms, at, f"{rid}\x1f{i}", 900.0, 5, 0)
            served.append({"reader_id": rid, "served_at": at, "since": None, "variant": variant,
                           "policy": "default", "cached": False, "items": []})  # fmt: skip
        clock = time.perf_counter()
        with write_lock(engine), engine.begin() as connection:
            connection.execute(insert(BriefingRow), served)
            spent["exposures"] += insert_exposures(connection, exposed)
        spent["exposure_seconds"] += time.perf_counter() - clock
    return spent | add_clicks(events, log)


def add_clicks(events: SqlEventStore, log: Log) -> dict[str, float]:
    clock = time.perf_counter()
    clicks = [
        Event(event_id=f"c{k}", reader_id=log.ids[r], type=EventType.CLICK, article_id=f"a{k % 997}",
              at=T0 + timedelta(seconds=int(t)))
        for k, (r, t) in enumerate(zip(log.click_reader, log.click_t, strict=True))
    ]  # fmt: skip
    stored = sum(events.add(clicks[start : start + 5000]) for start in range(0, len(clicks), 5000))
    return {"events": float(stored), "event_seconds": time.perf_counter() - clock}


def stamps(t: IntArray) -> list[str]:
    """Seconds from T0 as SQLAlchemy stores times in SQLite (naive UTC, microseconds)."""
    when = np.datetime64(T0.replace(tzinfo=None), "s") + t.astype("timedelta64[s]")
    return [s.replace("T", " ") for s in np.datetime_as_string(when, unit="us").tolist()]


def bulk_load(
    path: str, e: Experiment, log: Log, pop: Population, target_events: int, rng: np.random.Generator
) -> dict[str, int]:
    """Exposures, briefings served and events in bulk (executemany), in the service's schema."""
    kinds, reader, t, dwell = timing_events(log, pop, target_events, rng)
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")  # loading only; the analysis reads through server.db
    con.execute("PRAGMA cache_size=-500000")
    with con:
        con.executemany(
            f"INSERT INTO exposures ({EXPOSURES}) VALUES ({MARKS[8]})", exposure_tuples(e, log, rng)
        )
        con.executemany(
            "INSERT INTO briefings_served (reader_id, served_at, since, variant, policy, cached, items) "
            "VALUES (?,?,NULL,?,'default',0,?)",
            briefing_tuples(log),
        )
        con.executemany(
            f"INSERT INTO events ({EVENTS}) VALUES ({MARKS[6]})",
            event_tuples(log, kinds, reader, t, dwell, rng),
        )
    con.close()
    return {"exposures": int((log.visit_t >= 0).sum()), "events": int(kinds.size), "readers": len(log.ids),
            "briefings_served": int(log.visit_t.size)}  # fmt: skip


EXPOSURES = "experiment, reader_id, briefing_key, arm, served_at, latency_ms, items, fallback_items"
EVENTS = "reader_id, event_id, type, article_id, at, dwell_s"
MARKS = {n: ",".join("?" * n) for n in (6, 8)}
TYPES = np.array(["impression", "click", "read", "thumbs_up", "thumbs_down"])


def timing_events(
    log: Log, pop: Population, target: int, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray, npt.NDArray[np.float64]]:
    """Clicks as simulated; 60% of clicks lead to a read (dwell ~ 60 s), 10% of reads to a thumb;
    each item shown makes an impression with the chance that brings the total to `target`."""
    reads = rng.random(log.click_t.size) < 0.6
    read_r, read_t = log.click_reader[reads], log.click_t[reads] + 5
    thumbs = rng.random(read_t.size) < 0.1
    rest = target - log.click_t.size - read_t.size - int(thumbs.sum())
    chance = min(1.0, max(0.0, rest / max(1, log.visit_t.size * pop.items)))
    shown = rng.binomial(pop.items, chance, log.visit_t.size)  # impressions per visit
    parts = [
        (0, np.repeat(log.visit_reader, shown), np.repeat(log.visit_t, shown)),
        (1, log.click_reader, log.click_t),
        (2, read_r, read_t),
        (3, read_r[thumbs], read_t[thumbs] + 60),
    ]
    kinds = np.concatenate([np.full(r.size, k) for k, r, _ in parts])
    kinds[kinds == 3] += rng.random(int((kinds == 3).sum())) < 0.2  # a fifth of thumbs are down
    dwell = np.where(kinds == 2, rng.gamma(2.0, 30.0, kinds.size), np.nan)
    return kinds, np.concatenate([r for _, r, _ in parts]), np.concatenate([t for _, _, t in parts]), dwell


def chunks(n: int, size: int = 200_000) -> Iterator[slice]:
    return (slice(i, min(n, i + size)) for i in range(0, n, size))


def exposure_tuples(e: Experiment, log: Log, rng: np.random.Generator) -> Iterator[tuple[Any, ...]]:
    post = np.flatnonzero(log.visit_t >= 0)
    latency = rng.gamma(4.0, 200.0, post.size)
    fallback = rng.binomial(5, 0.1, post.size)
    ids, arms = np.array(log.ids, dtype=object), np.array(ARMS, dtype=object)
    for part in chunks(post.size):
        idx = post[part]
        readers = log.visit_reader[idx]
        # a briefing's identity is its visit (two visits in one second are two briefings)
        columns = (ids[readers], idx.tolist(), arms[log.arm[readers]], stamps(log.visit_t[idx]))
        for rid, visit, arm, when, ms, fell in zip(
            *columns, latency[part].tolist(), fallback[part].tolist(), strict=True
        ):
            yield (e.key, rid, briefing_id(f"{rid}\x1f{visit}"), arm, when, ms, 5, fell)


def briefing_tuples(log: Log) -> Iterator[tuple[Any, ...]]:
    items = json.dumps([{"article_id": f"a{k}", "summary_id": None, "source": "extractive", "citations": []}
                        for k in range(5)])  # fmt: skip
    ids, arms = np.array(log.ids, dtype=object), np.array(ARMS, dtype=object)
    for part in chunks(log.visit_t.size):
        readers, t = log.visit_reader[part], log.visit_t[part]
        variant = np.where(t >= 0, arms[log.arm[readers]], "control")  # before the start: no arm
        for rid, when, arm in zip(ids[readers], stamps(t), variant.tolist(), strict=True):
            yield (rid, when, arm, items)


def event_tuples(
    log: Log,
    kinds: IntArray,
    reader: IntArray,
    t: IntArray,
    dwell: npt.NDArray[np.float64],
    rng: np.random.Generator,
) -> Iterator[tuple[Any, ...]]:
    order = np.lexsort((t, reader))  # the primary key's order: the b-tree grows at its end
    ids = np.array(log.ids, dtype=object)
    articles = np.array([f"a{k}" for k in range(2000)], dtype=object)[rng.integers(0, 2000, order.size)]
    dwell_s = dwell.astype(object)
    dwell_s[np.isnan(dwell)] = None  # NULL, as the service stores an event without dwell
    for part in chunks(order.size):
        idx = order[part]
        columns = (
            ids[reader[idx]],
            [f"{k:09d}" for k in range(part.start, part.stop)],
            TYPES[kinds[idx]].tolist(),
        )
        yield from zip(*columns, articles[idx], stamps(t[idx]), dwell_s[idx], strict=True)
