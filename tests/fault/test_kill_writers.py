"""kill -9 of the commands that write the index and the summaries, each on a copy of one indexed
DATA_DIR (the embedded store, as `make run` has it): `briefing ingest` between batches, `briefing
reindex` while it copies, `briefing summarize` between two drafts. Afterwards the previous state
serves as before (the same search answers), nothing is half-written (every article record has all
its chunks, the aliases point at a complete generation, every stored summary is whole) and the
same command run again finishes the work."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from briefing import Summary
from indexing import (
    Article,
    Chunker,
    Indexer,
    QdrantConfig,
    QdrantIndex,
    SearchFilter,
    SentenceTransformerEmbedder,
)
from tests.conftest import DEMO
from tests.fault.processes import environment, kill_after, kill_when, run, start

pytestmark = [pytest.mark.slow, pytest.mark.fault]  # the real embedder, in this process and in each command
BASE = 24  # articles indexed before each kill: enough for a copy that takes seconds
FEED = 32  # articles the killed ingest was given
QUERIES = ("Nordvik Laks takeover price", "ferry terminal budget vote", "warehouse fire Nordkaia")


@pytest.fixture(scope="module")
def indexed(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
) -> Path:
    """A DATA_DIR whose index holds the first BASE demo articles (each test copies it)."""
    data_dir = tmp_path_factory.mktemp("indexed")
    index = _open(data_dir)
    index.ensure(embedder.dim)
    assert Indexer(index, embedder, chunker).ingest(demo_articles[:BASE]).ok
    index.close()
    return data_dir


@pytest.fixture
def data_dir(indexed: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(indexed, copy)
    return copy


def _open(data_dir: Path) -> QdrantIndex:
    return QdrantIndex(QdrantConfig(path=str(data_dir / "qdrant")).connect(), "news")


def _answers(data_dir: Path, embedder: SentenceTransformerEmbedder, ids: list[str]) -> list[list[str]]:
    """Top chunks for each query among `ids`, and a check that no article is half-written."""
    index = _open(data_dir)
    try:
        for record in index.scroll():
            chunks = index.chunks_by_id(record.chunk_ids)
            assert len(chunks) == record.n_chunks, f"{record.article.id} has a partial set of chunks"
        only = SearchFilter(article_ids=tuple(ids))
        return [[h.chunk_id for h in index.search(embedder.embed_query(q), 5, only)] for q in QUERIES]
    finally:
        index.close()


def _demo_lines() -> list[str]:
    """The demo's records in `open_source`'s order (the `demo_articles` fixture's)."""
    files = sorted((DEMO / "articles").glob("*.jsonl"))
    return [line for f in files for line in f.read_text().splitlines(keepends=True) if line.strip()]


def _ids(data_dir: Path) -> list[str]:
    index = _open(data_dir)
    try:
        return sorted(r.article.id for r in index.scroll())
    finally:
        index.close()


def test_a_killed_ingest_keeps_whole_articles_and_a_rerun_finishes(
    data_dir: Path, tmp_path: Path, embedder: SentenceTransformerEmbedder, demo_articles: list[Article]
) -> None:
    base = _ids(data_dir)
    before = _answers(data_dir, embedder, base)
    feed = tmp_path / "feed.jsonl"
    feed.write_text("".join(_demo_lines()[BASE : BASE + FEED]))  # the next FEED demo articles
    env = environment(data_dir, f"sqlite:///{data_dir / 'briefing.db'}")
    ingest = start(["ingest", str(feed), "--batch-size", "4"], env)
    kill_when(ingest, "ingest: 8article")  # two batches in: one written, the next in flight

    after = _ids(data_dir)
    fed = {a.id for a in demo_articles[: BASE + FEED]}
    assert set(base) < set(after) < fed  # it died mid-way
    assert _answers(data_dir, embedder, base) == before  # checked whole inside, too

    rerun = run(["ingest", str(feed)], env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert _ids(data_dir) == sorted(fed)
    assert _answers(data_dir, embedder, base) == before


def test_a_killed_reindex_keeps_serving_the_old_generation(
    data_dir: Path, embedder: SentenceTransformerEmbedder
) -> None:
    base = _ids(data_dir)
    before = _answers(data_dir, embedder, base)
    env = environment(data_dir, f"sqlite:///{data_dir / 'briefing.db'}")
    reindex = start(["reindex"], env)
    staged = data_dir / "qdrant" / "collection" / "news_chunks_g2"
    kill_after(reindex, lambda: staged.exists(), 0.2)  # generation 2 is being filled

    aliases, collections = _generations(data_dir)
    assert aliases == GEN1 and set(GEN1.values()) <= collections  # still the old generation
    assert _ids(data_dir) == base and _answers(data_dir, embedder, base) == before

    rerun = run(["reindex"], env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    aliases, collections = _generations(data_dir)
    generation = aliases["news_chunks"].rsplit("_g", 1)[1]
    assert generation != "1" and aliases["news_articles"] == f"news_articles_g{generation}"
    assert collections == set(aliases.values())  # the killed generation's leftovers are gone
    assert _ids(data_dir) == base and _answers(data_dir, embedder, base) == before


GEN1 = {"news_chunks": "news_chunks_g1", "news_articles": "news_articles_g1"}


def _generations(data_dir: Path) -> tuple[dict[str, str], set[str]]:
    """Where the aliases point, and which collections exist."""
    index = _open(data_dir)
    try:
        aliases = {a.alias_name: a.collection_name for a in index.client.get_aliases().aliases}
        return aliases, {c.name for c in index.client.get_collections().collections}
    finally:
        index.close()


def test_a_killed_summarize_keeps_whole_drafts_and_a_rerun_writes_the_rest(
    data_dir: Path, embedder: SentenceTransformerEmbedder
) -> None:
    base = _ids(data_dir)
    before = _answers(data_dir, embedder, base)
    url = f"sqlite:///{data_dir / 'briefing.db'}"
    env = environment(data_dir, url, LLM_BACKEND="llamacpp")  # the packaged GGUF, one thread
    articles = base[:2]
    summarize = start(["summarize", *articles], env)
    kill_after(summarize, lambda: len(_drafts(url)) >= 1, 0.0)  # the second is being drafted

    (first,) = _drafts(url)  # one stored, the one in hand not: a row is all or nothing
    assert first.article_id == articles[0] and first.sentences
    assert _answers(data_dir, embedder, base) == before

    rerun = run(["summarize", *articles], env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    drafts = _drafts(url)
    assert [d.article_id for d in drafts] == articles and all(d.sentences for d in drafts)
    assert drafts[0] == first  # kept, not drafted again


def _drafts(url: str) -> list[Summary]:
    """Stored summaries read back through the store, oldest first; the SQLite file checked whole."""
    from server.db import connect
    from server.stores import SqlSummaryStore

    engine = connect(url)
    try:
        if not inspect(engine).has_table("summaries"):
            return []
        with engine.connect() as connection:
            assert connection.execute(text("pragma integrity_check")).scalar() == "ok"
            ids = connection.execute(text("select id from summaries order by created_at")).scalars().all()
        store = SqlSummaryStore(engine)
        return [s for i in ids if (s := store.get(i)) is not None]
    finally:
        engine.dispose()
