"""`popularity_at`: decayed clicks and impressions per row, robust to what the event API accepts.

The event API answers 200 to two impression events of the same article at the same moment (two
event ids), so the row mapping a caller builds from one impression can name an article twice;
that, with any earlier event on the article, used to raise IndexError and stop the refit job.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recsys import ArticleInfo, CandidateMatrix, Event, EventType, InMemoryEventStore, Recommender
from recsys.candidates import popularity_at
from tests.factories import make_article

NOW = datetime(2026, 11, 19, 12, tzinfo=UTC)
DAY = 24.0


def event(n: int, kind: EventType, article: str, at: datetime, dwell_s: float | None = None) -> Event:
    return Event(event_id=f"e-{n}", reader_id="r", type=kind, article_id=article, at=at, dwell_s=dwell_s)


def duplicated_impression() -> list[Event]:
    """One POST: the same article shown twice at one moment, after an earlier click on it."""
    return [
        event(1, EventType.CLICK, "a", NOW - timedelta(hours=DAY)),
        event(2, EventType.IMPRESSION, "a", NOW),
        event(3, EventType.IMPRESSION, "a", NOW),
    ]


def test_a_repeated_id_in_the_impression_does_not_raise() -> None:
    ids = ["a", "a"]
    index = {a: n for n, a in enumerate(ids)}  # what recommend.py builds: {"a": 1}, one entry
    clicks, shown = popularity_at(index, duplicated_impression(), NOW.timestamp(), DAY)
    # Every row the mapping names has a slot, and the one it names for "a" holds a's earlier click.
    assert len(clicks) == len(shown) == 2
    assert clicks[index["a"]] == pytest.approx(0.5)  # one half-life back
    assert shown.sum() == 0.0  # impressions at `now` are not before `now`


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_event_order_does_not_matter(order: tuple[int, ...]) -> None:
    events = duplicated_impression()
    index = {"a": 1}
    expected = popularity_at(index, events, NOW.timestamp(), DAY)
    got = popularity_at(index, [events[i] for i in order], NOW.timestamp(), DAY)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_counts_only_the_past_and_known_articles_with_decay() -> None:
    events = [
        event(1, EventType.IMPRESSION, "a", NOW - timedelta(hours=2 * DAY)),
        event(2, EventType.CLICK, "a", NOW - timedelta(hours=DAY)),
        event(3, EventType.IMPRESSION, "b", NOW - timedelta(hours=DAY)),
        event(4, EventType.CLICK, "b", NOW + timedelta(seconds=1)),  # the future
        event(5, EventType.CLICK, "gone", NOW - timedelta(hours=1)),  # not a row
        event(6, EventType.READ, "a", NOW - timedelta(hours=1), dwell_s=5.0),  # neither
    ]
    clicks, shown = popularity_at({"a": 0, "b": 1}, events, NOW.timestamp(), DAY)
    np.testing.assert_allclose(clicks, [0.5, 0.0])
    np.testing.assert_allclose(shown, [0.25, 0.5])


def test_no_rows_no_counts() -> None:
    clicks, shown = popularity_at({}, duplicated_impression(), NOW.timestamp(), DAY)
    assert clicks.shape == shown.shape == (0,)


def test_the_refit_survives_a_duplicated_impression() -> None:
    """The issue end to end: the training impressions the refit job builds, without IndexError."""
    infos = [ArticleInfo(make_article(a), a, np.eye(4, dtype=np.float32)[n]) for n, a in enumerate("ab")]
    store = InMemoryEventStore()
    store.add(duplicated_impression())
    impressions = Recommender(CandidateMatrix(infos, 4), store).training_impressions()
    assert impressions
    for imp in impressions:
        assert len(imp.popularity) == len(imp.exposure) == len(imp.rows) == len(imp.labels)


def test_the_same_impression_sent_twice_counts_as_one_exposure() -> None:
    """Two event ids for one reader seeing one article at one moment are one exposure; another
    reader at that moment, or the same reader later, is another."""
    at = NOW - timedelta(hours=DAY)
    twice = [event(1, EventType.IMPRESSION, "a", at), event(2, EventType.IMPRESSION, "a", at)]
    other = Event(event_id="e-1", reader_id="s", type=EventType.IMPRESSION, article_id="a", at=at)
    later = event(3, EventType.IMPRESSION, "a", at + timedelta(seconds=1))
    _, shown = popularity_at({"a": 0}, twice, NOW.timestamp(), DAY)
    assert shown[0] == pytest.approx(0.5)
    _, shown = popularity_at({"a": 0}, [*twice, other, later], NOW.timestamp(), DAY)
    assert shown[0] == pytest.approx(0.5 * 2 + 0.5 ** ((DAY * 3600 - 1) / 3600 / DAY))
