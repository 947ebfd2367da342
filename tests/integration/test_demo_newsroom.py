"""Known answers on the demo newsroom, with the real embedding model and Qdrant in memory."""

from __future__ import annotations

import json

import pytest

from indexing import (
    Article,
    Chunker,
    Indexer,
    QdrantConfig,
    QdrantIndex,
    SentenceTransformerEmbedder,
    pairwise_scores,
    reindex,
)
from tests.conftest import DEMO

THREADS = {
    thread["thread_id"]: set(thread["article_ids"])
    for path in sorted((DEMO / "threads").glob("*.jsonl"))
    for thread in map(json.loads, path.open())
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("museum buys a painting", {"cul-0003"}),
        ("Moon lander", {"wld-0007"}),
        ("landslide buries a road", {"wld-0005"}),
        # A question about a developing story: any article of its thread may come first.
        (
            "What price per share did Fjordhav agree to pay for Nordvik Laks?",
            THREADS["t-bus-nordvik-laks-takeover"],
        ),
        ("How long will Ingrid Solvik be out after her knee surgery?", THREADS["t-spo-solvik-injury"]),
        ("What caused the warehouse fire on Nordkaia?", THREADS["t-loc-nordkaia-fire"]),
        ("Hvor mange arbeidsplasser forsvinner ved Vestkyst Sjømat?", THREADS["t-nob-001"]),
    ],
)
def test_a_query_about_a_story_returns_its_article_first(
    demo: Indexer, query: str, expected: set[str]
) -> None:
    assert demo.search(query, 1)[0].article_id in expected


def test_reingesting_unchanged_articles_writes_nothing(demo: Indexer, demo_articles: list[Article]) -> None:
    before = demo.index.count()
    report = demo.ingest(demo_articles)
    assert (report.new, report.updated, report.chunks) == (0, 0, 0)
    assert report.unchanged == len({a.id for a in demo_articles})
    assert demo.index.count() == before


def test_same_id_update_in_the_demo_keeps_only_the_latest_text(demo: Indexer) -> None:
    # spo-0013 is a live match report, later updated with the final score.
    record = demo.index.get(["spo-0013"])["spo-0013"]
    hits = [h for h in demo.search("Havnby HK cup semi-final result", 20) if h.article_id == "spo-0013"]
    assert hits and all(h.payload["content_hash"] == record.content_hash for h in hits)
    assert "27-25" in record.article.body


def test_update_replaces_chunks_and_retraction_removes_them(
    embedder: SentenceTransformerEmbedder, chunker: Chunker, demo_articles: list[Article]
) -> None:
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, chunker)
    original = next(a for a in demo_articles if a.id == "loc-0013")
    indexer.ingest([original])
    fact = "Investigators later found a second seat of fire in the Nordkaia paint store."
    corrected = original.model_copy(update={"body": original.body + "\n\n" + fact})
    report = indexer.ingest([corrected])
    assert report.updated == 1
    hits = indexer.search("second seat of fire in the paint store", 10)
    assert hits and {h.payload["content_hash"] for h in hits} == {corrected.content_hash()}
    assert index.count() == (1, len(chunker.split(corrected)))
    assert indexer.retract(["loc-0013"]) == 1
    assert indexer.search("Nordkaia fire", 10) == [] and index.count() == (0, 0)
    index.close()


def test_story_threads_match_the_documented_ones(demo: Indexer) -> None:
    threads = list(THREADS.values())
    predicted = {a.id: story for story, articles in demo.stories().items() for a in articles}
    scores = pairwise_scores(predicted, threads)
    assert scores.precision >= 0.9 and scores.recall >= 0.85, scores
    stories = demo.stories()
    assert [a.id for a in stories[predicted["spo-0001"]]][:3] == ["spo-0001", "spo-0007", "spo-0012"]


def test_reindex_switches_only_when_complete(
    embedder: SentenceTransformerEmbedder, chunker: Chunker, demo_articles: list[Article]
) -> None:
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, chunker)
    indexer.ingest(demo_articles[:40])
    query = "Nordvik Laks takeover"
    before = [h.chunk_id for h in indexer.search(query, 5)]

    def crash(done: int) -> None:
        if done >= 20:
            raise RuntimeError("killed midway through the re-index")

    with pytest.raises(RuntimeError):
        reindex(index, embedder, chunker, batch_size=10, on_batch=crash)
    assert [h.chunk_id for h in indexer.search(query, 5)] == before  # old generation serves
    stories = {r.article.id: r.story_id for r in index.scroll()}
    assert reindex(index, embedder, chunker, batch_size=10) == len({a.id for a in demo_articles[:40]})
    assert [h.chunk_id for h in indexer.search(query, 5)] == before
    assert {r.article.id: r.story_id for r in index.scroll()} == stories
    names = {c.name for c in index.client.get_collections().collections}
    assert names == {"news_chunks_g3", "news_articles_g3"}  # the crashed generation 2 is gone
    index.close()


def test_writes_during_a_reindex_reach_the_new_generation(
    embedder: SentenceTransformerEmbedder, chunker: Chunker, demo_articles: list[Article]
) -> None:
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, chunker)
    first, later, gone, changed = demo_articles[:30], demo_articles[30], demo_articles[3], demo_articles[5]
    indexer.ingest(first)
    fixed = changed.model_copy(update={"title": changed.title + " (corrected)"})

    def meanwhile(done: int) -> None:  # an ingest, an update and a retraction during the copy
        if done == 10:
            indexer.ingest([later, fixed])
            indexer.retract([gone.id])

    reindex(index, embedder, chunker, batch_size=10, on_batch=meanwhile)
    records = index.get([later.id, gone.id, changed.id])
    assert later.id in records and gone.id not in records
    assert records[changed.id].article.title.endswith("(corrected)")
    assert {r.article.id for r in index.scroll()} == {a.id for a in first} - {gone.id} | {later.id}
    index.close()
