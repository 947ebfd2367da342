"""The migrations build exactly the schema the models declare, on SQLite and PostgreSQL, and
one scheduler leads per deployment."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select

from server.db import Base, EventRow, connect, migrate
from server.jobs import Leader


def test_migrations_match_the_models(engine: Any) -> None:
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_migrating_twice_changes_nothing(engine: Any) -> None:
    migrate(engine)
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_processes_starting_together_migrate_a_fresh_database_once(tmp_path: Path) -> None:
    """API workers and the scheduler worker start together in a deployment: each migrates at start."""
    import subprocess
    import sys

    from tests.conftest import _database

    for url in _database("postgresql", tmp_path):
        code = f"from server.db import connect, migrate; migrate(connect({url!r}))"
        starts = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(4)]
        failures = [p.stderr.read().decode()[-400:] for p in starts if p.wait(timeout=300) != 0 and p.stderr]
        assert failures == []
        engine = connect(url)
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        engine.dispose()


def test_times_come_back_aware_utc_and_naive_ones_are_refused(engine: Any) -> None:
    from sqlalchemy.orm import Session

    oslo = datetime.fromisoformat("2026-11-19T23:00:00+01:00")
    with Session(engine) as session:
        session.add(EventRow(event_id="e1", reader_id="r1", type="click", article_id="a", at=oslo))
        session.commit()
        assert session.scalar(select(EventRow.at)) == oslo.astimezone(UTC)
        session.add(
            EventRow(event_id="e2", reader_id="r1", type="click", article_id="a", at=datetime(2026, 1, 1))
        )
        with pytest.raises(Exception, match="naive datetime"):
            session.commit()


def test_one_scheduler_leads_per_deployment(engine: Any, tmp_path: Path) -> None:
    other = connect(str(engine.url.render_as_string(hide_password=False)))
    first, second = Leader(engine, tmp_path), Leader(other, tmp_path)
    try:
        assert first.acquire()
        assert not second.acquire()
        first.release()
        assert second.acquire()
    finally:
        first.release()
        second.release()
        other.dispose()


def test_schedulers_starting_together_register_their_jobs_without_a_conflict(engine: Any) -> None:
    """Two `briefing worker`s start at once and register the same jobs: the loser of a
    read-then-insert died on the primary key (seen in test_worker_processes)."""
    from concurrent.futures import ThreadPoolExecutor

    from server.db import JobRow
    from server.stores import JobRuns

    runs = JobRuns(engine)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: runs.register("refit-ranker", 60.0 + i, "refit"), range(32)))
    with engine.connect() as connection:
        rows = connection.execute(select(JobRow.name, JobRow.every_s)).all()
    assert len(rows) == 1 and rows[0].name == "refit-ranker" and 60.0 <= rows[0].every_s < 92.0
