"""The service's SQL schema and how to connect to it (SQLAlchemy 2; migrations in server/migrations).

One schema for both engines: SQLite (WAL, the embedded default) and PostgreSQL (DATABASE_URL).
Times are stored as naive UTC and read back as aware UTC, because SQLite keeps no time zone.
JSON columns hold what is read whole and never queried inside (sentences, briefing items).
"""

from __future__ import annotations

import fcntl
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class UTCDateTime(TypeDecorator[datetime]):
    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the service stores aware times only")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON, list[Any]: JSON}


class ReaderRow(Base):
    """A reader, their visits (`session_since` is the "since" of the visit in progress) and settings."""

    __tablename__ = "readers"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    session_since: Mapped[datetime | None]
    # The reader's own choices (migration 0003); None follows the publication's setting.
    name: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(10))
    timezone: Mapped[str | None] = mapped_column(String(64))


class EventRow(Base):
    """A reader's event; event ids are the client's, unique per reader (idempotent retries)."""

    __tablename__ = "events"
    reader_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(20))
    article_id: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(index=True)
    dwell_s: Mapped[float | None] = mapped_column(Float)


class SummaryRow(Base):
    """An article summary or story update with its review state and provenance."""

    __tablename__ = "summaries"
    id: Mapped[str] = mapped_column(String(240), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    article_id: Mapped[str] = mapped_column(String(200), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    prompt: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(300))
    adapter: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime]
    seconds: Mapped[float] = mapped_column(Float)
    basis: Mapped[list[Any]]
    sentences: Mapped[list[Any]]
    dropped: Mapped[list[Any]]
    reviewed_by: Mapped[str | None] = mapped_column(String(100))
    reviewed_at: Mapped[datetime | None]
    original_text: Mapped[str | None] = mapped_column(Text)  # the generated text an editor changed
    reason: Mapped[str | None] = mapped_column(Text)  # why it was rejected
    version: Mapped[int] = mapped_column(Integer, default=0)  # optimistic concurrency for decisions


class BriefingRow(Base):
    """A briefing as served to a reader: what was shown, from which texts, under which arm."""

    __tablename__ = "briefings_served"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reader_id: Mapped[str] = mapped_column(String(100), index=True)
    served_at: Mapped[datetime]
    since: Mapped[datetime | None]
    variant: Mapped[str] = mapped_column(String(50))
    policy: Mapped[str] = mapped_column(String(50))
    cached: Mapped[bool] = mapped_column(Boolean)
    items: Mapped[list[Any]]  # [{article_id, summary_id, source, citations}]


class AuditRow(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(index=True)
    actor: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(50))
    target: Mapped[str] = mapped_column(String(240), index=True)
    detail: Mapped[dict[str, Any]]


class JobRow(Base):
    __tablename__ = "jobs"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    every_s: Mapped[float] = mapped_column(Float)
    description: Mapped[str] = mapped_column(Text)


class JobRunRow(Base):
    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_job_started", "job", "started_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(20))  # schedule, manual, retry
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    outcome: Mapped[str] = mapped_column(String(20))  # running, ok, failed
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]]


class ExperimentRow(Base):
    """An experiment (server/experiments): its definition as written, and its lifecycle in columns."""

    __tablename__ = "experiments"
    key: Mapped[str] = mapped_column(String(60), primary_key=True)
    layer: Mapped[str] = mapped_column(String(50), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)
    definition: Mapped[dict[str, Any]]  # model.to_json; the columns below are the truth for state
    range_start: Mapped[float | None] = mapped_column(Float)  # its slice of the layer, while running
    started_at: Mapped[datetime | None]
    stopped_at: Mapped[datetime | None]
    decision: Mapped[str | None] = mapped_column(String(50))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ExposureRow(Base):
    """A briefing served to a reader under an experiment's arm; one row per briefing (a cached
    briefing served again is the same exposure), the first serving's time and figures."""

    __tablename__ = "exposures"
    experiment: Mapped[str] = mapped_column(
        String(60), ForeignKey("experiments.key", ondelete="CASCADE"), primary_key=True
    )
    reader_id: Mapped[str] = mapped_column(String(100), primary_key=True, index=True)  # erasure
    briefing_key: Mapped[str] = mapped_column(String(32), primary_key=True)  # a hash of the cache key
    arm: Mapped[str] = mapped_column(String(50))
    served_at: Mapped[datetime]
    latency_ms: Mapped[float] = mapped_column(Float)
    items: Mapped[int] = mapped_column(Integer)
    fallback_items: Mapped[int] = mapped_column(Integer)


class AdapterRow(Base):
    """A LoRA adapter in the registry (briefing.tuning.registry; server.adapters owns the writes).
    At most one row is promoted: a partial unique index says so to the database itself, so no
    race or crash can leave two. `generation` is the registry version at the row's last promote
    or rollback; the registry's version is the largest one."""

    __tablename__ = "adapters"
    __table_args__ = (
        Index(
            "ux_adapters_one_promoted",
            "state",
            unique=True,
            sqlite_where=text("state = 'promoted'"),
            postgresql_where=text("state = 'promoted'"),
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(300))
    base_hash: Mapped[str] = mapped_column(String(64))
    snapshot_id: Mapped[str] = mapped_column(String(40))
    hyper: Mapped[dict[str, Any]]
    report: Mapped[dict[str, Any] | None]
    state: Mapped[str] = mapped_column(String(20), index=True)
    created_at: Mapped[datetime]
    promoted_at: Mapped[datetime | None]
    path: Mapped[str] = mapped_column(String(300))
    previous: Mapped[str | None] = mapped_column(String(40))
    generation: Mapped[int] = mapped_column(Integer, index=True)


class ModelVersionRow(Base):
    """What serving processes load from the index and the logs, by name (matrix, ranker, adapter),
    and a counter a job or a write bumps when it changed it (server.versions)."""

    __tablename__ = "model_versions"
    name: Mapped[str] = mapped_column(String(20), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime]


def connect(url: str) -> Engine:
    """An engine for `url`; SQLite files get WAL, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True, connect_args=_PG_TIMEOUTS)


# A database that vanishes without a reset (a network partition, a frozen host) must cost a request
# seconds, not the kernel's minutes: libpq gives up connecting after 5 s, and keepalives and the
# TCP user timeout drop a connection whose peer stopped answering within about 20 s.
_PG_TIMEOUTS = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,  # ms
}


_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


def write_lock(engine: Engine) -> AbstractContextManager[Any]:
    """Hold around a write transaction. SQLite has one writer at a time and makes the others
    retry in sleeps (busy_timeout); our own threads queue on a lock instead, so none of them sleeps
    past the moment the writer before it is done. PostgreSQL has row locks and needs none."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    lock = _WRITERS.get(engine)
    if lock is None:  # a WeakKeyDictionary lookup on every write; create the lock only once
        lock = _WRITERS.setdefault(engine, threading.Lock())
    return lock


# "idxf" and the schema, as server.jobs keys its leader lock.
INDEX_FENCE_KEY = 0x6964_7866


def index_fence(url: str, data_dir: Path) -> Callable[[bool], AbstractContextManager[Any]]:
    """The index's fence across processes (see `indexing.QdrantIndex.fence`): a PostgreSQL
    advisory lock where the deployment has PostgreSQL (writers on several machines), else a file
    lock under DATA_DIR (several processes on one machine). Shared for writers, exclusive for
    re-index's switch; either is released when its holder dies, so a killed writer blocks no one."""
    if url.startswith("sqlite"):
        return partial(_file_fence, data_dir / "index.fence")
    return partial(_advisory_fence, create_engine(url, pool_size=2, max_overflow=8, pool_pre_ping=True))


@contextmanager
def _advisory_fence(engine: Engine, exclusive: bool) -> Iterator[None]:
    call = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    with engine.begin() as connection:  # released at commit, or when the connection drops
        connection.execute(text(f"select {call}(:k, hashtext(current_schema()))"), {"k": INDEX_FENCE_KEY})
        yield


@contextmanager
def _file_fence(path: Path, exclusive: bool) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:  # flock is per open file: threads of one process exclude too
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process crash
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


MIGRATE_LOCK_KEY = 0x6D69_6772


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (Alembic `upgrade head`), in one transaction.

    On PostgreSQL, processes starting together (API workers and the scheduler worker) take turns
    under an advisory lock: otherwise two would race to create the same tables and one would fail."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":  # released at commit
            lock = text("select pg_advisory_xact_lock(:k, hashtext(current_schema()))")
            connection.execute(lock, {"k": MIGRATE_LOCK_KEY})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def now() -> datetime:
    return datetime.now(UTC)
