"""Model versions: which candidate matrix, ranker and adapter every serving process should have.

Each API worker holds its own candidate matrix and fitted ranker in memory (candidate scoring is
in-process, DESIGN §3), and its own generator with the promoted adapter loaded. When a job or a
write changes one of them in one process, the others must reload it. `ModelVersions` keeps a
counter per name in SQL (table `model_versions`, both engines): whoever changes a thing bumps its
counter; `VersionWatch` polls the counters every VERSION_POLL_S and reloads what moved.

- "matrix": ingest, retraction and the refresh-candidates job (`Service.refresh_matrix`);
  reloading it also refits the ranker on it (`COVERS`).
- "ranker": the refit-ranker job. Other processes refit on their own: a logistic regression on
  the same events gives the same weights, so no model file needs to travel.
- "adapter": the adapter registry's own version (its largest `generation`, bumped by every
  promote and rollback, server.adapters) plus this table's counter, so a promote anywhere moves
  it without a second write, and `bump("adapter")` still works (after a restore, say).

Ordering: a process bumps *before* it reloads what it changed itself, after its write to the
index or the logs. A bump it sees as newer than its own was made by a change whose write came
before its own reload began, so marking its own bump as seen skips no one else's change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.exc import SQLAlchemyError

from server.db import AdapterRow, ModelVersionRow, now, write_lock

log = logging.getLogger(__name__)

NAMES = ("matrix", "ranker", "adapter")
# A reload of the key brings the values along: a new matrix comes with its ranker fitted on it
# (server.container.refresh_recommender).
COVERS: Mapping[str, tuple[str, ...]] = {"matrix": ("ranker",)}


class ModelVersions:
    """The counters. `bump` is one UPDATE ... RETURNING, so concurrent bumps from any number of
    threads and processes get distinct, increasing versions (a row lock on PostgreSQL, the one
    writer on SQLite)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def bump(self, name: str) -> int:
        """The next version of `name` (one of `NAMES`), committed."""
        if name not in NAMES:
            raise ValueError(f"unknown model {name!r}; models are {', '.join(NAMES)}")
        statement = (
            update(ModelVersionRow)
            .where(ModelVersionRow.name == name)
            .values(version=ModelVersionRow.version + 1, changed_at=now())
            .returning(ModelVersionRow.version)
        )
        with write_lock(self.engine), self.engine.begin() as connection:
            version = connection.execute(statement).scalar_one_or_none()
            if version is None:
                raise RuntimeError(f"no {name!r} row in model_versions: is the database migrated?")
            return int(version) + (_registry(connection) if name == "adapter" else 0)

    def current(self) -> dict[str, int]:
        """Every name's version now (0 for one never bumped)."""
        with self.engine.connect() as connection:
            rows = connection.execute(select(ModelVersionRow.name, ModelVersionRow.version))
            found = {name: int(version) for name, version in rows}
            found["adapter"] = found.get("adapter", 0) + _registry(connection)
        return {name: found.get(name, 0) for name in NAMES}


def _registry(connection: Connection) -> int:
    return int(connection.execute(select(func.coalesce(func.max(AdapterRow.generation), 0))).scalar_one())


class VersionWatch:
    """This process's view of the versions and the thread that keeps its models at them.

    `on(name, reload)` says how to reload a name here; `announcing(name)` wraps a change made in
    this process (bump first, see the module docstring); `check()` is one look; `start()` polls
    every `every_s` on a daemon thread and `close()` stops it. A lost database is logged once and
    polled again; a reload that fails is logged and tried again at the next look. A bump that
    failed (database down) is owed and made at the first look that reaches the database."""

    def __init__(self, versions: ModelVersions, every_s: float) -> None:
        self.versions, self.every_s = versions, every_s
        self._seen = versions.current()  # read before the models are built: a later bump reloads
        self._reloads: dict[str, Callable[[], None]] = {}
        self._owed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def on(self, name: str, reload: Callable[[], None]) -> None:
        if name not in NAMES:
            raise ValueError(f"unknown model {name!r}; models are {', '.join(NAMES)}")
        self._reloads[name] = reload

    def served(self) -> dict[str, int]:
        """The version of each name this process has loaded (/ready shows it)."""
        with self._lock:
            return dict(self._seen)

    @contextmanager
    def announcing(self, name: str) -> Iterator[None]:
        """Around a change this process makes to `name`: the bump comes first, and a change
        that fails leaves `name` to be reloaded at the next look."""
        self._bump(name)
        try:
            yield
        except BaseException:
            with self._lock:
                self._seen[name] = -1
            raise

    def _bump(self, name: str) -> None:
        try:
            version = self.versions.bump(name)
        except SQLAlchemyError as exc:  # the local change goes on; other processes learn later
            log.error("could not bump the %s version (%s); retrying at the next look", name, _line(exc))
            with self._lock:
                self._owed.add(name)
            return
        with self._lock:
            self._seen[name] = max(self._seen.get(name, 0), version)

    def check(self) -> list[str]:
        """One look: owed bumps first, then reload each name whose version moved; returns the
        names reloaded. Raises SQLAlchemyError when the database cannot be read."""
        with self._lock:
            owed, self._owed = self._owed, set()
        for name in sorted(owed):
            self._bump(name)
        current = self.versions.current()
        with self._lock:
            moved = [n for n in NAMES if current[n] != self._seen.get(n) and n in self._reloads]
        done: list[str] = []
        for name in moved:  # in NAMES order: a reload that covers others comes before them
            covered = any(name in COVERS.get(d, ()) for d in done)
            if covered or self._reload(name):
                with self._lock:
                    self._seen[name] = current[name]
                done.append(name)
        return done

    def _reload(self, name: str) -> bool:
        try:
            self._reloads[name]()
        except Exception:  # the models in place keep serving; the next look tries again
            log.exception("reloading the %s failed; trying again in %g s", name, self.every_s)
            return False
        log.info("reloaded the %s (another process changed it)", name)
        return True

    def start(self) -> None:
        """Poll every `every_s` on a daemon thread, until `close`; no thread when `every_s` is 0."""
        if self.every_s <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="model-versions", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling; a reload in progress finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.check()
            except SQLAlchemyError as exc:
                if not self._failing:
                    log.warning(
                        "model versions cannot be read (%s); trying every %g s", _line(exc), self.every_s
                    )
                self._failing = True
                continue
            if self._failing:
                log.info("model versions can be read again")
            self._failing = False


def _line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
