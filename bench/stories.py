"""Story-clustering benchmark: pairwise precision/recall on two sets of documented threads.

    python bench/stories.py --out bench/results/stories.json
    python bench/stories.py --threshold 1.1 --name-weight 1.5 --word-weight 0 \
        --out bench/results/stories_names_only.json   # the settings before words were added

Runs the real embedder (the packaged MiniLM, chunked as the service chunks) and `StoryClusterer`
on (a) the demo newsroom's 18 threads (`data/demo`, where the settings are chosen) and (b) the
independently written evaluation set (`data/eval/stories`, reported only, never tuned on), in
publication order, as ingest assigns them. Then a time-split check: the whole set re-clustered in
one batch with the same pair score (`batch_stories`: connected components over every pair in the
window), and the agreement of the incremental assignment with it (pairwise P/R of incremental
against batch), each scored against the truth too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
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
    SentenceTransformerEmbedder,
    StoryClusterer,
    StoryConfig,
    open_source,
    pairwise_scores,
)
from indexing.stories import PairScores, batch_stories

ROOT = Path(__file__).resolve().parent.parent

SETS = {
    "demo": (ROOT / "data/demo/articles", ROOT / "data/demo/threads"),
    "eval": (ROOT / "data/eval/stories/articles.jsonl", ROOT / "data/eval/stories/threads.jsonl"),
}


def main() -> None:
    args = parse_args()
    chosen = {k: v for k, v in vars(args).items() if k in _TUNABLE and v is not None}
    config = replace(StoryConfig(), **chosen)
    embedder = SentenceTransformerEmbedder()
    chunker = Chunker(embedder.token_counter(), chunk_tokens=200, overlap_tokens=20)
    results: dict[str, Any] = {"machine": machine(), "config": asdict(config), "sets": {}}
    for name, (articles_path, threads_path) in SETS.items():
        articles = load_articles(articles_path)
        threads = load_threads(threads_path)
        started = time.perf_counter()
        vectors = article_vectors(articles, embedder, chunker)
        results["sets"][name] = evaluate(articles, vectors, threads, config)
        results["sets"][name]["embed_s"] = round(time.perf_counter() - started, 2)
    print_table(results)
    write_results(results, args.out, args)


_TUNABLE = ("window_hours", "threshold", "name_weight", "word_weight", "candidates")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/stories.json")
    parser.add_argument("--window-hours", dest="window_hours", type=float)
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--name-weight", dest="name_weight", type=float)
    parser.add_argument("--word-weight", dest="word_weight", type=float)
    parser.add_argument("--candidates", type=int)
    return parser.parse_args()


def load_articles(path: Path) -> list[Article]:
    """The current version of each article (a later line with the same id wins), oldest first."""
    latest = {r.id: r for r in open_source(str(path)) if isinstance(r, Article)}
    return sorted(latest.values(), key=lambda a: a.published_at)


def load_threads(path: Path) -> list[list[str]]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [json.loads(line)["article_ids"] for f in files for line in f.open() if line.strip()]


def article_vectors(
    articles: list[Article], embedder: SentenceTransformerEmbedder, chunker: Chunker
) -> np.ndarray:
    """One unit vector per article: the mean of its chunks' vectors, as the indexer computes it."""
    chunked = [chunker.split(a) for a in articles]
    flat = embedder.embed_documents([c.embed_text for chunks in chunked for c in chunks])
    out, start = [], 0
    for chunks in chunked:
        mean = flat[start : start + len(chunks)].mean(axis=0)
        out.append(mean / np.linalg.norm(mean))
        start += len(chunks)
    return np.asarray(out, dtype=np.float32)


def evaluate(
    articles: list[Article], vectors: np.ndarray, threads: list[list[str]], config: StoryConfig
) -> dict[str, Any]:
    clusterer = StoryClusterer(vectors.shape[1], config)
    incremental = {a.id: clusterer.assign(a, v) for a, v in zip(articles, vectors, strict=True)}
    batch = batch_stories(articles, vectors, config)
    as_threads = _as_threads(batch)
    return {
        "articles": len(articles),
        "threads": len(threads),
        "incremental_vs_truth": _scores(pairwise_scores(incremental, threads)),
        "batch_vs_truth": _scores(pairwise_scores(batch, threads)),
        "incremental_vs_batch": _scores(pairwise_scores(incremental, as_threads)),
        "missed_pairs": _missed(incremental, threads),
        "wrong_pairs": _wrong(incremental, threads),
    }


def _as_threads(stories: dict[str, str]) -> list[list[str]]:
    grouped: dict[str, list[str]] = {}
    for article, story in stories.items():
        grouped.setdefault(story, []).append(article)
    return list(grouped.values())


def _scores(s: PairScores) -> dict[str, Any]:
    return {
        "precision": round(s.precision, 3),
        "recall": round(s.recall, 3),
        "f1": round(s.f1, 3),
        "predicted_pairs": s.predicted_pairs,
        "true_pairs": s.true_pairs,
    }


def _missed(predicted: dict[str, str], threads: list[list[str]]) -> list[str]:
    """True pairs left in separate stories, as 'a+b' (what to read when recall drops)."""
    return [
        f"{a}+{b}"
        for t in threads
        for i, a in enumerate(t)
        for b in t[i + 1 :]
        if predicted[a] != predicted[b]
    ]


def _wrong(predicted: dict[str, str], threads: list[list[str]]) -> list[str]:
    """Pairs put in one story that no thread joins."""
    thread_of = {a: n for n, t in enumerate(threads) for a in t}
    ids = sorted(predicted)
    return [
        f"{a}+{b}"
        for i, a in enumerate(ids)
        for b in ids[i + 1 :]
        if predicted[a] == predicted[b] and (a not in thread_of or thread_of.get(a) != thread_of.get(b))
    ]


def print_table(results: dict[str, Any]) -> None:
    print(f"\nstory clustering, config {results['config']}")
    print(f"{'set':<6} {'comparison':<22} {'P':>6} {'R':>6} {'F1':>6} {'pred pairs':>11} {'true pairs':>11}")
    for name, r in results["sets"].items():
        for key in ("incremental_vs_truth", "batch_vs_truth", "incremental_vs_batch"):
            s = r[key]
            print(
                f"{name:<6} {key:<22} {s['precision']:>6.3f} {s['recall']:>6.3f} {s['f1']:>6.3f} "
                f"{s['predicted_pairs']:>11} {s['true_pairs']:>11}"
            )
        print(f"{'':<6} missed: {' '.join(r['missed_pairs']) or '-'}")
        print(f"{'':<6} wrong:  {' '.join(r['wrong_pairs']) or '-'}")


if __name__ == "__main__":
    main()
