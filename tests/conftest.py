"""Shared fixtures. Models come from installed packages; nothing reaches a hub."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from indexing import (
    Article,
    Chunker,
    Indexer,
    QdrantConfig,
    QdrantIndex,
    SentenceTransformerEmbedder,
    open_source,
)

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo"


@pytest.fixture(scope="session")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder()


@pytest.fixture(scope="session")
def chunker(embedder: SentenceTransformerEmbedder) -> Chunker:
    return Chunker(embedder.token_counter(), chunk_tokens=200, overlap_tokens=20)


@pytest.fixture(scope="session")
def demo_articles() -> list[Article]:
    records = list(open_source(str(DEMO / "articles")))
    assert all(isinstance(r, Article) for r in records)
    return [r for r in records if isinstance(r, Article)]


@pytest.fixture
def memory_indexer(embedder: SentenceTransformerEmbedder, chunker: Chunker) -> Iterator[Indexer]:
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    yield Indexer(index, embedder, chunker)
    index.close()


@pytest.fixture(scope="session")
def demo(
    embedder: SentenceTransformerEmbedder, chunker: Chunker, demo_articles: list[Article]
) -> Iterator[Indexer]:
    """The demo newsroom in an in-memory index; tests must not change it."""
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, chunker)
    report = indexer.ingest(demo_articles)
    assert report.ok and report.new == len({a.id for a in demo_articles})
    yield indexer
    index.close()


@pytest.fixture(scope="session")
def llamacpp() -> Any:
    """The CPU default backend on the packaged SmolLM2 GGUF (loaded once per run)."""
    from briefing import GeneratorConfig, make_generator

    return make_generator(GeneratorConfig(backend="llamacpp", threads=2))


@pytest.fixture(scope="session")
def llamacpp_scorer() -> Any:
    """The grounding check's likelihood signal on the packaged GGUF (loaded once per run)."""
    from briefing import make_scorer

    return make_scorer("llamacpp", "packaged:SmolLM2-135M-Instruct", cache_dir=Path("unused"), threads=2)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dequantized transformers copies of the packaged GGUF, made once per test run."""
    return tmp_path_factory.mktemp("models")


# SQL storage runs on SQLite and on PostgreSQL (127.0.0.1:5432 in CI; skipped with the reason
# where no server answers). Each PostgreSQL test gets its own schema, dropped afterwards.
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
DATABASES = ("sqlite", "postgresql")


def _database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'briefing.db'}"
        return
    from uuid import uuid4

    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    schema = f"test_{uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as connection:
            connection.execute(text(f"create schema {schema}"))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}: {str(exc).splitlines()[0]}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


def migrated(kind: str, tmp_path: Path) -> Iterator[Any]:
    """An engine on a migrated database of this kind (skips where PostgreSQL is absent)."""
    from server.db import connect, migrate

    for url in _database(kind, tmp_path):
        engine = connect(url)
        migrate(engine)
        yield engine
        engine.dispose()


@pytest.fixture(params=DATABASES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A migrated database of each kind."""
    yield from migrated(request.param, tmp_path)
