"""The scale-out process layout with real processes: `briefing worker` runs the scheduler and
answers only its probes; a second worker stands by and takes over when the first is killed -9
(the PostgreSQL advisory lock goes with the dead session); a worker on the embedded Qdrant store
is refused. Where a Qdrant server answers (QDRANT_URL), one worker and two `briefing serve`
(JOBS=false) share it: an article pushed to one API worker reaches the other and the worker,
and so does its retraction (each process's /ready shows the model versions it has loaded).

tests/unit/test_scheduler_leader.py covers the leader lock itself (in-process, and kill -9 of a
process holding the SQLite file lock); here it is the command that deployments run."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from click.testing import CliRunner

from server.cli import main
from tests.conftest import DEMO, _database
from tests.fault.processes import Served, environment
from tests.service import auth

pytestmark = pytest.mark.slow
WAIT_S = 60.0  # a takeover or reload bound for a stuck test, not a speed assumption


@contextmanager
def running(*commands: str, env: dict[str, str]) -> Iterator[list[Served]]:
    """The processes started at once (they load their models side by side), once all are healthy."""
    processes = [Served(env, command) for command in commands]
    try:
        for process in processes:
            process.wait_healthy()
        yield processes
    finally:
        for process in processes:
            process.stop()


def eventually(condition: Callable[[], bool], what: str) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < WAIT_S, f"not within {WAIT_S:.0f} s: {what}"
        time.sleep(0.1)
    return time.monotonic() - start


@pytest.fixture
def postgres_url(tmp_path: Path) -> Iterator[str]:
    yield from _database("postgresql", tmp_path)


def test_a_standby_worker_takes_over_when_the_leader_is_killed(tmp_path: Path, postgres_url: str) -> None:
    env = environment(tmp_path, postgres_url, QDRANT_PATH=":memory:")  # an index of each worker's own
    with running("worker", "worker", env=env) as workers:
        eventually(lambda: any(w.ready()["scheduler"] == "ok" for w in workers), "one of them leads")
        first, second = sorted(workers, key=lambda w: w.ready()["scheduler"] != "ok")
        ready = second.ready()
        assert ready["scheduler"].startswith("standby") and ready["database"] == "ok"
        assert set(ready["models"]) == {"matrix", "ranker", "adapter"}
        # no reader pages, no API: only the probes
        for path in ("/v1/briefing", "/login", "/schema", "/v1/admin/jobs", "/metrics"):
            assert first.get(path).status_code == 404, path
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL  # no cleanup: the session just ends
        took = eventually(lambda: second.ready()["scheduler"] == "ok", "the standby takes over")
        print(f"the standby took over {took:.1f} s after the kill -9")
        assert second.stop(signal.SIGTERM) == 0, second.log()  # an orderly stop
        assert "this process now runs the scheduler" in second.log()


def test_a_worker_on_the_embedded_store_is_refused(tmp_path: Path) -> None:
    env = {"DATA_DIR": str(tmp_path / "data"), "QDRANT_URL": "", "QDRANT_PATH": str(tmp_path / "qdrant")}
    result = CliRunner().invoke(main, ["worker"], env=env)
    assert result.exit_code == 1
    assert "briefing worker needs a Qdrant server (QDRANT_URL)" in result.output
    assert "run `briefing serve` alone" in result.output
    assert not (tmp_path / "qdrant").exists()  # refused before anything opened the store
    usage = CliRunner().invoke(main, ["worker", "--help"])
    assert usage.exit_code == 0 and "API workers started with JOBS=false" in usage.output


QDRANT_URL = os.environ.get("QDRANT_URL")


@pytest.mark.skipif(
    not QDRANT_URL,
    reason="needs a Qdrant server (QDRANT_URL): the embedded store opens in one process only, "
    "and no Qdrant server binary can be installed here",
)
def test_api_workers_and_the_worker_share_a_qdrant_server(tmp_path: Path, postgres_url: str) -> None:
    """One worker and two API workers (JOBS=false) on PostgreSQL and a Qdrant server: a push to
    one API worker and its retraction through the other reach every process's candidates."""
    env = environment(
        tmp_path,
        postgres_url,
        QDRANT_URL=QDRANT_URL or "",
        COLLECTION_PREFIX=f"test_{uuid4().hex[:10]}",  # the server is shared: collections of its own
        VERSION_POLL_S="0.5",
    )
    article = json.loads((DEMO / "articles" / "politics_world.jsonl").read_text().splitlines()[0])
    admin = auth("ada", "admin")
    with ExitStack() as stack:
        worker, one, two = stack.enter_context(running("worker", "serve", "serve", env=env))
        assert worker.ready()["scheduler"] == "ok" and one.ready()["scheduler"] == "not running"

        def same_matrix(expected: int) -> bool:
            return all(p.ready()["models"]["matrix"] == expected for p in (worker, one, two))

        pushed = httpx.post(
            f"{one.base}/v1/admin/articles", json={"articles": [article]}, headers=admin, timeout=60
        )
        assert pushed.status_code == 200 and pushed.json()["new"] == 1, pushed.text
        version = one.ready()["models"]["matrix"]
        took = eventually(
            lambda: same_matrix(version), "the push reaches the other API worker and the worker"
        )
        print(f"a pushed article reached every process in {took:.1f} s")

        gone = httpx.delete(f"{two.base}/v1/admin/articles/{article['id']}", headers=admin, timeout=60)
        assert gone.status_code == 200, gone.text
        assert two.ready()["models"]["matrix"] > version
        eventually(
            lambda: same_matrix(two.ready()["models"]["matrix"]), "the retraction reaches every process"
        )
