"""Scheduled jobs (apscheduler 3, a background thread in the app's lifespan) and their records.

Every run is a row in `job_runs` (start, end, outcome, error, what it did). A failed run is retried
with exponential backoff up to `retries` times, each retry its own row, and the admin endpoint
lists them. One scheduler per deployment: the process holding the leader lock (a PostgreSQL
advisory lock, or a file lock under DATA_DIR for SQLite) schedules; others only serve. Jobs call
the same `Service` methods the API and CLI use, so their writes are the same atomic ones.
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection, Engine, text

from indexing import Article, open_source
from recsys import make_ranker
from server.service import NotFound, Service

log = logging.getLogger(__name__)
ADVISORY_KEY = 0x6272_6965_66  # "brief": one scheduler per database


@dataclass(frozen=True)
class JobSpec:
    name: str
    every_s: float
    description: str
    run: Callable[[Service], dict[str, Any]]


class Leader:
    """Whether this process schedules: first to take the lock wins; it is held until `release`."""

    def __init__(self, engine: Engine, lock_dir: Path) -> None:
        self.engine, self.lock_dir = engine, lock_dir
        self._held: Connection | IO[str] | None = None

    def acquire(self) -> bool:
        if self.engine.dialect.name == "postgresql":
            connection = self.engine.connect()
            if connection.execute(text("select pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar():
                self._held = connection
                return True
            connection.close()
            return False
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        handle = (self.lock_dir / "scheduler.lock").open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._held = handle
        return True

    def release(self) -> None:
        if isinstance(self._held, Connection):
            self._held.execute(text("select pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
            self._held.close()
        elif self._held is not None:
            self._held.close()  # closing drops the flock
        self._held = None


class Jobs:
    def __init__(
        self,
        service: Service,
        specs: list[JobSpec],
        *,
        retries: int = 3,
        backoff_s: float = 30.0,
        lock_dir: Path = Path("var"),
    ) -> None:
        self.service = service
        self.specs = {s.name: s for s in specs}
        self.retries, self.backoff_s = retries, backoff_s
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True})
        self.leader = Leader(service.engine, lock_dir)
        self._busy = {name: threading.Lock() for name in self.specs}
        for spec in specs:
            service.runs.register(spec.name, spec.every_s, spec.description)

    @property
    def running(self) -> bool:
        return bool(self.scheduler.running)

    def start(self) -> bool:
        """Schedule every job if this process is the leader; returns whether it is."""
        if not self.leader.acquire():
            log.info("another process runs the scheduler; this one only serves")
            return False
        for spec in self.specs.values():
            if spec.every_s > 0:
                self.scheduler.add_job(
                    self._run,
                    "interval",
                    seconds=spec.every_s,
                    args=[spec.name, 1, "schedule"],
                    id=spec.name,
                    max_instances=1,
                )
        self.scheduler.start()
        return True

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self.leader.release()

    def run_now(self, name: str) -> dict[str, Any]:
        if name not in self.specs:
            raise NotFound(f"no job {name!r}; jobs are {', '.join(sorted(self.specs))}")
        return self._run(name, 1, "manual")

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": s.name,
                "every_s": s.every_s,
                "description": s.description,
                "next_run": self._next(s.name),
            }
            for s in self.specs.values()
        ]

    def runs(self, job: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return self.service.runs.runs(job, limit)

    def _next(self, name: str) -> str | None:
        job = self.scheduler.get_job(name) if self.scheduler.running else None
        return job.next_run_time.isoformat() if job and job.next_run_time else None

    def _run(self, name: str, attempt: int, trigger: str) -> dict[str, Any]:
        with self._busy[name]:  # a manual run waits for a scheduled one of the same job
            run_id = self.service.runs.start(name, attempt, trigger)
            try:
                detail = self.specs[name].run(self.service)
            except Exception as exc:
                log.exception("job %s failed (attempt %d)", name, attempt)
                error = f"{type(exc).__name__}: {exc}"
                self.service.runs.finish(run_id, "failed", error, {})
                self._retry(name, attempt)
            else:
                self.service.runs.finish(run_id, "ok", None, detail)
        return self.service.runs.runs(name, limit=1)[0] | {"id": run_id}

    def _retry(self, name: str, attempt: int) -> None:
        if attempt > self.retries or not self.scheduler.running:
            return
        delay = self.backoff_s * 2 ** (attempt - 1)
        self.scheduler.add_job(
            self._run,
            "date",
            run_date=datetime.now(UTC) + timedelta(seconds=delay),
            args=[name, attempt + 1, "retry"],
            id=f"{name}-retry-{attempt + 1}",
            replace_existing=True,
        )
        log.info("job %s retries in %.0f s", name, delay)


# The jobs --------------------------------------------------------------------------------------


def ingest_feeds(feeds: tuple[str, ...]) -> Callable[[Service], dict[str, Any]]:
    def run(service: Service) -> dict[str, Any]:
        done: dict[str, Any] = {}
        for feed in feeds:
            report = service.ingest(list(open_source(feed)))
            done[feed] = report.summary()
        return {"feeds": done}

    return run


def refresh_candidates(service: Service) -> dict[str, Any]:
    service.refresh_matrix(service.clock())
    service.cache.drop(lambda b: False)
    return {"candidates": len(service.recommender.matrix.infos)}


def refit_ranker(service: Service) -> dict[str, Any]:
    """Fit on the current impressions beside the serving ranker, then swap it in."""
    recommender = service.recommender
    name = recommender.config.ranker
    impressions = recommender.training_impressions()
    ranker = make_ranker(name)
    ranker.fit(impressions, recommender.matrix)
    recommender.use_ranker(name, ranker)
    return {"ranker": name, "impressions": len(impressions)}


def summarize_new(limit: int) -> Callable[[Service], dict[str, Any]]:
    """Drafts for the newest articles in the candidate window whose current version has none."""

    def run(service: Service) -> dict[str, Any]:
        infos = sorted(service.recommender.matrix.infos, key=lambda i: i.article.published_at, reverse=True)
        todo = [i.article for i in infos if not _has_summary(service, i.article)][:limit]
        for article in todo:  # one at a time, so readers' briefings interleave with the LLM
            with service.compose_lock:
                service.summarizer.summarize([article.id])
        return {"summarized": len(todo), "waiting": max(0, len(infos) - len(todo))}

    return run


def _has_summary(service: Service, article: Article) -> bool:
    current = article.content_hash()
    return any(s.content_hash == current and s.kind == "article" for s in service.summaries.find(article.id))


def collect_garbage(service: Service) -> dict[str, Any]:
    """A full cyclic garbage collection, off the request path (`briefing serve` turns off the
    automatic ones, which paused requests)."""
    import gc

    return {"collected": gc.collect()}


def precompute(service: Service) -> dict[str, Any]:
    return service.precompute()


def retention(events_days: float, briefings_days: float) -> Callable[[Service], dict[str, Any]]:
    def run(service: Service) -> dict[str, Any]:
        now = service.clock()
        return {
            "events_deleted": service.events.delete_before(now - timedelta(days=events_days)),
            "briefings_deleted": service.served.delete_before(now - timedelta(days=briefings_days)),
        }

    return run
