"""Two API workers (two Service + app instances) on one PostgreSQL schema and one Redis prefix,
each on litestar's test client: what one learns or drops holds in the other, the rate limit holds
across both, and a Redis that goes away (a cut TCP proxy) gives a clear 503, never another
reader's state, and service again once it is back, without a restart.

The two share one Qdrant index, as workers of a deployment share the Qdrant server (each
`demo_service` would build its own in-memory index, and a retraction in one would not reach
the other's). Both read one clock: erasures compare the times each worker stamps."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient
from sqlalchemy import func, select

from briefing import Generator
from indexing import Article, Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder
from recsys import load_readers
from server.app import create_app
from server.container import build_service
from server.db import BriefingRow
from server.service import Service
from server.settings import Settings
from server.shared_state import redis_client
from server.stores import served_row
from tests.conftest import _database
from tests.fault.proxy import TcpProxy
from tests.service import DEMO, DEMO_CLOCK, SECRET, auth

REDIS_URL = "redis://127.0.0.1:6379/0"
pytestmark = pytest.mark.slow


@dataclass
class Worker:
    settings: Settings
    service: Service
    client: TestClient[Litestar]


@dataclass
class Deployment:
    a: Worker
    b: Worker
    proxy: TcpProxy
    env: dict[str, str]

    @contextmanager
    def limited(self, per_minute: int) -> Iterator[tuple[TestClient[Litestar], TestClient[Litestar]]]:
        """Both workers' apps again, with a rate limit."""
        with ExitStack() as stack:
            clients = [
                stack.enter_context(TestClient(create_app(_with(w.settings, per_minute), w.service)))
                for w in (self.a, self.b)
            ]
            yield clients[0], clients[1]


def _with(settings: Settings, per_minute: int) -> Settings:
    return replace(settings, service=replace(settings.service, rate_limit_per_minute=per_minute))


def _redis_answers() -> bool:
    client = redis_client(Settings(redis_url=REDIS_URL))
    try:
        return bool(client and client.ping())
    except Exception:
        return False


@contextmanager
def _services(
    tmp: Path, url: str, env: dict[str, str], indexer: Indexer, generator: Generator
) -> Iterator[list[tuple[Settings, Service]]]:
    built: list[tuple[Settings, Service]] = []
    try:
        for name in ("a", "b"):
            base = {"DATA_DIR": str(tmp / name), "DATABASE_URL": url, "CLOCK_START": DEMO_CLOCK}
            settings = Settings.from_env({**base, "JWT_SECRET": SECRET, "RATE_LIMIT_PER_MINUTE": "0", **env})
            built.append((settings, build_service(settings, indexer=indexer, generator=generator)))
        built[1][1].clock = built[0][1].clock
        load_readers(DEMO / "readers.jsonl", built[0][1].events)
        yield built
    finally:
        for _, service in built:
            service.close()
            service.engine.dispose()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[Deployment]:
    if not _redis_answers():
        pytest.skip("no Redis answers at 127.0.0.1:6379")
    tmp = tmp_path_factory.mktemp("two-workers")
    prefix = f"test-two-workers-{uuid.uuid4().hex}"
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, chunker)
    assert indexer.ingest(demo_articles).ok
    with TcpProxy(("127.0.0.1", 6379)) as proxy:
        for url in _database("postgresql", tmp):
            env = {"REDIS_URL": proxy.via(REDIS_URL), "REDIS_PREFIX": prefix, "JOBS": "false"}
            with _services(tmp, url, env, indexer, llamacpp) as built, ExitStack() as stack:
                a, b = (
                    Worker(s, service, stack.enter_context(TestClient(create_app(s, service))))
                    for s, service in built
                )
                yield Deployment(a, b, proxy, env)
    index.close()
    direct = redis_client(Settings(redis_url=REDIS_URL))
    assert direct is not None
    for key in direct.scan_iter(match=f"{prefix}:*"):
        direct.delete(key)


def served_rows(service: Service, reader: str) -> int:
    with service.engine.connect() as connection:
        query = select(func.count()).select_from(BriefingRow).where(BriefingRow.reader_id == reader)
        return int(connection.execute(query).scalar_one())


def briefing(worker: Worker, reader: str) -> tuple[dict[str, Any], str]:
    response = worker.client.get("/v1/briefing", headers=auth(reader, "reader"))
    assert response.status_code == 200, response.text
    return response.json(), response.headers["x-briefing-cache"]


def test_a_visit_recorded_by_one_worker_is_seen_by_the_other(deployment: Deployment) -> None:
    first, cache = briefing(deployment.a, "r01")
    assert cache == "miss" and first["since"] is not None
    again, cache = briefing(deployment.b, "r01")
    assert again["since"] == first["since"]  # the same visit, so the same "since"
    assert cache == "hit" and again == first  # and the briefing a composed
    # b's cached path (no database, no lock) serves it too, from the shared cache
    assert briefing(deployment.b, "r01") == (first, "hit")


def test_a_retraction_on_one_worker_drops_the_cached_briefing_in_the_other(deployment: Deployment) -> None:
    shown, _ = briefing(deployment.b, "r02")
    assert briefing(deployment.b, "r02")[1] == "hit"
    article = shown["items"][0]["article_id"]
    response = deployment.a.client.delete(f"/v1/admin/articles/{article}", headers=auth("ada", "admin"))
    assert response.status_code == 200, response.text
    assert response.json()["cached_briefings"] >= 1
    after, cache = briefing(deployment.b, "r02")
    assert cache == "miss"  # b never serves what a dropped
    assert article not in {i["article_id"] for i in after["items"]}
    assert all(article not in c for i in after["items"] for s in i["sentences"] for c in s["citations"])


def test_an_erasure_on_one_worker_holds_in_the_other(deployment: Deployment) -> None:
    a, b = deployment.a.service, deployment.b.service
    briefing(deployment.b, "r05")
    in_flight = b.compose("r05", b.clock(), None)  # composed on b before a erases the reader
    response = deployment.a.client.delete("/v1/admin/readers/r05", headers=auth("ada", "admin"))
    assert response.status_code == 200, response.text
    assert b.visits.known("r05", b.clock()) is None
    b.visits.record(in_flight, b.clock(), None, cached=False)  # the request in flight finishes
    b.visits.flush()
    assert b.visits.known("r05", b.clock()) is None
    # A batch b queued before the erasure and writes after it keeps nothing of the reader.
    b.visits._write(
        [("r05", b.clock(), None, served_row(in_flight, b.clock(), False), [], in_flight.generated_at)]
    )
    assert served_rows(a, "r05") == 0  # nothing of the erased reader was written back
    # Coming back is a first visit again.
    body, cache = briefing(deployment.b, "r05")
    assert cache == "miss" and body["since"] is None


def test_the_rate_limit_holds_across_both_workers(deployment: Deployment) -> None:
    caller = auth(f"editor-{uuid.uuid4().hex[:8]}", "editor")
    with deployment.limited(4) as (a, b):
        codes, left = [], []
        for client in (a, b, a, b, a):
            response = client.get("/v1/review/queue", headers=caller)
            codes.append(response.status_code)
            left.append(response.headers.get("ratelimit-remaining"))
        assert codes == [200, 200, 200, 200, 429]
        assert left == ["3", "2", "1", "0", "0"]
        refused = b.get("/v1/review/queue", headers=caller)
        assert refused.status_code == 429 and refused.headers["ratelimit-limit"] == "4"
        assert refused.json()["status"] == 429
        assert b.get("/v1/review/queue", headers=auth("another-editor", "editor")).status_code == 200
        assert a.get("/health").status_code == 200  # probes are not limited


def test_invalid_tokens_are_counted_across_both_workers(deployment: Deployment) -> None:
    with deployment.limited(3) as (a, b):
        codes = [c.get("/v1/review/queue", headers={"Authorization": f"Bearer guess-{n}"}).status_code
                 for n, c in enumerate((a, b, a, b))]  # fmt: skip
        assert codes == [401, 401, 401, 429]


def test_redis_going_away_gives_a_clear_503_and_service_comes_back(deployment: Deployment) -> None:
    own, _ = briefing(deployment.a, "r03")
    deployment.proxy.cut()
    try:
        for worker in (deployment.a, deployment.b):
            response = worker.client.get("/v1/briefing", headers=auth("r03", "reader"))
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] and "Redis" in response.json()["detail"]
            assert "r0" not in response.text.replace("Redis", "")  # no reader's state in the answer
        with deployment.limited(100) as (a, _):
            assert a.get("/v1/review/queue", headers=auth("edith", "editor")).status_code == 503
        ready = deployment.b.client.get("/ready")
        assert ready.status_code == 503 and ready.json()["shared_state"].startswith("failed")
    finally:
        deployment.proxy.restore()
    back, _ = briefing(deployment.b, "r03")
    assert back["reader_id"] == "r03" and back["since"] == own["since"]
    assert deployment.b.client.get("/ready").json()["shared_state"] == "ok"
