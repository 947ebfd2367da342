"""The adapter registry in SQL (SQLite and PostgreSQL): `SqlAdapterRegistry` over `AdapterRow`.

Implements `briefing.tuning.registry.AdapterRegistry` (its docstring is the contract; the same
tests run on the in-memory registry). What SQL adds:
- promote and rollback are one transaction each, with their audit entry ("adapter.promote",
  "adapter.rollback") inside it, so a crash leaves neither the change nor its entry, or both;
- every state change is a conditional UPDATE on the state that was read, and a partial unique
  index allows one promoted row only. On PostgreSQL an advisory lock serializes promotes and
  rollbacks; on SQLite the process's `write_lock` does, and a writer in another process that
  changed the rows meanwhile makes the conditional update miss (or the index refuse), after
  which the transaction is retried on fresh rows;
- `version()` is the largest `generation`: each promote or rollback gives the row it promotes
  the next one, in the same transaction, so the version and the promoted row never disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased

from briefing.tuning.registry import (
    AdapterNotFound,
    AdapterRecord,
    AdapterState,
    checked_new,
    plain,
    promoted_change,
    rolled_back_change,
)
from server.db import AdapterRow, AuditRow, write_lock
from server.db import now as wall_clock

# "adpt" and the schema: a PostgreSQL transaction that promotes or rolls back holds it.
REGISTRY_LOCK_KEY = 0x6164_7074
RETRIES = 8  # a conflict needs another process writing the same rows; more than a few is a bug
T = TypeVar("T")


class RegistryConflict(RuntimeError):
    """Other writers kept changing the registry while this change retried; try again later."""


class _Raced(Exception):
    """A conditional update found the row changed since it was read."""


class SqlAdapterRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # Reading ------------------------------------------------------------------------------------

    def get(self, adapter_id: str) -> AdapterRecord | None:
        with self.engine.connect() as connection:
            return _get(connection, adapter_id)

    def all(self) -> list[AdapterRecord]:
        query = select(AdapterRow).order_by(AdapterRow.created_at.desc(), AdapterRow.id.desc())
        with self.engine.connect() as connection:
            return [_record(r) for r in connection.execute(query)]

    def promoted(self) -> AdapterRecord | None:
        with self.engine.connect() as connection:
            return _promoted(connection)

    def version(self) -> int:
        with self.engine.connect() as connection:
            return _version(connection)

    # Writing ------------------------------------------------------------------------------------

    def add(self, record: AdapterRecord) -> AdapterRecord:
        stored = checked_new(record)
        values = {**_values(stored), "generation": 0}
        statement = self._insert(AdapterRow).values(values).on_conflict_do_nothing(index_elements=["id"])
        with write_lock(self.engine), self.engine.begin() as connection:
            if connection.execute(statement.returning(AdapterRow.id)).first() is None:
                raise ValueError(f"adapter {stored.id} is already registered")
        return stored

    def set_report(self, adapter_id: str, report: Mapping[str, Any]) -> AdapterRecord:
        statement = update(AdapterRow).where(AdapterRow.id == adapter_id).values(report=plain(report))
        with write_lock(self.engine), self.engine.begin() as connection:
            if connection.execute(statement).rowcount != 1:
                raise _not_found(adapter_id)
            return _known(connection, adapter_id)

    def promote(self, adapter_id: str, actor: str, *, role: str = "admin") -> AdapterRecord:
        return self._change(lambda c: _promote(c, adapter_id, actor, role))

    def rollback(self, actor: str, *, role: str = "admin") -> AdapterRecord | None:
        return self._change(lambda c: _rollback(c, actor, role))

    def _change(self, change: Callable[[Connection], T]) -> T:
        """Run `change` in one locked transaction, again on fresh rows when it lost a race."""
        for _ in range(RETRIES):
            try:
                with write_lock(self.engine), self.engine.begin() as connection:
                    if connection.dialect.name == "postgresql":  # released at commit
                        connection.execute(
                            text("select pg_advisory_xact_lock(:k, hashtext(current_schema()))"),
                            {"k": REGISTRY_LOCK_KEY},
                        )
                    return change(connection)
            except (_Raced, IntegrityError):
                continue
        raise RegistryConflict(f"the adapter registry kept changing; gave up after {RETRIES} tries")


def _promote(connection: Connection, adapter_id: str, actor: str, role: str) -> AdapterRecord:
    target = _known(connection, adapter_id)
    if target.state is AdapterState.PROMOTED:
        return target  # nothing changes: no new version, no audit entry
    current = _promoted(connection)
    retired, promoted = promoted_change(target, current, wall_clock())
    if retired is not None:
        _move(connection, retired, AdapterState.PROMOTED)
    version = _move(connection, promoted, target.state, bump=True)
    detail = {"promoted": promoted.id, "retired": promoted.previous, "version": version}
    _audit(connection, actor, role, "adapter.promote", promoted.id, detail)
    return _known(connection, promoted.id)


def _rollback(connection: Connection, actor: str, role: str) -> AdapterRecord | None:
    current = _promoted(connection)
    if current is None:
        return None
    if current.previous is None:  # the base model served before it: it serves again
        retired = replace(current, state=AdapterState.RETIRED)
        version = _move(connection, retired, AdapterState.PROMOTED, bump=True)
        detail = {"promoted": None, "retired": retired.id, "version": version}
        _audit(connection, actor, role, "adapter.rollback", retired.id, detail)
        return None
    previous = _known(connection, current.previous)
    retired, promoted = rolled_back_change(current, previous, wall_clock())
    _move(connection, retired, AdapterState.PROMOTED)
    version = _move(connection, promoted, previous.state, bump=True)
    detail = {"promoted": promoted.id, "retired": retired.id, "version": version}
    _audit(connection, actor, role, "adapter.rollback", retired.id, detail)
    return _known(connection, promoted.id)


def _move(connection: Connection, after: AdapterRecord, before: AdapterState, *, bump: bool = False) -> int:
    """Write `after`'s state only if the row is still in `before`; with `bump`, give it the next
    generation and return that (else 0)."""
    values: dict[str, Any] = {
        "state": str(after.state),
        "promoted_at": after.promoted_at,
        "previous": after.previous,
    }
    if bump:
        other = aliased(AdapterRow)  # the subquery reads the table, not the row being updated
        values["generation"] = select(func.coalesce(func.max(other.generation), 0) + 1).scalar_subquery()
    statement = update(AdapterRow).where(AdapterRow.id == after.id, AdapterRow.state == str(before))
    if connection.execute(statement.values(values)).rowcount != 1:
        raise _Raced(after.id)
    return _version(connection) if bump else 0


def _version(connection: Connection) -> int:
    return int(connection.execute(select(func.coalesce(func.max(AdapterRow.generation), 0))).scalar_one())


def _get(connection: Connection, adapter_id: str) -> AdapterRecord | None:
    row = connection.execute(select(AdapterRow).where(AdapterRow.id == adapter_id)).first()
    return None if row is None else _record(row)


def _known(connection: Connection, adapter_id: str) -> AdapterRecord:
    record = _get(connection, adapter_id)
    if record is None:
        raise _not_found(adapter_id)
    return record


def _promoted(connection: Connection) -> AdapterRecord | None:
    query = select(AdapterRow).where(AdapterRow.state == str(AdapterState.PROMOTED))
    row = connection.execute(query).first()
    return None if row is None else _record(row)


def _not_found(adapter_id: str) -> AdapterNotFound:
    return AdapterNotFound(f"no adapter {adapter_id!r} is registered")


def _values(record: AdapterRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "base_model": record.base_model,
        "base_hash": record.base_hash,
        "snapshot_id": record.snapshot_id,
        "hyper": dict(record.hyper),
        "report": None if record.report is None else dict(record.report),
        "state": str(record.state),
        "created_at": record.created_at,
        "promoted_at": record.promoted_at,
        "path": record.path,
        "previous": record.previous,
    }


def _record(row: Any) -> AdapterRecord:
    return AdapterRecord(
        id=row.id,
        base_model=row.base_model,
        base_hash=row.base_hash,
        snapshot_id=row.snapshot_id,
        hyper=row.hyper,
        report=row.report,
        state=AdapterState(row.state),
        created_at=row.created_at,
        promoted_at=row.promoted_at,
        path=row.path,
        previous=row.previous,
    )


def _audit(
    connection: Connection, actor: str, role: str, action: str, target: str, detail: dict[str, Any]
) -> None:
    """The audit entry `server.stores.AuditLog` reads, written in the change's own transaction."""
    row = {"at": wall_clock(), "actor": actor, "role": role, "action": action, "target": target}
    connection.execute(insert(AuditRow).values({**row, "detail": detail}))
