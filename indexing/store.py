"""The article index in Qdrant: one collection of chunks, one of article records, behind aliases.

`VectorIndex` is the protocol (contract: tests/integration/test_vector_index_contract.py):
- `upsert(items)` makes each article's new version visible as a unit: a search never sees an
  article with no chunks or with chunks of two versions, even if the process dies midway;
- `delete(ids)` removes articles (a retraction) and all their chunks; it returns how many existed;
- `search(vector, k, where)` returns up to k chunk hits of current versions, best first, with the
  payload filter applied;
- `scroll(where)` yields every current article record; `get(ids)` fetches records by id.

How the unit swap works (multi-version, no locks across calls): chunk point ids carry the
article's content hash, so a new version's chunks are written beside the old ones; then the
article record, which names the current hash, is replaced in one point write (the commit); then
the old chunks are deleted. Searches keep only chunks whose hash matches their article's record,
so at every moment exactly one version of each article is visible. A crash before the commit
leaves the old version; after it, the new one; stray chunks are invisible and dropped by `reindex`.

Collections are generations (`news_chunks_g3`) reached through aliases (`news_chunks`); a
re-index fills a new generation and switches both aliases in one request.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from indexing.articles import Article
from indexing.chunking import Chunk, chunk_id, point_id
from indexing.embedding import Vectors

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qm

DENSE = "text-dense"  # llama-index's QdrantVectorStore default vector name, so it reads our chunks
_KEYWORD_FIELDS = ("article_id", "section", "language", "publication", "story_id", "content_hash")


class IndexUnavailable(RuntimeError):
    """The index cannot be opened or used as configured."""


@dataclass(frozen=True)
class ArticleRecord:
    """What the index knows of one article: its current version, story and article vector."""

    article: Article
    content_hash: str
    story_id: str
    n_chunks: int
    vector: Vectors

    @property
    def chunk_ids(self) -> list[str]:
        return [chunk_id(self.article.id, self.content_hash, i) for i in range(self.n_chunks)]


@dataclass(frozen=True)
class IndexedArticle:
    """An article version ready to write: its record, chunks, and one vector per chunk."""

    record: ArticleRecord
    chunks: Sequence[Chunk]
    vectors: Vectors


@dataclass(frozen=True)
class SearchFilter:
    """Payload conditions; empty tuples and None mean "any"."""

    sections: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    article_ids: tuple[str, ...] = ()
    story_ids: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    article_id: str
    score: float
    text: str
    title: str
    url: str
    section: str
    story_id: str
    published_at: float
    payload: dict[str, Any] = field(repr=False, default_factory=dict)


class VectorIndex(Protocol):
    def upsert(self, items: Sequence[IndexedArticle]) -> None: ...
    def delete(self, article_ids: Sequence[str]) -> int: ...
    def search(self, vector: Vectors, k: int, where: SearchFilter | None = None) -> list[Hit]: ...
    def scroll(self, where: SearchFilter | None = None) -> Iterator[ArticleRecord]: ...
    def get(self, article_ids: Sequence[str]) -> dict[str, ArticleRecord]: ...


Fence = Callable[[bool], contextlib.AbstractContextManager[Any]]  # exclusive? -> held while in use


def no_fence(exclusive: bool) -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class QdrantConfig:
    """Where Qdrant lives: `url` (server), else `path` (embedded, a folder), else in memory."""

    url: str | None = None
    api_key: str | None = None
    path: str | None = None
    prefix: str = "news"
    # A server's (a cluster's) layout of new collections; None: the server's default. Local mode
    # is one process with no shards or replicas: it ignores them.
    shards: int | None = None
    replication: int | None = None
    write_consistency: int | None = None

    def __post_init__(self) -> None:
        if self.write_consistency and self.write_consistency > (self.replication or 1):
            raise ValueError(
                f"a write cannot wait for {self.write_consistency} copies of a shard that has "
                f"{self.replication or 1}: lower QDRANT_WRITE_CONSISTENCY or raise QDRANT_REPLICATION"
            )

    def layout(self) -> dict[str, int]:
        """`create_collection`'s sharding arguments, those that are set."""
        given = {
            "shard_number": self.shards,
            "replication_factor": self.replication,
            "write_consistency_factor": self.write_consistency,
        }
        return {name: value for name, value in given.items() if value is not None}

    def connect(self) -> QdrantClient:
        from qdrant_client import QdrantClient

        if self.url:
            return QdrantClient(url=self.url, api_key=self.api_key, timeout=30)
        if self.path and self.path != ":memory:":
            Path(self.path).mkdir(parents=True, exist_ok=True)
            try:
                return QdrantClient(path=self.path)
            except RuntimeError as exc:  # local mode locks its folder to one process
                raise IndexUnavailable(
                    f"the embedded index at {self.path} is in use by another process "
                    "(a running server?). Stop it, or point QDRANT_URL at a Qdrant server."
                ) from exc
        return QdrantClient(location=":memory:")


class QdrantIndex:
    """`VectorIndex` over qdrant-client, in any of its modes."""

    def __init__(
        self,
        client: QdrantClient,
        prefix: str,
        *,
        generation: int | None = None,
        layout: Mapping[str, int] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.layout = dict(layout or {})  # QdrantConfig.layout(), given to every generation it creates
        self.generation = generation
        suffix = "" if generation is None else f"_g{generation}"
        self.chunks = f"{prefix}_chunks{suffix}"
        self.articles = f"{prefix}_articles{suffix}"
        # Local mode is plain Python and not thread-safe; a server needs no lock of ours.
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.is_local else contextlib.nullcontext()
        )
        # Across processes (a Qdrant server with several writers): writes to the served
        # generation hold it shared, re-index's last catch-up and switch hold it exclusive.
        # Local mode needs none (one process owns the folder); the server sets one for a server.
        self.fence: Fence = no_fence

    @classmethod
    def open(cls, config: QdrantConfig, dim: int) -> QdrantIndex:
        index = cls(config.connect(), config.prefix, layout=config.layout())
        index.ensure(dim)
        return index

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the index while another reader of the same client (llama-index) uses it."""
        with self._lock:
            yield

    @property
    def is_local(self) -> bool:
        from qdrant_client.local.qdrant_local import QdrantLocal

        return isinstance(self.client._client, QdrantLocal)

    # -- collections, generations and aliases ------------------------------------------------

    def ensure(self, dim: int) -> None:
        """Create generation 1 behind the aliases on first use; check the vector size after."""
        if not self.exists():
            first = self.new_generation(dim)
            self.promote(first)
        current = self.dim()
        if current != dim:
            raise IndexUnavailable(
                f"index vectors have {current} dimensions, the embedder gives {dim}: "
                "run `briefing reindex` after changing the embedding model"
            )

    def exists(self) -> bool:
        return self._alias_target(self.chunks) is not None

    def dim(self) -> int:
        params = self.client.get_collection(self.chunks).config.params.vectors
        if not isinstance(params, dict) or DENSE not in params:
            raise IndexUnavailable(f"{self.chunks} has no {DENSE!r} vectors: not a collection of ours")
        return int(params[DENSE].size)

    def new_generation(self, dim: int) -> QdrantIndex:
        """Empty collections for the next generation; leftovers of a crashed re-index go first."""
        from qdrant_client.http import models as qm

        generation = self._latest_generation() + 1
        self._drop_unserved_generations()
        staged = QdrantIndex(self.client, self.prefix, generation=generation, layout=self.layout)
        staged._lock = self._lock
        distance = qm.Distance.COSINE
        self._create(staged.chunks, {DENSE: qm.VectorParams(size=dim, distance=distance)})
        self._create(staged.articles, qm.VectorParams(size=dim, distance=distance))
        staged._index_payload()
        return staged

    def _create(self, name: str, vectors: Any) -> None:
        layout = {} if self.is_local else self.layout  # local mode has no shards to lay out
        self.client.create_collection(
            name,
            vectors_config=vectors,
            shard_number=layout.get("shard_number"),
            replication_factor=layout.get("replication_factor"),
            write_consistency_factor=layout.get("write_consistency_factor"),
        )

    def promote(self, staged: QdrantIndex) -> None:
        """Point both aliases at `staged` in one request, then drop the old generation."""
        from qdrant_client.http import models as qm

        old = {self._alias_target(self.chunks), self._alias_target(self.articles)} - {None}
        ops: list[qm.CreateAliasOperation | qm.DeleteAliasOperation] = []
        for alias, target in ((self.chunks, staged.chunks), (self.articles, staged.articles)):
            if self._alias_target(alias):
                ops.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias)))
            ops.append(
                qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=target, alias_name=alias))
            )
        with self._lock:
            self.client.update_collection_aliases(change_aliases_operations=ops)
            for name in old:
                if name:
                    self.client.delete_collection(name)

    def _alias_target(self, alias: str) -> str | None:
        for item in self.client.get_aliases().aliases:
            if item.alias_name == alias:
                return str(item.collection_name)
        return None

    def _drop_unserved_generations(self) -> None:
        served = {self._alias_target(self.chunks), self._alias_target(self.articles)}
        for name in self._generation_names():
            if name not in served:
                self.client.delete_collection(name)

    def _generation_names(self) -> list[str]:
        stems = (f"{self.prefix}_chunks_g", f"{self.prefix}_articles_g")
        names = [c.name for c in self.client.get_collections().collections]
        return [n for n in names if n.startswith(stems) and n.rsplit("_g", 1)[1].isdigit()]

    def _latest_generation(self) -> int:
        return max((int(n.rsplit("_g", 1)[1]) for n in self._generation_names()), default=0)

    def _index_payload(self) -> None:
        if self.is_local:  # local mode evaluates filters in Python and ignores indexes
            return
        from qdrant_client.http import models as qm

        for name in _KEYWORD_FIELDS:
            self.client.create_payload_index(self.chunks, name, qm.PayloadSchemaType.KEYWORD)
        self.client.create_payload_index(self.chunks, "published_at", qm.PayloadSchemaType.FLOAT)
        self.client.create_payload_index(self.articles, "story_id", qm.PayloadSchemaType.KEYWORD)
        self.client.create_payload_index(self.articles, "published_ts", qm.PayloadSchemaType.FLOAT)

    # -- VectorIndex -------------------------------------------------------------------------

    def upsert(self, items: Sequence[IndexedArticle]) -> None:
        if not items:
            return
        with self.fence(False), self._lock:
            previous = self.get([item.record.article.id for item in items])
            self._write_chunks(items)
            self._commit_records([item.record for item in items])
            stale: list[qm.ExtendedPointId] = [
                point_id(cid)
                for item in items
                if (old := previous.get(item.record.article.id))
                and old.content_hash != item.record.content_hash
                for cid in old.chunk_ids
            ]
            self._delete_chunks(stale)

    def delete(self, article_ids: Sequence[str]) -> int:
        from qdrant_client.http import models as qm

        with self.fence(False), self._lock:
            existing = self.get(article_ids)
            if not existing:
                return 0
            # Record first: from here on the chunks are invisible, whatever happens next.
            self.client.delete(
                self.articles,
                points_selector=qm.PointIdsList(points=[point_id(a) for a in existing]),
                wait=True,
            )
            self.client.delete(
                self.chunks,
                points_selector=qm.FilterSelector(
                    filter=qm.Filter(
                        must=[qm.FieldCondition(key="article_id", match=qm.MatchAny(any=list(existing)))]
                    )
                ),
                wait=True,
            )
        return len(existing)

    def search(self, vector: Vectors, k: int, where: SearchFilter | None = None) -> list[Hit]:
        # Over-fetch a little: chunks of a version being replaced are fetched and then dropped.
        with self._lock:
            points = self.client.query_points(
                self.chunks,
                query=np.asarray(vector, dtype=np.float32).tolist(),
                using=DENSE,
                query_filter=_filter(where),
                limit=k * 2 + 8,
                with_payload=True,
            ).points
            hashes = self._current_hashes({str(p.payload["article_id"]) for p in points if p.payload})
        hits = [_hit(p) for p in points if p.payload]
        return [h for h in hits if hashes.get(h.article_id) == h.payload["content_hash"]][:k]

    def scroll(self, where: SearchFilter | None = None) -> Iterator[ArticleRecord]:
        offset: Any = None
        while True:
            with self._lock:
                points, offset = self.client.scroll(
                    self.articles,
                    scroll_filter=_article_filter(where),
                    limit=256,
                    offset=offset,
                    with_payload=True,
                    with_vectors=True,
                )
            yield from (_record(p) for p in points)
            if offset is None:
                return

    def get(self, article_ids: Sequence[str]) -> dict[str, ArticleRecord]:
        if not article_ids:
            return {}
        with self._lock:
            points = self.client.retrieve(
                self.articles,
                [point_id(a) for a in article_ids],
                with_payload=True,
                with_vectors=True,
            )
        records = (_record(p) for p in points)
        return {r.article.id: r for r in records}

    def chunks_by_id(self, chunk_ids: Sequence[str]) -> dict[str, Hit]:
        """Chunks by citation id (`article@hash#n`) in one request, for showing cited passages.
        An id names one version's text, so no hash check is needed; ids no longer stored (a
        retracted or replaced version) are absent. Nothing is searched: every score is 0."""
        if not chunk_ids:
            return {}
        with self._lock:
            points = self.client.retrieve(
                self.chunks, [point_id(c) for c in chunk_ids], with_payload=True, with_vectors=False
            )
        hits = (_hit(p, score=0.0) for p in points if p.payload)
        return {h.chunk_id: h for h in hits}

    def count(self) -> tuple[int, int]:
        """(articles, chunk points) in the current generation, strays included."""
        with self._lock:
            return (
                self.client.count(self.articles, exact=True).count,
                self.client.count(self.chunks, exact=True).count,
            )

    def close(self) -> None:
        self.client.close()

    # -- steps of upsert, separate so tests can crash between them --------------------------

    def _write_chunks(self, items: Iterable[IndexedArticle]) -> None:
        from qdrant_client.http import models as qm

        ids: list[qm.ExtendedPointId] = []
        payloads: list[dict[str, Any]] = []
        vectors: list[Vectors] = []
        for item in items:
            for chunk, vector in zip(item.chunks, item.vectors, strict=True):
                ids.append(chunk.point_id)
                payloads.append(_chunk_payload(item.record, chunk))
                vectors.append(vector)
        batch = qm.Batch(ids=ids, vectors={DENSE: np.asarray(vectors).tolist()}, payloads=payloads)
        self.client.upsert(self.chunks, points=batch, wait=True)

    def _commit_records(self, records: Sequence[ArticleRecord]) -> None:
        from qdrant_client.http import models as qm

        ids: list[qm.ExtendedPointId] = [point_id(r.article.id) for r in records]
        batch = qm.Batch(
            ids=ids,
            vectors=np.asarray([r.vector for r in records]).tolist(),
            payloads=[_record_payload(r) for r in records],
        )
        self.client.upsert(self.articles, points=batch, wait=True)

    def _delete_chunks(self, ids: Sequence[qm.ExtendedPointId]) -> None:
        from qdrant_client.http import models as qm

        if ids:
            self.client.delete(self.chunks, points_selector=qm.PointIdsList(points=list(ids)), wait=True)

    def _current_hashes(self, article_ids: set[str]) -> dict[str, str]:
        if not article_ids:
            return {}
        points = self.client.retrieve(
            self.articles,
            [point_id(a) for a in article_ids],
            with_payload=["article_id", "content_hash"],
            with_vectors=False,
        )
        return {str(p.payload["article_id"]): str(p.payload["content_hash"]) for p in points if p.payload}


# -- payloads and filters ---------------------------------------------------------------------


def _chunk_payload(record: ArticleRecord, chunk: Chunk) -> dict[str, Any]:
    """llama-index's node layout, so its QdrantVectorStore and retrievers read our points."""
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
    from llama_index.core.vector_stores.utils import node_to_metadata_dict

    article = record.article
    metadata = {
        "article_id": article.id,
        "chunk_id": chunk.chunk_id,
        "chunk_index": chunk.index,
        "content_hash": record.content_hash,
        "title": article.title,
        "url": str(article.url),
        "section": article.section,
        "language": article.language,
        "publication": article.publication,
        "published_at": article.published_at.timestamp(),
        "story_id": record.story_id,
    }
    node = TextNode(
        id_=chunk.point_id,
        text=chunk.text,
        metadata=metadata,
        excluded_embed_metadata_keys=list(metadata),
        excluded_llm_metadata_keys=[k for k in metadata if k not in ("title", "published_at")],
        relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=article.id)},
    )
    return node_to_metadata_dict(node, remove_text=False, flat_metadata=True)


def _record_payload(record: ArticleRecord) -> dict[str, Any]:
    return {
        "article": record.article.model_dump(mode="json"),
        "article_id": record.article.id,
        "content_hash": record.content_hash,
        "story_id": record.story_id,
        "n_chunks": record.n_chunks,
        "published_ts": record.article.published_at.timestamp(),
    }


def _record(point: Any) -> ArticleRecord:
    payload = point.payload
    return ArticleRecord(
        article=Article.model_validate(payload["article"]),
        content_hash=payload["content_hash"],
        story_id=payload["story_id"],
        n_chunks=int(payload["n_chunks"]),
        vector=np.asarray(point.vector, dtype=np.float32),
    )


def _hit(point: Any, score: float | None = None) -> Hit:
    payload = point.payload
    return Hit(
        chunk_id=payload["chunk_id"],
        article_id=payload["article_id"],
        score=float(point.score) if score is None else score,
        text=json.loads(payload["_node_content"])["text"],
        title=payload["title"],
        url=payload["url"],
        section=payload["section"],
        story_id=payload["story_id"],
        published_at=float(payload["published_at"]),
        payload=payload,
    )


def _filter(where: SearchFilter | None, *, time_key: str = "published_at") -> qm.Filter | None:
    from qdrant_client.http import models as qm

    if where is None:
        return None
    must: list[qm.Condition] = [
        qm.FieldCondition(key=key, match=qm.MatchAny(any=list(values)))
        for key, values in (
            ("section", where.sections),
            ("language", where.languages),
            ("article_id", where.article_ids),
            ("story_id", where.story_ids),
        )
        if values
    ]
    if where.since or where.until:
        since = where.since.timestamp() if where.since else None
        until = where.until.timestamp() if where.until else None
        must.append(qm.FieldCondition(key=time_key, range=qm.Range(gte=since, lt=until)))
    return qm.Filter(must=must) if must else None


def _article_filter(where: SearchFilter | None) -> qm.Filter | None:
    if where and (where.sections or where.languages):
        raise ValueError("article records filter by ids, stories and time only")
    return _filter(where, time_key="published_ts")
