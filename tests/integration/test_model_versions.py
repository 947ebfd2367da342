"""Model versions (server.versions) reach every serving process: a matrix refreshed by an ingest
or a retraction in one `Service`, a ranker refitted by the job, an adapter promoted in the
registry, reach another `Service` on the same database (SQLite and PostgreSQL) through its poller;
bumps racing from threads and processes get distinct increasing versions; the poller lives
through a lost database (a cut TCP proxy) and stops on close.

The two services share one in-memory index, as API workers share a Qdrant server."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine

from briefing.llm import OpenAIGenerator
from indexing import Article, Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder
from server.adapters import SqlAdapterRegistry
from server.container import build_service
from server.db import connect, migrate
from server.jobs import refit_ranker
from server.service import Actor, Service
from server.settings import Settings
from server.versions import NAMES, ModelVersions, VersionWatch
from tests.chats import free_port
from tests.conftest import DATABASES, PG_URL, ROOT, _database, migrated
from tests.fault.proxy import TcpProxy
from tests.service import DEMO_CLOCK, SECRET
from tests.unit.test_adapter_registry import candidate

POLL_S = 0.2
WAIT_S = 60.0  # a bound for a stuck test on a busy machine, not a speed assumption
EDITOR = Actor("edith", "admin")


def eventually(condition: Callable[[], bool], what: str) -> float:
    """Seconds until `condition` held."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < WAIT_S, f"not within {WAIT_S:.0f} s: {what}"
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture(params=DATABASES)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    for found in _database(request.param, tmp_path):
        engine = connect(found)
        migrate(engine)
        engine.dispose()
        yield found


# Bumps ---------------------------------------------------------------------------------------

BUMPER = """
import sys
from server.db import connect
from server.versions import ModelVersions
versions = ModelVersions(connect(sys.argv[1]))
print(" ".join(str(versions.bump("matrix")) for _ in range(int(sys.argv[2]))), flush=True)
"""


def test_racing_bumps_from_threads_and_processes_get_distinct_increasing_versions(url: str) -> None:
    per, threads = 15, 4
    engine = connect(url)
    versions = ModelVersions(engine)
    command = [sys.executable, "-c", BUMPER, url, str(per)]
    others = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        with ThreadPoolExecutor(threads) as pool:
            mine = list(pool.map(lambda _: [versions.bump("matrix") for _ in range(per)], range(threads)))
        theirs = [[int(v) for v in p.communicate(timeout=WAIT_S)[0].split()] for p in others]
    finally:
        for process in others:
            process.kill()
    runs = mine + theirs
    assert all(run == sorted(set(run)) and len(run) == per for run in runs)  # each caller: increasing
    everything = sorted(v for run in runs for v in run)
    assert everything == list(range(1, len(runs) * per + 1))  # distinct, none lost
    assert versions.current() == {"matrix": len(runs) * per, "ranker": 0, "adapter": 0}
    engine.dispose()


def test_a_promote_or_rollback_anywhere_moves_the_adapter_version(engine: Engine) -> None:
    versions, registry = ModelVersions(engine), SqlAdapterRegistry(engine)
    assert versions.current() == dict.fromkeys(NAMES, 0)
    first, second = registry.add(candidate()), registry.add(candidate(minutes=1))
    registry.promote(first.id, "ada")
    assert versions.current()["adapter"] == 1
    registry.promote(second.id, "ada")
    registry.rollback("ada")
    assert versions.current()["adapter"] == 3 == registry.version()
    assert versions.bump("adapter") == 4 == versions.current()["adapter"]  # a restore, say
    registry.rollback("ada")
    assert versions.current() == {"matrix": 0, "ranker": 0, "adapter": 5}
    with pytest.raises(ValueError, match="unknown model 'ranking'; models are matrix, ranker, adapter"):
        versions.bump("ranking")


# The poller on its own -----------------------------------------------------------------------


@pytest.fixture
def postgres(tmp_path: Path) -> Iterator[Engine]:
    yield from migrated("postgresql", tmp_path)


def test_the_poller_lives_through_a_lost_database_and_stops_on_close(
    postgres: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL behind a proxy that is cut: the poller logs it once, keeps polling, and
    reloads once the database answers again; a change made here while the database is away
    (the index written, the bump not) is bumped when it is back."""
    server, others = urlsplit(PG_URL), ModelVersions(postgres)
    with TcpProxy((server.hostname or "127.0.0.1", server.port or 5432)) as proxy:
        proxied = connect(proxy.via(postgres.url.render_as_string(hide_password=False)))
        watch = VersionWatch(ModelVersions(proxied), POLL_S)
        reloads: list[str] = []
        watch.on("ranker", lambda: reloads.append("ranker"))
        caplog.set_level(logging.INFO, logger="server.versions")
        watch.start()
        try:
            proxy.cut()
            with watch.announcing("matrix"):  # a retraction here: its bump fails, it goes on
                pass
            others.bump("ranker")  # another process refits meanwhile
            time.sleep(POLL_S * 10)
            assert reloads == [] and watch._thread is not None and watch._thread.is_alive()
            warned = [r for r in caplog.records if "cannot be read" in r.getMessage()]
            assert len(warned) == 1  # once per outage, not every look
            proxy.restore()
            eventually(lambda: reloads == ["ranker"], "the poller reloads once the database is back")
            eventually(lambda: others.current()["matrix"] == 1, "the owed bump is made")
            assert "model versions can be read again" in caplog.text
        finally:
            watch.close()
        assert watch._thread is None
        others.bump("ranker")
        time.sleep(POLL_S * 3)
        assert reloads == ["ranker"]  # closed: no look any more
        proxied.dispose()


def test_a_failed_reload_is_tried_again_and_a_new_matrix_covers_its_ranker(engine: Engine) -> None:
    versions = ModelVersions(engine)
    watch = VersionWatch(versions, POLL_S)
    calls: list[str] = []
    fail = [True]

    def matrix() -> None:
        calls.append("matrix")
        if fail[0]:
            raise RuntimeError("the index is away")

    watch.on("matrix", matrix)
    watch.on("ranker", lambda: calls.append("ranker"))
    versions.bump("matrix")
    versions.bump("ranker")
    assert watch.check() == ["ranker"] and calls == ["matrix", "ranker"]  # refitted on the old matrix
    fail[0] = False
    assert watch.check() == ["matrix"] and calls == ["matrix", "ranker", "matrix"]  # tried again
    versions.bump("matrix")
    versions.bump("ranker")
    assert watch.check() == ["matrix", "ranker"] and calls[3:] == ["matrix"]  # fitted with the matrix
    assert watch.check() == [] and watch.served() == versions.current()
    with pytest.raises(RuntimeError), watch.announcing("ranker"):  # a change here that failed ...
        raise RuntimeError("the fit failed")
    assert watch.check() == ["ranker"]  # ... is reloaded at the next look


# Two services on one database ----------------------------------------------------------------


@contextmanager
def two_services(
    tmp_path: Path, url: str, embedder: SentenceTransformerEmbedder, chunker: Chunker, articles: list[Article]
) -> Iterator[tuple[Service, Service]]:
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, chunker)
    assert indexer.ingest(articles).ok
    env = {
        "DATABASE_URL": url,
        "CLOCK_START": DEMO_CLOCK,
        "JWT_SECRET": SECRET,
        "GROUNDING_LIKELIHOOD": "off",
        "VERSION_POLL_S": str(POLL_S),
        "LLM_THREADS": "1",
    }
    nobody = OpenAIGenerator(f"http://127.0.0.1:{free_port()}/v1", "smollm2")  # never called here
    with ExitStack() as stack:
        services = []
        for name in ("one", "two"):
            settings = Settings.from_env({**env, "DATA_DIR": str(tmp_path / name)})
            service = build_service(settings, indexer=indexer, generator=nobody)
            stack.callback(service.engine.dispose)
            stack.callback(service.close)
            services.append(service)
        stack.callback(index.close)
        yield services[0], services[1]


@pytest.mark.slow
def test_a_change_in_one_service_reaches_the_other(
    tmp_path: Path,
    url: str,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
) -> None:
    articles, fresh = demo_articles[:6], demo_articles[6]
    with two_services(tmp_path, url, embedder, chunker, articles) as (one, two):
        two.versions.start()  # type: ignore[union-attr]
        try:
            one.ingest([fresh])  # refreshes one's matrix and bumps its version
            assert fresh.id in one.recommender.matrix.row
            took = eventually(lambda: fresh.id in two.recommender.matrix.row, "the ingest reaches two")
            print(f"the new matrix reached two in {took:.2f} s (polling every {POLL_S} s)")

            one.retract(EDITOR, fresh.id, "wrong")
            eventually(lambda: fresh.id not in two.recommender.matrix.row, "the retraction reaches two")

            name = two.recommender.config.ranker
            before = two.recommender.ranker(name)
            refit_ranker(one)  # the job, in the scheduler's process
            eventually(lambda: two.recommender.ranker(name) is not before, "the refit reaches two")

            registry = SqlAdapterRegistry(one.engine)
            registry.promote(registry.add(candidate()).id, "ada")  # its files are not there: logged
            adapter = ModelVersions(one.engine).current()["adapter"]
            eventually(lambda: two.versions.served()["adapter"] == adapter, "the promote reaches two")  # type: ignore[union-attr]
            assert two.adapters is not None and two.adapters._version == adapter  # two synced it
        finally:
            two.versions.close()  # type: ignore[union-attr]
        # one never reloads what it changed itself: it announced each change
        assert one.versions is not None and one.versions.check() == ["adapter"]
