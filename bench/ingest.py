"""Ingest benchmark: the indexing pipeline against plain SentenceTransformer.encode, same run.

    python bench/ingest.py --data ../shared/datasets/mind_small --out bench/results/ingest.json

DIR holds a MIND `news.tsv` (research-only data; read in place, never copied). Measures:
- raw encode: `SentenceTransformer.encode` over exactly the texts the pipeline embeds;
- pipeline: validation, hashing, chunking, embedding, story clustering and the atomic upsert
  into the embedded Qdrant store (`path=`, the default), end to end;
- search: 1,000 queries (article titles), end to end (query embedding + Qdrant) and index only,
  without and with a payload filter (section);
- peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, write_results

from indexing import (
    Article,
    Chunker,
    Indexer,
    QdrantConfig,
    QdrantIndex,
    SearchFilter,
    SentenceTransformerEmbedder,
    read_mind_news,
)

QUERIES = 1000


def main() -> None:
    args = parse_args()
    articles = load(args.data / "news.tsv", args.limit)
    embedder = SentenceTransformerEmbedder(batch_size=args.batch_size)
    chunker = Chunker(embedder.token_counter(), chunk_tokens=200, overlap_tokens=20)
    texts = [c.embed_text for a in articles for c in chunker.split(a)]
    embedder.embed_documents(texts[:128])  # warm-up: model load and first-call overheads

    raw_s = time_raw_encode(embedder, texts, args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        index = QdrantIndex.open(QdrantConfig(path=str(Path(tmp) / "qdrant")), embedder.dim)
        indexer = Indexer(index, embedder, chunker)
        started = time.perf_counter()
        report = indexer.ingest(articles, batch_size=args.ingest_batch, progress=True)
        pipeline_s = time.perf_counter() - started
        assert report.ok and report.new == len(articles), report.summary()
        search = time_search(indexer, articles)
        stories = len({r.story_id for r in index.scroll()})
        index.close()

    results = {
        "data": str(args.data / "news.tsv"),
        "articles": len(articles),
        "chunks": len(texts),
        "raw_encode_s": raw_s,
        "pipeline_s": pipeline_s,
        "raw_encode_articles_per_s": len(articles) / raw_s,
        "pipeline_articles_per_s": len(articles) / pipeline_s,
        "ratio_to_raw_encode": raw_s / pipeline_s,
        **search,
        "stories": stories,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "machine": machine()
        | {name: version(name) for name in ("sentence-transformers", "qdrant-client", "llama-index-core")},
        "settings": {"batch_size": args.batch_size, "ingest_batch": args.ingest_batch, "store": "path="},
    }
    print_table(results)
    write_results(results, args.out, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="directory with a MIND news.tsv")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--limit", type=int, default=0, help="only the first N news (0: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="encode batch size (both paths)")
    parser.add_argument("--ingest-batch", type=int, default=1024, help="articles per pipeline batch")
    return parser.parse_args()


def load(path: Path, limit: int) -> list[Article]:
    records = list(read_mind_news(path))
    articles = [r for r in records if isinstance(r, Article)]
    print(f"{path}: {len(articles)} articles, {len(records) - len(articles)} rejected by validation")
    return articles[:limit] if limit else articles


def time_raw_encode(embedder: SentenceTransformerEmbedder, texts: list[str], batch_size: int) -> float:
    model = embedder._model  # the very model the pipeline uses, called the plain way
    started = time.perf_counter()
    model.encode(texts, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
    return time.perf_counter() - started


def time_search(indexer: Indexer, articles: list[Article]) -> dict[str, Any]:
    rng = random.Random(7)
    queries = [a.title for a in rng.sample(articles, min(QUERIES, len(articles)))]
    vectors = indexer.embedder.embed_documents(queries)
    sections = [a.section for a in articles]
    common = max(set(sections), key=sections.count)
    where = SearchFilter(sections=(common,))
    out: dict[str, Any] = {"search_queries": len(queries), "filter": f"section={common}"}
    out |= latency("search", lambda i: indexer.search(queries[i], 10), len(queries))
    out |= latency("search_filtered", lambda i: indexer.search(queries[i], 10, where), len(queries))
    out |= latency("index_search", lambda i: indexer.index.search(vectors[i], 10), len(queries))
    out |= latency(
        "index_search_filtered", lambda i: indexer.index.search(vectors[i], 10, where), len(queries)
    )
    return out


def latency(name: str, call: Any, n: int) -> dict[str, float]:
    times = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - started) * 1000)
    return {
        f"{name}_p50_ms": float(np.percentile(times, 50)),
        f"{name}_p99_ms": float(np.percentile(times, 99)),
    }


def print_table(r: dict[str, Any]) -> None:
    rows = [
        ("articles / chunks", f"{r['articles']} / {r['chunks']}"),
        ("raw encode", f"{r['raw_encode_articles_per_s']:.1f} articles/s ({r['raw_encode_s']:.1f} s)"),
        (
            "pipeline (path= store)",
            f"{r['pipeline_articles_per_s']:.1f} articles/s ({r['pipeline_s']:.1f} s)",
        ),
        ("ratio to raw encode", f"{r['ratio_to_raw_encode']:.2f}  (target >= 0.8)"),
        (
            "search p50 / p99",
            f"{r['search_p50_ms']:.1f} / {r['search_p99_ms']:.1f} ms (query embedding included)",
        ),
        (
            f"search, filter {r['filter']}",
            f"{r['search_filtered_p50_ms']:.1f} / {r['search_filtered_p99_ms']:.1f} ms",
        ),
        ("index only p50 / p99", f"{r['index_search_p50_ms']:.1f} / {r['index_search_p99_ms']:.1f} ms"),
        (
            "index only, filtered",
            f"{r['index_search_filtered_p50_ms']:.1f} / {r['index_search_filtered_p99_ms']:.1f} ms",
        ),
        ("stories formed", str(r["stories"])),
        ("peak RSS", f"{r['peak_rss_mb']:.0f} MB"),
        ("machine", f"{r['machine']['cpus']} CPUs, torch {r['machine']['torch']}"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
