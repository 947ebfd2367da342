"""The `SummaryRepository` contract, run on every store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from briefing import (
    FileSummaryStore,
    InMemorySummaryStore,
    Status,
    Summary,
    SummaryRepository,
    SummarySentence,
)
from briefing.summaries import summary_id
from tests.conftest import DATABASES, migrated

T0 = datetime(2026, 11, 19, 12, tzinfo=UTC)


def make_summary(article_id: str = "pol-0011", minutes: int = 0, prompt: str = "article@1") -> Summary:
    return Summary(
        id=summary_id(article_id, "abc123", prompt, "SmolLM2", None),
        kind="article",
        article_id=article_id,
        content_hash="abc123",
        prompt=prompt,
        model="SmolLM2",
        adapter=None,
        sentences=(SummarySentence("The council voted 27 to 22.", 0.91, (f"{article_id}@abc123#0",)),),
        dropped=(
            SummarySentence("The mayor resigned.", 0.31, (f"{article_id}@abc123#1",), missing=("resigned",)),
        ),
        created_at=T0 + timedelta(minutes=minutes),
        seconds=0.8,
    )


STORES: dict[str, Callable[[Path], SummaryRepository]] = {
    "memory": lambda _: InMemorySummaryStore(),
    "files": lambda tmp: FileSummaryStore(tmp / "summaries"),
}


@pytest.fixture(params=[*sorted(STORES), *(f"sql-{kind}" for kind in DATABASES)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SummaryRepository]:
    if request.param in STORES:
        yield STORES[request.param](tmp_path)
        return
    from server.stores import SqlSummaryStore

    for engine in migrated(request.param.removeprefix("sql-"), tmp_path):
        yield SqlSummaryStore(engine)


def test_a_summary_round_trips_unchanged(store: SummaryRepository) -> None:
    summary = make_summary()
    assert store.put(summary) == summary
    assert store.get(summary.id) == summary
    assert store.get("pol-0011--000000000000") is None


def test_put_replaces_a_draft_and_find_lists_newest_first(store: SummaryRepository) -> None:
    old, new = make_summary(), make_summary(minutes=5, prompt="article-one-sentence@1")
    store.put(old)
    store.put(new)
    again = store.put(replace(old, seconds=2.0))
    assert again.seconds == 2.0 and again.version == 1  # a replaced draft is a new version
    assert [s.prompt for s in store.find("pol-0011")] == ["article-one-sentence@1", "article@1"]
    assert store.find("spo-0001") == []


def test_find_matches_the_article_id_exactly(store: SummaryRepository) -> None:
    store.put(make_summary("x:1"))
    store.put(make_summary("x_1"))
    assert [s.article_id for s in store.find("x:1")] == ["x:1"]
    assert [s.article_id for s in store.find("x_1")] == ["x_1"]


def test_a_decision_is_conditional_on_the_version_the_editor_saw(store: SummaryRepository) -> None:
    draft = store.put(make_summary())
    approved = store.decide(draft.with_status(Status.APPROVED, by="edith"), expected_version=0)
    assert approved is not None and approved.version == 1 and approved.reviewed_by == "edith"
    assert store.get(draft.id) == approved
    # a second editor who saw the draft (version 0) is refused, not silently overwriting
    assert store.decide(draft.with_status(Status.REJECTED, by="ed", reason="x"), expected_version=0) is None
    assert store.get(draft.id) == approved


def test_a_rejection_is_final(store: SummaryRepository) -> None:
    draft = store.put(make_summary())
    rejected = store.decide(draft.with_status(Status.REJECTED, by="edith", reason="wrong figure"), 0)
    assert rejected is not None and rejected.reason == "wrong figure"
    assert store.decide(rejected.with_status(Status.APPROVED, by="ed"), rejected.version) is None
    kept = store.put(make_summary())  # the job writes the same draft again: the decision stays
    assert kept.status is Status.REJECTED and store.get(draft.id) == rejected


def test_by_status_is_the_review_queue_oldest_first(store: SummaryRepository) -> None:
    for n, article in enumerate(["a-3", "a-1", "a-2"]):
        store.put(make_summary(article, minutes=n))
    store.decide(make_summary("a-1", minutes=1).with_status(Status.REJECTED), 0)
    assert [s.article_id for s in store.by_status(Status.DRAFT)] == ["a-3", "a-2"]
    assert [s.article_id for s in store.by_status(Status.REJECTED)] == ["a-1"]


def test_the_file_store_leaves_no_partial_files(tmp_path: Path) -> None:
    store = FileSummaryStore(tmp_path)
    store.put(make_summary())
    store.put(replace(make_summary(), seconds=1.0))
    assert [p.suffix for p in tmp_path.rglob("*") if p.is_file()] == [".json"]


def test_an_edit_keeps_the_generated_text_and_round_trips(store: SummaryRepository) -> None:
    summary = store.put(make_summary())
    edited = summary.edited(
        (SummarySentence("The council voted 27 to 22 on Tuesday.", 0.8, ("pol-0011@abc123#0",)),),
        by="edith",
        at=T0 + timedelta(hours=1),
    )
    got = store.decide(edited, summary.version)
    assert got == replace(edited, version=1) == store.get(summary.id)
    assert got.status is Status.EDITED and got.original_text == "The council voted 27 to 22."
    assert got.edited(got.sentences, by="edith", at=T0).original_text == "The council voted 27 to 22."
