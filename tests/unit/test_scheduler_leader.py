"""One scheduler per deployment, with failover: a standby takes over when the leader stops, dies
(kill -9 of the process holding the SQLite file lock) or loses its PostgreSQL session
(pg_terminate_backend); runs a dead leader left `running` are marked abandoned; the lock's
connection never sits idle in a transaction; `run_now` answers with its own run.

`Jobs` is given only what it uses of a `Service` (the engine and the run records): the rest of
the service (models, index) plays no part in leadership."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import Engine, text, update

from server.db import JobRunRow, connect, migrate, now
from server.jobs import ADVISORY_KEY, Jobs, JobSpec
from server.service import Service
from server.stores import JobRuns
from tests.conftest import migrated

ROOT = Path(__file__).resolve().parents[2]
CHECK_S = 0.1  # leader checks in these tests; production checks every few seconds
WAIT_S = 30.0  # the most any poll below waits: a bound for a stuck test, not a speed assumption


@dataclass
class Records:
    engine: Engine
    runs: JobRuns


def records(engine: Engine) -> Service:
    return cast(Service, Records(engine, JobRuns(engine)))


def quick(_: Service) -> dict[str, Any]:
    return {}


def jobs_on(engine: Engine, lock_dir: Path, *specs: JobSpec, **options: Any) -> Jobs:
    specs = specs or (JobSpec("tick", 0, "runs only when asked", quick),)
    return Jobs(records(engine), list(specs), lock_dir=lock_dir, leader_check_s=CHECK_S, **options)


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S:.0f} s: {what}"
        time.sleep(0.05)


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Engine]:
    yield from migrated("postgresql", tmp_path)


def test_a_standby_takes_over_when_the_leader_stops(engine: Engine, tmp_path: Path) -> None:
    other = connect(engine.url.render_as_string(hide_password=False))
    first, second = jobs_on(engine, tmp_path), jobs_on(other, tmp_path)
    try:
        assert first.start() and first.running
        assert not second.start() and not second.running
        first.stop()
        eventually(lambda: second.running, "the standby leads")
        assert not first.running
    finally:
        first.stop()
        second.stop()
        other.dispose()


def test_run_now_answers_with_its_own_run(engine: Engine, tmp_path: Path) -> None:
    def meanwhile(service: Service) -> dict[str, Any]:
        # another process starts the same job while this run works: its row is newer
        service.runs.start("tick", 1, "schedule")
        return {"mine": True}

    jobs = jobs_on(engine, tmp_path, JobSpec("tick", 0, "", meanwhile))
    run = jobs.run_now("tick")
    assert (run["trigger"], run["outcome"], run["detail"]) == ("manual", "ok", {"mine": True})
    assert run == jobs.service.runs.get(run["id"]) and run["id"] != jobs.runs("tick", 1)[0]["id"]


def test_a_new_leader_marks_runs_nobody_will_finish_abandoned(engine: Engine, tmp_path: Path) -> None:
    jobs = jobs_on(engine, tmp_path, stale_after_s=3600.0)
    runs = jobs.service.runs
    scheduled = runs.start("tick", 1, "schedule")  # its scheduler died with its process
    manual = runs.start("tick", 1, "manual")  # an API worker may still be running it
    old = runs.start("tick", 1, "manual")  # ... but not for a whole day
    with engine.begin() as connection:
        connection.execute(
            update(JobRunRow).where(JobRunRow.id == old).values(started_at=now() - timedelta(days=1))
        )
    try:
        assert jobs.start()
        outcomes = {r["id"]: r["outcome"] for r in jobs.runs("tick")}
        assert outcomes == {scheduled: "abandoned", manual: "running", old: "abandoned"}
        assert "stopped before it ended" in runs.get(scheduled)["error"]
        runs.finish(scheduled, "ok", None, {"late": True})  # a run that did end after all says so
        assert runs.get(scheduled)["outcome"] == "ok"
    finally:
        jobs.stop()


def _lock_holders(admin: Engine) -> list[tuple[int, str, str]]:
    """(pid, state, last query) of the sessions holding this schema's scheduler lock."""
    query = text(
        "select l.pid, a.state, a.query from pg_locks l join pg_stat_activity a on a.pid = l.pid"
        " where l.locktype = 'advisory' and l.granted and l.classid::bigint = :k"
        " and l.objid::bigint = (hashtext(current_schema())::bigint & 4294967295)"
    )
    with admin.connect() as connection:
        return [(r.pid, r.state, r.query) for r in connection.execute(query, {"k": ADVISORY_KEY})]


def test_a_leader_that_loses_its_postgres_session_stops_and_the_standby_takes_over(
    postgres: Engine, tmp_path: Path
) -> None:
    url = postgres.url.render_as_string(hide_password=False)
    other, admin = connect(url), connect(url)
    first, second = jobs_on(postgres, tmp_path), jobs_on(other, tmp_path)
    try:
        assert first.start() and not second.start()
        [(pid, _, _)] = _lock_holders(admin)
        # Once the leader has checked its lock, its session is idle, not idle in a transaction
        # (which would keep VACUUM from removing dead rows for as long as it leads).
        eventually(lambda: "pg_locks" in _lock_holders(admin)[0][2], "the leader checks its lock")
        assert _lock_holders(admin)[0][:2] == (pid, "idle")

        with admin.connect() as connection:
            assert connection.execute(text("select pg_terminate_backend(:p)"), {"p": pid}).scalar()
        eventually(lambda: not first.running, "the old leader notices and stops scheduling")
        eventually(lambda: second.running, "the standby takes over")
        [(new_pid, state, _)] = _lock_holders(admin)
        assert new_pid != pid and state == "idle"
        # the old leader competes again, and loses while the new one holds the lock
        eventually(lambda: first.leader._held is None, "the old leader lets its dead session go")
        assert not first.running and second.running
    finally:
        first.stop()
        second.stop()
        other.dispose()
        admin.dispose()


# A leader in another process, holding the SQLite deployment's file lock, with a run in flight.
LEADER = """
import sys, threading
from pathlib import Path
from server.db import connect
from server.jobs import Jobs, JobSpec
from server.stores import JobRuns

class Records:
    def __init__(self, engine):
        self.engine, self.runs = engine, JobRuns(engine)

def hold(_):
    print("running", flush=True)
    threading.Event().wait()

engine = connect(sys.argv[1])
spec = JobSpec("hold", 0.05, "never ends", hold)
jobs = Jobs(Records(engine), [spec], lock_dir=Path(sys.argv[2]), leader_check_s=0.1)
print("leads" if jobs.start() else "follows", flush=True)
threading.Event().wait()
"""


def test_killing_the_leader_process_lets_a_standby_take_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'briefing.db'}"
    engine = connect(url)
    migrate(engine)
    leader = subprocess.Popen(
        [sys.executable, "-c", LEADER, url, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in leader.stdout or ():
            lines.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    standby = jobs_on(engine, tmp_path, JobSpec("hold", 0, "never ends", quick))
    try:
        assert lines.get(timeout=WAIT_S) == "leads"
        assert lines.get(timeout=WAIT_S) == "running"
        assert not standby.start()
        leader.kill()  # SIGKILL: no cleanup runs; the kernel drops the flock with the process
        leader.wait(timeout=WAIT_S)
        eventually(lambda: standby.running, "the standby takes over")
        assert [r["outcome"] for r in standby.runs("hold")] == ["abandoned"]
    finally:
        standby.stop()
        leader.kill()
        engine.dispose()
