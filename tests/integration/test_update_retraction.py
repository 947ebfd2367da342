"""A retracted earlier development takes its story update out of the editors' queue, and the
next job run writes the update from what remains (issue 16). SQLite, the real embedder and the
packaged LLM, on the Nordkai ferry story alone (three articles) so it stays quick."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from briefing import Generator, Status, Summary
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.service import Actor, Service
from tests.service import demo_service

pytestmark = pytest.mark.slow
NORDKAI = ("pol-0001", "pol-0006", "pol-0011")  # days 1, 2 and 3; r02 read only day 1


@pytest.fixture
def service(
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[Service]:
    story = [a for a in demo_articles if a.id in NORDKAI]
    with demo_service(tmp_path, f"sqlite:///{tmp_path / 'b.db'}", embedder, chunker, story, llamacpp) as (
        _,
        s,
    ):
        s.composer.policy = replace(s.composer.policy, allow_drafts=True)  # the job writes updates
        yield s


def job_run(service: Service) -> Summary:
    """What the precompute job does for r02: compose with the LLM, then the update it stored."""
    now = service.clock()
    briefing = service.compose("r02", now, service.visits.current("r02", now).since, write=True)
    (item,) = briefing.items
    assert item.update and item.article_id == "pol-0011"
    (written,) = [s for s in service.summaries.find("pol-0011") if s.kind == "update" and not s.final]
    return written


def test_a_retracted_development_takes_its_update_out_of_the_queue(service: Service) -> None:
    first = job_run(service)
    assert first.basis == ("pol-0001", "pol-0006")  # read day 1; covers day 2 (and day 3, its own)
    assert first.id in {s.id for s in service.summaries.by_status(Status.DRAFT)}

    done = service.retract(Actor("ada", "admin"), "pol-0006", reason="Wrong council vote count.")

    assert done["updates"] == 1
    assert first.id not in {s.id for s in service.summaries.by_status(Status.DRAFT)}
    gone = service.summaries.get(first.id)
    assert gone is not None and gone.status is Status.RETRACTED
    assert gone.reason == "written from pol-0006, since retracted"
    (entry,) = service.audit.entries(target="pol-0006")
    assert entry["action"] == "retract" and entry["detail"]["retired_updates"] == [first.id]

    again = job_run(service)  # the next job run: the update from what remains
    assert again.id != first.id and again.basis == ("pol-0001",)
    assert {a for s in again.sentences for a in s.articles} == {"pol-0011"}
    assert [s.id for s in service.summaries.by_status(Status.DRAFT) if s.kind == "update"] == [again.id]
