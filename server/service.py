"""What the service does, independent of HTTP: handlers and scheduled jobs both call these.

`Service` owns the pipeline parts built by `server.container` and the SQL records. It keeps the
one cache of composed briefings, by (reader, variant, since), in this process or in Redis shared
by several API workers (`server.shared_state`, as are the readers' visits); a retraction, an
update or an editor's decision drops every cached briefing citing that article, and an ingest
drops them all (new stories may now rank first). A briefing composed while something was
invalidated is served but not cached, so a dropped text cannot come back through a slow composition.

A reader's request composes from stored texts and never waits for the LLM; concurrent first
requests of one reader compose once (single flight). Index writes (ingest, retraction) take
`write_lock` among themselves only: jobs run the LLM outside every lock, so a retraction or an
erasure never queues behind generation or composition.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from briefing import Audience, Briefing, BriefingItem, Composer, GenerationError, Summarizer, Variant
from indexing import Article, Indexer, IngestReport, RecordError, validate_record
from recsys import Recommender, record_events
from server.experiments.assign import ReaderFacts
from server.experiments.model import Experiment
from server.experiments.serving import Arms, Assignment, exposures
from server.experiments.store import Experiments
from server.i18n import audience as make_audience
from server.readers import ReaderRecord
from server.shared_memory import MemoryBriefings, MemoryVisitStates
from server.shared_state import SharedState
from server.stores import (
    AuditLog,
    BriefingLog,
    JobRuns,
    Readers,
    ReaderSettings,
    SqlEventStore,
    SqlSummaryStore,
    erase_reader,
)
from server.visits import Visits

if TYPE_CHECKING:  # fine-tuning pulls in torch and peft: only jobs that tune import it
    from server.tuning import AdapterServing
    from server.versions import VersionWatch

Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


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


# The in-process cache (the embedded default); `server.shared_state` says where else it may live.
BriefingCache = MemoryBriefings


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
        publication: Audience | None = None,
        experiments: Experiments | None = None,
        arms: Arms | None = None,
        adapters: AdapterServing | None = None,
        versions: VersionWatch | None = None,
        shared: SharedState | None = None,
    ) -> None:
        self.engine, self.indexer, self.summarizer = engine, indexer, summarizer
        self.publication = publication or Audience()  # readers' language and zone unless they chose
        self.recommender, self.composer, self.clock = recommender, composer, clock
        self.events, self.summaries, self.readers = events, summaries, readers
        self.refresh_matrix = refresh_matrix
        self.experiments = experiments or Experiments(engine)  # product teams' (server.experiments)
        self.arms = arms or Arms(self.experiments.running)
        self.adapters = adapters  # the registry's promoted adapter, for jobs that draft (server.tuning)
        self.versions = versions  # the model versions other processes reload from (server.versions)
        # A reader's assignment at their last full request, with the running experiments it was made
        # under: the cached path reuses it without reading the reader's language from the database.
        self._assigned: dict[str, tuple[tuple[Experiment, ...], Assignment]] = {}
        self.served, self.audit, self.runs = BriefingLog(engine), AuditLog(engine), JobRuns(engine)
        # Visits and cached briefings: in this process, or in Redis for several API workers.
        self.shared = shared or SharedState(MemoryVisitStates(), MemoryBriefings())
        self.visits = Visits(engine, readers, states=self.shared.visits)
        self.cache = self.shared.briefings
        self.write_lock = threading.Lock()  # ingest and retraction, one at a time
        self._flights: dict[tuple[Any, ...], threading.Lock] = {}
        self._flights_lock = threading.Lock()

    def close(self) -> None:
        """Write what is still queued (visits and served briefings)."""
        self.visits.close()

    # Readers -----------------------------------------------------------------------------------

    def cached_briefing(self, reader_id: str) -> Served | None:
        """The briefing from memory, without touching the database or waiting on a lock, or None
        (the reader is not loaded yet, or nothing is cached for this visit): safe on the event loop."""
        now = self.clock()
        visit = self.visits.known(reader_id, now)
        assigned = self._assigned.get(reader_id)
        if visit is None or assigned is None or assigned[0] != self.arms.running():
            return None
        assignment = assigned[1]
        started = time.perf_counter()
        found = self.cache.get((reader_id, assignment.variant, visit.since))
        if found is None:
            return None
        self._record(found[0], now, visit.since, assignment, started, cached=True)
        return Served(found[0], found[1], True)

    def briefing(self, reader_id: str) -> Served:
        """The reader's briefing for this visit, in their experiment arms' variant; records the
        visit, what was shown and the exposures."""
        now = self.clock()
        started = time.perf_counter()
        visit = self.visits.current(reader_id, now)
        running = self.arms.running()
        assignment = self.assignment(reader_id, visit.since is None, running)
        self._assigned[reader_id] = (running, assignment)  # for the cached path of this visit
        key = (reader_id, assignment.variant, visit.since)
        found = self.cache.get(key)
        cached = found is not None
        if found is None:
            with self._flight(key):  # a second request for the same briefing waits for the first
                found = self.cache.get(key)
                if found is None:
                    epoch = self.cache.epoch()
                    briefing = self.compose(reader_id, now, visit.since, variant=assignment.variant)
                    found = (briefing, self.cache.put(key, briefing, epoch))
        self._record(found[0], now, visit.since, assignment, started, cached=cached)
        return Served(found[0], found[1], cached)

    def assignment(
        self, reader_id: str, new: bool, running: tuple[Experiment, ...] | None = None
    ) -> Assignment:
        """The reader's arms in the running experiments (none: the control variant)."""
        running = self.arms.running() if running is None else running
        language = self.audience(reader_id).language if running else self.publication.language
        return self.arms.of(ReaderFacts(reader_id, language, new), running)

    def _record(
        self,
        briefing: Briefing,
        now: datetime,
        since: datetime | None,
        assignment: Assignment,
        started: float,
        *,
        cached: bool,
    ) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        rows = exposures(assignment, briefing, now, latency_ms)
        self.visits.record(briefing, now, since, cached=cached, exposures=rows)

    @contextmanager
    def _flight(self, key: tuple[Any, ...]) -> Iterator[None]:
        with self._flights_lock:
            lock = self._flights.setdefault(key, threading.Lock())
        try:
            with lock:
                yield
        finally:
            with self._flights_lock:
                if not lock.locked():
                    self._flights.pop(key, None)

    def compose(
        self,
        reader_id: str,
        now: datetime,
        since: datetime | None,
        write: bool = False,
        variant: Variant | None = None,
    ) -> Briefing:
        """From stored texts; `write` (jobs only) generates missing ones first, with the LLM."""
        arm = variant or self.assignment(reader_id, since is None).variant
        audience = self.audience(reader_id)
        return self.composer.compose(reader_id, now, since=since, variant=arm, write=write, audience=audience)

    def audience(self, reader_id: str) -> Audience:
        """The reader's language and time zone: their own choice, else the publication's."""
        own, default = self.readers.settings(reader_id), self.publication
        return make_audience(own.language or default.language, own.timezone or default.timezone)

    def import_readers(self, readers: Sequence[ReaderRecord]) -> int:
        """Readers with their settings, visits and events, all or none; returns new events."""
        added = self.readers.load(readers, self.clock())
        ids = {r.reader_id for r in readers}
        self.cache.drop(lambda b: b.reader_id not in ids)  # in Redis: all (a rare admin import)
        return added

    def configure_reader(self, actor: Actor, reader_id: str, choice: ReaderSettings) -> Audience:
        """A reader sets their own language and zone (None: the publication's); an admin anyone's.
        Their cached briefings go: greeting and reasons were written in the old settings."""
        if actor.id != reader_id and actor.role != "admin":
            raise Forbidden("a reader may only change their own settings")
        checked = make_audience(
            choice.language or self.publication.language, choice.timezone or self.publication.timezone
        )
        self.readers.configure(reader_id, self.clock(), choice)
        self._assigned.pop(reader_id, None)  # language targeting may put them in another arm
        self.cache.drop_reader(reader_id)
        detail = {"language": choice.language, "timezone": choice.timezone}
        self.audit.write(actor.id, actor.role, "reader-settings", reader_id, detail)
        return checked

    def precompute(
        self,
        active_days: float = 7.0,
        deadline: float | None = None,
        stop: Callable[[], bool] = lambda: False,
    ) -> dict[str, int]:
        """Write the missing texts of every recently active reader's next briefing and cache it,
        one reader at a time; stops at `deadline` (time.monotonic) or when `stop()` says so (the
        process is shutting down), and says how many are left."""
        now = self.clock()
        done = failed = 0
        self.visits.flush()
        readers = self.readers.active(now - timedelta(days=active_days))
        left = 0
        for n, reader_id in enumerate(readers):
            if stop() or (deadline is not None and time.monotonic() > deadline):
                left = len(readers) - n
                break
            since = self.visits.current(reader_id, now + self.visits.session_gap * 2).since
            variant = self.assignment(reader_id, since is None).variant
            key = (reader_id, variant, since)
            if self.cache.get(key) is None:
                epoch = self.cache.epoch()
                try:
                    briefing = self.compose(reader_id, now, since, write=True, variant=variant)
                except GenerationError as exc:  # the LLM failed for one reader: the others go on
                    log.warning("precomputing %s's briefing: %s", reader_id, exc)
                    failed += 1
                    continue
                self.cache.put(key, briefing, epoch)
                done += 1
        return {"readers": done, "failed": failed, "left": left, "cached": len(self.cache)}

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
        with self.write_lock:
            report = self.indexer.ingest(records)
            if report.updated:  # summaries of the replaced versions leave the queue
                current = self.indexer.index.get([r.id for r in records if isinstance(r, Article)])
                for article_id, record in current.items():
                    self.summaries.retire(article_id, keep_hash=record.content_hash, at=self.clock())
                    self.summaries.retire_updates_from(article_id, record.content_hash, self.clock())
                    self.composer.invalidate(article_id)
            if report.new or report.updated:
                self.refresh_matrix(self.clock())
                self.cache.drop(lambda b: False)
        return report

    def retract(self, actor: Actor, article_id: str, reason: str | None = None) -> dict[str, int]:
        """Out of the index, its summaries retired for good, and so are the story updates of
        other articles written from it (their evidence is gone; the next job run writes them
        from what remains); briefings citing it dropped. The audit entry keeps `reason` (editors
        read it on the audit log) and names the retired updates."""
        with self.write_lock:
            removed = self.indexer.retract([article_id])
            if not removed:
                raise NotFound(f"article {article_id!r} is not in the index")
            summaries = self.summaries.retire(article_id, keep_hash=None, at=self.clock())
            updates = self.summaries.retire_updates_from(article_id, None, self.clock())
            self.refresh_matrix(self.clock())
            briefings = self.forget_article(article_id)
        detail = {"summaries": summaries, "updates": len(updates), "cached_briefings": briefings}
        noted: dict[str, Any] = {**detail, "retired_updates": updates} if updates else {**detail}
        if reason:
            noted["reason"] = reason
        self.audit.write(actor.id, actor.role, "retract", article_id, noted)
        return detail

    def forget_article(self, article_id: str) -> int:
        """Drop every cached briefing showing or citing this article (a story update cites the
        story's earlier articles too)."""
        self.composer.invalidate(article_id)
        return self.cache.drop_article(article_id)

    def retire_stale(self, article_id: str) -> int:
        """Retire summaries of versions no longer in the index (a job wrote one while the article
        was updated or retracted); returns how many."""
        record = self.indexer.index.get([article_id]).get(article_id)
        keep = record.content_hash if record else None
        retired = self.summaries.retire(article_id, keep_hash=keep, at=self.clock())
        if retired:
            self.forget_article(article_id)
        return retired

    def erase(self, actor: Actor, reader_id: str) -> dict[str, int]:
        self.visits.forget(reader_id, self.clock())
        self._assigned.pop(reader_id, None)
        with self.visits.erasing():  # other workers' queued visits of this reader are written first
            counts = erase_reader(self.engine, reader_id)
        counts["cached_briefings"] = self.cache.drop_reader(reader_id)
        if not any(counts.values()):
            raise NotFound(f"reader {reader_id!r} has no data")
        self.audit.write(actor.id, actor.role, "erase", reader_id, counts)
        return counts


def shows_or_cites(item: BriefingItem, article_id: str) -> bool:
    """Whether the item is about the article or any of its sentences cites it."""
    return item.article_id == article_id or any(article_id in s.articles for s in item.sentences)
