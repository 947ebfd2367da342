"""Composition root: builds the pipeline parts from `Settings`; handlers and jobs never build clients."""

from __future__ import annotations

from datetime import datetime, timedelta

from briefing import (
    Composer,
    EmbeddingLexicalChecker,
    EvidenceRetriever,
    FileSummaryStore,
    Generator,
    Summarizer,
    SummarizerConfig,
    make_generator,
)
from indexing import Chunker, Indexer, QdrantIndex, SentenceTransformerEmbedder
from recsys import CandidateMatrix, EventRepository, JsonlEventStore, Recommender
from server.settings import Settings


def build_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(settings.embedding_model)


def build_chunker(settings: Settings, embedder: SentenceTransformerEmbedder) -> Chunker:
    return Chunker(
        embedder.token_counter(),
        chunk_tokens=min(settings.chunk_tokens, embedder.max_tokens - 16),
        overlap_tokens=settings.chunk_overlap,
    )


def open_index(settings: Settings) -> QdrantIndex:
    """The index as it is, whatever model built it (re-index reads it with a new model)."""
    return QdrantIndex(settings.qdrant.connect(), settings.qdrant.prefix)


def build_indexer(settings: Settings, embedder: SentenceTransformerEmbedder | None = None) -> Indexer:
    embedder = embedder or build_embedder(settings)
    index = open_index(settings)
    index.ensure(embedder.dim)
    return Indexer(index, embedder, build_chunker(settings, embedder), settings.stories)


def build_event_store(settings: Settings) -> JsonlEventStore:
    return JsonlEventStore(settings.data_dir / "events.jsonl")


def build_recommender(
    settings: Settings, indexer: Indexer, events: EventRepository, now: datetime
) -> Recommender:
    """A recommender over the articles modified in the recent window, popularity as of `now`."""
    since = now - timedelta(days=settings.recsys_window_days)
    matrix = CandidateMatrix.from_index(indexer.index, indexer.embedder.dim, since)
    recommender = Recommender(matrix, events, settings.recsys)
    recommender.refresh(matrix, now)
    return recommender


def build_generator(settings: Settings) -> Generator:
    return make_generator(settings.llm)


def build_summarizer(settings: Settings, indexer: Indexer, generator: Generator | None = None) -> Summarizer:
    return Summarizer(
        generator or build_generator(settings),
        EvidenceRetriever(indexer.index, indexer.embedder),
        EmbeddingLexicalChecker(indexer.embedder, settings.grounding),
        FileSummaryStore(settings.data_dir / "summaries"),
        config=SummarizerConfig(adapter=settings.llm_adapter),
    )


def build_composer(settings: Settings, recommender: Recommender, summarizer: Summarizer) -> Composer:
    return Composer(recommender, summarizer, policy=settings.briefing)
