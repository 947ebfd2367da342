"""What the service does, independent of HTTP: handlers and scheduled jobs both call these.

`Service` owns the pipeline parts built by `server.container` and the SQL records. It keeps a
cache of composed briefings by (reader, variant, since); a retraction, an update or an editor's
decision drops every cached briefing citing that article, and an ingest drops them all (new
stories may now rank first). Composition (and with it the LLM and the embedded Qdrant) runs one
at a time; cached briefings, events and reviews do not wait for it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from briefing import Briefing, Composer, Summarizer
from indexing import Article, Indexer, IngestReport, RecordError, validate_record
from recsys import Recommender, record_events
from server.stores import (
    AuditLog,
    BriefingLog,
    JobRuns,
    Readers,
    SqlEventStore,
    SqlSummaryStore,
    erase_reader,
)
from server.visits import Visits

Clock = Callable[[], datetime]


class NotFound(LookupError):
    """The thing asked for does not exist (HTTP 404)."""


class Forbidden(PermissionError):
    """The caller may not do this (HTTP 403)."""


class ArticlesRejected(ValueError):
    """A push with invalid articles; none of it was ingested (HTTP 400)."""

    def __init__(self, errors: list[RecordError]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


@dataclass(frozen=True)
class Actor:
    """Who is calling: a reader id or a staff member's name, with their role."""

    id: str
    role: str


@dataclass(frozen=True)
class Served:
    briefing: Briefing
    body: dict[str, Any]
    cached: bool


class BriefingCache:
    """Composed briefings by (reader, variant, since), least recently used out first."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], tuple[Briefing, dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[Briefing, dict[str, Any]] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], briefing: Briefing) -> dict[str, Any]:
        body = briefing.to_json()
        with self._lock:
            self._items[key] = (briefing, body)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return body

    def drop(self, keep: Callable[[Briefing], bool]) -> int:
        with self._lock:
            stale = [k for k, (b, _) in self._items.items() if not keep(b)]
            for key in stale:
                del self._items[key]
            return len(stale)

    def __len__(self) -> int:
        return len(self._items)


class Service:
    """A plain class, not a dataclass: litestar validates dataclass dependencies field by field."""

    def __init__(
        self,
        *,
        engine: Engine,
        indexer: Indexer,
        summarizer: Summarizer,
        recommender: Recommender,
        composer: Composer,
        events: SqlEventStore,
        summaries: SqlSummaryStore,
        clock: Clock,
        readers: Readers,
        refresh_matrix: Callable[[datetime], None],
        variant: str = "control",
    ) -> None:
        self.engine, self.indexer, self.summarizer = engine, indexer, summarizer
        self.recommender, self.composer, self.clock = recommender, composer, clock
        self.events, self.summaries, self.readers = events, summaries, readers
        self.refresh_matrix, self.variant = refresh_matrix, variant
        self.served, self.audit, self.runs = BriefingLog(engine), AuditLog(engine), JobRuns(engine)
        self.visits = Visits(engine, readers)
        self.cache = BriefingCache()
        self.compose_lock = threading.Lock()

    def close(self) -> None:
        """Write what is still queued (visits and served briefings)."""
        self.visits.close()

    # Readers -----------------------------------------------------------------------------------

    def cached_briefing(self, reader_id: str) -> Served | None:
        """The briefing from memory, without touching the database or waiting on a lock, or None
        (the reader is not loaded yet, or nothing is cached for this visit): safe on the event loop."""
        now = self.clock()
        visit = self.visits.known(reader_id, now)
        found = None if visit is None else self.cache.get((reader_id, self.variant, visit.since))
        if visit is None or found is None:
            return None
        self.visits.record(found[0], now, visit.since, cached=True)
        return Served(found[0], found[1], True)

    def briefing(self, reader_id: str) -> Served:
        """The reader's briefing for this visit; records the visit and what was shown."""
        now = self.clock()
        visit = self.visits.current(reader_id, now)
        key = (reader_id, self.variant, visit.since)
        found = self.cache.get(key)
        if found is None:
            briefing = self.compose(reader_id, now, visit.since)
            body = self.cache.put(key, briefing)
        else:
            briefing, body = found
        self.visits.record(briefing, now, visit.since, cached=found is not None)
        return Served(briefing, body, found is not None)

    def compose(self, reader_id: str, now: datetime, since: datetime | None) -> Briefing:
        with self.compose_lock:
            return self.composer.compose(reader_id, now, since=since, variant=self.variant)

    def precompute(self, active_days: float = 7.0) -> dict[str, int]:
        """Compose the next visit's briefing for every recently active reader."""
        now = self.clock()
        done = 0
        self.visits.flush()
        for reader_id in self.readers.active(now - timedelta(days=active_days)):
            since = self.visits.current(reader_id, now + self.visits.session_gap * 2).since
            key = (reader_id, self.variant, since)
            if self.cache.get(key) is None:
                self.cache.put(key, self.compose(reader_id, now, since))
                done += 1
        return {"readers": done, "cached": len(self.cache)}

    def record_events(self, actor: Actor, raws: Sequence[Any]) -> tuple[int, int]:
        """Store a reader's batch (all or nothing); returns (new, already stored)."""
        others = [
            r["reader_id"] for r in raws if isinstance(r, dict) and r.get("reader_id", actor.id) != actor.id
        ]
        if others:
            raise Forbidden(f"a reader may only send their own events, not those of {others[0]!r}")
        batch = [{**r, "reader_id": actor.id} if isinstance(r, dict) else r for r in raws]
        stored = record_events(self.events, batch, source="events")
        return stored, len(batch) - stored

    # Admin -------------------------------------------------------------------------------------

    def push_articles(self, actor: Actor, raws: Sequence[Any]) -> IngestReport:
        """Validate every article first (a bad one rejects the push), then ingest atomically."""
        checked = [validate_record(raw, "articles", n) for n, raw in enumerate(raws, start=1)]
        errors = [e for c in checked if isinstance(c, list) for e in c]
        if errors:
            raise ArticlesRejected(errors)
        articles = [c for c in checked if isinstance(c, Article)]
        report = self.ingest(articles)
        ids = sorted({a.id for a in articles})
        self.audit.write(actor.id, actor.role, "push", ",".join(ids)[:240], {"report": report.summary()})
        return report

    def ingest(self, records: Sequence[Article | RecordError]) -> IngestReport:
        with self.compose_lock:
            report = self.indexer.ingest(records)
            if report.updated:  # summaries of the replaced versions leave the queue
                current = self.indexer.index.get([r.id for r in records if isinstance(r, Article)])
                for article_id, record in current.items():
                    self.summaries.retire(article_id, keep_hash=record.content_hash, at=self.clock())
            if report.new or report.updated:
                self.refresh_matrix(self.clock())
                self.cache.drop(lambda b: False)
        return report

    def retract(self, actor: Actor, article_id: str) -> dict[str, int]:
        with self.compose_lock:
            removed = self.indexer.retract([article_id])
            if not removed:
                raise NotFound(f"article {article_id!r} is not in the index")
            summaries = self.summaries.retire(article_id, keep_hash=None, at=self.clock())
            self.refresh_matrix(self.clock())
            briefings = self.forget_article(article_id)
        detail = {"summaries": summaries, "cached_briefings": briefings}
        self.audit.write(actor.id, actor.role, "retract", article_id, detail)
        return detail

    def forget_article(self, article_id: str) -> int:
        """Drop every cached briefing citing this article (composer's and ours)."""
        self.composer.invalidate(article_id)
        return self.cache.drop(lambda b: all(i.article_id != article_id for i in b.items))

    def erase(self, actor: Actor, reader_id: str) -> dict[str, int]:
        self.visits.forget(reader_id)
        counts = erase_reader(self.engine, reader_id)
        counts["cached_briefings"] = self.cache.drop(lambda b: b.reader_id != reader_id)
        self.composer.forget_reader(reader_id)
        if not any(counts.values()):
            raise NotFound(f"reader {reader_id!r} has no data")
        self.audit.write(actor.id, actor.role, "erase", reader_id, counts)
        return counts
