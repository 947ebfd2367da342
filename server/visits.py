"""Readers' visits and what each was shown, kept in memory and written behind in batches.

Every briefing request needs the reader's visit (to know "since when") and records the request
and the briefing shown. Doing both as SQL round trips made a cached briefing cost two write
transactions; on SQLite at 64 concurrent clients that meant ~150 requests/s and p99 over two
seconds (bench/serve.py). Here the visit state is a dict (loaded from SQL the first time a reader
is seen) and the writes go to a queue that one thread drains every `flush_s` into one
transaction. The trade: a crash loses at most the last `flush_s` of visit records (the
briefings were shown, the readers' next "since" is a little earlier).

Where the state lives is `server.shared_state.VisitStates`: this process's dict by default (one
process serves readers), Redis when several API workers do. The write-behind queue is per process
either way. An erasure must hold in every worker: a request composed before it records nothing
(checked where the state lives), and a batch already queued in another worker drops the erased
readers' rows when it is written. On PostgreSQL that check and the erasure's delete are fenced by
an advisory lock (shared by writers, exclusive for the erasure), so no batch checked before the
erasure commits after its delete.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert, text

from briefing import Briefing
from server.db import BriefingRow, write_lock
from server.experiments.store import insert_exposures
from server.shared_memory import MemoryVisitStates
from server.shared_state import VisitStates
from server.stores import Readers, Visit, served_row

log = logging.getLogger(__name__)
State = tuple[datetime | None, datetime | None]  # (last seen, the visit's "since")
Row = dict[str, Any]
# reader, at, since, served, exposures, when the briefing was composed
Recorded = tuple[str, datetime, datetime | None, Row, list[Row], datetime]
# "visi" and the schema: writers of visit batches (shared) against an erasure (exclusive)
_FENCE = "SELECT {}(1986622313, hashtext(current_schema()))"


class Visits:
    def __init__(
        self, engine: Engine, readers: Readers, flush_s: float = 0.05, states: VisitStates | None = None
    ) -> None:
        self.engine, self.readers, self.flush_s = engine, readers, flush_s
        self.states: VisitStates = states or MemoryVisitStates()
        self._queue: queue.Queue[Recorded | None] = queue.Queue()
        self._writer = threading.Thread(target=self._drain, name="visit-writer", daemon=True)
        self._writer.start()

    @property
    def session_gap(self) -> timedelta:
        return self.readers.session_gap

    def known(self, reader_id: str, at: datetime) -> Visit | None:
        """The visit from memory, or None when this reader has not been looked up yet."""
        state = self.states.get(reader_id)
        return None if state is None else _visit(reader_id, state, at, self.session_gap)

    def current(self, reader_id: str, at: datetime) -> Visit:
        known = self.known(reader_id, at)
        if known is not None:
            return known
        state = self.states.load(reader_id, self.readers.state(reader_id))
        return _visit(reader_id, state, at, self.session_gap)

    def record(
        self,
        briefing: Briefing,
        at: datetime,
        since: datetime | None,
        cached: bool,
        exposures: list[Row] | None = None,
    ) -> None:
        """Queue the served briefing and its experiment exposures (server.experiments.serving),
        written in the same transaction; an exposure already stored is not added again."""
        if not self.states.record(briefing.reader_id, (at, since), briefing.generated_at):
            return  # composed before the reader was erased: it must not bring them back
        served = served_row(briefing, at, cached)
        self._queue.put((briefing.reader_id, at, since, served, exposures or [], briefing.generated_at))

    def forget(self, reader_id: str, at: datetime) -> None:
        """Erasure: requests composed up to `at` and still in flight record nothing. What this
        worker queued before is written first, so the erasure deletes (and counts) it; whatever is
        queued between that and the mark is dropped when written."""
        self.flush()
        self.states.forget(reader_id, at)
        self.flush()

    @contextmanager
    def erasing(self) -> Iterator[None]:
        """Hold around an erasure's delete (after `forget`): on PostgreSQL it waits for every
        worker's batch that was checked before `forget` to commit, so the delete sees its rows."""
        if self.engine.dialect.name != "postgresql":
            yield
            return
        with self.engine.begin() as connection:
            connection.execute(text(_FENCE.format("pg_advisory_xact_lock")))
            yield

    def flush(self) -> None:
        """Wait until everything recorded so far is in the database."""
        self._queue.join()

    def close(self) -> None:
        self.flush()
        self._queue.put(None)
        self._writer.join(timeout=10)

    def _drain(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            batch = [first]
            while not self._queue.empty() and len(batch) < 2000:
                item = self._queue.get()
                if item is None:
                    self._queue.put(None)  # stop after this batch
                    self._queue.task_done()
                    break
                batch.append(item)
            self._write(batch)
            for _ in batch:
                self._queue.task_done()
            time.sleep(self.flush_s)  # let the next batch gather

    def _write(self, batch: list[Recorded]) -> None:
        for attempt in range(1, 4):  # a database restart or a lock timeout: try again shortly
            try:
                with write_lock(self.engine), self.engine.begin() as connection:
                    self._write_kept(connection, batch)
                return
            except Exception:  # the writer must outlive a failed batch and keep serving
                log.exception("could not record %d briefing requests (attempt %d)", len(batch), attempt)
                time.sleep(0.5 * attempt)

    def _write_kept(self, connection: Connection, batch: list[Recorded]) -> None:
        """The batch less the readers erased after their briefing was composed (by another worker:
        this one checked before queueing), checked under the erasure fence."""
        if connection.dialect.name == "postgresql":
            connection.execute(text(_FENCE.format("pg_advisory_xact_lock_shared")))
        erased = self.states.erased(sorted({r[0] for r in batch}))
        kept = [r for r in batch if r[0] not in erased or r[5] > erased[r[0]]]
        if not kept:
            return
        latest = {reader: (reader, at, since) for reader, at, since, *_ in kept}
        self.readers.touch_many(list(latest.values()), connection)
        connection.execute(insert(BriefingRow), [r[3] for r in kept])
        insert_exposures(connection, [row for r in kept for row in r[4]])  # a repeat is ignored


def _visit(reader_id: str, state: State, at: datetime, gap: timedelta) -> Visit:
    last_seen, since = state
    if last_seen is None:
        return Visit(reader_id, None, True)
    if at - last_seen <= gap:
        return Visit(reader_id, since, False)
    return Visit(reader_id, last_seen, True)
