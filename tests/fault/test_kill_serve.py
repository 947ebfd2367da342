"""kill -9 of `briefing serve` in the middle of an event burst, then a restart on the same DATA_DIR
and database (SQLite under DATA_DIR, the default, and PostgreSQL): every event whose batch got a
2xx is stored exactly once, and a client resending the batches it got no answer for stores each
of those events once too (event ids make a retry idempotent)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import DATABASES, _database
from tests.fault.processes import Served, environment, served
from tests.service import auth

pytestmark = [pytest.mark.slow, pytest.mark.fault]  # two service starts, each loading the embedder
BATCH = 20
ACKED_BEFORE_KILL = 15  # batches: the kill lands mid-burst, with batches in flight
SENDERS = 4  # concurrent clients, so some batches are mid-request when the process dies
READER = "r-burst"


@pytest.fixture(params=DATABASES)
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from _database(request.param, tmp_path)


@dataclass
class Burst:
    """Batches sent by SENDERS threads until the server stops answering."""

    base: str
    acked: list[list[str]] = field(default_factory=list)
    unanswered: list[list[str]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # answers other than 200 (none expected)
    lock: threading.Lock = field(default_factory=threading.Lock)
    serial: int = 0

    def batch(self) -> list[str]:
        with self.lock:
            self.serial += 1
            return [f"e{self.serial:05d}-{n:02d}" for n in range(BATCH)]

    def send(self) -> None:
        with httpx.Client(base_url=self.base, headers=auth(READER, "reader"), timeout=30) as client:
            while True:
                ids = self.batch()
                try:
                    answer = client.post("/v1/events", json=_body(ids))
                except httpx.TransportError:
                    with self.lock:
                        self.unanswered.append(ids)
                    return
                with self.lock:
                    if answer.status_code != 200:
                        self.refused.append(f"{answer.status_code} {answer.text}")
                        return
                    self.acked.append(ids)


def _body(ids: list[str]) -> dict[str, Any]:
    at = "2026-11-19T21:00:00+01:00"
    return {"events": [{"event_id": i, "type": "impression", "article_id": "a1", "at": at} for i in ids]}


def test_acknowledged_events_survive_kill_9_exactly_once(tmp_path: Path, database: str) -> None:
    env = environment(tmp_path, database)  # SQLite: DATA_DIR/briefing.db, the default
    server = Served(env)
    try:
        server.wait_healthy()
        burst = Burst(server.base)
        senders = [threading.Thread(target=burst.send) for _ in range(SENDERS)]
        for sender in senders:
            sender.start()
        _wait_for(lambda: len(burst.acked) >= ACKED_BEFORE_KILL, server)
    finally:
        server.kill()  # mid-burst: the senders are still sending
    for sender in senders:
        sender.join(60)
    assert not burst.refused, burst.refused
    assert burst.unanswered, "no batch was in flight at the kill"

    counts = _counts(database)
    acked = [i for ids in burst.acked for i in ids]
    assert all(counts.get(i) == 1 for i in acked), "an acknowledged event is missing or doubled"

    with served(env) as again, httpx.Client(base_url=again.base, headers=auth(READER, "reader")) as client:
        for ids in burst.unanswered:  # the client's retry of what it got no answer for
            answer = client.post("/v1/events", json=_body(ids))
            assert answer.status_code == 200, answer.text
            assert sum(answer.json().values()) == BATCH
    sent = acked + [i for ids in burst.unanswered for i in ids]
    assert _counts(database) == dict.fromkeys(sent, 1)


def _wait_for(condition: Any, server: Served, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and server.process.poll() is None, server.log()
        time.sleep(0.01)


def _counts(url: str) -> dict[str, int]:
    """Rows per event id of the burst's reader, read from the database itself."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("select event_id, count(*) from events where reader_id = :r group by event_id"),
                {"r": READER},
            )
            return {r[0]: r[1] for r in rows}
    finally:
        engine.dispose()
