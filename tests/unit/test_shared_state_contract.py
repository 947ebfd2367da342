"""The contract of server.shared_state, on both implementations: in this process (the embedded
default) and in Redis (several API workers). The Redis runs skip when 127.0.0.1:6379 does not
answer; each uses its own key prefix and deletes its keys afterwards."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from briefing import Briefing, BriefingItem, BriefingPolicy, SummarySentence, Variant
from server.auth import Failures, SharedFailures
from server.settings import Settings
from server.shared_state import SharedState, redis_client, shared_state

REDIS_URL = "redis://127.0.0.1:6379/0"
OSLO = timezone(timedelta(hours=1))
NOW = datetime(2026, 11, 19, 22, tzinfo=OSLO)


def _redis_answers() -> bool:
    client = redis_client(Settings(redis_url=REDIS_URL))
    try:
        return bool(client and client.ping())
    except Exception:
        return False


@pytest.fixture(params=["memory", "redis"])
def state(request: pytest.FixtureRequest) -> Iterator[SharedState]:
    if request.param == "memory":
        yield shared_state(Settings())
        return
    if not _redis_answers():
        pytest.skip("no Redis answers at 127.0.0.1:6379")
    prefix = f"test-contract-{uuid.uuid4().hex}"
    built = shared_state(Settings(redis_url=REDIS_URL, redis_prefix=prefix))
    yield built
    assert built.client is not None
    for key in built.client.scan_iter(match=f"{prefix}:*"):
        built.client.delete(key)


def item(article_id: str, *cited: str) -> BriefingItem:
    sentences = tuple(SummarySentence(f"From {a}.", 0.9, (f"{a}@h#0",)) for a in cited)
    return BriefingItem(
        "story-1", article_id, "Title", "https://example.org/a", "news", bool(cited), "why", "draft",
        None, None, sentences,
    )  # fmt: skip


def briefing(reader: str, *items: BriefingItem, at: datetime = NOW) -> Briefing:
    return Briefing(reader, at, NOW - timedelta(hours=3), "control", BriefingPolicy(), "Hello.", items)


def key(reader: str, since: datetime | None = None) -> tuple[object, ...]:
    return (reader, Variant("control"), since or NOW - timedelta(hours=3))


# Visits ------------------------------------------------------------------------------------------


def test_the_first_loaded_state_wins_and_a_record_replaces_it(state: SharedState) -> None:
    visits, first, later = state.visits, (NOW - timedelta(days=1), None), (NOW, NOW - timedelta(days=1))
    assert visits.get("r1") is None
    assert visits.load("r1", first) == first
    assert visits.load("r1", (NOW, NOW)) == first  # a second worker's load keeps the first
    assert visits.record("r1", later, composed_at=NOW)
    got = visits.get("r1")
    assert got == later and got[0] is not None and got[0].utcoffset() == timedelta(hours=1)
    assert visits.get("r2") is None


def test_an_erased_reader_is_not_brought_back_by_a_request_composed_before(state: SharedState) -> None:
    visits = state.visits
    visits.record("r1", (NOW, None), composed_at=NOW)
    erased_at = NOW + timedelta(seconds=5, microseconds=7)
    visits.forget("r1", erased_at)
    assert visits.get("r1") is None
    assert not visits.record("r1", (NOW + timedelta(seconds=6), None), composed_at=erased_at)
    assert visits.get("r1") is None
    assert visits.erased(["r1", "r2"]) == {"r1": erased_at}
    # A briefing composed after the erasure is a new visit of a reader who came back.
    assert visits.record(
        "r1", (NOW + timedelta(seconds=7), None), composed_at=erased_at + timedelta(microseconds=1)
    )
    assert visits.get("r1") == (NOW + timedelta(seconds=7), None)


# Cached briefings --------------------------------------------------------------------------------


def test_a_cached_briefing_comes_back_exactly(state: SharedState) -> None:
    cache, original = state.briefings, briefing("r1", item("pol-1", "pol-0", "pol-1"))
    body = cache.put(key("r1"), original, cache.epoch())
    found = cache.get(key("r1"))
    assert found is not None and found[0] == original
    assert as_json(found[1]) == as_json(original.to_json()) == as_json(body)  # the same answer's JSON
    # The same instant in another offset is the same "since".
    assert cache.get(key("r1", (NOW - timedelta(hours=3)).astimezone(UTC))) is not None
    assert cache.get(key("r1", NOW)) is None and cache.get(key("r2")) is None
    assert cache.get(("r1", Variant("one-sentence"), NOW - timedelta(hours=3))) is None
    assert len(cache) == 1


def test_a_put_after_any_drop_is_not_kept(state: SharedState) -> None:
    cache = state.briefings
    before = cache.epoch()
    cache.drop_reader("someone-else")
    cache.put(key("r1"), briefing("r1", item("a")), before)  # composed while something was dropped
    assert cache.get(key("r1")) is None


def test_a_drop_takes_every_briefing_showing_or_citing_the_article(state: SharedState) -> None:
    cache = state.briefings
    cache.put(key("r1"), briefing("r1", item("pol-11", "pol-6", "pol-11")), cache.epoch())
    cache.put(key("r2"), briefing("r2", item("pol-11")), cache.epoch())
    cache.put(key("r3"), briefing("r3", item("spo-1", "spo-1")), cache.epoch())
    assert cache.drop_article("pol-6") == 1  # r1: its update cites the earlier article
    assert cache.get(key("r1")) is None
    assert cache.get(key("r2")) is not None and cache.get(key("r3")) is not None
    assert cache.drop_article("pol-11") == 1  # r2 (r1 went already)
    assert cache.drop_reader("r3") == 1 and cache.get(key("r3")) is None
    assert cache.drop_reader("r3") == 0


def test_a_general_drop_takes_at_least_what_it_is_asked(state: SharedState) -> None:
    cache = state.briefings
    for reader in ("r1", "r2"):
        cache.put(key(reader), briefing(reader, item("a")), cache.epoch())
    cache.drop(lambda b: b.reader_id != "r1")
    assert cache.get(key("r1")) is None  # Redis drops r2 too: a superset is always safe
    cache.drop(lambda b: False)
    assert cache.get(key("r2")) is None and len(cache) == 0
    cache.put(key("r2"), briefing("r2", item("a")), cache.epoch())  # the cache works after a drop
    assert cache.get(key("r2")) is not None and len(cache) == 1


def test_one_store_serves_what_another_handle_put_and_never_what_it_dropped(state: SharedState) -> None:
    if state.client is None:
        pytest.skip("in this process there is one handle by design")
    twin = shared_state(Settings(redis_url=REDIS_URL, redis_prefix=_prefix(state)))
    state.briefings.put(key("r1"), briefing("r1", item("a")), state.briefings.epoch())
    assert twin.briefings.get(key("r1")) is not None
    twin.briefings.drop_article("a")
    assert state.briefings.get(key("r1")) is None


def test_a_body_in_a_form_this_version_cannot_read_is_a_miss(state: SharedState) -> None:
    """A rolling upgrade runs two versions of the code on one Redis: an entry the other wrote in a
    form this one cannot decode must be composed again, not answered with a 500."""
    if state.client is None:
        pytest.skip("in this process nothing is decoded")
    twin = shared_state(Settings(redis_url=REDIS_URL, redis_prefix=_prefix(state)))
    state.briefings.put(key("r1"), briefing("r1", item("a")), state.briefings.epoch())
    (body,) = state.client.keys(f"{_prefix(state)}:cache:b:*")
    for unreadable in (b"{not json", b'{"format": 99}'):
        state.client.set(body, unreadable, keepttl=True)
        assert twin.briefings.get(key("r1")) is None  # twin has not decoded it before


# Counters ----------------------------------------------------------------------------------------


def test_the_counter_is_atomic_across_threads_and_its_window_ends(state: SharedState) -> None:
    counter = state.counter
    if counter is None:
        pytest.skip("in this process the rate limit is litestar's own (one process, its lock)")
    seen: list[int] = []

    def hit() -> None:
        for _ in range(50):
            seen.append(counter.hit("caller", 1)[0])

    threads = [threading.Thread(target=hit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen) == list(range(1, 401)) and counter.peek("caller") == 400
    assert 0 <= counter.hit("caller", 1)[1] <= 1
    deadline = datetime.now(UTC) + timedelta(seconds=3)
    while counter.peek("caller") and datetime.now(UTC) < deadline:
        threading.Event().wait(0.1)
    assert counter.hit("caller", 1)[0] == 1  # a new window


def test_invalid_tokens_are_counted_per_address_and_minute(state: SharedState) -> None:
    clock = [600.0]
    failures = (
        Failures(3, lambda: clock[0])
        if state.counter is None
        else SharedFailures(3, state.counter, lambda: clock[0])
    )
    for _ in range(3):
        assert not failures.exceeded("10.0.0.1")
        failures.add("10.0.0.1")
    assert failures.exceeded("10.0.0.1") and not failures.exceeded("10.0.0.2")
    clock[0] += 60
    assert not failures.exceeded("10.0.0.1")


def _prefix(state: SharedState) -> str:
    from server.shared_redis import RedisVisitStates

    assert isinstance(state.visits, RedisVisitStates)
    return state.visits.prefix


def as_json(body: dict[str, object]) -> str:
    return json.dumps(body, sort_keys=True)
