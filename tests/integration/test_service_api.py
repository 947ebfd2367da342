"""The HTTP API end to end on litestar's test client, on SQLite and on PostgreSQL: roles, bad
payloads, idempotent events, editor decisions reaching readers, retraction and erasure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from briefing import Generator, Status
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.app import create_app
from server.auth import issue_token
from server.container import build_jobs
from server.jobs import Jobs, JobSpec
from server.review import Risk
from server.service import Service
from server.settings import Settings
from tests.conftest import DATABASES, _database
from tests.service import SECRET, auth, demo_service

READER, OTHER = auth("r01", "reader"), auth("r02", "reader")
EDITOR, ADMIN = auth("edith", "editor"), auth("ada", "admin")


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[tuple[Service, Litestar]]:
    tmp = tmp_path_factory.mktemp(request.param)
    for url in _database(request.param, tmp):
        with demo_service(tmp, url, embedder, chunker, demo_articles, llamacpp, MAX_BODY_BYTES="200000") as (
            settings,
            service,
        ):
            yield service, create_app(settings, service)


@pytest.fixture
def client(running: tuple[Service, Litestar]) -> Iterator[TestClient[Litestar]]:
    with TestClient(running[1]) as client:
        yield client


@pytest.fixture
def service(running: tuple[Service, Litestar]) -> Service:
    return running[0]


def event(n: int, reader: str = "r01", **changes: Any) -> dict[str, Any]:
    return {
        "event_id": f"api-{reader}-{n}",
        "reader_id": reader,
        "type": "click",
        "article_id": "pol-0011",
        "at": "2026-11-19T21:00:00+01:00",
        **changes,
    }


def test_a_reader_gets_their_own_briefing_with_citations_and_the_repeat_is_cached(
    client: TestClient[Litestar], service: Service
) -> None:
    first = client.get("/v1/briefing", headers=READER)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["reader_id"] == "r01" and body["items"]
    for item in body["items"]:
        assert item["sentences"] and all(s["citations"] and 0 <= s["score"] <= 1 for s in item["sentences"])
    again = client.get("/v1/briefing", headers=READER)
    assert (first.headers["x-briefing-cache"], again.headers["x-briefing-cache"]) == ("miss", "hit")
    assert again.json()["items"] == body["items"]
    service.visits.flush()
    served = service.served.for_reader("r01")
    assert [s["cached"] for s in served[-2:]] == [False, True]
    assert [i["article_id"] for i in served[-1]["items"]] == [i["article_id"] for i in body["items"]]


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/v1/briefing", {}, 401),
        ("GET", "/v1/briefing", {"Authorization": "Bearer not-a-token"}, 401),
        ("GET", "/v1/briefing", EDITOR, 403),  # staff have no briefing of their own
        ("GET", "/v1/review/queue", READER, 403),
        ("GET", "/v1/review/queue", ADMIN, 403),  # roles are separate
        ("GET", "/editor", READER, 403),
        ("DELETE", "/v1/admin/readers/r02", EDITOR, 403),
        ("DELETE", "/v1/admin/readers/r02", READER, 403),
        ("DELETE", "/v1/admin/articles/pol-0011", EDITOR, 403),
        ("POST", "/v1/admin/jobs/retention/run", EDITOR, 403),
        ("GET", "/v1/admin/jobs", READER, 403),
    ],
)
def test_role_boundaries(
    client: TestClient[Litestar], method: str, path: str, headers: dict[str, str], status: int
) -> None:
    response = client.request(method, path, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_token_signed_with_another_key_is_refused(client: TestClient[Litestar]) -> None:
    forged = {"Authorization": f"Bearer {issue_token('another-key', 'r01', 'admin')}"}
    assert client.delete("/v1/admin/readers/r02", headers=forged).status_code == 401


def test_events_are_idempotent_by_client_event_id(client: TestClient[Litestar], service: Service) -> None:
    batch = {"events": [event(1), event(2, type="read", dwell_s=40.0)]}
    assert client.post("/v1/events", json=batch, headers=READER).json() == {"stored": 2, "duplicates": 0}
    assert client.post("/v1/events", json=batch, headers=READER).json() == {"stored": 0, "duplicates": 2}
    assert sum(e.event_id.startswith("api-r01-") for e in service.events.for_reader("r01")) == 2


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        ({"events": [event(10, type="like")]}, 400, "type"),
        ({"events": [event(11, at="yesterday")]}, 400, "at"),
        ({"events": [event(12, dwell_s="long")]}, 400, "dwell_s"),
        ({"events": [event(13, colour="red")]}, 400, "colour"),
        ({"events": [event(14)], "extra": 1}, 400, "extra"),
        ({"events": []}, 400, "events"),
        ({"events": [event(15), event(16, reader="r02")]}, 403, "r02"),
        ({"events": [event(17, note="x" * 300_000)]}, 413, ""),
    ],
)
def test_bad_event_payloads_are_refused_with_a_reason_and_store_nothing(
    client: TestClient[Litestar], service: Service, payload: dict[str, Any], status: int, needle: str
) -> None:
    before = service.events.count()
    response = client.post("/v1/events", json=payload, headers=READER)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert needle in response.text
    assert service.events.count() == before


def test_an_editors_edit_reaches_the_readers_next_briefing(
    client: TestClient[Litestar], service: Service
) -> None:
    shown = client.get("/v1/briefing", headers=OTHER).json()
    target = next(i for i in shown["items"] if not i["update"])
    assert target["source"] == "extractive"  # reviewed-only policy, nothing reviewed yet
    (draft,) = service.summarizer.summarize([target["article_id"]])
    queue = client.get("/v1/review/queue", headers=EDITOR).json()
    assert draft.id in {s["id"] for s in queue}
    risks = [Risk(**q["risk"]).key for q in queue]
    assert risks == sorted(risks)  # riskiest first, as on the queue page
    (mine,) = [q for q in queue if q["id"] == draft.id]
    assert len(mine["verdicts"]) == len(mine["sentences"]) and all("rules" in v for v in mine["verdicts"])
    detail = client.get(f"/v1/review/summaries/{draft.id}", headers=EDITOR).json()
    assert all(s["evidence"] for s in detail["sentences"])  # each sentence beside its evidence
    text = f"Editors checked this: {target['title']}."
    edited = client.post(f"/v1/review/summaries/{draft.id}/edit", json={"text": text}, headers=EDITOR)
    assert edited.status_code == 200, edited.text
    assert edited.json()["status"] == "edited" and "+Editors checked this" in edited.json()["diff"]
    after = client.get("/v1/briefing", headers=OTHER).json()
    item = next(i for i in after["items"] if i["article_id"] == target["article_id"])
    assert (item["source"], item["sentences"][0]["text"]) == ("edited", text)
    assert item["sentences"][0]["citations"]
    audit = service.audit.entries(target=draft.id)
    assert audit[0]["action"] == "edit" and audit[0]["actor"] == "edith"


def test_review_decisions_on_unknown_or_malformed_requests(client: TestClient[Litestar]) -> None:
    assert client.post("/v1/review/summaries/nope--1/approve", headers=EDITOR).status_code == 404
    missing = client.post("/v1/review/summaries/nope--1/edit", json={"txt": "x"}, headers=EDITOR)
    assert missing.status_code == 400 and "text" in missing.text


def test_retracting_an_article_retires_its_summaries_and_drops_cached_briefings(
    client: TestClient[Litestar], service: Service
) -> None:
    shown = client.get("/v1/briefing", headers=auth("r03", "reader")).json()
    article = shown["items"][0]["article_id"]
    (draft,) = service.summarizer.summarize([article])
    response = client.delete(f"/v1/admin/articles/{article}", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["summaries"] >= 1 and response.json()["cached_briefings"] >= 1
    again = client.get("/v1/briefing", headers=auth("r03", "reader"))
    assert again.headers["x-briefing-cache"] == "miss"
    assert article not in {i["article_id"] for i in again.json()["items"]}
    assert service.summaries.get(draft.id).status is Status.RETRACTED  # type: ignore[union-attr]
    assert draft.id not in {s["id"] for s in client.get("/v1/review/queue", headers=EDITOR).json()}
    assert client.post(f"/v1/review/summaries/{draft.id}/approve", headers=EDITOR).status_code == 409
    assert client.delete(f"/v1/admin/articles/{article}", headers=ADMIN).status_code == 404


def test_erasing_a_reader_removes_events_visits_and_briefings(
    client: TestClient[Litestar], service: Service
) -> None:
    who = auth("r04", "reader")
    client.post("/v1/events", json={"events": [event(1, reader="r04")]}, headers=who)
    client.get("/v1/briefing", headers=who)
    response = client.delete("/v1/admin/readers/r04", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["events"] >= 1 and response.json()["briefings"] == 1
    assert service.events.for_reader("r04") == [] and service.served.for_reader("r04") == []
    assert not service.readers.exists("r04")
    assert client.delete("/v1/admin/readers/r04", headers=ADMIN).status_code == 404
    assert service.audit.entries(target="r04")[0]["action"] == "erase"


def test_pushed_articles_are_validated_like_ingest(client: TestClient[Litestar], service: Service) -> None:
    good = {
        "id": "api-0001",
        "url": "https://havnby.example/local/api-0001",
        "title": "Harbour pilots get a new boat",
        "body": "The harbour pilots of Havnby took delivery of a new 14-metre pilot boat on Thursday.",
        "published_at": "2026-11-19T20:00:00+01:00",
        "section": "local",
        "language": "en",
        "publication": "Havnby Post",
    }
    bad = {**good, "id": "api-0002", "url": "not a url", "published_at": "soon"}
    refused = client.post("/v1/admin/articles", json={"articles": [good, bad]}, headers=ADMIN)
    assert refused.status_code == 400
    fields = {e["field"] for e in refused.json()["errors"]}
    assert {"url", "published_at"} <= fields
    assert service.indexer.index.get(["api-0001"]) == {}  # nothing of a refused push is stored
    pushed = client.post("/v1/admin/articles", json={"articles": [good]}, headers=ADMIN)
    assert pushed.json() == {"new": 1, "updated": 0, "unchanged": 0}
    assert "api-0001" in service.indexer.index.get(["api-0001"])


def test_probes_metrics_and_schema(client: TestClient[Litestar]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["index"] == "ok"
    client.get("/health")
    assert "litestar_requests_total" in client.get("/metrics", headers=ADMIN).text  # admins only
    paths = client.get("/schema/openapi.json").json()["paths"]
    assert {"/v1/briefing", "/v1/events", "/v1/review/queue", "/v1/admin/jobs"} <= set(paths)


def test_a_failing_job_is_retried_with_backoff_and_reported(
    running: tuple[Service, Litestar], tmp_path: Path
) -> None:
    service, _ = running
    calls: list[int] = []

    def flaky(_: Service) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("feed answered 503")
        return {"fetched": 3}

    jobs = Jobs(
        service, [JobSpec("flaky-feed", 0, "fails once", flaky)], retries=2, backoff_s=0.2, lock_dir=tmp_path
    )
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path), "JWT_SECRET": SECRET, "RATE_LIMIT_PER_MINUTE": "0"}
    )
    with TestClient(create_app(settings, service, jobs)) as client:
        first = client.post("/v1/admin/jobs/flaky-feed/run", headers=ADMIN).json()
        assert (first["outcome"], first["error"]) == ("failed", "RuntimeError: feed answered 503")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(calls) < 2:
            time.sleep(0.1)
        time.sleep(0.3)
        runs = client.get("/v1/admin/jobs", headers=ADMIN).json()["runs"]
    flaky_runs = sorted((r for r in runs if r["job"] == "flaky-feed"), key=lambda r: r["id"])
    assert [(r["attempt"], r["trigger"], r["outcome"]) for r in flaky_runs] == [
        (1, "manual", "failed"),
        (2, "retry", "ok"),
    ]
    assert flaky_runs[1]["detail"] == {"fetched": 3}


def test_the_service_jobs_run_and_record_what_they_did(
    client: TestClient[Litestar], running: tuple[Service, Litestar], tmp_path: Path
) -> None:
    service, _ = running
    # the precompute job writes missing drafts with the LLM: one reader's worth is enough here
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "JOB_BUDGET_S": "1"})
    jobs = build_jobs(settings, service)
    for name in ("refresh-candidates", "refit-ranker", "retention", "precompute-briefings"):
        run = jobs.run_now(name)
        assert run["outcome"] == "ok", run["error"]
    assert jobs.runs("precompute-briefings")[0]["detail"]["readers"] >= 1
    # A precomputed briefing is served from the cache on the reader's next visit.
    now = service.clock()  # a reader coming back after their last visit ended
    active = service.readers.active(now - timedelta(days=7))
    visitor = next(r for r in active if service.visits.current(r, now).new_session)
    response = client.get("/v1/briefing", headers=auth(visitor, "reader"))
    assert response.status_code == 200 and response.headers["x-briefing-cache"] == "hit"


def test_callers_are_rate_limited_with_a_problem_answer(
    running: tuple[Service, Litestar], tmp_path: Path
) -> None:
    service, _ = running
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path), "JWT_SECRET": SECRET, "RATE_LIMIT_PER_MINUTE": "3"}
    )
    with TestClient(create_app(settings, service)) as client:
        codes = [client.get("/v1/review/queue", headers=EDITOR).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert client.get("/v1/review/queue", headers=auth("other-editor", "editor")).status_code == 200
        assert client.get("/health").status_code == 200  # probes are not limited
