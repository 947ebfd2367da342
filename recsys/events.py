"""Reading events and where they are kept.

`Event` is validated on the way in like articles are. `EventRepository` is the storage protocol
(contract: tests/unit/test_event_repository_contract.py), small so the service can swap in SQL:
- `add(events)` stores a batch all or nothing, idempotent by (`reader_id`, `event_id`) (a retried
  batch is not counted twice; two readers' clients may pick the same ids); it returns how many
  events were new;
- `for_reader(reader_id)` returns a reader's events in time order;
- `all_events(since)` iterates every event at or after `since` (popularity, training);
- `record_visit` / `last_visit` keep when a reader last saw their briefing.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from indexing import RecordError
from indexing.articles import ArticleId, record_errors

Id = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=r"^[\w.:-]+$")
]
MAX_DWELL_S = 6 * 3600


class EventType(StrEnum):
    IMPRESSION = "impression"
    CLICK = "click"
    READ = "read"
    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"


class Event(BaseModel):
    """One thing a reader did with one article."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    reader_id: Id
    type: EventType
    article_id: ArticleId
    at: AwareDatetime
    dwell_s: Annotated[float, Field(ge=0, le=MAX_DWELL_S)] | None = None

    @field_validator("at")
    @classmethod
    def _has_a_utc_time(cls, at: datetime) -> datetime:
        # Events are stored and compared in UTC: 0001-01-01T00:30+01:00 has no UTC time (a 500).
        try:
            at.astimezone(UTC)
        except OverflowError:
            raise ValueError("the time leaves the calendar (years 1-9999) in UTC") from None
        return at

    @model_validator(mode="after")
    def _dwell_only_on_reads(self) -> Self:
        if self.type is EventType.READ and self.dwell_s is None:
            raise ValueError("a read needs dwell_s (seconds)")
        if self.type is not EventType.READ and self.dwell_s is not None:
            raise ValueError(f"dwell_s is only allowed on reads, not on {self.type.value}")
        return self


def validate_events(raws: Sequence[Any], source: str = "<events>") -> tuple[list[Event], list[RecordError]]:
    """Every event of a batch, or the reasons it is not valid (field by field)."""
    events: list[Event] = []
    errors: list[RecordError] = []
    for n, raw in enumerate(raws, start=1):
        try:
            events.append(Event.model_validate(raw))
        except ValidationError as exc:
            errors.extend(record_errors(exc, source, n))
    return events, errors


class EventsRejected(ValueError):
    """A batch with invalid events; none of it was stored."""

    def __init__(self, errors: list[RecordError]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


def record_events(repository: EventRepository, raws: Sequence[Any], source: str = "<events>") -> int:
    """Validate a whole batch, then store it all; any invalid event rejects the batch."""
    events, errors = validate_events(raws, source)
    if errors:
        raise EventsRejected(errors)
    return repository.add(events)


class EventRepository(Protocol):
    def add(self, events: Sequence[Event]) -> int: ...
    def for_reader(self, reader_id: str) -> list[Event]: ...
    def all_events(self, since: datetime | None = None) -> Iterator[Event]: ...
    def record_visit(self, reader_id: str, at: datetime) -> None: ...
    def last_visit(self, reader_id: str) -> datetime | None: ...


class InMemoryEventStore:
    """Events in memory: tests, benchmarks, and the embedded default until SQL arrives."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[tuple[str, str], Event] = {}
        self._by_reader: dict[str, list[Event]] = {}
        self._visits: dict[str, datetime] = {}

    def add(self, events: Sequence[Event]) -> int:
        with self._lock:
            fresh = _unseen(events, self._by_id)
            self._apply(fresh)
            return len(fresh)

    def _apply(self, events: Iterable[Event]) -> None:
        touched: set[str] = set()
        for event in events:
            self._by_id[(event.reader_id, event.event_id)] = event
            self._by_reader.setdefault(event.reader_id, []).append(event)
            touched.add(event.reader_id)
        for reader in touched:
            self._by_reader[reader].sort(key=lambda e: e.at)

    def for_reader(self, reader_id: str) -> list[Event]:
        return list(self._by_reader.get(reader_id, []))

    def all_events(self, since: datetime | None = None) -> Iterator[Event]:
        return (e for e in list(self._by_id.values()) if since is None or e.at >= since)

    def record_visit(self, reader_id: str, at: datetime) -> None:
        self._visits[reader_id] = at

    def last_visit(self, reader_id: str) -> datetime | None:
        return self._visits.get(reader_id)


class JsonlEventStore(InMemoryEventStore):
    """An append-only file: one line per batch, so a crash mid-write loses the whole torn batch
    (the reader was told it failed) and never leaves part of one. Loaded into memory on open."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()

    def _load(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a torn final line from a crash: drop it
            data = data[: data.rfind(b"\n") + 1]
            with self.path.open("r+b") as out:
                out.truncate(len(data))
        for line in data.decode("utf-8").splitlines():
            batch = json.loads(line)
            if "visit" in batch:
                self._visits[batch["visit"]] = datetime.fromisoformat(batch["at"])
            else:
                self._apply(_unseen([Event.model_validate(e) for e in batch["events"]], self._by_id))

    def add(self, events: Sequence[Event]) -> int:
        with self._lock:
            fresh = _unseen(events, self._by_id)
            if fresh:
                self._append({"events": [e.model_dump(mode="json") for e in fresh]})
                self._apply(fresh)
            return len(fresh)

    def record_visit(self, reader_id: str, at: datetime) -> None:
        with self._lock:
            self._append({"visit": reader_id, "at": at.isoformat()})
            self._visits[reader_id] = at

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())


def _unseen(events: Sequence[Event], seen: dict[tuple[str, str], Event]) -> list[Event]:
    """Events not stored yet, first occurrence of each (reader, id) in the batch."""
    fresh: dict[tuple[str, str], Event] = {}
    for event in events:
        key = (event.reader_id, event.event_id)
        if key not in seen:
            fresh.setdefault(key, event)
    return list(fresh.values())
