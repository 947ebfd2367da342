"""State that API workers share: where it lives, and the small protocols over it.

Without REDIS_URL (the embedded default) everything here lives in this process, exactly as
before: one process serves readers. With REDIS_URL, several API workers serve the same readers,
so what one worker learns or drops must hold in the others:

- readers' visits (last seen, since) and erasures, `VisitStates`: a dict here; in Redis a key per
  reader, recorded by a Lua check-and-set against the reader's erasure key;
- composed briefings and their invalidation, `BriefingStore`: an LRU dict scanned by a predicate
  here; in Redis entries indexed by reader and by article, and a generation for "drop all";
- the rate limit per caller and minute: litestar's own here; in Redis a `Counter` (INCR and
  EXPIRE in one script) under litestar's middleware (server.rate_limit);
- invalid tokens per address and minute, `FailureCount`: `server.auth.Failures` here,
  `server.auth.SharedFailures` on a `Counter` in Redis.

Verified tokens stay a per-process LRU in `server.auth.VerifiedOnce` (see its docstring).

Redis unreachable: every call raises `SharedStateUnavailable` (HTTP 503 with Retry-After) rather
than falling back to this process's memory, which would serve state another worker changed (a
dropped briefing, an erased reader). Connections are re-made on the next call, so the workers
recover without a restart when Redis answers again. `redis_client` bounds every call (0.5 s to
connect, 0.5 s to answer): a refused connection fails at once, but a Redis that vanished without
a reset holds each call that long, and the cached briefing path makes its calls on the event
loop (one loopback round trip is cheaper than a thread hop), so such an outage slows a worker
to about two such requests a second until the connection is refused or Redis is back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from litestar.plugins.problem_details import ProblemDetailsException

if TYPE_CHECKING:
    import redis

    from briefing import Briefing
    from server.settings import Settings

RETRY_AFTER_S = 2  # a Redis restart or failover takes seconds; the client reconnects by itself
State = tuple[datetime | None, datetime | None]  # (last seen, the visit's "since")
Entry = tuple["Briefing", dict[str, Any]]  # a cached briefing and its JSON body

__all__ = [
    "BriefingStore",
    "Counter",
    "Entry",
    "FailureCount",
    "SharedState",
    "SharedStateUnavailable",
    "State",
    "VisitStates",
    "redis_client",
    "shared_state",
    "unavailable",
]


class SharedStateUnavailable(ProblemDetailsException):
    """The shared store (Redis) did not answer: HTTP 503 with Retry-After, wherever it is raised
    (a handler, a job, the auth or rate-limit middleware)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail=detail, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


class VisitStates(Protocol):
    """Each reader's (last seen, since), and who was erased when.

    `load` keeps the state already there (the first loader wins); `record` refuses, and returns
    False, when the reader was erased at or after `composed_at` (that request composed for a reader
    who no longer exists); `erased` says when each of these readers was erased, if they were."""

    def get(self, reader_id: str) -> State | None: ...
    def load(self, reader_id: str, state: State) -> State: ...
    def record(self, reader_id: str, state: State, composed_at: datetime) -> bool: ...
    def forget(self, reader_id: str, at: datetime) -> None: ...
    def erased(self, reader_ids: Sequence[str]) -> dict[str, datetime]: ...


class BriefingStore(Protocol):
    """Composed briefings by (reader, variant, since).

    `epoch()` before composing and `put(..., epoch)` after: any drop in between makes the put a
    no-op (the briefing may have been composed from text that was dropped meanwhile). A drop may
    drop more than asked (always safe), never less; `drop(keep)` is the general form."""

    def epoch(self) -> Any: ...
    def get(self, key: tuple[Any, ...]) -> Entry | None: ...
    def put(self, key: tuple[Any, ...], briefing: Briefing, epoch: Any) -> dict[str, Any]: ...
    def drop(self, keep: Callable[[Briefing], bool]) -> int: ...
    def drop_reader(self, reader_id: str) -> int: ...
    def drop_article(self, article_id: str) -> int: ...
    def __len__(self) -> int: ...


class Counter(Protocol):
    """An atomic counter per name over a fixed window that opens with its first hit."""

    def hit(self, name: str, window_s: int) -> tuple[int, int]:
        """Count one; returns (hits in this window including this one, seconds until it ends)."""
        ...

    def peek(self, name: str) -> int: ...


class FailureCount(Protocol):
    """Invalid tokens per client address and minute (server.auth)."""

    def exceeded(self, address: str) -> bool: ...
    def add(self, address: str) -> None: ...


@dataclass(frozen=True)
class SharedState:
    """What `shared_state` built: the visit states, the briefing store and (with Redis) the
    counter the rate limit and the invalid-token count share; `None` means "in this process"."""

    visits: VisitStates
    briefings: BriefingStore
    counter: Counter | None = None
    client: redis.Redis | None = None

    @property
    def shared(self) -> bool:
        return self.client is not None

    def ping(self) -> bool:
        """Whether the shared store answers (in this process: always)."""
        return self.client is None or bool(self.client.ping())


def redis_client(settings: Settings) -> redis.Redis | None:
    """A client for REDIS_URL with bounded waits, or None when REDIS_URL is unset. Connections
    are made on first use and re-made after a failure (nothing is checked here)."""
    if not settings.redis_url:
        return None
    import redis

    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        health_check_interval=30,
        retry=None,  # one try: a caller gets its 503 at once instead of after backoff sleeps
    )


def shared_state(settings: Settings) -> SharedState:
    """In this process without REDIS_URL, else in Redis under REDIS_PREFIX."""
    client = redis_client(settings)
    if client is None:
        from server.shared_memory import MemoryBriefings, MemoryVisitStates

        return SharedState(MemoryVisitStates(), MemoryBriefings())
    from server.shared_redis import RedisBriefings, RedisCounter, RedisVisitStates

    prefix = settings.redis_prefix
    return SharedState(
        RedisVisitStates(client, prefix),
        RedisBriefings(client, prefix),
        RedisCounter(client, prefix),
        client,
    )


@contextmanager
def unavailable() -> Iterator[None]:
    """Turn Redis' connection failures and timeouts into `SharedStateUnavailable`."""
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        detail = f"shared state (Redis) is unreachable: {exc}; try again shortly"
        raise SharedStateUnavailable(detail) from exc
