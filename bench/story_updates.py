"""Story-update known answers on the demo: what each planted reader's updates cover (no LLM).

    python bench/story_updates.py --out bench/results/story_updates.json

Ingests the demo newsroom into Qdrant in memory with the packaged MiniLM, composes every demo
reader's briefing at 19 Nov 23:00 (a request: stored texts only, no generation) and, for each
story-update item, lists the articles it covers: before issue 16 the newest article alone, now
every development since the reader's last read of the story (`Summarizer.update_request`), the
correction notes owed to the reader, and the sentences shown until an update is written. Then
the superseded-number check (`briefing.developments.superseded`) run over every sentence of the
18 documented threads, each thread taken as one reader's developments: how many it flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, write_results

from briefing import (
    Composer,
    EmbeddingLexicalChecker,
    EvidenceRetriever,
    GeneratorConfig,
    InMemorySummaryStore,
    Summarizer,
    make_generator,
    split_sentences,
)
from briefing.compose import _read
from briefing.developments import developments, superseded
from indexing import (
    Article,
    Chunker,
    Indexer,
    QdrantConfig,
    QdrantIndex,
    SentenceTransformerEmbedder,
    open_source,
)
from recsys import CandidateMatrix, InMemoryEventStore, Item, Recommender, load_readers

DEMO = Path(__file__).resolve().parent.parent / "data" / "demo"
NOW = datetime.fromisoformat("2026-11-19T23:00:00+01:00")


def demo_index() -> Indexer:
    embedder = SentenceTransformerEmbedder()
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, Chunker(embedder.token_counter(), chunk_tokens=200, overlap_tokens=20))
    indexer.ingest([r for r in open_source(str(DEMO / "articles")) if isinstance(r, Article)])
    return indexer


def update_items(indexer: Indexer) -> list[dict[str, Any]]:
    events = InMemoryEventStore()
    load_readers(DEMO / "readers.jsonl", events)
    recommender = Recommender(CandidateMatrix.from_index(indexer.index, indexer.embedder.dim), events)
    recommender.refresh(recommender.matrix, NOW)
    generator = make_generator(GeneratorConfig(backend="llamacpp", threads=2))  # loaded, never called
    checker = EmbeddingLexicalChecker(indexer.embedder)
    retriever = EvidenceRetriever(indexer.index, indexer.embedder)
    summarizer = Summarizer(generator, retriever, checker, InMemorySummaryStore())
    composer = Composer(recommender, summarizer)
    rows = []
    for reader in (f"r{n:02d}" for n in range(1, 31)):
        profile = recommender.profile(reader, NOW)
        for item in (i for i in composer.compose(reader, NOW).items if i.update):
            key = Item(item.story_id, item.article_id, item.title, item.section, item.url, 0.0, "", True)
            request = summarizer.update_request(item.article_id, _read(key, profile, recommender.matrix, NOW))
            assert request is not None
            rows.append(
                {
                    "reader": reader,
                    "story": item.story_id,
                    "read": sorted(request.basis[i].article.id for i in range(len(request.basis))),
                    "before": [item.article_id],
                    "after": [d.id for d in request.developments],
                    "corrections": [n.article_id for n in request.notes],
                    "shown": [
                        f"{s.articles[0] if s.articles else '?'}: {s.text[:60]}" for s in item.sentences
                    ],
                }
            )
    return rows


def flagged_in_threads(indexer: Indexer) -> dict[str, Any]:
    threads = [
        json.loads(x) for f in sorted((DEMO / "threads").glob("*.jsonl")) for x in f.read_text().splitlines()
    ]
    records = indexer.index.get(sorted({a for t in threads for a in t["article_ids"]}))
    flagged, sentences = [], 0
    for thread in threads:
        story = sorted((records[a] for a in thread["article_ids"]), key=lambda r: r.article.last_modified)
        devs = developments(story, [])
        for dev in devs:
            article = dev.record.article
            for sentence in split_sentences(f"{article.lead}\n{article.body}"):
                sentences += 1
                reason = superseded(sentence, devs)
                if reason:
                    flagged.append(
                        {"thread": thread["thread_id"], "article": dev.id, "why": reason, "text": sentence}
                    )
    return {"sentences": sentences, "flagged": flagged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/story_updates.json"))
    args = parser.parse_args()
    start = time.monotonic()
    indexer = demo_index()
    rows = update_items(indexer)
    sweep = flagged_in_threads(indexer)
    print(f"{'reader':6} {'story':18} {'read':28} {'before':10} {'after':28} corrections")
    for r in rows:
        print(
            f"{r['reader']:6} {r['story']:18} {','.join(r['read']):28} {r['before'][0]:10} "
            f"{','.join(r['after']):28} {','.join(r['corrections'])}"
        )
    covered = {"before": sum(len(r["before"]) for r in rows), "after": sum(len(r["after"]) for r in rows)}
    several = sum(len(r["after"]) > 1 for r in rows)
    print(
        f"\n{len(rows)} update items; articles covered: {covered['before']} before, {covered['after']} after;"
    )
    print(f"{several} items cover more than one development")
    print(f"superseded check: {len(sweep['flagged'])} of {sweep['sentences']} thread sentences flagged")
    for f in sweep["flagged"]:
        print(f"  {f['article']}: {f['why']} | {f['text'][:80]}")
    summary = {"update_items": len(rows), "articles_covered": covered, "several_developments": several}
    results = {"machine": machine(), "summary": summary, "items": rows, "superseded_sweep": sweep}
    results["seconds"] = round(time.monotonic() - start, 1)
    write_results(results, args.out, args)


if __name__ == "__main__":
    main()
