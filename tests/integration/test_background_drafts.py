"""Drafting in the background, with the real embedder, LLM and SQLite: readers get the articles'
own words until a draft exists and the draft as soon as it does; the job's progress is on
/ready; a stop (Ctrl-C) ends the job at its next item and the LLM starts no new call."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from briefing import GenerationError, GenerationParams, Generator
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.app import create_app
from server.container import build_jobs
from server.jobs import Jobs, _draft
from server.parts import Stoppable
from server.service import Service
from tests.service import auth, demo_service

pytestmark = pytest.mark.slow
READER = auth("r03", "reader")  # a new reader: new stories, no story updates
WAIT_S = 300.0  # a bound for a stuck test on a busy machine, not a speed assumption


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[tuple[Service, Jobs, Litestar]]:
    tmp = tmp_path_factory.mktemp("drafts")
    stop = threading.Event()
    # drafts forced on: what is tested is when a draft reaches readers, not the show gate's verdict
    env = {"GROUNDING_LIKELIHOOD": "off", "SUMMARIZE_PER_RUN": "6", "BRIEFING_ALLOW_DRAFTS": "1"}
    with demo_service(
        tmp, f"sqlite:///{tmp / 'b.db'}", embedder, chunker, demo_articles, Stoppable(llamacpp, stop), **env
    ) as (settings, service):
        jobs = build_jobs(settings, service, stop=stop)
        yield service, jobs, create_app(settings, service, jobs)


@pytest.fixture
def client(running: tuple[Service, Jobs, Litestar]) -> Iterator[TestClient[Litestar]]:
    with TestClient(running[2]) as client:
        yield client


def test_readers_get_own_words_until_a_draft_exists(
    client: TestClient[Litestar], running: tuple[Service, Jobs, Litestar]
) -> None:
    service = running[0]
    before = client.get("/v1/briefing", headers=READER).json()["items"]
    assert before and all(i["source"] == "extractive" and i["summary_id"] is None for i in before)
    picked = next(i["article_id"] for i in before if not i["update"])  # a story update has its own text
    article = service.indexer.index.get([picked])[picked].article
    assert _draft(service, article, 1, 1)  # what summarize-new does for each article
    (draft,) = [s for s in service.summaries.find(article.id) if s.kind == "article"]
    after = client.get("/v1/briefing", headers=READER)
    assert after.headers["X-Briefing-Cache"] == "miss"  # the extractive briefing was dropped
    items = {i["article_id"]: i for i in after.json()["items"]}
    assert items[article.id]["summary_id"] == draft.id
    assert all(i["summary_id"] is None for a, i in items.items() if a != article.id)


def test_progress_on_ready_and_a_stop_at_the_next_item(
    client: TestClient[Litestar], running: tuple[Service, Jobs, Litestar]
) -> None:
    service, jobs = running[0], running[1]
    assert client.get("/ready").json()["drafts"] is None  # not run in this process yet
    result: dict[str, Any] = {}
    job = threading.Thread(target=lambda: result.update(jobs.run_now("summarize-new")))
    job.start()
    deadline = time.monotonic() + WAIT_S
    while (jobs.control.progress("summarize-new") or {}).get("done", 0) < 1:
        assert time.monotonic() < deadline and job.is_alive(), "no draft was reported"
        time.sleep(0.05)
    drafts = client.get("/ready").json()["drafts"]
    assert drafts["done"] >= 1 and drafts["waiting"] > 0
    jobs.halt()  # what Ctrl-C does first
    job.join(WAIT_S)
    detail = result["detail"]
    assert result["outcome"] == "ok" and detail["stopped"] is True
    assert detail["summarized"] + detail["failed"] < 6  # it did not go on through the run
    final = client.get("/ready").json()["drafts"]
    assert (final["done"], final["current"]) == (detail["summarized"], None)
    with pytest.raises(GenerationError, match="shutting down"):
        service.summarizer.generator.generate([[{"role": "user", "content": "hi"}]], GenerationParams())
