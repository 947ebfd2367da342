"""Grounded summaries on public data: XSum (English, one-sentence task) and NorSumm (Bokmål).

    python bench/summaries.py --data ../shared/datasets/xsum --out bench/results/summaries_xsum.json
    python bench/summaries.py --data ../shared/datasets/norsumm --out bench/results/summaries_norsumm.json

Each article goes through the production path: ingested into Qdrant (in memory), its chunks
retrieved through llama-index, the prompt rendered (`article-one-sentence@1` for XSum,
`article@1` for NorSumm), the packaged SmolLM2 GGUF through the `llamacpp` backend, the grounding
check on every sentence, extractive fallback. Scores compare what a reader would see with the
reference(s): ROUGE-1/2/L F1 (rouge-score; Unicode-aware tokens, Porter stemming for English
only), and the cosine between all-MiniLM-L6-v2 embeddings of output and reference (the measure
RAI used for its fine-tuned titler). With NorSumm's three Bokmål references each article keeps its
best reference per measure. Also: the share of generated sentences the grounding check kept,
the share of articles that fell back to an extractive sentence, seconds per article, and the
lead sentence of each article as a baseline. XSum and NorSumm licences: see the datasets README.

`--outputs FILE.jsonl` writes every article's outcome for review: the sentences shown (with
support score, citations, extractive or not) and those the check dropped (with score and
missing facts). It quotes the articles (extractive fallbacks), so keep it out of the
repository, e.g. under var/ (the Makefile's choice).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, write_results

from briefing import (
    EmbeddingLexicalChecker,
    EvidenceRetriever,
    FileSummaryStore,
    GeneratorConfig,
    GroundingConfig,
    Summarizer,
    Summary,
    make_generator,
    make_scorer,
    split_sentences,
)
from briefing.tuning.evaluate import UnicodeTokenizer
from indexing import Article, Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder


def load(data: Path, limit: int) -> tuple[str, list[dict[str, Any]]]:
    if (data / "xsum.jsonl").is_file():
        rows = [json.loads(line) for line in (data / "xsum.jsonl").open()][:limit]
        return "xsum", [
            {"id": f"xsum-{r['id']}", "text": r["document"], "refs": [r["summary"]]} for r in rows
        ]
    if (data / "norsumm_flat.jsonl").is_file():
        rows = [json.loads(line) for line in (data / "norsumm_flat.jsonl").open()][:limit]
        return "norsumm", [
            {"id": f"ns-{n}", "text": r["article"], "refs": r["summaries_nb"]} for n, r in enumerate(rows)
        ]
    raise SystemExit(f"{data} holds neither xsum.jsonl nor norsumm_flat.jsonl")


def as_article(row: dict[str, Any], language: str) -> Article:
    return Article.model_validate(
        {
            "id": row["id"],
            "url": f"https://bench.example/{row['id']}",
            "title": f"Article {row['id']}",
            "body": row["text"],
            "section": "bench",
            "language": language,
            "publication": "bench",
            "published_at": datetime(2026, 11, 1, tzinfo=UTC),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="../shared/datasets/xsum or .../norsumm")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=300, help="first N articles (XSum protocol: 300)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--outputs", type=Path, help="JSONL: every article's shown and dropped sentences")
    args = parser.parse_args()

    name, rows = load(args.data, args.limit)
    english = name == "xsum"
    prompt = "article-one-sentence" if english else "article"
    embedder = SentenceTransformerEmbedder()
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, Chunker(embedder.token_counter(), chunk_tokens=200, overlap_tokens=20))
    indexer.ingest([as_article(r, "en" if english else "nb") for r in rows])
    scorer = make_scorer("llamacpp", GroundingConfig.likelihood_model, cache_dir=Path("var/models"))
    summarizer = Summarizer(
        make_generator(GeneratorConfig(threads=args.threads)),
        EvidenceRetriever(index, embedder),
        EmbeddingLexicalChecker(embedder, scorer=scorer),  # the shipped checker
        FileSummaryStore(Path(tempfile.mkdtemp())),
    )
    summarizer.summarize([rows[0]["id"]], prompt=prompt, refresh=True)  # load the model outside the clock
    summaries, seconds = [], []
    for n, row in enumerate(rows, 1):
        start = time.perf_counter()
        summaries.extend(summarizer.summarize([row["id"]], prompt=prompt, refresh=True))
        seconds.append(time.perf_counter() - start)
        if n % 25 == 0:
            print(f"  {n}/{len(rows)} articles, {np.mean(seconds):.2f} s each", flush=True)
    leads = [split_sentences(r["text"])[0] for r in rows]
    scorer = Scorer(embedder, english)
    results = {
        "dataset": name,
        "articles": len(rows),
        "prompt": summarizer.prompts.get(prompt).id,
        "model": summarizer.generator.model,
        "max_input_chars": summarizer.config.max_input_chars,
        "backend": "llamacpp",
        "machine": machine(),
        "system": {
            **scorer.score([s.text for s in summaries], rows),
            **grounding(summaries),
            "seconds_per_article": round(float(np.mean(seconds)), 3),
        },
        "lead_baseline": scorer.score(leads, rows),
        "examples": [
            {"id": s.article_id, "output": s.text, "reference": r["refs"][0], "extractive": s.extractive}
            for s, r in list(zip(summaries, rows, strict=True))[:5]
        ],
    }
    print_table(results)
    write_results(results, args.out, args)
    if args.outputs:
        write_outputs(summaries, args.outputs)


class Scorer:
    def __init__(self, embedder: SentenceTransformerEmbedder, english: bool) -> None:
        from rouge_score import rouge_scorer

        self.embedder = embedder
        self.rouge = rouge_scorer.RougeScorer(
            ["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeTokenizer(stem=english)
        )

    def score(self, outputs: list[str], rows: list[dict[str, Any]]) -> dict[str, float]:
        best: dict[str, list[float]] = {"rouge1": [], "rouge2": [], "rougeL": [], "cosine": []}
        for output, row in zip(outputs, rows, strict=True):
            vectors = self.embedder.embed_documents([output, *row["refs"]])
            best["cosine"].append(float(np.max(vectors[1:] @ vectors[0])))
            scores = [self.rouge.score(ref, output) for ref in row["refs"]]
            for key in ("rouge1", "rouge2", "rougeL"):
                best[key].append(max(s[key].fmeasure for s in scores))
        return {key: round(float(np.mean(values)), 4) for key, values in best.items()}


def grounding(summaries: list[Summary]) -> dict[str, float]:
    generated = sum(len(s.dropped) + sum(not x.extractive for x in s.sentences) for s in summaries)
    kept = sum(sum(not x.extractive for x in s.sentences) for s in summaries)
    return {
        "generated_sentences": generated,
        "kept_share": round(kept / generated, 4) if generated else 0.0,
        "extractive_fallback_share": round(sum(s.extractive for s in summaries) / len(summaries), 4),
        "mean_support_shown": round(float(np.mean([x.score for s in summaries for x in s.sentences])), 4),
    }


def write_outputs(summaries: list[Summary], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for s in summaries:
            record = {
                "id": s.article_id,
                "shown": [asdict(x) for x in s.sentences],
                "dropped": [asdict(x) for x in s.dropped],
            }
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {path}")


def print_table(results: dict[str, Any]) -> None:
    print(
        f"\n{results['dataset']}: {results['articles']} articles, {results['prompt']} on {results['model']}"
    )
    print(f"{'':<16}{'ROUGE-1':>9}{'ROUGE-2':>9}{'ROUGE-L':>9}{'cosine':>9}")
    for label, key in (("grounded output", "system"), ("lead sentence", "lead_baseline")):
        r = results[key]
        print(f"{label:<16}{r['rouge1']:>9.4f}{r['rouge2']:>9.4f}{r['rougeL']:>9.4f}{r['cosine']:>9.4f}")
    s = results["system"]
    print(
        f"generated sentences kept by the grounding check: {s['kept_share']:.1%} "
        f"of {s['generated_sentences']}; "
        f"extractive fallback in {s['extractive_fallback_share']:.1%} of articles; "
        f"{s['seconds_per_article']:.2f} s per article"
    )


if __name__ == "__main__":
    main()
