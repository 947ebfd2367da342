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
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Dequantized transformers copies of the packaged GGUF, made once per test run."""
    return tmp_path_factory.mktemp("models")
