"""Evidence retrieval: llama-index's `QdrantVectorStore` over the article chunk collection.

Filters are llama-index `MetadataFilters` on article ids, story id and publication time. The
chunk collection holds, for a moment during an update, chunks of two versions of an article;
like `QdrantIndex.search`, retrieval keeps only chunks whose content hash is the one the article
record names (DESIGN.md section 1, the unit swap), so evidence always comes from one version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from briefing.grounding import Evidence
from indexing import Embedder, QdrantIndex


@dataclass(frozen=True)
class EvidenceChunk:
    chunk_id: str
    article_id: str
    chunk_index: int
    text: str
    title: str
    url: str
    published_at: float
    score: float

    def evidence(self) -> Evidence:
        return Evidence(self.chunk_id, self.text)


class EvidenceRetriever:
    def __init__(self, index: QdrantIndex, embedder: Embedder) -> None:
        from llama_index.vector_stores.qdrant import QdrantVectorStore

        self.index = index
        self.embedder = embedder
        self.store = QdrantVectorStore(collection_name=index.chunks, client=index.client)

    def retrieve(
        self,
        query: str,
        *,
        article_ids: Sequence[str] = (),
        story_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        k: int = 8,
    ) -> list[EvidenceChunk]:
        """The k chunks most similar to `query` among current versions that pass the filters."""
        from llama_index.core.vector_stores.types import VectorStoreQuery

        query_vector = self.embedder.embed_query(query).tolist()
        request = VectorStoreQuery(
            query_embedding=query_vector,
            similarity_top_k=k * 2 + 8,  # room for stale chunks dropped below
            filters=_filters(article_ids, story_id, since, until),
        )
        with self.index.locked():
            result = self.store.query(request)
            chunks = [
                _chunk(node, score) for node, score in zip(result.nodes or [], _scores(result), strict=True)
            ]
            current = {
                a: r.content_hash for a, r in self.index.get(list({c.article_id for c in chunks})).items()
            }
        hashes = {c.chunk_id: h for c, h in zip(chunks, (_hash(n) for n in result.nodes or []), strict=True)}
        return [c for c in chunks if current.get(c.article_id) == hashes[c.chunk_id]][:k]

    def article(self, article_id: str, query: str = "", *, k: int = 32) -> list[EvidenceChunk]:
        """An article's current chunks in reading order (the evidence for its summary)."""
        chunks = self.retrieve(query or article_id, article_ids=[article_id], k=k)
        return sorted(chunks, key=lambda c: c.chunk_index)


def _filters(
    article_ids: Sequence[str], story_id: str | None, since: datetime | None, until: datetime | None
) -> Any:
    from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

    conditions: list[MetadataFilter | MetadataFilters] = []
    if article_ids:
        conditions.append(
            MetadataFilter(key="article_id", value=list(article_ids), operator=FilterOperator.IN)
        )
    if story_id:
        conditions.append(MetadataFilter(key="story_id", value=story_id))
    if since:
        conditions.append(
            MetadataFilter(key="published_at", value=since.timestamp(), operator=FilterOperator.GTE)
        )
    if until:
        conditions.append(
            MetadataFilter(key="published_at", value=until.timestamp(), operator=FilterOperator.LTE)
        )
    return MetadataFilters(filters=conditions) if conditions else None


def _scores(result: Any) -> list[float]:
    return list(result.similarities or [0.0] * len(result.nodes or []))


def _hash(node: Any) -> str:
    return str(node.metadata["content_hash"])


def _chunk(node: Any, score: float) -> EvidenceChunk:
    meta = node.metadata
    return EvidenceChunk(
        chunk_id=str(meta["chunk_id"]),
        article_id=str(meta["article_id"]),
        chunk_index=int(meta["chunk_index"]),
        text=node.get_content(),
        title=str(meta["title"]),
        url=str(meta["url"]),
        published_at=float(meta["published_at"]),
        score=float(score),
    )
