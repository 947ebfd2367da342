"""The database going away and coming back, for real: a TCP proxy (tests.fault.proxy) sits
between the service and PostgreSQL and is cut (every connection reset, new ones too) while the
service runs. Requests that need the database answer 503 problem details with Retry-After within
seconds, not a 500 and not a hang; after the proxy is restored the same process answers again,
without a restart, and nothing a 503 answered was stored."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import create_engine, text

from briefing.llm import OpenAIGenerator
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.app import create_app
from tests.chats import free_port
from tests.conftest import PG_URL, _database
from tests.fault.proxy import TcpProxy
from tests.service import auth, demo_service

pytestmark = [pytest.mark.slow, pytest.mark.fault]  # the real embedder builds the service
HANG_S = 10.0  # "a few seconds": far below any client's timeout, far above a refused connect
UPSTREAM = (urlsplit(PG_URL).hostname or "127.0.0.1", urlsplit(PG_URL).port or 5432)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    yield from _database("postgresql", tmp_path)


def _events(*ids: str) -> dict[str, Any]:
    at = "2026-11-19T21:00:00+01:00"
    return {"events": [{"event_id": i, "type": "click", "article_id": "a1", "at": at} for i in ids]}


def _timed(call: Any) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    answer = call()
    return answer, time.monotonic() - start


def _assert_unavailable(answer: httpx.Response, took: float) -> None:
    assert answer.status_code == 503, answer.text
    assert took < HANG_S, f"took {took:.1f} s"
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert int(answer.headers["retry-after"]) > 0
    assert "database" in answer.json()["detail"]


def test_a_lost_database_is_a_503_and_the_process_recovers_when_it_returns(
    tmp_path: Path,
    database: str,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
) -> None:
    generator = OpenAIGenerator(f"http://127.0.0.1:{free_port()}/v1", "none")  # no request needs it
    with (
        TcpProxy(UPSTREAM) as proxy,
        demo_service(
            tmp_path,
            proxy.via(database),
            embedder,
            chunker,
            demo_articles[:3],
            generator,
            GROUNDING_LIKELIHOOD="off",
            BRIEFING_LLM_GREETING="false",
        ) as (settings, service),
        TestClient(create_app(settings, service), raise_server_exceptions=False) as client,
    ):
        reader = auth("r02", "reader")
        assert client.post("/v1/events", json=_events("before"), headers=reader).status_code == 200
        assert proxy.connections > 0  # the service's pool really goes through the proxy

        proxy.cut()
        with _logged("server") as logged:
            _assert_unavailable(
                *_timed(lambda: client.post("/v1/events", json=_events("cut"), headers=reader))
            )
            _assert_unavailable(*_timed(lambda: client.get("/v1/settings", headers=reader)))
            _assert_unavailable(*_timed(lambda: client.get("/v1/briefing", headers=auth("r05", "reader"))))
            _wait_for(lambda: len(logged) >= 3)  # the hook logs after the response went out
        assert len(logged) == 3 and all(m.startswith("HTTP 503 on") for m in logged), logged  # not "500"
        ready = client.get("/ready")
        assert ready.status_code == 503 and ready.json()["database"].startswith("failed")

        proxy.restore()
        again = client.post("/v1/events", json=_events("cut", "after"), headers=reader)
        assert again.status_code == 200, again.text
        assert again.json() == {"stored": 2, "duplicates": 0}  # the 503'd event was not stored
        assert client.get("/v1/briefing", headers=auth("r05", "reader")).status_code == 200
        assert client.get("/ready").json()["database"] == "ok"
    assert _stored(database) == {"before", "cut", "after"}


def _wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@contextmanager
def _logged(name: str) -> Iterator[list[str]]:
    """What `name` logs meanwhile, whatever handlers the app's logging setup left on the root."""
    messages: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger(name).addHandler(handler)
    try:
        yield messages
    finally:
        logging.getLogger(name).removeHandler(handler)


def _stored(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("select event_id from events where reader_id = 'r02'"))
            return {r[0] for r in rows} & {"before", "cut", "after"}
    finally:
        engine.dispose()
