"""Which failures are an outage rather than a bug: `outage(exc)` says what a request that died of
`exc` should answer. A lost or busy database is a 503 with Retry-After (the client may retry; the
engine's pool reconnects by itself, `server.db.connect`), a full disk under DATA_DIR a 507 naming
it; anything else stays a 500 (server.app).

The cause is looked for along the exception's chain (`__cause__`, `__context__`), because the
stores and the index may wrap the driver's error in their own.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import exc as sa

__all__ = ["RETRY_AFTER_S", "Outage", "outage"]

RETRY_AFTER_S = 5  # about the pool's reconnect: each request checks its connection first
_FULL = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = "database or disk is full"


@dataclass(frozen=True)
class Outage:
    status: int
    detail: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_S)} if self.status == 503 else {}


DISK_FULL = Outage(507, "the disk under DATA_DIR is full: free space, then retry")
DATABASE_AWAY = Outage(503, "the database cannot be reached now: retry later")


def outage(exc: BaseException) -> Outage | None:
    """The answer for a request that failed with `exc`, or None when it is not an outage."""
    for link in _chain(exc):
        if _disk_full(link):
            return DISK_FULL
    for link in _chain(exc):
        if _database_away(link):
            return DATABASE_AWAY
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        if isinstance(link, sa.DBAPIError) and isinstance(link.orig, BaseException):
            yield link.orig
        link = link.__cause__ or link.__context__


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _FULL:
        return True
    # SQLite reports a full disk as its own error code, not errno (also from embedded Qdrant's file).
    return isinstance(exc, sqlite3.OperationalError) and str(exc).lower().startswith(_SQLITE_FULL)


def _database_away(exc: BaseException) -> bool:
    """A connection that broke or could not be made, a pool with none free, or a locked SQLite:
    all pass by themselves. SQL the database refused (a bug) is a ProgrammingError, not these."""
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.TimeoutError))
