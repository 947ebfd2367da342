"""Scheduled jobs (apscheduler 3, a background thread in the app's lifespan) and their records.

Every run is a row in `job_runs` (start, end, outcome, error, what it did). A failed run is retried
with exponential backoff up to `retries` times, each retry its own row, and the admin endpoint
lists them. One scheduler per deployment: the process holding the leader lock (a PostgreSQL
advisory lock, or a file lock under DATA_DIR for SQLite) schedules; the others serve and keep
trying the lock, so one of them takes over when the leader dies or loses it (`Jobs`). Jobs call
the same `Service` methods the API and CLI use, so their writes are the same atomic ones. A job
that refreshes the candidate matrix or refits the ranker bumps its version (server.versions), and
the other processes reload theirs; in the scale-out deployment the scheduler runs in its own
process (`briefing worker`, server.worker) and API workers run none (JOBS=false).

Shutdown (`Jobs.halt`, on SIGINT/SIGTERM) sets the stop event the LLM jobs check before each item
(an article, a reader) and the generator checks before each call (`server.container`): a running
job ends with the item in hand, which its LLM deadline bounds, and the log says which one that is.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from briefing import GenerationError
from indexing import Article, open_source
from server.service import NotFound, Service
from server.settings import Settings

log = logging.getLogger(__name__)
# "brie" and the schema: one scheduler per deployment, and deployments (or test runs) that share a
# PostgreSQL database in separate schemas do not block each other. Advisory locks are per database.
ADVISORY_KEY = 0x6272_6965
_TRY_LOCK = text("select pg_try_advisory_lock(:k, hashtext(current_schema()))")
_UNLOCK = text("select pg_advisory_unlock(:k, hashtext(current_schema()))")
_HOLDS = text(
    "select exists(select 1 from pg_locks where locktype = 'advisory' and granted"
    " and pid = pg_backend_pid() and classid = :k)"
)


class JobControl:
    """What jobs share with the process: the stop event, and each job's progress (the item in
    hand and counts), which the log, `/ready` and shutdown's "waiting for" line read."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self.stop = stop or threading.Event()
        self._lock = threading.Lock()
        self._progress: dict[str, dict[str, Any]] = {}

    def stopping(self) -> bool:
        return self.stop.is_set()

    def report(self, job: str, **fields: Any) -> None:
        with self._lock:
            self._progress[job] = {**self._progress.get(job, {}), **fields}

    def progress(self, job: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._progress.get(job)
            return None if found is None else dict(found)

    def in_hand(self) -> dict[str, str]:
        """The item each running job works on now, by job name."""
        with self._lock:
            return {job: str(p["current"]) for job, p in self._progress.items() if p.get("current")}


@dataclass(frozen=True)
class JobSpec:
    name: str
    every_s: float
    description: str
    run: Callable[[Service], dict[str, Any]]


class Leader:
    """The lock that makes one process per deployment the scheduler.

    PostgreSQL: a session-level advisory lock on a connection of its own, in autocommit mode so it
    never sits "idle in transaction" (an open transaction would keep VACUUM from removing dead rows
    for the process lifetime). The lock lives exactly as long as that session, so `held()` asks
    the server through the same connection: a terminated backend or a restarted server fails the
    query, and the lock is then presumed lost. SQLite: an flock on DATA_DIR/scheduler.lock, which
    the kernel drops when the process dies.
    """

    def __init__(self, engine: Engine, lock_dir: Path) -> None:
        self.engine, self.lock_dir = engine, lock_dir
        self._held: Connection | IO[str] | None = None

    @property
    def path(self) -> Path:
        return self.lock_dir / "scheduler.lock"

    def acquire(self) -> bool:
        """Takes the lock if it is free; whether this process holds it now (also if it already did)."""
        if self._held is not None:
            return self.held()
        if self.engine.dialect.name == "postgresql":
            return self._acquire_advisory()
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._held = handle
        return True

    def _acquire_advisory(self) -> bool:
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            won = bool(connection.execute(_TRY_LOCK, {"k": ADVISORY_KEY}).scalar())
        except BaseException:
            connection.close()
            raise
        if not won:
            connection.close()
            return False
        self._held = connection
        return True

    def held(self) -> bool:
        """Whether this process still holds the lock, by one cheap look; a lost lock is let go."""
        if self._held is None:
            return False
        if isinstance(self._held, Connection):
            try:
                holds = bool(self._held.execute(_HOLDS, {"k": ADVISORY_KEY}).scalar())
            except SQLAlchemyError as exc:  # a terminated backend, a restarted server, no network
                log.warning("the scheduler lock's connection failed: %s", str(exc).splitlines()[0])
                holds = False
        else:
            holds = self._same_file(self._held)
        if not holds:
            self.release()
        return holds

    def _same_file(self, handle: IO[str]) -> bool:
        """An flock is on the file, not its name: if the file was removed or replaced, another
        process can lock the new one, so this one must stop counting on its lock."""
        try:
            return os.fstat(handle.fileno()).st_ino == self.path.stat().st_ino
        except OSError:
            return False

    def release(self) -> None:
        held, self._held = self._held, None
        if isinstance(held, Connection):
            try:
                held.execute(_UNLOCK, {"k": ADVISORY_KEY})
            except SQLAlchemyError:
                held.invalidate()  # the session is gone, and its lock with it
            held.close()
        elif held is not None:
            held.close()  # closing drops the flock


class Jobs:
    """The scheduler and its records. Every process competes for the leader lock: the winner
    schedules, the others keep trying every `leader_check_s` and take over when it is free; the
    leader checks the lock as often and stops scheduling the moment it is lost (runs in flight
    finish on their threads; nothing new starts), then competes again. Manual runs (`run_now`)
    run in any process.

    A new leader marks the scheduled runs a dead leader left `running` as `abandoned`, and every
    leader does so for any run still `running` after `stale_after_s` (a manual run whose process
    died): only the leader schedules, so no live process will end those rows.
    """

    def __init__(
        self,
        service: Service,
        specs: list[JobSpec],
        *,
        retries: int = 3,
        backoff_s: float = 30.0,
        lock_dir: Path = Path("var"),
        leader_check_s: float = 5.0,
        stale_after_s: float = 6 * 3600.0,
        control: JobControl | None = None,
        at_start: tuple[str, ...] = (),
    ) -> None:
        self.service = service
        self.specs = {s.name: s for s in specs}
        self.control = control or JobControl()
        self.at_start = set(at_start)  # scheduled jobs whose first run is when this process leads
        self.retries, self.backoff_s = retries, backoff_s
        self.leader_check_s, self.stale_after_s = leader_check_s, stale_after_s
        self.scheduler = self._scheduler()
        self.leader = Leader(service.engine, lock_dir)
        self._busy = {name: threading.Lock() for name in self.specs}
        self._state = threading.Lock()  # leadership changes: the watcher thread, start and stop
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self._in_flight: set[int] = set()  # this process's runs: never abandoned by it
        self._told: set[tuple[str, str]] = set()  # (job, item) shutdown said it waits for
        self._swept = 0.0  # when this leader last looked for stale runs (monotonic)
        for spec in specs:
            service.runs.register(spec.name, spec.every_s, spec.description)

    @property
    def running(self) -> bool:
        """Whether this process schedules now (it holds the leader lock)."""
        return bool(self.scheduler.running)

    def start(self) -> bool:
        """Competes for the leader lock, now and every `leader_check_s` from then on; returns
        whether this process leads now."""
        self._stopping.clear()
        self.control.stop.clear()  # a restarted scheduler's jobs (and LLM) run again
        self._told.clear()
        self._step()
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="jobs-leader", daemon=True)
            self._watcher.start()
        return self.running

    def halt(self) -> None:
        """Ask running jobs to stop at their next item (the signal handler calls this at once,
        before the server drains its requests) and log what is still being finished."""
        if not self.control.stopping():
            self.control.stop.set()
            log.info("stopping: jobs end at their next item")
        self._log_waiting()

    def _log_waiting(self) -> None:
        """Each job and item once: the signal and the server's shutdown both call `halt`."""
        in_hand = self.control.in_hand()
        waits = {(job, item) for job, item in in_hand.items()}
        waits |= {(job, "its current step") for job, busy in self._busy.items() if busy.locked()}
        for job, item in sorted(waits - self._told):
            if job not in in_hand or in_hand[job] == item:
                log.info("waiting for %s to finish %s", job, item)
        self._told |= waits

    def stop(self) -> None:
        self.halt()
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        with self._state:
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

    def _watch(self) -> None:
        while not self._stopping.wait(self.leader_check_s):
            self._step()

    def _step(self) -> None:
        """One look at the lock: a leader that lost it stops, a process that wins it leads."""
        with self._state:
            try:
                if not self.running:
                    if self.leader.acquire():
                        self._lead()
                elif not self.leader.held():
                    self._follow()
                elif time.monotonic() - self._swept > min(600.0, self.stale_after_s / 4):
                    self._sweep(scheduled_too=False)
            except Exception:  # the database may be down for a while: keep watching
                log.exception(
                    "the scheduler's leader check failed; trying again in %.0f s", self.leader_check_s
                )

    def _lead(self) -> None:
        self._sweep(scheduled_too=True)
        self.scheduler = self._scheduler()
        for spec in self.specs.values():
            if spec.every_s > 0:
                first = {"next_run_time": datetime.now(UTC)} if spec.name in self.at_start else {}
                self.scheduler.add_job(
                    self._run,
                    "interval",
                    seconds=spec.every_s,
                    args=[spec.name, 1, "schedule"],
                    id=spec.name,
                    max_instances=1,
                    **first,
                )
        self.scheduler.start()
        log.info("this process now runs the scheduler")

    def _follow(self) -> None:
        log.warning("the scheduler's leader lock was lost; this process stops scheduling")
        self.scheduler.shutdown(wait=False)  # runs in flight finish; their retries are not scheduled

    def _sweep(self, *, scheduled_too: bool) -> None:
        """Marks runs no live process will finish as abandoned (see the class docstring)."""
        keep = set(self._in_flight)
        runs, at = self.service.runs, datetime.now(UTC)
        marked = runs.abandon(
            at - timedelta(seconds=self.stale_after_s),
            keep=keep,
            reason=f"abandoned: still running after {self.stale_after_s:.0f} s",
        )
        if scheduled_too:
            marked += runs.abandon(
                at,
                triggers=("schedule", "retry"),
                keep=keep,
                reason="abandoned: the scheduler that started it stopped before it ended",
            )
        if marked:
            log.warning("marked %d job runs abandoned", marked)
        self._swept = time.monotonic()

    def _scheduler(self) -> BackgroundScheduler:
        # a fresh one per term as leader: apscheduler 3 keeps a stopped scheduler's jobs pending
        return BackgroundScheduler(timezone="UTC", job_defaults={"coalesce": True})

    def _run(self, name: str, attempt: int, trigger: str) -> dict[str, Any]:
        with self._busy[name]:  # a manual run waits for a scheduled one of the same job
            run_id = self.service.runs.start(name, attempt, trigger)
            self._in_flight.add(run_id)
            try:
                detail = self.specs[name].run(self.service)
            except Exception as exc:
                log.exception("job %s failed (attempt %d)", name, attempt)
                error = f"{type(exc).__name__}: {exc}"
                self.service.runs.finish(run_id, "failed", error, {})
                self._retry(name, attempt)
            else:
                self.service.runs.finish(run_id, "ok", None, detail)
            finally:
                self._in_flight.discard(run_id)
        return self.service.runs.get(run_id)

    def _retry(self, name: str, attempt: int) -> None:
        scheduler = self.scheduler  # a leader that loses the lock meanwhile retries nothing
        if attempt > self.retries or not scheduler.running:
            return
        delay = self.backoff_s * 2 ** (attempt - 1)
        scheduler.add_job(
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
    """Fit on the current impressions beside the serving ranker, then swap it in; a fit that
    fails leaves the serving ranker in place (the run fails and is retried). Other processes
    refit theirs when they see the bumped version (server.versions)."""
    from server.container import refit

    announcing = service.versions.announcing("ranker") if service.versions else contextlib.nullcontext()
    with announcing:
        name = refit(service.recommender)
    return {"ranker": name, "candidates": len(service.recommender.matrix.infos)}


def summarize_new(
    limit: int, budget_s: float = 300.0, control: JobControl | None = None
) -> Callable[[Service], dict[str, Any]]:
    """Drafts for the newest articles in the candidate window whose current version has none,
    one at a time and outside every service lock (readers, retractions and reviews never wait
    for it); the run stops starting new articles after `budget_s` or when the process stops.
    Each draft is logged ("drafting 3/8: pol-0011 (12.4 s)") and counted in `control` (/ready
    shows it), and briefings citing the article are dropped so readers get it from then on
    instead of the article's own words."""
    shared = control or JobControl()

    def run(service: Service) -> dict[str, Any]:
        deadline = time.monotonic() + budget_s
        if service.adapters is not None:
            service.adapters.sync()  # an adapter promoted elsewhere writes this run's drafts
        infos = sorted(service.recommender.matrix.infos, key=lambda i: i.article.published_at, reverse=True)
        missing = [i.article for i in infos if not has_summary(service, i.article)]
        todo, done, failed = missing[:limit], 0, 0
        report = functools.partial(shared.report, "summarize-new")
        report(done=0, failed=0, waiting=len(missing), current=None, started_at=service.clock().isoformat())
        for n, article in enumerate(todo, 1):
            if time.monotonic() > deadline or shared.stopping():
                break
            report(current=article.id)
            if _draft(service, article, n, len(todo)):
                done += 1
            else:
                failed += 1
            report(done=done, failed=failed, waiting=len(missing) - done, current=None)
        stopped = shared.stopping() and done + failed < len(todo)
        report(current=None, finished_at=service.clock().isoformat())
        return {"summarized": done, "failed": failed, "waiting": len(missing) - done, "stopped": stopped}

    return run


def _draft(service: Service, article: Article, n: int, of: int) -> bool:
    """One article's draft, logged with its time; False if the LLM failed (or refused: stopping)."""
    started = time.monotonic()
    try:
        service.summarizer.summarize([article.id])
    except GenerationError as exc:
        log.warning("drafting %d/%d: %s failed: %s", n, of, article.id, exc)
        return False
    service.retire_stale(article.id)  # retracted or replaced while the LLM wrote
    service.forget_article(article.id)  # briefings showing its own words pick the draft up
    log.info("drafting %d/%d: %s (%.1f s)", n, of, article.id, time.monotonic() - started)
    return True


def has_summary(service: Service, article: Article) -> bool:
    current = article.content_hash()
    return any(s.content_hash == current and s.kind == "article" for s in service.summaries.find(article.id))


def collect_garbage(service: Service) -> dict[str, Any]:
    """A full cyclic garbage collection, off the request path (`briefing serve` turns off the
    automatic ones, which paused requests)."""
    import gc

    return {"collected": gc.collect()}


def precompute(
    budget_s: float = 300.0, control: JobControl | None = None
) -> Callable[[Service], dict[str, Any]]:
    """Active readers' next briefings, their missing drafts and story updates written first;
    the run stops starting readers after `budget_s` or when the process stops (the next run
    goes on)."""
    shared = control or JobControl()

    def run(service: Service) -> dict[str, Any]:
        if service.adapters is not None:
            service.adapters.sync()
            running = service.arms.running()
            service.adapters.ensure(a.variant.adapter for e in running for a in e.arms if a.variant.adapter)
        return service.precompute(deadline=time.monotonic() + budget_s, stop=shared.stopping)

    return run


def retention(events_days: float, briefings_days: float) -> Callable[[Service], dict[str, Any]]:
    def run(service: Service) -> dict[str, Any]:
        now = service.clock()
        return {
            "events_deleted": service.events.delete_before(now - timedelta(days=events_days)),
            "briefings_deleted": service.served.delete_before(now - timedelta(days=briefings_days)),
        }

    return run


def tune_adapter(
    settings: Settings, control: JobControl | None = None
) -> Callable[[Service], dict[str, Any]]:
    """The nightly tune (server.tuning.tune): one at a time per DATA_DIR; another tune running
    (`briefing tune` by hand) makes this run a no-op that says so, not a failure to retry."""
    shared = control or JobControl()

    def run(service: Service) -> dict[str, Any]:
        from server.tuning import TuningBusy, tune

        shared.report("tune-adapter", current="training", started_at=service.clock().isoformat())
        try:
            return tune(service, settings, actor="job", stop=shared.stopping)
        except TuningBusy as exc:
            return {"skipped": str(exc)}
        finally:
            shared.report("tune-adapter", current=None, finished_at=service.clock().isoformat())

    return run
