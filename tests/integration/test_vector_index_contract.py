"""The `VectorIndex` contract on every Qdrant mode that runs here: memory, embedded path, and a
server when QDRANT_URL is set. Vectors are small and synthetic: this is about the index."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from indexing import (
    Article,
    ArticleRecord,
    Chunk,
    IndexedArticle,
    QdrantConfig,
    QdrantIndex,
    SearchFilter,
)
from tests.factories import make_article

DIM = 8
MODES = ["memory", "path"] + (["server"] if os.environ.get("QDRANT_URL") else [])


@pytest.fixture(params=MODES)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantIndex]:
    config = {
        "memory": QdrantConfig(),
        "path": QdrantConfig(path=str(tmp_path / "qdrant")),
        "server": QdrantConfig(url=os.environ.get("QDRANT_URL"), prefix=f"t{uuid.uuid4().hex[:8]}"),
    }[request.param]
    index = QdrantIndex.open(config, DIM)
    yield index
    index.close()


def direction(axis: int) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    v[axis] = 1.0
    return v


def version(article: Article, axis: int, n_chunks: int = 2, story: str = "s") -> IndexedArticle:
    """An article version whose chunks all point along one axis."""
    digest = article.content_hash()
    chunks = [Chunk(article.id, digest, i, f"{article.body} part {i}", article.body) for i in range(n_chunks)]
    vectors = np.stack([direction(axis)] * n_chunks)
    return IndexedArticle(ArticleRecord(article, digest, story, n_chunks, direction(axis)), chunks, vectors)


def chunk_ids(index: QdrantIndex, axis: int) -> set[str]:
    return {h.chunk_id for h in index.search(direction(axis), 20)}


def test_upsert_then_search_and_get(index: QdrantIndex) -> None:
    a = make_article("a-1", section="sport")
    index.upsert([version(a, 0), version(make_article("a-2"), 1)])
    hits = index.search(direction(0), 1)
    assert [h.article_id for h in hits] == ["a-1"]
    assert hits[0].section == "sport" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert index.get(["a-1", "missing"])["a-1"].article == a


def test_payload_filters(index: QdrantIndex) -> None:
    index.upsert(
        [
            version(make_article("s-1", section="sport", published_at=0), 0, story="x"),
            version(make_article("l-1", section="local", language="nb", published_at=48), 0, story="y"),
        ]
    )
    probe = direction(0)
    assert {h.article_id for h in index.search(probe, 10, SearchFilter(sections=("local",)))} == {"l-1"}
    assert {h.article_id for h in index.search(probe, 10, SearchFilter(languages=("en",)))} == {"s-1"}
    assert {h.article_id for h in index.search(probe, 10, SearchFilter(story_ids=("x",)))} == {"s-1"}
    since = datetime(2026, 11, 17, tzinfo=UTC)
    assert {h.article_id for h in index.search(probe, 10, SearchFilter(since=since))} == {"l-1"}
    assert [r.article.id for r in index.scroll(SearchFilter(since=since))] == ["l-1"]


def test_update_replaces_all_chunks(index: QdrantIndex) -> None:
    old = make_article("u-1")
    index.upsert([version(old, 0, n_chunks=3)])
    new = make_article("u-1", body="Entirely new text about something else.")
    index.upsert([version(new, 0, n_chunks=2)])
    ids = chunk_ids(index, 0)
    assert len(ids) == 2 and all(new.content_hash()[:12] in c for c in ids)
    assert index.count() == (1, 2)


def test_delete_removes_article_and_chunks(index: QdrantIndex) -> None:
    index.upsert([version(make_article("d-1"), 0), version(make_article("d-2"), 0)])
    assert index.delete(["d-1", "never-indexed"]) == 1
    assert {h.article_id for h in index.search(direction(0), 10)} == {"d-2"}
    assert index.get(["d-1"]) == {}
    assert index.count() == (1, 2)
    assert index.delete(["d-1"]) == 0


def test_a_crash_before_the_commit_keeps_the_old_version(
    index: QdrantIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = make_article("c-1")
    index.upsert([version(old, 0)])
    before = chunk_ids(index, 0)

    def crash(*args: object) -> None:
        raise RuntimeError("killed between writing chunks and committing the record")

    monkeypatch.setattr(index, "_commit_records", crash)
    with pytest.raises(RuntimeError):
        index.upsert([version(make_article("c-1", body="Changed text."), 0, n_chunks=3)])
    assert chunk_ids(index, 0) == before  # the new chunks exist but are not visible
    assert index.get(["c-1"])["c-1"].content_hash == old.content_hash()


def test_a_crash_after_the_commit_shows_only_the_new_version(
    index: QdrantIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.upsert([version(make_article("c-2"), 0)])
    new = make_article("c-2", body="Changed text.")

    def crash(*args: object) -> None:
        raise RuntimeError("killed before the old chunks were deleted")

    monkeypatch.setattr(index, "_delete_chunks", crash)
    with pytest.raises(RuntimeError):
        index.upsert([version(new, 0, n_chunks=3)])
    ids = chunk_ids(index, 0)
    assert len(ids) == 3 and all(new.content_hash()[:12] in c for c in ids)


def test_no_moment_with_none_or_both_versions(index: QdrantIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    index.upsert([version(make_article("m-1"), 0, n_chunks=2)])
    seen: list[set[str]] = []
    for step in ("_write_chunks", "_commit_records", "_delete_chunks"):
        original = getattr(index, step)

        def observed(*args: object, _original: object = original) -> None:
            seen.append({c.split("#")[0] for c in chunk_ids(index, 0)})
            _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(index, step, observed)
    index.upsert([version(make_article("m-1", body="New version."), 0, n_chunks=3)])
    seen.append({c.split("#")[0] for c in chunk_ids(index, 0)})
    assert all(len(versions) == 1 for versions in seen), seen


def test_new_generation_and_promote_switch_aliases(index: QdrantIndex) -> None:
    index.upsert([version(make_article("g-1"), 0)])
    staged = index.new_generation(DIM)
    staged.upsert([version(make_article("g-2"), 1)])
    assert {h.article_id for h in index.search(direction(1), 5)} == {"g-1"}  # old still serving
    index.promote(staged)
    assert {h.article_id for h in index.search(direction(1), 5)} == {"g-2"}


def test_dimension_mismatch_is_a_clear_error(index: QdrantIndex) -> None:
    from indexing import IndexUnavailable

    with pytest.raises(IndexUnavailable, match="run `briefing reindex`"):
        index.ensure(DIM + 1)


def test_llama_index_vector_store_reads_the_same_collection(index: QdrantIndex) -> None:
    from llama_index.core.vector_stores.types import (
        MetadataFilter,
        MetadataFilters,
        VectorStoreQuery,
    )
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    index.upsert([version(make_article("li-1", section="sport"), 0), version(make_article("li-2"), 0)])
    store = QdrantVectorStore(collection_name=index.chunks, client=index.client)
    filters = MetadataFilters(filters=[MetadataFilter(key="section", value="sport")])
    result = store.query(
        VectorStoreQuery(query_embedding=direction(0).tolist(), similarity_top_k=5, filters=filters)
    )
    assert result.nodes and {n.metadata["article_id"] for n in result.nodes} == {"li-1"}
    assert result.nodes[0].get_content().startswith(make_article("li-1").body.strip())
