"""Readers' visits and what each was shown, kept in memory and written behind in batches.

Every briefing request needs the reader's visit (to know "since when") and records the request
and the briefing shown. Doing both as SQL round trips made a cached briefing cost two write
transactions; on SQLite at 64 concurrent clients that meant ~150 requests/s and p99 over two
seconds (bench/serve.py). Here the visit state is a dict (loaded from SQL the first time a reader
is seen) and the writes go to a queue that one thread drains every `flush_s` into one
transaction. The trade: a crash loses at most the last `flush_s` of visit records (the
briefings were shown, the readers' next "since" is a little earlier). One process per
deployment serves readers (the embedded Qdrant needs that anyway), so the dict is the truth.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert

from briefing import Briefing
from server.db import BriefingRow, write_lock
from server.experiments.store import insert_exposures
from server.stores import Readers, Visit, served_row

log = logging.getLogger(__name__)
State = tuple[datetime | None, datetime | None]  # (last seen, the visit's "since")
Row = dict[str, Any]
Recorded = tuple[str, datetime, datetime | None, Row, list[Row]]  # reader, at, since, served, exposures


class Visits:
    def __init__(self, engine: Engine, readers: Readers, flush_s: float = 0.05) -> None:
        self.engine, self.readers, self.flush_s = engine, readers, flush_s
        self._state: dict[str, State] = {}
        self._erased: dict[str, datetime] = {}  # reader -> when they were erased
        self._lock = threading.Lock()
        self._queue: queue.Queue[Recorded | None] = queue.Queue()
        self._writer = threading.Thread(target=self._drain, name="visit-writer", daemon=True)
        self._writer.start()

    @property
    def session_gap(self) -> timedelta:
        return self.readers.session_gap

    def known(self, reader_id: str, at: datetime) -> Visit | None:
        """The visit from memory, or None when this reader has not been looked up yet."""
        state = self._state.get(reader_id)
        return None if state is None else _visit(reader_id, state, at, self.session_gap)

    def current(self, reader_id: str, at: datetime) -> Visit:
        known = self.known(reader_id, at)
        if known is not None:
            return known
        state = self.readers.state(reader_id)
        with self._lock:
            state = self._state.setdefault(reader_id, state)
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
        with self._lock:
            erased = self._erased.get(briefing.reader_id)
            if erased is not None and briefing.generated_at <= erased:
                return  # composed before the reader was erased: it must not bring them back
            self._state[briefing.reader_id] = (at, since)
        self._queue.put((briefing.reader_id, at, since, served_row(briefing, at, cached), exposures or []))

    def forget(self, reader_id: str, at: datetime) -> None:
        """Erasure: requests composed up to `at` and still in flight record nothing."""
        with self._lock:
            self._erased[reader_id] = at
            self._state.pop(reader_id, None)
        self.flush()

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
        latest = {reader: (reader, at, since) for reader, at, since, *_ in batch}
        exposures = [row for *_, rows in batch for row in rows]  # a repeat is ignored on insert
        for attempt in range(1, 4):  # a database restart or a lock timeout: try again shortly
            try:
                with write_lock(self.engine), self.engine.begin() as connection:
                    self.readers.touch_many(list(latest.values()), connection)
                    connection.execute(insert(BriefingRow), [served for _, _, _, served, _ in batch])
                    insert_exposures(connection, exposures)
                return
            except Exception:  # the writer must outlive a failed batch and keep serving
                log.exception("could not record %d briefing requests (attempt %d)", len(batch), attempt)
                time.sleep(0.5 * attempt)


def _visit(reader_id: str, state: State, at: datetime, gap: timedelta) -> Visit:
    last_seen, since = state
    if last_seen is None:
        return Visit(reader_id, None, True)
    if at - last_seen <= gap:
        return Visit(reader_id, since, False)
    return Visit(reader_id, last_seen, True)
