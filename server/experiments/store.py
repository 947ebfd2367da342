"""Experiments and their exposures in SQL (SQLite and PostgreSQL): the lifecycle and who saw what.

Owns `Experiments`: create, read, update, start, stop and decide an experiment, each change with its
audit entry in the same transaction (a crash leaves neither or both), and `expose`, which records
that a briefing was served under an arm. The pure rules live in model.py (`started`, `stopped`,
`decided`: draft -> running -> stopped -> decided, a stopped one never restarts) and assign.py
(`allocate`: the slice of the layer a start takes); this module applies them to rows so that two
callers racing on one experiment cannot both win (conditional UPDATE on the status read).

The definition is stored as written (model.to_json without the lifecycle) and the lifecycle in
columns. It is read back with `parse_experiment(lifecycle=True)`, accepting the templates and
adapters it names: a stored experiment stays readable after a template is retired.

An exposure is one row per (experiment, reader, briefing): the briefing's cache key is hashed into
the row's key and inserted or ignored, so a cached briefing served again adds nothing and the row
keeps the first serving's time and figures. One INSERT per served briefing for all its
experiments; `exposure_rows` + `insert_exposures` let a write-behind queue batch them instead.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from briefing.tuning.registry import AdapterState
from server.adapters import SqlAdapterRegistry
from server.db import AuditRow, ExperimentRow, ExposureRow, write_lock
from server.db import now as wall_clock
from server.experiments.assign import allocate
from server.experiments.model import (
    Arm,
    Experiment,
    ExperimentInvalid,
    decided,
    parse_experiment,
    started,
    stopped,
    to_json,
)

# "expt" and the layer: a PostgreSQL transaction starting an experiment holds it, so two starts in
# one layer cannot both take the same free slice. SQLite has one writer at a time anyway.
LAYER_LOCK_KEY = 0x6578_7074
LIFECYCLE = ("status", "start", "stop", "decision", "range_start")
# What a running experiment may still change: words and which extra metrics the page shows. Arms,
# weights, layer, targeting and the primary metric would change who is in it or what it tests.
RUNNING_MUTABLE = frozenset({"hypothesis", "secondary", "guardrails"})


class Actor(Protocol):
    """Who changes an experiment: server.service.Actor, which this module does not import (the
    service is where experiments get wired in, so it imports this module)."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str: ...


class Experiments:
    def __init__(
        self,
        engine: Engine,
        *,
        refresh_s: float = 5.0,
        known_prompts: Mapping[str, str] | Collection[str] | None = None,
        known_adapters: Collection[str] | None = None,
        known_backends: Collection[str] | None = None,
    ) -> None:
        """`refresh_s`: how old the cached running list may get before it is read again, so a
        start or stop from another process (the CLI) reaches the server within that time.
        The known_* sets validate updates, as `parse_experiment` does (defaults: the registries)."""
        self.engine = engine
        self.refresh_s = refresh_s
        self._known: dict[str, Any] = {
            "known_prompts": known_prompts,
            # default: the adapter registry's candidates and promoted adapter, read when checked
            "known_adapters": RegistryNames(engine) if known_adapters is None else known_adapters,
            "known_backends": known_backends,
        }
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        self._running: tuple[float, list[Experiment]] | None = None
        self._generation = 0  # changes made through this object
        self._lock = threading.Lock()

    def parse(self, data: Mapping[str, Any]) -> Experiment:
        """A definition checked against what this deployment knows (templates, adapters, backends)."""
        return parse_experiment(data, **self._known)

    # Reading ------------------------------------------------------------------------------------

    def get(self, key: str) -> Experiment:
        with self.engine.connect() as connection:
            return _load(connection, key)

    def list(self) -> list[Experiment]:
        query = select(ExperimentRow).order_by(ExperimentRow.created_at, ExperimentRow.key)
        with self.engine.connect() as connection:
            return [_experiment(r) for r in connection.execute(query)]

    def running(self) -> builtins.list[Experiment]:
        """The running experiments, from memory; read again after a change here, or once the copy
        is `refresh_s` old (a change made by another process)."""
        cached = self._running
        if cached is not None and time.monotonic() - cached[0] < self.refresh_s:
            return cached[1]
        generation = self._generation
        query = select(ExperimentRow).where(ExperimentRow.status == "running").order_by(ExperimentRow.key)
        with self.engine.connect() as connection:
            found = [_experiment(r) for r in connection.execute(query)]
        with self._lock:
            if generation == self._generation:  # else a change here landed meanwhile: don't keep this
                self._running = (time.monotonic(), found)
        return found

    # Lifecycle ----------------------------------------------------------------------------------

    def create(self, actor: Actor, e: Experiment) -> Experiment:
        if e.status != "draft":
            raise ExperimentInvalid([f"status: a new experiment is a draft, not {e.status}"])
        at = wall_clock()
        row = {
            "key": e.key,
            "layer": e.layer,
            "status": "draft",
            "definition": _definition(e),
            "created_at": at,
            "updated_at": at,
        }
        with write_lock(self.engine), self.engine.begin() as connection:
            statement = self._insert(ExperimentRow).values(row).on_conflict_do_nothing(index_elements=["key"])
            if connection.execute(statement.returning(ExperimentRow.key)).first() is None:
                raise ExperimentInvalid([f"key: an experiment {e.key!r} already exists; choose another key"])
            _audit(connection, actor, "experiment-create", e.key, _definition(e))
        return e

    def start(self, actor: Actor, key: str, now: datetime) -> Experiment:
        """Running from `now` in the first free slice of its layer; refused if the layer is full."""
        with write_lock(self.engine), self.engine.begin() as connection:
            e = _load(connection, key)
            self._lock_layer(connection, e.layer)
            others = [r for r in _running_in(connection, e.layer) if r.key != key]
            after = started(e, allocate(others, e.targeting.traffic, layer=e.layer), now)
            self._save(connection, e, after)
            _audit(
                connection,
                actor,
                "experiment-start",
                key,
                {"start": now.isoformat(), "range_start": after.range_start},
            )
        return self._changed(after)

    def stop(self, actor: Actor, key: str, now: datetime) -> Experiment:
        """Stopped at `now`: no one is assigned any more; a stopped experiment never restarts."""
        with write_lock(self.engine), self.engine.begin() as connection:
            e = _load(connection, key)
            after = stopped(e, now)
            self._save(connection, e, after)
            _audit(connection, actor, "experiment-stop", key, {"stop": now.isoformat()})
        return self._changed(after)

    def decide(self, actor: Actor, key: str, arm: str, now: datetime) -> Experiment:
        """The chosen arm; a running experiment stops with the decision."""
        with write_lock(self.engine), self.engine.begin() as connection:
            e = _load(connection, key)
            after = decided(e, arm, now)
            self._save(connection, e, after)
            detail = {"decision": arm, "stop": after.stop.isoformat() if after.stop else None}
            _audit(connection, actor, "experiment-decide", key, detail)
        return self._changed(after)

    def update(self, actor: Actor, key: str, data: Mapping[str, Any]) -> Experiment:
        """Change fields of the definition (`data` holds only those that change). A draft may
        change anything but its key; a running one only `RUNNING_MUTABLE`; a stopped or
        decided one nothing."""
        with write_lock(self.engine), self.engine.begin() as connection:
            e = _load(connection, key)
            after = self._revised(e, data)
            changed = {k: v for k, v in _definition(after).items() if _definition(e).get(k) != v}
            if changed:
                self._save(connection, e, after)
                _audit(connection, actor, "experiment-update", key, changed)
        return self._changed(after)

    def _revised(self, e: Experiment, data: Mapping[str, Any]) -> Experiment:
        if not isinstance(data, Mapping):
            raise ExperimentInvalid([f"experiment: expected an object, got {type(data).__name__}"])
        reasons = [
            f"{name}: is set by start, stop and decide, not by an update"
            for name in LIFECYCLE
            if name in data
        ]
        if "key" in data and data["key"] != e.key:
            reasons.append(f"key: an experiment's key cannot change ({e.key!r})")
        if e.status in ("stopped", "decided"):
            reasons.append(f"status: {e.key} is {e.status}; a finished experiment cannot change")
        if reasons:
            raise ExperimentInvalid(reasons)
        merged = {**_definition(e), **data}
        after = parse_experiment(merged, **self._known)
        if e.status == "running":
            _refuse_running_changes(e, after)
        return replace(
            after, status=e.status, start=e.start, stop=e.stop, decision=e.decision, range_start=e.range_start
        )

    def _save(self, connection: Connection, before: Experiment, after: Experiment) -> None:
        """Write `after` only if the row still has the status `before` was read with."""
        values = {
            "status": after.status,
            "layer": after.layer,
            "definition": _definition(after),
            "range_start": after.range_start,
            "started_at": after.start,
            "stopped_at": after.stop,
            "decision": after.decision,
            "updated_at": wall_clock(),
        }
        statement = (
            update(ExperimentRow)
            .where(ExperimentRow.key == before.key, ExperimentRow.status == before.status)
            .values(values)
        )
        if connection.execute(statement).rowcount != 1:
            raise ExperimentInvalid([f"status: {before.key} changed meanwhile; read it again and retry"])

    def _lock_layer(self, connection: Connection, layer: str) -> None:
        if connection.dialect.name == "postgresql":  # released at commit
            connection.execute(
                text("select pg_advisory_xact_lock(:k, hashtext(:layer))"),
                {"k": LAYER_LOCK_KEY, "layer": layer},
            )

    def _changed(self, e: Experiment) -> Experiment:
        with self._lock:
            self._running = None
            self._generation += 1
        return e

    # Exposures ----------------------------------------------------------------------------------

    def expose(
        self,
        reader_id: str,
        exposures: Mapping[str, Arm],
        served_at: datetime,
        briefing_key: str,
        latency_ms: float,
        items: int,
        fallback_items: int,
    ) -> None:
        """Record that this briefing was served to the reader under these arms (experiment key ->
        arm); the same briefing key again records nothing. One INSERT for all experiments."""
        rows = exposure_rows(reader_id, exposures, served_at, briefing_key, latency_ms, items, fallback_items)
        if rows:
            with write_lock(self.engine), self.engine.begin() as connection:
                insert_exposures(connection, rows)

    def exposures(self, key: str) -> builtins.list[dict[str, Any]]:
        """Per reader and arm: first exposure, briefings, items and fallback items, mean latency."""
        x = ExposureRow
        query = (
            select(
                x.arm,
                x.reader_id,
                func.min(x.served_at).label("first_at"),
                func.count().label("count"),
                func.sum(x.items).label("items"),
                func.sum(x.fallback_items).label("fallback_items"),
                func.avg(x.latency_ms).label("latency_ms"),
            )
            .where(x.experiment == key)
            .group_by(x.arm, x.reader_id)
            .order_by(x.arm, x.reader_id)
        )
        with self.engine.connect() as connection:
            return [{"experiment": key, **r._asdict()} for r in connection.execute(query)]

    def arm_counts(self, key: str) -> dict[str, int]:
        """Readers exposed per arm (for the sample-ratio check); every arm, 0 where none."""
        e = self.get(key)
        query = (
            select(ExposureRow.arm, func.count(func.distinct(ExposureRow.reader_id)))
            .where(ExposureRow.experiment == key)
            .group_by(ExposureRow.arm)
        )
        with self.engine.connect() as connection:
            found = {arm: n for arm, n in connection.execute(query)}
        return {a.name: int(found.get(a.name, 0)) for a in e.arms}


def briefing_id(briefing_key: str) -> str:
    """The row key of a briefing: a fixed-width hash of its cache key (reader, variant, since)."""
    return hashlib.sha256(briefing_key.encode()).hexdigest()[:32]


def exposure_rows(
    reader_id: str,
    exposures: Mapping[str, Arm],
    served_at: datetime,
    briefing_key: str,
    latency_ms: float,
    items: int,
    fallback_items: int,
) -> list[dict[str, Any]]:
    shown = briefing_id(briefing_key)
    return [
        {
            "experiment": key,
            "reader_id": reader_id,
            "briefing_key": shown,
            "arm": arm.name,
            "served_at": served_at,
            "latency_ms": float(latency_ms),
            "items": int(items),
            "fallback_items": int(fallback_items),
        }
        for key, arm in exposures.items()
    ]


def insert_exposures(connection: Connection, rows: Sequence[dict[str, Any]]) -> int:
    """Insert, skipping exposures already recorded; returns how many were new. On SQLite the
    caller holds `write_lock`."""
    if not rows:
        return 0
    upsert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    keys = ["experiment", "reader_id", "briefing_key"]
    # One statement, many parameter sets: SQLAlchemy batches them into multi-row INSERTs itself
    # (insertmanyvalues). RETURNING, as rowcount is not reliable for skipped rows on every driver.
    statement = upsert(ExposureRow).on_conflict_do_nothing(index_elements=keys).returning(ExposureRow.arm)
    return len(connection.execute(statement, list(rows)).all())


def erase_exposures(connection: Connection, reader_id: str) -> int:
    """A reader's exposures, for erasure (DESIGN §5: erasing deletes their assignments)."""
    return int(connection.execute(delete(ExposureRow).where(ExposureRow.reader_id == reader_id)).rowcount)


def _refuse_running_changes(before: Experiment, after: Experiment) -> None:
    old, new = _definition(before), _definition(after)
    reasons = []
    for name in sorted(
        k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RUNNING_MUTABLE
    ):
        what = "arms and weights" if name == "arms" else name
        reasons.append(
            f"{name}: the {what} of a running experiment cannot change; stop it and create a new one"
        )
    if reasons:
        raise ExperimentInvalid(reasons)


def _definition(e: Experiment) -> dict[str, Any]:
    data = to_json(e)
    for name in LIFECYCLE:
        data.pop(name, None)
    return data


def _load(connection: Connection, key: str) -> Experiment:
    row = connection.execute(select(ExperimentRow).where(ExperimentRow.key == key)).first()
    if row is None:
        from server.service import NotFound  # here: server.service imports this module

        raise NotFound(f"no experiment {key!r}")
    return _experiment(row)


def _running_in(connection: Connection, layer: str) -> list[Experiment]:
    query = select(ExperimentRow).where(ExperimentRow.layer == layer, ExperimentRow.status == "running")
    return [_experiment(r) for r in connection.execute(query)]


def _experiment(row: Any) -> Experiment:
    data = dict(row.definition)
    data |= {
        "status": row.status,
        "start": row.started_at,
        "stop": row.stopped_at,
        "decision": row.decision,
        "range_start": row.range_start,
    }
    arms = [a for a in data.get("arms", []) if isinstance(a, Mapping)]
    named = _names(arms, ("article_prompt", "update_prompt", "greeting_prompt"))
    return parse_experiment(
        data,
        lifecycle=True,
        known_prompts=named or {""},
        known_adapters=_names(arms, ("adapter",)),
        known_backends=_names(arms, ("backend",)),
    )


def _names(arms: Iterable[Mapping[str, Any]], fields: Sequence[str]) -> set[str]:
    return {a[f] for a in arms for f in fields if isinstance(a.get(f), str)}


def _audit(connection: Connection, actor: Actor, action: str, key: str, detail: dict[str, Any]) -> None:
    """The audit entry `server.stores.AuditLog` reads, written in the change's own transaction."""
    row = {
        "at": wall_clock(),
        "actor": actor.id,
        "role": actor.role,
        "action": action,
        "target": key,
        "detail": detail,
    }
    connection.execute(insert(AuditRow).values(row))


class RegistryNames(Collection[str]):
    """The adapters an experiment arm may name: the registry's candidates and promoted one, read
    each time (an adapter trained after the service started is known at once)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = SqlAdapterRegistry(engine)

    def _names(self) -> set[str]:
        return {r.id for r in self.registry.all() if r.state != AdapterState.RETIRED}

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._names()))

    def __len__(self) -> int:
        return len(self._names())
