"""Events: validation, and the `EventRepository` contract on every implementation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from recsys import (
    Event,
    EventRepository,
    EventsRejected,
    InMemoryEventStore,
    JsonlEventStore,
    record_events,
    validate_events,
)
from tests.conftest import DATABASES, migrated

T0 = datetime(2026, 11, 16, 8, tzinfo=UTC)


def raw(n: int, **changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": f"e{n}",
        "reader_id": "r1",
        "type": "click",
        "article_id": f"a-{n}",
        "at": (T0 + timedelta(minutes=n)).isoformat(),
    }
    return event | changes


def event(n: int, **changes: Any) -> Event:
    return Event.model_validate(raw(n, **changes))


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"type": "like"}, "type", "Input should be"),
        ({"type": "read"}, "<record>", "a read needs dwell_s"),
        ({"dwell_s": 10}, "<record>", "only allowed on reads"),
        ({"type": "read", "dwell_s": -1}, "dwell_s", "greater than or equal"),
        ({"at": "2026-11-16 08:00"}, "at", "timezone"),
        ({"reader_id": ""}, "reader_id", "at least 1 character"),
        ({"extra": 1}, "extra", "unknown field"),
    ],
)
def test_malformed_events_are_rejected_with_a_reason(change: dict[str, Any], field: str, reason: str) -> None:
    events, errors = validate_events([raw(1), raw(2, **change)], "batch")
    assert len(events) == 1
    [error] = errors
    assert (error.line, error.field) == (2, field) and reason in error.reason


def test_a_batch_with_one_bad_event_stores_nothing() -> None:
    store = InMemoryEventStore()
    with pytest.raises(EventsRejected, match="batch:2: type") as caught:
        record_events(store, [raw(1), raw(2, type="like")], "batch")
    assert len(caught.value.errors) == 1
    assert list(store.all_events()) == []
    assert record_events(store, [raw(1), raw(2)], "batch") == 2


REPOSITORIES: dict[str, Callable[[Path], EventRepository]] = {
    "memory": lambda tmp: InMemoryEventStore(),
    "jsonl": lambda tmp: JsonlEventStore(tmp / "events.jsonl"),
}


@pytest.fixture(params=[*REPOSITORIES, *(f"sql-{kind}" for kind in DATABASES)])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventRepository]:
    if request.param in REPOSITORIES:
        yield REPOSITORIES[request.param](tmp_path)
        return
    from server.stores import SqlEventStore

    for engine in migrated(request.param.removeprefix("sql-"), tmp_path):
        yield SqlEventStore(engine)


def test_add_is_idempotent_by_event_id(repo: EventRepository) -> None:
    assert repo.add([event(2), event(1), event(1)]) == 2
    assert repo.add([event(1), event(3)]) == 1
    assert [e.event_id for e in repo.for_reader("r1")] == ["e1", "e2", "e3"]  # time order
    assert repo.for_reader("nobody") == []


def test_event_ids_are_per_reader(repo: EventRepository) -> None:
    """r01's event "e1" must not make r02's "e1" a duplicate: r02's event would be lost."""
    assert repo.add([event(1)]) == 1
    assert repo.add([event(1, reader_id="r2")]) == 1
    assert [e.reader_id for e in repo.for_reader("r2")] == ["r2"]
    assert repo.add([event(1, reader_id="r2")]) == 0  # r2's retry is still idempotent


def test_all_events_since(repo: EventRepository) -> None:
    repo.add([event(1), event(5, reader_id="r2")])
    assert {e.event_id for e in repo.all_events()} == {"e1", "e5"}
    assert {e.event_id for e in repo.all_events(T0 + timedelta(minutes=3))} == {"e5"}


def test_visits(repo: EventRepository) -> None:
    assert repo.last_visit("r1") is None
    repo.record_visit("r1", T0)
    repo.record_visit("r1", T0 + timedelta(hours=1))
    assert repo.last_visit("r1") == T0 + timedelta(hours=1)


def test_jsonl_store_survives_restart_and_a_torn_batch(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    store = JsonlEventStore(path)
    store.add([event(1), event(2)])
    store.record_visit("r1", T0)
    with path.open("a") as out:  # a crash in the middle of writing the next batch
        out.write('{"events": [{"event_id": "e3", "reader_id"')
    reopened = JsonlEventStore(path)
    assert [e.event_id for e in reopened.for_reader("r1")] == ["e1", "e2"]
    assert reopened.last_visit("r1") == T0
    assert reopened.add([event(3)]) == 1  # the next batch is written on a clean line
    assert [e.event_id for e in JsonlEventStore(path).for_reader("r1")] == ["e1", "e2", "e3"]
