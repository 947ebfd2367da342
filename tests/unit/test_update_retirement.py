"""A story update written from an article that was later retracted or updated in place leaves
the editors' queue (server.stores.SqlSummaryStore.retire_updates_from): its id names evidence
no reader's request covers any more, so it could never be shown. On SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Engine

from briefing import Status, Summary, SummarySentence
from briefing.summaries import summary_id
from server.stores import SqlSummaryStore

T0 = datetime(2026, 11, 19, 22, tzinfo=UTC)


def update(
    newest: str, basis: tuple[str, ...], cites: tuple[str, ...], dropped: tuple[str, ...] = ()
) -> Summary:
    """A story update of `newest`: `basis` as stored (read, then earlier developments), its kept
    sentences citing `cites` and its dropped ones `dropped` (chunk ids `article@hash#n`)."""
    return Summary(
        id=summary_id(newest, "h11", "update@2", "SmolLM2", None, basis),
        kind="update",
        article_id=newest,
        content_hash="h11",
        prompt="update@2",
        model="SmolLM2",
        adapter=None,
        sentences=tuple(SummarySentence(f"Sentence from {c}.", 0.9, (c,)) for c in cites),
        dropped=tuple(SummarySentence(f"Dropped from {c}.", 0.2, (c,)) for c in dropped),
        created_at=T0,
        seconds=1.0,
        basis=basis,
    )


def article(article_id: str) -> Summary:
    return replace(
        update(article_id, (), (f"{article_id}@h#0",)),
        id=f"{article_id}--a",
        kind="article",
        prompt="article@1",
    )


def test_a_retraction_retires_every_update_written_from_the_article(engine: Engine) -> None:
    store = SqlSummaryStore(engine)
    day_1_reader = store.put(
        update("pol-0011", ("pol-0001", "pol-0006"), ("pol-0011@h11#0", "pol-0006@h6#0"))
    )
    read_it = store.put(update("pol-0011", ("pol-0006",), ("pol-0011@h11#0",)))  # read pol-0006
    approved = store.put(update("pol-0016", ("pol-0001",), ("pol-0016@h11#0",), dropped=("pol-0006@h6#1",)))
    store.decide(approved.with_status(Status.APPROVED, "edith", T0), expected_version=0)
    other_story = store.put(update("wld-0006", ("wld-0001",), ("wld-0006@h11#0",)))
    own = store.put(article("pol-0006"))  # the article's own summary: `retire` handles it

    retired = store.retire_updates_from("pol-0006", None, T0)

    assert sorted(retired) == sorted([day_1_reader.id, read_it.id, approved.id])
    assert [s.id for s in store.by_status(Status.DRAFT)] == [other_story.id, own.id]
    gone = store.get(day_1_reader.id)
    assert gone is not None and gone.status is Status.RETRACTED and gone.version == 1
    assert (gone.reviewed_by, gone.reviewed_at, gone.reason) == (
        "retraction",
        T0,
        "written from pol-0006, since retracted",
    )
    assert store.retire_updates_from("pol-0006", None, T0) == []  # final: nothing retired twice


def test_an_in_place_update_retires_the_updates_quoting_its_old_version(engine: Engine) -> None:
    store = SqlSummaryStore(engine)
    old = store.put(update("pol-0011", ("pol-0001", "pol-0006"), ("pol-0006@h6#0",)))
    current = store.put(update("pol-0016", ("pol-0001", "pol-0006"), ("pol-0006@h6new#0",)))
    only_read = store.put(update("pol-0021", ("pol-0006",), ("pol-0021@h11#0",)))  # cites no version

    assert store.retire_updates_from("pol-0006", "h6new", T0) == [old.id]
    assert {s.id for s in store.by_status(Status.DRAFT)} == {current.id, only_read.id}
    gone = store.get(old.id)
    assert gone is not None and (gone.reviewed_by, gone.reason) == (
        "update",
        "written from pol-0006, since updated",
    )
