"""Experiments in the serving path, on SQLite and PostgreSQL with the demo newsroom: a reader is
served their arm's variant, an exposure is recorded when a briefing is served (once per served
briefing, however often the cache serves it again, and under concurrent requests), a stop reaches
the next request, the holdout sees no experiment, and erasure removes the reader's exposures."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from briefing import Generator
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.db import ExposureRow
from server.experiments import ReaderFacts, assign, parse_experiment
from server.experiments.serving import Arms
from server.service import Actor, Service
from tests.conftest import DATABASES, _database
from tests.service import demo_service

PRODUCT = Actor("pia", "product")
READERS = [f"r{n:02d}" for n in range(1, 31)]
DEFINITION = {
    "key": "short-briefing",
    "hypothesis": "Three items with one-sentence summaries get more clicks per visit than five.",
    "arms": [
        {"name": "control", "weight": 0.5},
        {"name": "short", "weight": 0.5, "article_prompt": "article-one-sentence", "items": 3},
    ],
    "primary": "clicks_per_visit",
}


@pytest.fixture(scope="module", params=DATABASES)
def service(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp(request.param)
    for url in _database(request.param, tmp):
        with demo_service(tmp, url, embedder, chunker, demo_articles, llamacpp) as (_, service):
            experiment = service.experiments.create(PRODUCT, parse_experiment(DEFINITION))
            service.experiments.start(PRODUCT, experiment.key, service.clock())
            yield service


def _exposures(service: Service, reader_id: str | None = None) -> list[tuple[str, str, str]]:
    service.visits.flush()
    query = select(ExposureRow.reader_id, ExposureRow.arm, ExposureRow.briefing_key)
    if reader_id is not None:
        query = query.where(ExposureRow.reader_id == reader_id)
    with service.engine.connect() as connection:
        return [(r.reader_id, r.arm, r.briefing_key) for r in connection.execute(query)]


def test_each_reader_gets_their_arms_variant_and_one_exposure_per_served_briefing(service: Service) -> None:
    running = service.experiments.running()
    for reader_id in READERS[:12]:
        expected = assign(running, ReaderFacts(reader_id, "en", True))["short-briefing"].name
        first = service.briefing(reader_id)
        again = service.briefing(reader_id)  # the same visit: served from the cache
        assert again.cached and again.briefing is first.briefing
        assert first.briefing.variant == f"short-briefing/{expected}"
        if expected == "short":
            assert len(first.briefing.items) <= 3
        assert [(r, a) for r, a, _ in _exposures(service, reader_id)] == [(reader_id, expected)]
    arms = {a for _, a, _ in _exposures(service)}
    assert arms == {"control", "short"}, "12 readers at 50/50 should land in both arms"


def test_concurrent_requests_of_one_reader_are_one_exposure(service: Service) -> None:
    reader_id = READERS[20]
    with ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda _: service.briefing(reader_id), range(16)))
    assert len({id(s.briefing) for s in served}) == 1
    assert len(_exposures(service, reader_id)) == 1


def test_the_cached_path_records_the_same_exposure(service: Service) -> None:
    reader_id = READERS[21]
    service.briefing(reader_id)
    cached = service.cached_briefing(reader_id)
    assert cached is not None and cached.cached
    assert len(_exposures(service, reader_id)) == 1


def test_holdout_readers_enter_no_experiment(service: Service) -> None:
    everyone_out = Arms(service.experiments.running, holdout=0.999999)
    assert everyone_out.of(ReaderFacts(READERS[0], "en", False)).arms == {}
    assert everyone_out.of(ReaderFacts(READERS[0], "en", False)).variant.name == "control"


def test_erasure_removes_the_readers_exposures(service: Service) -> None:
    reader_id = READERS[22]
    service.briefing(reader_id)
    assert _exposures(service, reader_id)
    counts = service.erase(Actor("ada", "admin"), reader_id)
    assert counts["exposures"] == 1
    assert _exposures(service, reader_id) == []


def test_a_stopped_experiment_exposes_no_one_and_serves_the_control(service: Service) -> None:
    # Last in this module: it stops the experiment the others use.
    service.experiments.stop(PRODUCT, "short-briefing", service.clock())
    before = _count(service)
    served = service.briefing(READERS[25])
    assert served.briefing.variant == "control"
    assert _count(service) == before


def _count(service: Service) -> int:
    service.visits.flush()
    with service.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(ExposureRow)).scalar_one())
