"""SQL implementations of the pipeline's repositories, and the service's own records.

- `SqlEventStore` is a `recsys.EventRepository` (contract: tests/unit/test_events.py);
- `SqlSummaryStore` is a `briefing.SummaryRepository` (contract: tests/unit/test_summary_store.py);
- `Readers` keeps visits, `BriefingLog` what each reader was shown, `AuditLog` who changed what,
  `JobRuns` the scheduler's history; `erase_reader` removes a reader everywhere in one transaction.
Every write is one transaction, so a crash leaves either the old rows or the new ones.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from briefing import FINAL, Briefing, Status, Summary
from recsys import Event, EventType
from server.db import (
    AuditRow,
    BriefingRow,
    EventRow,
    JobRow,
    JobRunRow,
    ReaderRow,
    SummaryRow,
    now,
    write_lock,
)
from server.experiments.store import erase_exposures

if TYPE_CHECKING:  # server.readers parses files and imports nothing of this module
    from server.readers import ReaderRecord

_BATCH = 500  # rows per INSERT statement (SQLite allows 32,766 bound values)


def _sessions(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _insert(engine: Engine) -> Any:
    return postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert


class SqlEventStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = _sessions(engine)
        self._insert = _insert(engine)

    def add(self, events: Sequence[Event]) -> int:
        """All or nothing; events already stored (same reader and event id) are skipped, not counted."""
        rows = list({(e.reader_id, e.event_id): _event_row(e) for e in reversed(events)}.values())[::-1]
        with write_lock(self.engine), self.engine.begin() as connection:
            stored = _insert_events(connection, self._insert, rows)
        return stored

    def for_reader(self, reader_id: str) -> list[Event]:
        query = select(EventRow).where(EventRow.reader_id == reader_id).order_by(EventRow.at)
        with self._session() as session:
            return [_event(r) for r in session.scalars(query)]

    def all_events(self, since: datetime | None = None) -> Iterator[Event]:
        query = select(EventRow).order_by(EventRow.at)
        if since is not None:
            query = query.where(EventRow.at >= since)
        with self._session() as session:
            rows = list(session.scalars(query))
        return (_event(r) for r in rows)

    def count(self) -> int:
        with self._session() as session:
            return int(session.scalar(select(func.count()).select_from(EventRow)) or 0)

    def delete_before(self, cutoff: datetime) -> int:
        with write_lock(self.engine), self.engine.begin() as connection:
            return int(connection.execute(delete(EventRow).where(EventRow.at < cutoff)).rowcount)

    # A visit's "since" is what the composer asks for as the last visit: the service groups
    # requests into visits (`Readers`), so a reload within a visit keeps the same briefing.
    def record_visit(self, reader_id: str, at: datetime) -> None:
        Readers(self.engine).touch(reader_id, at, since=at)

    def last_visit(self, reader_id: str) -> datetime | None:
        with self._session() as session:
            return session.scalar(select(ReaderRow.session_since).where(ReaderRow.id == reader_id))


def _event_row(event: Event) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "reader_id": event.reader_id,
        "type": event.type.value,
        "article_id": event.article_id,
        "at": event.at,
        "dwell_s": event.dwell_s,
    }


def _event(row: EventRow) -> Event:
    return Event(
        event_id=row.event_id,
        reader_id=row.reader_id,
        type=EventType(row.type),
        article_id=row.article_id,
        at=row.at,
        dwell_s=row.dwell_s,
    )


@dataclass(frozen=True)
class ReaderSettings:
    """A reader's own choices; None follows the publication's (PUBLICATION_LANGUAGE/_TZ)."""

    name: str | None = None
    language: str | None = None
    timezone: str | None = None


@dataclass(frozen=True)
class Visit:
    reader_id: str
    since: datetime | None  # what "since you were last here" means for this visit
    new_session: bool


class Readers:
    """Visits grouped into sessions: within `session` of the last request a reader keeps the
    same "since", so reloading the page shows the same briefing instead of "nothing new"."""

    def __init__(self, engine: Engine, session: timedelta = timedelta(minutes=30)) -> None:
        self.engine = engine
        self.session_gap = session
        self._session = _sessions(engine)
        self._insert = _insert(engine)

    def state(self, reader_id: str) -> tuple[datetime | None, datetime | None]:
        """(last seen, the current visit's "since"), both None for a reader never seen."""
        query = select(ReaderRow.last_seen_at, ReaderRow.session_since).where(ReaderRow.id == reader_id)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return (None, None) if row is None else (row.last_seen_at, row.session_since)

    def touch(
        self, reader_id: str, at: datetime, since: datetime | None, connection: Connection | None = None
    ) -> None:
        """Record a request at `at` belonging to a visit that shows what is new since `since`
        (one upsert; in the caller's transaction when given one)."""
        statement = (
            self._insert(ReaderRow)
            .values(id=reader_id, created_at=at, last_seen_at=at, session_since=since)
            .on_conflict_do_update(index_elements=["id"], set_={"last_seen_at": at, "session_since": since})
        )
        if connection is not None:
            connection.execute(statement)
            return
        with write_lock(self.engine), self.engine.begin() as own:
            own.execute(statement)

    def touch_many(
        self, visits: Sequence[tuple[str, datetime, datetime | None]], connection: Connection
    ) -> None:
        """`touch` for many readers in one executemany (the visit writer's batch), not one
        statement each: the writer shares the serving process's cores."""
        if not visits:
            return
        statement = self._insert(ReaderRow)
        statement = statement.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "last_seen_at": statement.excluded.last_seen_at,
                "session_since": statement.excluded.session_since,
            },
        )
        rows = [
            {"id": r, "created_at": at, "last_seen_at": at, "session_since": since} for r, at, since in visits
        ]
        connection.execute(statement, rows)

    def active(self, since: datetime) -> list[str]:
        query = select(ReaderRow.id).where(ReaderRow.last_seen_at >= since).order_by(ReaderRow.id)
        with self._session() as session:
            return list(session.scalars(query))

    def exists(self, reader_id: str) -> bool:
        with self._session() as session:
            return session.get(ReaderRow, reader_id) is not None

    def settings(self, reader_id: str) -> ReaderSettings:
        """The reader's own name, language and time zone (None where they follow the publication)."""
        columns = (ReaderRow.name, ReaderRow.language, ReaderRow.timezone)
        query = select(*columns).where(ReaderRow.id == reader_id)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return ReaderSettings() if row is None else ReaderSettings(row.name, row.language, row.timezone)

    def configure(self, reader_id: str, at: datetime, choice: ReaderSettings) -> None:
        """Store a reader's language and zone (None: the publication's); a new reader is created."""
        values = {"language": choice.language, "timezone": choice.timezone}
        statement = (
            self._insert(ReaderRow)
            .values(id=reader_id, created_at=at, **values)
            .on_conflict_do_update(index_elements=["id"], set_=values)
        )
        with write_lock(self.engine), self.engine.begin() as connection:
            connection.execute(statement)

    def load(self, readers: Sequence[ReaderRecord], at: datetime) -> int:
        """Readers with their settings, last visits and events, in one transaction (all or none);
        events already stored are skipped. Returns how many events were new."""
        added = 0
        with write_lock(self.engine), self.engine.begin() as connection:
            for reader in readers:
                connection.execute(self._upsert(reader, at))
                added += _insert_events(connection, self._insert, [_event_row(e) for e in reader.events])
        return added

    def _upsert(self, reader: ReaderRecord, at: datetime) -> Any:
        """A loaded reader's row: a file's settings replace the stored ones; a visit it names too."""
        values: dict[str, Any] = {"name": reader.name, "language": reader.language}
        values["timezone"] = reader.timezone
        if reader.last_visit is not None:
            values |= {"last_seen_at": reader.last_visit, "session_since": reader.last_visit}
        return (
            self._insert(ReaderRow)
            .values(id=reader.reader_id, created_at=at, **values)
            .on_conflict_do_update(index_elements=["id"], set_=values)
        )


class SqlSummaryStore:
    """Drafts are written with `put`, decisions with `decide`: a conditional UPDATE on the version
    the editor saw, so a retraction or another editor's decision in between is never overwritten."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = _sessions(engine)
        self._insert = _insert(engine)

    def put(self, summary: Summary) -> Summary:
        """Insert a draft, or replace a stored draft (version + 1); a decided summary stays."""
        row = _summary_values(summary)
        changed = {k: v for k, v in row.items() if k not in ("id", "version")}
        statement = (
            self._insert(SummaryRow)
            .values(row)
            .on_conflict_do_update(
                index_elements=["id"],
                set_={**changed, "version": SummaryRow.version + 1},
                where=SummaryRow.status == Status.DRAFT.value,
            )
        )
        with write_lock(self.engine), self.engine.begin() as connection:
            connection.execute(statement)
        stored = self.get(summary.id)
        assert stored is not None
        return stored

    def decide(self, summary: Summary, expected_version: int) -> Summary | None:
        values = {k: v for k, v in _summary_values(summary).items() if k != "id"}
        statement = (
            update(SummaryRow)
            .where(
                SummaryRow.id == summary.id,
                SummaryRow.version == expected_version,
                SummaryRow.status.not_in([s.value for s in FINAL]),
            )
            .values({**values, "version": expected_version + 1})
        )
        with write_lock(self.engine), self.engine.begin() as connection:
            if connection.execute(statement).rowcount != 1:
                return None
        return self.get(summary.id)

    def get(self, summary_id: str) -> Summary | None:
        with self._session() as session:
            row = session.get(SummaryRow, summary_id)
            return None if row is None else _summary(row)

    def find(self, article_id: str) -> list[Summary]:
        query = (
            select(SummaryRow)
            .where(SummaryRow.article_id == article_id)
            .order_by(SummaryRow.created_at.desc())
        )
        with self._session() as session:
            return [_summary(r) for r in session.scalars(query)]

    def by_status(self, status: Status) -> list[Summary]:
        query = select(SummaryRow).where(SummaryRow.status == status.value).order_by(SummaryRow.created_at)
        with self._session() as session:
            return [_summary(r) for r in session.scalars(query)]

    def retire(self, article_id: str, keep_hash: str | None, at: datetime) -> int:
        """Summaries of an article's other versions (all of them for `keep_hash=None`, a retraction)
        leave the queue and can never be shown again."""
        statement = (
            update(SummaryRow)
            .where(SummaryRow.article_id == article_id, SummaryRow.status != Status.RETRACTED.value)
            .values(
                status=Status.RETRACTED.value,
                reviewed_by="retraction",
                reviewed_at=at,
                version=SummaryRow.version + 1,
            )
        )
        if keep_hash is not None:
            statement = statement.where(SummaryRow.content_hash != keep_hash).values(reviewed_by="update")
        with write_lock(self.engine), self.engine.begin() as connection:
            return int(connection.execute(statement).rowcount)

    def retire_updates_from(self, article_id: str, keep_hash: str | None, at: datetime) -> list[str]:
        """Story updates of other articles written from this one leave the queue for good, with
        the reason: for a retraction (`keep_hash=None`) every update that covers or cites it,
        for an in-place update those citing another version than `keep_hash`. Their ids name
        that evidence, so no reader's request reaches them again; the next job run writes the
        update from what remains. Returns their ids."""
        final = [s.value for s in FINAL]
        query = select(SummaryRow.id, SummaryRow.basis, SummaryRow.sentences, SummaryRow.dropped).where(
            SummaryRow.kind == "update", SummaryRow.article_id != article_id, SummaryRow.status.not_in(final)
        )
        how = "retraction" if keep_hash is None else "update"
        reason = f"written from {article_id}, since {'retracted' if keep_hash is None else 'updated'}"
        with write_lock(self.engine), self.engine.begin() as connection:
            rows = connection.execute(query).all()
            ids = [r.id for r in rows if _written_from(r, article_id, keep_hash)]
            if ids:
                connection.execute(
                    update(SummaryRow)
                    .where(SummaryRow.id.in_(ids), SummaryRow.status.not_in(final))
                    .values(
                        status=Status.RETRACTED.value,
                        reviewed_by=how,
                        reviewed_at=at,
                        reason=reason,
                        version=SummaryRow.version + 1,
                    )
                )
        return ids


def _written_from(row: Any, article_id: str, keep_hash: str | None) -> bool:
    """Whether an update row covers `article_id` (retraction) or cites a version of it other
    than `keep_hash` (an in-place update: its basis may have named the article as read only)."""
    chunks = (c.partition("#")[0] for s in (*row.sentences, *row.dropped) for c in s["citations"])
    versions = {version for cited, _, version in (c.partition("@") for c in chunks) if cited == article_id}
    if keep_hash is None:
        return article_id in row.basis or bool(versions)
    return bool(versions - {keep_hash})


def _summary_values(s: Summary) -> dict[str, Any]:
    data = s.to_json()
    return {
        **{k: getattr(s, k) for k in ("id", "kind", "article_id", "content_hash", "prompt", "model")},
        "adapter": s.adapter,
        "status": s.status.value,
        "created_at": s.created_at,
        "seconds": s.seconds,
        "basis": list(s.basis),
        "sentences": data["sentences"],
        "dropped": data["dropped"],
        "reviewed_by": s.reviewed_by,
        "reviewed_at": s.reviewed_at,
        "original_text": s.original_text,
        "reason": s.reason,
        "version": s.version,
    }


def _summary(row: SummaryRow) -> Summary:
    columns = ("id", "kind", "article_id", "content_hash", "prompt", "model", "adapter", "status")
    return Summary.from_json(
        {
            **{c: getattr(row, c) for c in columns},
            "seconds": row.seconds,
            "basis": row.basis,
            "sentences": row.sentences,
            "dropped": row.dropped,
            "created_at": row.created_at.isoformat(),
            "reviewed_by": row.reviewed_by,
            "reviewed_at": row.reviewed_at.isoformat() if row.reviewed_at else None,
            "original_text": row.original_text,
            "reason": row.reason,
            "version": row.version,
        }
    )


def served_row(briefing: Briefing, served_at: datetime, cached: bool) -> dict[str, Any]:
    """A `briefings_served` row: what a reader was shown, from which texts, under which arm."""
    items = [
        {
            "article_id": i.article_id,
            "summary_id": i.summary_id,
            "source": i.source,
            "citations": list(i.citations),
        }
        for i in briefing.items
    ]
    return {
        "reader_id": briefing.reader_id,
        "served_at": served_at,
        "since": briefing.since,
        "variant": briefing.variant,
        "policy": briefing.policy.name,
        "cached": cached,
        "items": items,
    }


class BriefingLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = _sessions(engine)

    def for_reader(self, reader_id: str) -> list[dict[str, Any]]:
        query = select(BriefingRow).where(BriefingRow.reader_id == reader_id).order_by(BriefingRow.id)
        with self._session() as session:
            return [
                {"served_at": r.served_at, "variant": r.variant, "cached": r.cached, "items": r.items}
                for r in session.scalars(query)
            ]

    def delete_before(self, cutoff: datetime) -> int:
        with write_lock(self.engine), self.engine.begin() as connection:
            return int(connection.execute(delete(BriefingRow).where(BriefingRow.served_at < cutoff)).rowcount)


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = _sessions(engine)

    def write(self, actor: str, role: str, action: str, target: str, detail: dict[str, Any]) -> None:
        row = AuditRow(at=now(), actor=actor, role=role, action=action, target=target, detail=detail)
        with write_lock(self.engine), self._session.begin() as session:
            session.add(row)

    def entries(self, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if target is not None:
            query = query.where(AuditRow.target == target)
        with self._session() as session:
            return [
                {
                    "at": r.at,
                    "actor": r.actor,
                    "role": r.role,
                    "action": r.action,
                    "target": r.target,
                    "detail": r.detail,
                }
                for r in session.scalars(query)
            ]


class JobRuns:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = _sessions(engine)

    def register(self, name: str, every_s: float, description: str) -> None:
        """One upsert: workers starting together register the same jobs (a read-then-insert merge
        raced there, and the loser died on the primary key)."""
        values = {"every_s": every_s, "description": description}
        statement = (
            _insert(self.engine)(JobRow)
            .values(name=name, **values)
            .on_conflict_do_update(index_elements=["name"], set_=values)
        )
        with write_lock(self.engine), self.engine.begin() as connection:
            connection.execute(statement)

    def start(self, job: str, attempt: int, trigger: str) -> int:
        row = JobRunRow(
            job=job, attempt=attempt, trigger=trigger, started_at=now(), outcome="running", detail={}
        )
        with write_lock(self.engine), self._session.begin() as session:
            session.add(row)
            session.flush()
            return int(row.id)

    def finish(self, run_id: int, outcome: str, error: str | None, detail: dict[str, Any]) -> None:
        """Records how a run ended; this overwrites `abandoned`, for a run that outlived the guess."""
        with write_lock(self.engine), self._session.begin() as session:
            row = session.get_one(JobRunRow, run_id)
            row.ended_at, row.outcome, row.error, row.detail = now(), outcome, error, detail

    def get(self, run_id: int) -> dict[str, Any]:
        with self._session() as session:
            return _run(session.get_one(JobRunRow, run_id))

    def abandon(
        self,
        started_before: datetime,
        *,
        triggers: Sequence[str] | None = None,
        keep: Collection[int] = (),
        reason: str,
    ) -> int:
        """Marks runs still `running` that started before `started_before` (only those with one of
        `triggers`, if given; never the ids in `keep`) as `abandoned`: the process running them is
        gone, so nothing else would ever end them. Returns how many it marked."""
        query = update(JobRunRow).where(JobRunRow.outcome == "running", JobRunRow.started_at < started_before)
        if triggers is not None:
            query = query.where(JobRunRow.trigger.in_(triggers))
        if keep:
            query = query.where(JobRunRow.id.not_in(keep))
        with write_lock(self.engine), self.engine.begin() as connection:
            marked = connection.execute(query.values(outcome="abandoned", ended_at=now(), error=reason))
            return int(marked.rowcount)

    def runs(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        query = select(JobRunRow).order_by(JobRunRow.id.desc()).limit(limit)
        if job is not None:
            query = query.where(JobRunRow.job == job)
        with self._session() as session:
            return [_run(r) for r in session.scalars(query)]


def _run(r: JobRunRow) -> dict[str, Any]:
    return {
        "id": r.id,
        "job": r.job,
        "attempt": r.attempt,
        "trigger": r.trigger,
        "started_at": r.started_at,
        "ended_at": r.ended_at,
        "outcome": r.outcome,
        "error": r.error,
        "detail": r.detail,
    }


def erase_reader(engine: Engine, reader_id: str) -> dict[str, int]:
    """Delete a reader's events, profile (visits), served briefings and experiment exposures (their
    assignments are a hash of their id: nothing of them is stored) in one transaction."""
    with write_lock(engine), engine.begin() as connection:
        return {
            "events": connection.execute(delete(EventRow).where(EventRow.reader_id == reader_id)).rowcount,
            "exposures": erase_exposures(connection, reader_id),
            "briefings": connection.execute(
                delete(BriefingRow).where(BriefingRow.reader_id == reader_id)
            ).rowcount,
            "profile": connection.execute(delete(ReaderRow).where(ReaderRow.id == reader_id)).rowcount,
        }


def _insert_events(connection: Any, insert: Any, rows: list[dict[str, Any]]) -> int:
    """Insert event rows in batches, skipping those already stored; returns how many were new."""
    stored = 0
    for start in range(0, len(rows), _BATCH):
        statement = (
            insert(EventRow)
            .values(rows[start : start + _BATCH])
            .on_conflict_do_nothing(index_elements=["reader_id", "event_id"])
            .returning(EventRow.event_id)
        )
        stored += len(connection.execute(statement).all())
    return stored
