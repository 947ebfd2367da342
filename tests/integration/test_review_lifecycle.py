"""The editor's decision is final and nothing is lost, under the shipped policy (drafts may show):
rejected text never reaches a reader, decisions are conditional on the version the editor saw,
no reader request runs the LLM, and retractions never wait for generation. On SQLite and
PostgreSQL, with the real embedder, LLM and litestar's test client."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from briefing import Chat, Completion, GenerationParams, Generator, Status, Summary
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.app import create_app
from server.container import build_jobs, build_service
from server.jobs import has_summary
from server.service import Service
from tests.conftest import DATABASES, _database
from tests.service import DEMO_CLOCK, auth, demo_service

EDITOR, ADMIN = auth("edith", "editor"), auth("ada", "admin")


class Watched:
    """The real generator, counting calls and optionally holding them at a gate (a test's
    way to be inside a generation at a known moment; the generation itself is real)."""

    def __init__(self, inner: Generator) -> None:
        self.inner = inner
        self.calls = 0
        self.gate: threading.Event | None = None
        self.inside = threading.Event()

    @property
    def model(self) -> str:
        return self.inner.model

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        self.calls += 1
        self.inside.set()
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.generate(chats, params, adapter)

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        return self.inner.stream(chat, params, adapter)


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[tuple[Service, Litestar, Watched]]:
    tmp = tmp_path_factory.mktemp(request.param)
    watched = Watched(llamacpp)
    for url in _database(request.param, tmp):
        with demo_service(tmp, url, embedder, chunker, demo_articles, watched) as (settings, service):
            yield service, create_app(settings, service), watched


@pytest.fixture
def client(running: tuple[Service, Litestar, Watched]) -> Iterator[TestClient[Litestar]]:
    with TestClient(running[1]) as client:
        yield client


@pytest.fixture
def service(running: tuple[Service, Litestar, Watched]) -> Service:
    return running[0]


@contextmanager
def drafts_shown(service: Service) -> Iterator[None]:
    """Drafts show in every language for a while (as a passing show gate would let them)."""
    shipped = service.composer.policy
    service.composer.policy = replace(shipped, allow_drafts=True)
    service.cache.drop(lambda _: False)
    try:
        yield
    finally:
        service.composer.policy = shipped
        service.cache.drop(lambda _: False)


def _item(body: dict[str, Any], article_id: str) -> dict[str, Any]:
    return next(i for i in body["items"] if i["article_id"] == article_id)


def test_a_rejected_summary_never_reaches_a_reader(client: TestClient[Litestar], service: Service) -> None:
    reader = auth("r05", "reader")
    first = client.get("/v1/briefing", headers=reader).json()
    article = next(i["article_id"] for i in first["items"] if not i["update"])
    (draft,) = service.summarizer.summarize([article])
    assert not draft.extractive, "the packaged model should write a passing sentence for this test"
    service.forget_article(article)
    shown = _item(client.get("/v1/briefing", headers=reader).json(), article)
    # The shipped policy: the draft shows unreviewed only where the measured show gate lets every
    # sentence of it through; otherwise it waits for an editor.
    language = service.indexer.index.get([article])[article].article.language
    live = service.composer.policy.summary_shows(draft, language)
    assert (shown["source"], shown["summary_id"]) == (("draft", draft.id) if live else ("extractive", None))
    with drafts_shown(service):
        _a_rejected_draft_stops_showing(client, service, reader, article, draft)


def _a_rejected_draft_stops_showing(
    client: TestClient[Litestar], service: Service, reader: dict[str, str], article: str, draft: Summary
) -> None:
    service.forget_article(article)
    shown = _item(client.get("/v1/briefing", headers=reader).json(), article)
    assert (shown["source"], shown["summary_id"]) == ("draft", draft.id)
    reason = "The figure in the first sentence is wrong."
    rejected = client.post(
        f"/v1/review/summaries/{draft.id}/reject?version={draft.version}",
        json={"reason": reason},
        headers=EDITOR,
    )
    assert rejected.status_code == 200, rejected.text
    after = _item(client.get("/v1/briefing", headers=reader).json(), article)
    assert after["source"] == "extractive" and after["summary_id"] is None
    # the job that writes drafts runs again: the decision stands
    service.summarizer.summarize([article], refresh=True)
    service.forget_article(article)
    again = _item(client.get("/v1/briefing", headers=reader).json(), article)
    assert again["summary_id"] != draft.id
    assert service.summaries.get(draft.id).status is Status.REJECTED  # type: ignore[union-attr]
    # the review page says why, and offers no decision any more
    client.cookies.set("briefing_token", EDITOR["Authorization"])
    page = client.get(f"/editor/summaries/{draft.id}").text
    client.cookies.clear()
    assert reason in page and 'data-testid="approve"' not in page
    late = client.post(f"/v1/review/summaries/{draft.id}/approve", headers=EDITOR)
    assert late.status_code == 409 and "final" in late.text


def test_an_approval_cannot_undo_a_retraction(client: TestClient[Litestar], service: Service) -> None:
    article = "loc-0013"
    (draft,) = service.summarizer.summarize([article])
    seen = client.get(f"/v1/review/summaries/{draft.id}", headers=EDITOR).json()
    assert client.delete(f"/v1/admin/articles/{article}", headers=ADMIN).status_code == 200
    late = client.post(f"/v1/review/summaries/{draft.id}/approve?version={seen['version']}", headers=EDITOR)
    assert late.status_code == 409, late.text
    assert service.summaries.get(draft.id).status is Status.RETRACTED  # type: ignore[union-attr]


def test_decisions_are_conditional_on_the_version_the_editor_saw(
    client: TestClient[Litestar], service: Service
) -> None:
    (draft,) = service.summarizer.summarize(["spo-0004"])
    version = draft.version
    outcomes: list[int] = []

    def decide(path: str, body: dict[str, str] | None) -> None:
        url = f"/v1/review/summaries/{draft.id}/{path}?version={version}"
        outcomes.append(client.post(url, json=body, headers=EDITOR).status_code)

    threads = [
        threading.Thread(target=decide, args=("approve", None)),
        threading.Thread(target=decide, args=("reject", {"reason": "duplicate"})),
        threading.Thread(target=decide, args=("edit", {"text": "An edit made at the same time."})),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == [200, 409, 409]  # one decision wins; the others are told
    stored = service.summaries.get(draft.id)
    assert stored is not None and stored.version == version + 1
    stale = client.post(f"/v1/review/summaries/{draft.id}/approve?version={version}", headers=EDITOR)
    assert stale.status_code == 409 and ("reload" in stale.text or "final" in stale.text)


def test_an_edited_story_update_is_labelled_as_reviewed(
    client: TestClient[Litestar], service: Service
) -> None:
    reader = auth("r02", "reader")  # read day 1 of the Nordkai ferry story
    body = client.get("/v1/briefing", headers=reader).json()
    item = next(i for i in body["items"] if i["update"])
    read = [h.article.id for h in service.recommender.profile("r02", service.clock()).history]
    update = service.summarizer.update(item["article_id"], read)
    assert update is not None
    text = "Editors wrote this update."
    edited = client.post(
        f"/v1/review/summaries/{update.id}/edit?version={update.version}", json={"text": text}, headers=EDITOR
    )
    assert edited.status_code == 200, edited.text
    service.cache.drop(lambda b: False)
    shown = _item(client.get("/v1/briefing", headers=reader).json(), item["article_id"])
    assert (shown["update"], shown["source"], shown["sentences"][0]["text"]) == (True, "edited", text)
    client.cookies.set("briefing_token", reader["Authorization"])
    page = client.get("/").text
    client.cookies.clear()
    assert "reviewed by an editor and edited" in page


def test_event_ids_are_per_reader(client: TestClient[Litestar], service: Service) -> None:
    def one(reader: str) -> dict[str, Any]:
        event = {
            "event_id": "c1",
            "type": "click",
            "article_id": "pol-0011",
            "at": "2026-11-19T21:00:00+01:00",
        }
        return client.post("/v1/events", json={"events": [event]}, headers=auth(reader, "reader")).json()

    assert one("r21") == {"stored": 1, "duplicates": 0}
    assert one("r22") == {"stored": 1, "duplicates": 0}  # not r21's event
    assert [e.reader_id for e in service.events.for_reader("r22") if e.event_id == "c1"] == ["r22"]


def test_no_reader_request_runs_the_llm_and_first_requests_compose_once(
    client: TestClient[Litestar], running: tuple[Service, Litestar, Watched]
) -> None:
    service, _, watched = running
    before = watched.calls
    composed: list[str] = []
    real = service.composer.compose

    def counting(reader_id: str, *args: Any, **kwargs: Any) -> Any:
        composed.append(reader_id)
        return real(reader_id, *args, **kwargs)

    service.composer.compose = counting  # type: ignore[method-assign]
    try:
        reader = auth("r23", "reader")
        answers: list[int] = []
        threads = [
            threading.Thread(
                target=lambda: answers.append(client.get("/v1/briefing", headers=reader).status_code)
            )
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        service.composer.compose = real  # type: ignore[method-assign]
    assert answers == [200, 200, 200]
    assert composed == ["r23"]  # single flight
    assert watched.calls == before  # drafts come from jobs, never from a request


def test_a_retraction_does_not_wait_for_the_llm(
    client: TestClient[Litestar], running: tuple[Service, Litestar, Watched], tmp_path: Any
) -> None:
    service, _, watched = running
    from server.settings import Settings

    jobs = build_jobs(Settings.from_env({"DATA_DIR": str(tmp_path), "SUMMARIZE_PER_RUN": "1"}), service)
    newest = sorted(service.recommender.matrix.infos, key=lambda i: i.article.published_at, reverse=True)
    article = next(i.article.id for i in newest if not has_summary(service, i.article))  # the job's pick
    watched.gate, watched.inside = threading.Event(), threading.Event()
    job = threading.Thread(target=jobs.run_now, args=("summarize-new",))
    job.start()
    try:
        assert watched.inside.wait(60), "the job never reached the LLM"
        reader = client.get("/v1/briefing", headers=auth("r24", "reader"))
        retracted = client.delete(f"/v1/admin/articles/{article}", headers=ADMIN)
        assert reader.status_code == 200 and retracted.status_code == 200, retracted.text
        assert job.is_alive()  # all of it happened while the job sat in the LLM
    finally:
        watched.gate.set()
        job.join(120)
        watched.gate = None
    assert all(s.status is Status.RETRACTED for s in service.summaries.find(article))


def test_reader_input_cannot_break_the_refit_or_a_restart(
    client: TestClient[Litestar], running: tuple[Service, Litestar, Watched], tmp_path: Any
) -> None:
    service, _, watched = running
    from server.settings import Settings

    at = "2026-11-19T21:30:00+01:00"
    events = [
        {"event_id": "x0", "type": "click", "article_id": "pol-0011", "at": "2026-11-19T21:00:00+01:00"},
        {"event_id": "x1", "type": "impression", "article_id": "pol-0011", "at": at},
        {"event_id": "x2", "type": "impression", "article_id": "pol-0011", "at": at},
    ]
    assert (
        client.post("/v1/events", json={"events": events}, headers=auth("r25", "reader")).status_code == 200
    )
    jobs = build_jobs(Settings.from_env({"DATA_DIR": str(tmp_path)}), service)
    assert jobs.run_now("refit-ranker")["outcome"] == "ok"
    url = service.engine.url.render_as_string(hide_password=False)
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "DATABASE_URL": url, "CLOCK_START": DEMO_CLOCK})
    restarted = build_service(settings, indexer=service.indexer, generator=watched)
    try:
        assert restarted.briefing("r25").briefing.items
    finally:
        restarted.close()
        restarted.engine.dispose()
