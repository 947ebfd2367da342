"""The reader's language and time zone end to end on litestar's test client (SQLite): a Bokmål
reader's page is in Bokmål, times are in the reader's zone with the zone named, a reader changes
their own settings and nobody else's, and a story update's reason restates no old headline."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from briefing import BriefingPolicy, Composer, Generator
from briefing.wording import in_language
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.app import create_app
from server.readers import parse_readers
from server.service import Service
from tests.conftest import _database
from tests.service import DEMO, auth, demo_service


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[tuple[Service, Litestar]]:
    tmp = tmp_path_factory.mktemp("language")
    for url in _database("sqlite", tmp):
        with demo_service(tmp, url, embedder, chunker, demo_articles, llamacpp) as (settings, service):
            readers = DEMO / "readers.jsonl"
            service.import_readers(parse_readers(readers.read_text(encoding="utf-8")))
            yield service, create_app(settings, service)


@pytest.fixture
def client(running: tuple[Service, Litestar]) -> Iterator[TestClient[Litestar]]:
    with TestClient(running[1]) as client:
        yield client


def _page(client: TestClient[Litestar], reader: str) -> str:
    response = client.get("/", headers=auth(reader, "reader"))
    assert response.status_code == 200, response.text
    return response.text


def test_a_bokmal_reader_gets_a_bokmal_page(client: TestClient[Litestar]) -> None:
    page = _page(client, "r04")  # languages ["nb"] in the demo file
    assert '<html lang="nb">' in page and "<h1>Siden sist du var her</h1>" in page
    assert "Nytt siden onsdag 18. november kl. 20:00 (CET)" in page
    assert "Derfor ser du dette:" in page and "Why you see this" not in page
    assert "Siden sist du var her, onsdag 18. november:" in page  # the greeting (no LLM on requests)
    assert "Since you were last here" not in page
    for path in ("/more", "/about"):  # pages that pass no language: the signed-in reader's is used
        other = client.get(path, headers=auth("r04", "reader")).text
        assert '<html lang="nb">' in other and "Nyhetsoversikten din" in other, path


def test_an_english_reader_sees_their_visit_in_oslo_time_and_after_choosing_utc_in_utc(
    client: TestClient[Litestar],
) -> None:
    page = _page(client, "r02")  # last here 2026-11-16 20:00 +01:00, i.e. 19:00 UTC
    assert '<html lang="en">' in page and "New since Monday 16 November, 20:00 (CET)" in page
    answer = client.put("/v1/settings", json={"timezone": "UTC"}, headers=auth("r02", "reader"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "language": None,
        "timezone": "UTC",
        "shown_language": "en",
        "shown_timezone": "UTC",
    }
    assert "New since Monday 16 November, 19:00 (UTC)" in _page(client, "r02")  # the cached one went
    client.put("/v1/settings", json={}, headers=auth("r02", "reader"))  # back to the publication's
    assert "20:00 (CET)" in _page(client, "r02")


def test_a_story_update_says_when_the_reader_read_it_not_the_old_headline(
    client: TestClient[Litestar], running: tuple[Service, Litestar]
) -> None:
    service = running[0]
    briefing = service.briefing("r02").briefing
    updates = [i for i in briefing.items if i.update]
    assert updates, "r02 read day 1 of the Nordkai ferry story: an update leads"
    read_title = service.indexer.index.get(["pol-0001"])["pol-0001"].article.title
    for item in updates:
        assert item.why is not None and item.why.kind == "story"
        assert item.reason == "an update to a story you follow (you last read about it on Monday 16 November)"
        assert read_title not in item.reason
    body = client.get("/v1/briefing", headers=auth("r02", "reader")).json()
    why = next(i["why"] for i in body["items"] if i["update"])
    assert why["kind"] == "story" and why["read_at"].startswith("2026-11-16T07:1")  # 08:1x in Oslo


def test_a_reader_cannot_change_another_readers_settings(client: TestClient[Litestar]) -> None:
    before = client.get("/v1/settings", headers=auth("r01", "reader")).json()
    # The token names whose settings they are; a body that names someone else is refused.
    answer = client.put(
        "/v1/settings", json={"reader_id": "r01", "language": "nb"}, headers=auth("r02", "reader")
    )
    assert answer.status_code == 400
    assert client.get("/v1/settings", headers=auth("r01", "reader")).json() == before
    assert (
        client.put("/v1/settings", json={"language": "nb"}, headers=auth("edith", "editor")).status_code
        == 403
    )


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"language": "de"}, "unknown language"),
        ({"timezone": "UTC\u0000"}, ""),
        ({"language": "x" * 11}, ""),
    ],
)
def test_unknown_settings_are_refused(
    client: TestClient[Litestar], body: dict[str, Any], detail: str
) -> None:
    answer = client.put("/v1/settings", json=body, headers=auth("r05", "reader"))
    assert answer.status_code == 400 and detail in answer.text
    assert client.get("/v1/settings", headers=auth("r05", "reader")).json()["timezone"] is None


def test_the_settings_form_changes_the_page_language(client: TestClient[Litestar]) -> None:
    headers = auth("r06", "reader")  # with an Authorization header no CSRF token is needed
    page = _page(client, "r06")
    assert 'name="language"' in page and 'value="Europe/Oslo"' in page
    form = {"language": "nb", "timezone": "America/New_York"}
    answer = client.post("/settings", data=form, headers=headers, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    page = _page(client, "r06")
    assert '<html lang="nb">' in page and "(EST)" in page and 'value="America/New_York"' in page
    refused = client.post(
        "/settings", data={**form, "reader_id": "r01"}, headers=headers, follow_redirects=False
    )
    assert refused.status_code == 400  # a form field naming another reader is not even read


def test_a_bokmal_reader_never_gets_an_english_greeting(running: tuple[Service, Litestar]) -> None:
    """The LLM writes the greeting from the Bokmål prompt; a line that is not Bokmål (the small
    packaged model often answers in English) gives way to the catalogue's Bokmål greeting."""
    service = running[0]
    composer = Composer(service.recommender, service.summarizer, policy=BriefingPolicy(allow_drafts=False))
    now, reader = service.clock(), "r04"
    briefing = composer.compose(
        reader, now, write=True, audience=service.audience(reader)
    )  # LLM greeting only
    assert briefing.items and in_language(briefing.greeting, "nb"), briefing.greeting
    assert not in_language(briefing.greeting, "en")
