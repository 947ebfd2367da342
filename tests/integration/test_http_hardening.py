"""HTTP hardening on litestar's test client, on SQLite and on PostgreSQL: forged browser writes
(cross-origin forms, text/plain bodies, login CSRF), the bearer scheme and the rate limit's key,
inputs that used to be 500s, request ids and 5xx logging, security headers and cookies, the
OpenAPI schema against what the handlers do, /metrics for admins, and the CLI's errors."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import TestClient

from briefing import Generator, Status
from indexing import Article, Chunker, SentenceTransformerEmbedder
from recsys import Event, EventType
from server.app import create_app
from server.auth import COOKIE, issue_token
from server.cli import main
from server.schema import OtherEvent, ReadEvent
from server.service import Service
from server.settings import Settings
from tests.conftest import DATABASES, _database
from tests.service import SECRET, auth, demo_service

READER, EDITOR, ADMIN = auth("r01", "reader"), auth("edith", "editor"), auth("ada", "admin")
HERE = "http://testserver.local"  # the test client's origin
SAME, SIBLING = {"Origin": HERE}, {"Origin": "http://evil.testserver.local"}


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[tuple[Settings, Service, Litestar]]:
    tmp = tmp_path_factory.mktemp(f"hardening-{request.param}")
    for url in _database(request.param, tmp):
        with demo_service(tmp, url, embedder, chunker, demo_articles, llamacpp) as (settings, service):
            yield settings, service, create_app(settings, service)


@pytest.fixture
def client(running: tuple[Settings, Service, Litestar]) -> Iterator[TestClient[Litestar]]:
    with TestClient(running[2]) as client:  # a fresh cookie jar per test
        yield client


@pytest.fixture
def service(running: tuple[Settings, Service, Litestar]) -> Service:
    return running[1]


@pytest.fixture(scope="module")
def draft_id(running: tuple[Settings, Service, Litestar]) -> str:
    (draft,) = running[1].summarizer.summarize(["pol-0011"])
    return draft.id


def event(n: int, **changes: Any) -> dict[str, Any]:
    at = "2026-11-19T21:00:00+01:00"
    return {"event_id": f"hard-{n}", "type": "click", "article_id": "pol-0011", "at": at, **changes}


def csrf_token(page: str) -> str:
    found = re.search(r'name="_csrf_token" value="([^"]+)"', page)
    assert found, "the page has no CSRF token field"
    return found.group(1)


def sign_in(client: TestClient[Litestar], subject: str, role: str) -> str:
    """Signs the browser in through the login form; returns the CSRF token its pages carry."""
    token = issue_token(SECRET, subject, role, timedelta(hours=1))
    csrf = csrf_token(client.get(f"/login?token={token}").text)
    done = client.post(
        "/login", data={"token": token, "_csrf_token": csrf}, headers=SAME, follow_redirects=False
    )
    assert done.status_code == 303 and COOKIE in client.cookies, done.text
    return csrf


# 1. Forged browser writes ------------------------------------------------------------------------


def test_an_editor_form_posted_from_another_origin_is_refused_and_not_recorded(
    client: TestClient[Litestar], service: Service, draft_id: str
) -> None:
    sign_in(client, "edith", "editor")
    page = client.get(f"/editor/summaries/{draft_id}")
    assert page.status_code == 200, page.text
    version = re.search(r'name="version" value="(\d+)"', page.text)
    form = {
        "action": "approve",
        "_csrf_token": csrf_token(page.text),
        "version": version[1] if version else "0",
    }
    path = f"/editor/summaries/{draft_id}"
    for headers in (SIBLING, {"Referer": "http://evil.testserver.local/x"}, {}, {"Origin": "null"}):
        refused = client.post(path, data=form, headers=headers)
        assert refused.status_code == 403, (headers, refused.text)
    assert client.post(path, data={**form, "_csrf_token": "forged"}, headers=SAME).status_code == 403
    assert service.summaries.get(draft_id).status is Status.DRAFT  # type: ignore[union-attr]
    assert service.audit.entries(target=draft_id) == []
    # The editor's own page still works: same origin, the page's token.
    done = client.post(path, data=form, headers=SAME, follow_redirects=False)
    assert done.status_code == 303, done.text
    assert service.summaries.get(draft_id).status is Status.APPROVED  # type: ignore[union-attr]


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_endpoints_accept_only_application_json(
    client: TestClient[Litestar], service: Service, content_type: str | None
) -> None:
    before = service.events.count()
    body = json.dumps({"events": [event(1)]})
    headers = {**READER, **({"Content-Type": content_type} if content_type else {})}
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert service.events.count() == before


def test_a_no_cors_fetch_with_the_readers_cookie_is_refused(
    client: TestClient[Litestar], service: Service
) -> None:
    sign_in(client, "r01", "reader")
    before = service.events.count()
    body = json.dumps({"events": [event(2)]})
    for headers in (
        {**SIBLING, "Content-Type": "text/plain"},
        {**SIBLING, "Content-Type": "application/json"},
    ):
        assert client.post("/v1/events", content=body, headers=headers).status_code == 403
    assert service.events.count() == before


def test_signing_in_is_a_post_from_this_origin_and_a_link_only_shows_the_form(
    client: TestClient[Litestar],
) -> None:
    token = issue_token(SECRET, "r01", "reader", timedelta(hours=1))
    page = client.get(f"/login?token={token}")
    assert page.status_code == 200 and 'action="/login"' in page.text and token in page.text
    assert COOKIE not in client.cookies and "no-store" in page.headers["cache-control"]
    csrf = csrf_token(page.text)
    forged = client.post("/login", data={"token": token, "_csrf_token": csrf}, headers=SIBLING)
    assert forged.status_code == 403 and COOKIE not in client.cookies
    assert client.post("/login", data={"token": token}, headers=SAME).status_code == 403  # no CSRF token
    done = client.post(
        "/login", data={"token": token, "_csrf_token": csrf}, headers=SAME, follow_redirects=False
    )
    assert (done.status_code, done.headers["location"]) == (303, "/")
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert client.get("/v1/briefing").status_code == 200


def test_bearer_clients_need_no_origin_or_csrf_token(client: TestClient[Litestar]) -> None:
    response = client.post("/v1/events", json={"events": [event(3)]}, headers=READER)
    assert response.status_code == 200, response.text


# 2. The bearer scheme and the rate limit ---------------------------------------------------------


@pytest.mark.parametrize(("scheme", "status"), [("Token", 401), ("X", 401), ("bearer", 200), ("BEARER", 200)])
def test_only_the_bearer_scheme_is_accepted(client: TestClient[Litestar], scheme: str, status: int) -> None:
    token = EDITOR["Authorization"].split(" ", 1)[1]
    response = client.get("/v1/review/queue", headers={"Authorization": f"{scheme} {token}"})
    assert response.status_code == status, response.text


def test_the_rate_limit_follows_the_verified_subject_not_the_header_text(
    running: tuple[Settings, Service, Litestar], tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path), "JWT_SECRET": SECRET, "RATE_LIMIT_PER_MINUTE": "3"}
    )
    token = issue_token(SECRET, "edith", "editor", timedelta(hours=1))
    another = issue_token(SECRET, "edith", "editor", timedelta(hours=2))  # the same editor
    variants = [f"Bearer {token}", f"bearer {token}", f"BEARER {token}", f"Bearer {another}"]
    with TestClient(create_app(settings, running[1])) as client:
        codes = [client.get("/v1/review/queue", headers={"Authorization": v}).status_code for v in variants]
        assert codes == [200, 200, 200, 429]
        assert client.get("/v1/review/queue", headers=auth("other-editor", "editor")).status_code == 200


def test_invalid_tokens_are_limited_per_address_without_locking_out_signed_in_callers(
    running: tuple[Settings, Service, Litestar], tmp_path: Path
) -> None:
    settings = Settings.from_env(
        {"DATA_DIR": str(tmp_path), "JWT_SECRET": SECRET, "RATE_LIMIT_PER_MINUTE": "3"}
    )
    signed_in = auth("edith", "editor")
    guesses = [{"Authorization": f"Bearer guess-{n}"} for n in range(4)]
    with TestClient(create_app(settings, running[1])) as client:
        assert client.get("/v1/review/queue", headers=signed_in).status_code == 200
        codes = [client.get("/v1/review/queue", headers=g).status_code for g in guesses]
        assert codes == [401, 401, 401, 429]
        assert client.get("/v1/review/queue", headers={"Authorization": "Token x"}).status_code == 429
        # A forged token signed with another key is a guess too; the signed-in editor still passes.
        forged = issue_token("another-key-" + SECRET, "edith", "admin", timedelta(hours=1))
        assert client.get("/v1/admin/jobs", headers={"Authorization": f"Bearer {forged}"}).status_code == 429
        assert client.get("/v1/review/queue", headers=signed_in).status_code == 200


def test_unknown_query_parameters_are_refused_by_the_api_but_not_by_pages(
    client: TestClient[Litestar],
) -> None:
    assert client.get("/v1/review/queue?status=draft", headers=EDITOR).status_code == 200
    refused = client.get("/v1/review/queue?state=draft", headers=EDITOR)
    assert refused.status_code == 400
    assert "unknown query parameter 'state'; this route takes: status" in refused.text
    assert client.get("/v1/briefing?x=1", headers=READER).status_code == 400
    sign_in(client, "r01", "reader")
    assert client.get("/?utm_source=newsletter").status_code == 200  # a shared link still opens


# 3. Inputs that were 500s, request ids and the log -----------------------------------------------


DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize(
    ("method", "path", "body", "headers"),
    [
        ("POST", "/v1/events", {"events": [event(4, at="0001-01-01T00:30:00+01:00")]}, READER),
        ("POST", "/v1/events", {"events": [event(5, at="9999-12-31T23:30:00-01:00")]}, READER),
        ("POST", "/v1/events", '{"events":' + DEEP + "}", READER),
        ("POST", "/v1/events", '{"events":[{"event_id":' + DEEP + "}]}", READER),
        ("POST", "/v1/events", {"events": [event(6, event_id="e\x00")]}, READER),
        ("POST", "/v1/events", {"events": [event(7, reader_id="r01\x00")]}, READER),
        ("POST", "/v1/events", {"events": [event(8, article_id="pol-0011\x00")]}, READER),
        ("GET", "/static/site.css%00.py", None, {}),
        ("DELETE", "/v1/admin/readers/r01%00", None, ADMIN),
        ("DELETE", "/v1/admin/articles/pol-0011%00", None, ADMIN),
        ("GET", "/v1/review/summaries/pol-0011--1%00", None, EDITOR),
        ("POST", "/v1/review/summaries/pol-0011--1%00/approve", None, EDITOR),
        ("POST", "/v1/review/summaries/pol-0011--1/edit", {"text": "A\x00B"}, EDITOR),
        ("POST", "/v1/review/summaries/pol-0011--1/reject", {"reason": "no\x00"}, EDITOR),
        ("GET", "/v1/admin/jobs?limit=%00", None, ADMIN),
    ],
)
def test_inputs_that_were_server_errors_are_clear_client_errors(
    client: TestClient[Litestar], method: str, path: str, body: Any, headers: dict[str, str]
) -> None:
    content = body if isinstance(body, str) or body is None else json.dumps(body)
    sent = {**headers, "Content-Type": "application/json"} if content is not None else headers
    response = client.request(method, path, content=content, headers=sent)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_pushed_articles_with_a_nul_or_a_time_off_the_calendar_are_refused(
    client: TestClient[Litestar], service: Service
) -> None:
    good = {
        "id": "hard-0001",
        "url": "https://havnby.example/local/hard-0001",
        "title": "Harbour pilots get a new boat",
        "body": "The harbour pilots of Havnby took delivery of a new pilot boat on Thursday.",
        "published_at": "2026-11-19T20:00:00+01:00",
        "section": "local",
        "language": "en",
        "publication": "Havnby Post",
    }
    for bad in ({"title": "Pilots\x00"}, {"tags": ["a\x00"]}, {"published_at": "0001-01-01T00:30:00+01:00"}):
        refused = client.post("/v1/admin/articles", json={"articles": [{**good, **bad}]}, headers=ADMIN)
        assert refused.status_code == 400, refused.text
        assert {e["field"] for e in refused.json()["errors"]} & {"title", "tags", "published_at"}
    assert service.indexer.index.get(["hard-0001"]) == {}


def test_a_server_error_is_logged_with_the_request_id_it_answers_with(
    client: TestClient[Litestar],
    service: Service,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*_: Any) -> dict[str, int]:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(service, "erase", broken)
    with caplog.at_level(logging.ERROR, logger="server"):
        response = client.delete("/v1/admin/readers/r05", headers=ADMIN)
    assert response.status_code == 500
    rid = response.headers["x-request-id"]
    assert response.json()["request_id"] == rid and "fire" not in response.text  # no internals out
    (record,) = [r for r in caplog.records if rid in r.getMessage()]
    assert record.exc_info and "the disk is on fire" in str(record.exc_info[1])


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/health", {}, 200),
        ("/static/site.css", {}, 200),
        ("/no-such-page", {}, 404),
        ("/v1/briefing", {}, 401),
        ("/v1/briefing", READER, 200),
        ("/login", {}, 200),
    ],
)
def test_every_response_has_a_request_id_and_the_security_headers(
    client: TestClient[Litestar], path: str, headers: dict[str, str], status: int
) -> None:
    response = client.get(path, headers=headers)
    assert response.status_code == status
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", response.headers["x-request-id"])
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_proxys_request_id_is_kept_only_when_it_is_plain(client: TestClient[Litestar]) -> None:
    assert (
        client.get("/health", headers={"X-Request-ID": "edge-1234abcd"}).headers["x-request-id"]
        == "edge-1234abcd"
    )
    forged = client.get("/health", headers={"X-Request-ID": "x\r\nINFO all is well"}).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", forged)


# 4. The OpenAPI schema says what the service does ------------------------------------------------


def test_the_schema_declares_the_error_answers_and_the_public_routes(client: TestClient[Litestar]) -> None:
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("post", "/v1/events"): {"400", "401", "403", "413", "415", "429"},
        ("post", "/v1/review/summaries/{summary_id}/approve"): {"401", "403", "404", "409"},
        ("post", "/v1/review/summaries/{summary_id}/edit"): {"401", "403", "404", "409", "413", "415"},
        ("delete", "/v1/admin/readers/{reader_id}"): {"401", "403", "404"},
        ("get", "/metrics"): {"401", "403"},
    }
    for (method, path), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, sorted(responses))
        for status in statuses:
            assert list(responses[status]["content"]) == ["application/problem+json"]
    assert schema["security"] == [{"BearerToken": []}]  # the default for every operation
    for public in ("/health", "/ready"):
        assert paths[public]["get"]["security"] == [{}]
    assert "security" not in paths["/metrics"]["get"]  # it needs the (admin) token


def test_the_event_schema_is_what_validation_accepts(client: TestClient[Litestar]) -> None:
    components = client.get("/schema/openapi.json").json()["components"]["schemas"]
    for name in ("ReadEvent", "OtherEvent"):
        assert {"event_id", "type", "article_id", "at"} <= set(components[name]["required"])
        assert components[name]["additionalProperties"] is False
    assert "dwell_s" in components["ReadEvent"]["required"]
    assert "dwell_s" not in components["OtherEvent"]["properties"]
    # What the schema refuses, the service refuses; what it allows, the service stores.
    assert client.post("/v1/events", json={"events": [{}]}, headers=READER).status_code == 400
    read = event(9, type="read")
    assert client.post("/v1/events", json={"events": [read]}, headers=READER).status_code == 400
    stored = client.post("/v1/events", json={"events": [{**read, "dwell_s": 30}]}, headers=READER)
    assert stored.status_code == 200, stored.text


def test_the_event_models_mirror_recsys_event() -> None:
    fields = set(ReadEvent.model_fields) | set(OtherEvent.model_fields)
    assert fields == set(Event.model_fields)
    types = {t for model in (ReadEvent, OtherEvent) for t in model.model_fields["type"].annotation.__args__}  # type: ignore[union-attr]
    assert types == {t.value for t in EventType}


# 5. Cookies, /metrics and the CLI ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "secure"),
    [
        ({}, False),
        ({"HOST": "localhost"}, False),
        ({"HOST": "::1"}, False),
        ({"HOST": "0.0.0.0"}, True),
        ({"HOST": "news.example"}, True),
        ({"HOST": "0.0.0.0", "SECURE_COOKIES": "false"}, False),
        ({"SECURE_COOKIES": "true"}, True),
    ],
)
def test_cookies_are_secure_unless_the_service_is_on_plain_loopback(
    env: dict[str, str], secure: bool
) -> None:
    assert Settings.from_env(env).service.secure_cookies is secure


def test_a_service_off_loopback_sets_secure_cookies(
    running: tuple[Settings, Service, Litestar], tmp_path: Path
) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "JWT_SECRET": SECRET, "HOST": "0.0.0.0"})
    token = issue_token(SECRET, "r01", "reader", timedelta(hours=1))
    # Over HTTPS, as such a service is reached: a Secure cookie never comes back over plain HTTP.
    with TestClient(create_app(settings, running[1]), base_url="https://testserver.local") as client:
        page = client.get(f"/login?token={token}")
        assert "Secure" in page.headers["set-cookie"]  # the CSRF cookie
        form, origin = (
            {"token": token, "_csrf_token": csrf_token(page.text)},
            {"Origin": "https://testserver.local"},
        )
        done = client.post("/login", data=form, headers=origin, follow_redirects=False)
        assert done.status_code == 303, done.text
        assert "Secure" in next(c for c in done.headers.get_list("set-cookie") if c.startswith(COOKIE))


@pytest.mark.parametrize(("headers", "status"), [({}, 401), (READER, 403), (EDITOR, 403), (ADMIN, 200)])
def test_metrics_need_the_admin_role(
    client: TestClient[Litestar], headers: dict[str, str], status: int
) -> None:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    assert (status == 200) == ("litestar_requests_total" in response.text)


def test_serve_says_in_one_line_that_the_data_dir_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(main, ["serve"], env={"DATA_DIR": str(blocker / "data"), "JOBS": "false"})
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: DATA_DIR") and "not usable" in lines[0]


@pytest.mark.parametrize("days", ["-1", "0", "1e9"])
def test_token_refuses_days_that_are_not_positive_or_too_far(tmp_path: Path, days: str) -> None:
    env = {"DATA_DIR": str(tmp_path), "JWT_SECRET": SECRET}
    result = CliRunner().invoke(main, ["token", "r01", "--role", "reader", "--days", days], env=env)
    assert result.exit_code == 2 and "--days" in result.output and "Traceback" not in result.output
