"""Known answers on the demo newsroom's planted readers (data/demo/readers.jsonl)."""

from __future__ import annotations

import threading
from datetime import datetime

import pytest

from indexing import Indexer
from recsys import CandidateMatrix, InMemoryEventStore, Recommender, load_readers
from tests.conftest import DEMO

NOW = datetime.fromisoformat("2026-11-19T23:00:00+01:00")


@pytest.fixture(scope="module")
def recommender(demo: Indexer) -> Recommender:
    store = InMemoryEventStore()
    load_readers(DEMO / "readers.jsonl", store)
    recommender = Recommender(CandidateMatrix.from_index(demo.index, demo.embedder.dim), store)
    recommender.refresh(recommender.matrix, NOW)
    return recommender


@pytest.mark.parametrize("ranker", ["content", "learned"])
def test_sport_and_local_reader_gets_sport_and_local(recommender: Recommender, ranker: str) -> None:
    items = recommender.recommend("r01", NOW, k=5, ranker=ranker)
    assert len(items) == 5 and {i.section for i in items} <= {"sport", "local"}, items


def test_a_story_read_without_news_does_not_come_back(recommender: Recommender) -> None:
    # r20 read the whole Nordvik Laks takeover story, its last article included.
    stories = {i.story_id for i in recommender.recommend("r20", NOW, k=50)}
    assert "story-bus-0001" not in stories


def test_the_same_story_with_a_follow_up_comes_back_first(recommender: Recommender) -> None:
    # r02 read only day 1 of the Nordkai ferry story; day 3 brought the council's decision.
    first = recommender.recommend("r02", NOW, k=5)[0]
    assert (first.story_id, first.update) == ("story-pol-0001", True)
    assert first.article_id == "pol-0011" and "new in a story you follow" in first.reason


def test_new_reader_gets_fresh_popular_stories(recommender: Recommender) -> None:
    items = recommender.recommend("r03", NOW, k=5)
    assert len(items) == 5 and all(i.reason == "popular and new" for i in items)


def test_norwegian_reader_gets_norwegian(recommender: Recommender) -> None:
    items = recommender.recommend("r04", NOW, k=5)
    assert items and all(i.article_id.startswith("nob-") for i in items)


def test_explanations_name_what_was_read(recommender: Recommender) -> None:
    reasons = [i.reason for i in recommender.recommend("r01", NOW, k=5)]
    assert any(r.startswith("because you read “") for r in reasons), reasons


def test_requests_score_one_snapshot_while_refreshes_swap_it(demo: Indexer) -> None:
    """Refreshes (ingest, the hourly job) swap the matrix and rankers while requests score: each
    request must see one whole snapshot (reading the matrix twice across a swap raised IndexError)."""
    store = InMemoryEventStore()
    load_readers(DEMO / "readers.jsonl", store)
    full = CandidateMatrix.from_index(demo.index, demo.embedder.dim)
    small = CandidateMatrix(full.infos[:20], demo.embedder.dim)
    recommender = Recommender(full, store)
    recommender.refresh(full, NOW, fit=["learned"])
    errors: list[BaseException] = []
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            for matrix in (small, full):
                recommender.refresh(matrix, NOW, fit=["learned"])

    def read() -> None:
        try:
            for _ in range(150):
                for reader in ("r01", "r02", "r20"):
                    recommender.recommend(reader, NOW, k=5, ranker="learned")
        except BaseException as exc:  # the assertion below reports it
            errors.append(exc)

    swapper = threading.Thread(target=swap)
    readers = [threading.Thread(target=read) for _ in range(2)]
    swapper.start()
    for t in readers:
        t.start()
    for t in readers:
        t.join()
    stop.set()
    swapper.join()
    assert errors == []


def test_a_fit_that_fails_keeps_the_serving_ranker(demo: Indexer) -> None:
    store = InMemoryEventStore()
    load_readers(DEMO / "readers.jsonl", store)
    recommender = Recommender(CandidateMatrix.from_index(demo.index, demo.embedder.dim), store)
    recommender.refresh(recommender.matrix, NOW, fit=["learned"])
    serving = recommender.ranker("learned")

    def broken(*_: object) -> list[object]:
        raise IndexError("bad data in the logs")

    recommender.training_impressions = broken  # type: ignore[method-assign]
    recommender.refresh(recommender.matrix, NOW, fit=["learned"])
    assert recommender.ranker("learned") is serving
    assert recommender.recommend("r01", NOW, k=5)
