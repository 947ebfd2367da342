"""A running service for the API, job and browser tests: the demo newsroom in in-memory Qdrant,
SQL storage on the database under test, the real embedder and LLM, a clock at the demo's end.
The briefing policy is the shipped default (checked drafts may show) unless a test says otherwise."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from briefing import Summarizer
from briefing.summarize import Request
from briefing.tuning.config import TrainConfig
from briefing.tuning.data import Example, example
from indexing import Article, Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder
from recsys import load_readers
from server.auth import issue_token
from server.container import build_service
from server.service import Service
from server.settings import Settings

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
DEMO_CLOCK = "2026-11-19T23:00:00+01:00"
SECRET = "test-secret-not-for-production-0123456789"
# A few LoRA steps at a high rate on a handful of articles: enough to change what the model writes.
TINY_LORA = TrainConfig(
    rank=4, alpha=16, learning_rate=3e-3, epochs=4, batch_size=1, target_modules=("q_proj", "v_proj")
)


@contextmanager
def demo_service(
    data_dir: Path,
    database_url: str,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    articles: list[Article],
    generator: Any,
    **env: str,
) -> Iterator[tuple[Settings, Service]]:
    settings = Settings.from_env(
        {
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": database_url,
            "CLOCK_START": DEMO_CLOCK,
            "JWT_SECRET": SECRET,
            "RATE_LIMIT_PER_MINUTE": "0",
            **env,
        }
    )
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, chunker)
    assert indexer.ingest(articles).ok
    service = build_service(settings, indexer=indexer, generator=generator)
    load_readers(DEMO / "readers.jsonl", service.events)
    try:
        yield settings, service
    finally:
        service.close()
        index.close()
        service.engine.dispose()


def auth(subject: str, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, subject, role, timedelta(hours=1))}"}


def title_examples(summarizer: Summarizer, requests: list[Request]) -> list[Example]:
    """Editor rows whose target is the article's title: a text the base model never writes, so a
    tiny adapter trained on them visibly changes the output."""
    return [
        example(
            "editor",
            r.template.id,
            r.record.article.language,
            [r.record.article.id],
            summarizer.chat(r),
            f"{r.record.article.title}.",
            {},
        )
        for r in requests
    ]
