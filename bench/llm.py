"""LLM backends: tokens/s against raw llama-cpp-python, time to first token, and a 5-item
briefing end to end on the demo newsroom.

    python bench/llm.py --out bench/results/llm.json
    python bench/llm.py --out bench/results/llm_vllm_cpu.json --openai-only --openai-url http://127.0.0.1:8011/v1

Prompts are real: the `article@1` template over 8 demo articles, greedy, up to 128 new tokens.
"raw" is llama-cpp-python's own `create_chat_completion` on a `Llama` built the same way; the
`llamacpp` backend and raw alternate prompt by prompt so drift hits both alike. The briefing is
reader r02's at the demo's fourth evening, model loaded: with nothing generated yet; cold, the
production path (article summaries made at ingest, the reader's story update and greeting written
now); and cached (a repeat visit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, write_results

from briefing import (
    PROMPTS,
    Composer,
    EmbeddingLexicalChecker,
    EvidenceRetriever,
    FileSummaryStore,
    GenerationError,
    GenerationParams,
    Generator,
    GeneratorConfig,
    GroundingConfig,
    Summarizer,
    make_generator,
    make_scorer,
    packaged_gguf,
    untrusted,
)
from indexing import Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder, open_source
from recsys import CandidateMatrix, InMemoryEventStore, Recommender, load_readers

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo"
NOW_ISO = "2026-11-19T23:00:00+01:00"
ARTICLES = ["pol-0011", "bus-0016", "spo-0013", "loc-0007", "cul-0003", "wld-0002", "nob-0003", "loc-0003"]
PARAMS = GenerationParams(max_tokens=128, timeout_s=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "llm.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rounds", type=int, default=2, help="passes over the prompts per backend")
    parser.add_argument("--openai-url", help="an OpenAI-compatible server (vLLM) to measure too")
    parser.add_argument("--openai-model", default="smollm2")
    parser.add_argument("--openai-only", action="store_true", help="measure only the --openai-url server")
    args = parser.parse_args()

    embedder = SentenceTransformerEmbedder()
    indexer = demo_index(embedder)
    chats = prompts(indexer)
    results: dict[str, Any] = {"machine": machine(), "prompts": len(chats), "max_tokens": PARAMS.max_tokens}
    config = GeneratorConfig(threads=args.threads, cache_dir=Path(tempfile.mkdtemp()) / "models")
    if args.openai_only:  # a separate run while the vLLM server holds the CPU
        results["openai"] = openai_speed(args, chats)
        print(json.dumps(results["openai"], indent=1))
        write_results(results, args.out, args)
        return
    llamacpp = make_generator(config)
    results["raw"], results["llamacpp"] = raw_vs_backend(llamacpp, chats, args.threads, args.rounds)
    results["llamacpp"]["ratio_to_raw"] = round(
        results["llamacpp"]["tokens_per_s"] / results["raw"]["tokens_per_s"], 3
    )
    results["transformers"] = backend_speed(make_generator(replace(config, backend="transformers")), chats)
    results["openai"] = openai_speed(args, chats)
    results["briefing"] = briefing_times(indexer, llamacpp)
    print_table(results)
    write_results(results, args.out, args)


def demo_index(embedder: SentenceTransformerEmbedder) -> Indexer:
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, Chunker(embedder.token_counter(), chunk_tokens=200, overlap_tokens=20))
    indexer.ingest(open_source(str(DEMO / "articles")))
    return indexer


def prompts(indexer: Indexer) -> list[Any]:
    template = PROMPTS.get("article")
    records = indexer.index.get(ARTICLES)
    return [
        template.render(title=untrusted(r.article.title), text=untrusted(r.article.text_for_embedding()))
        for r in (records[a] for a in ARTICLES)
    ]


def raw_vs_backend(
    backend: Any, chats: list[Any], threads: int, rounds: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    from llama_cpp import Llama

    raw = Llama(model_path=str(packaged_gguf()), n_ctx=2048, n_threads=threads, verbose=False)
    timings: dict[str, list[tuple[int, float]]] = {"raw": [], "llamacpp": []}
    backend.generate(chats[:1], PARAMS)  # load and warm both
    raw.create_chat_completion(messages=chats[0], max_tokens=8, temperature=0)
    for _ in range(rounds):
        for chat in chats:
            start = time.perf_counter()
            out = raw.create_chat_completion(
                messages=[dict(m) for m in chat],
                max_tokens=PARAMS.max_tokens,
                temperature=0.0,
                top_p=1.0,
                seed=0,
            )
            timings["raw"].append((out["usage"]["completion_tokens"], time.perf_counter() - start))
            start = time.perf_counter()
            [done] = backend.generate([chat], PARAMS)
            timings["llamacpp"].append((done.completion_tokens, time.perf_counter() - start))
    ours = speed(timings["llamacpp"])
    ours.update(stream_times(backend, chats))
    return speed(timings["raw"]), ours


def backend_speed(generator: Generator, chats: list[Any]) -> dict[str, Any]:
    generator.generate(chats[:1], GenerationParams(max_tokens=8))
    start = time.perf_counter()
    batch = generator.generate(chats, PARAMS)
    batch_s = time.perf_counter() - start
    one = speed([timed(generator, c) for c in chats[:2]])
    return {
        **one,
        "batched_tokens_per_s": round(sum(c.completion_tokens for c in batch) / batch_s, 1),
        "batch": len(chats),
        **stream_times(generator, chats[:3]),
    }


def timed(generator: Generator, chat: Any) -> tuple[int, float]:
    start = time.perf_counter()
    [done] = generator.generate([chat], PARAMS)
    return done.completion_tokens, time.perf_counter() - start


def openai_speed(args: argparse.Namespace, chats: list[Any]) -> dict[str, Any]:
    if not args.openai_url:
        return {"skipped": "no --openai-url given (start vLLM: see README, 'vLLM')"}
    generator = make_generator(
        GeneratorConfig(backend="openai", base_url=args.openai_url, model=args.openai_model)
    )
    try:
        result = backend_speed(generator, chats)
    except GenerationError as exc:
        return {"skipped": str(exc)}
    return {**result, "url": args.openai_url, "model": args.openai_model}


def speed(samples: list[tuple[int, float]]) -> dict[str, Any]:
    tokens, seconds = sum(t for t, _ in samples), sum(s for _, s in samples)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1)}


def stream_times(generator: Generator, chats: list[Any]) -> dict[str, float]:
    """Median time to the first streamed piece, and decode speed after it (pieces per second;
    llama.cpp and vLLM stream about one token per piece)."""
    waits, rates = [], []
    for chat in chats:
        start = time.perf_counter()
        stream = generator.stream(chat, PARAMS)
        next(stream)
        first = time.perf_counter()
        pieces = sum(1 for _ in stream)
        waits.append((first - start) * 1000)
        rates.append(pieces / max(time.perf_counter() - first, 1e-9))
    return {
        "ttft_ms": round(statistics.median(waits), 1),
        "decode_pieces_per_s": round(statistics.median(rates), 1),
    }


def briefing_times(indexer: Indexer, generator: Generator) -> dict[str, Any]:
    """Reader r02's briefing at three levels of preparation, each from a fresh summary store."""
    from datetime import datetime

    now = datetime.fromisoformat(NOW_ISO)
    events = InMemoryEventStore()
    load_readers(DEMO / "readers.jsonl", events)
    recommender = Recommender(CandidateMatrix.from_index(indexer.index, indexer.embedder.dim), events)
    recommender.refresh(recommender.matrix, now)
    scorer = make_scorer("llamacpp", GroundingConfig.likelihood_model, cache_dir=Path("var/models"))

    def composer() -> Composer:
        store = FileSummaryStore(Path(tempfile.mkdtemp()) / "summaries")
        retriever = EvidenceRetriever(indexer.index, indexer.embedder)
        checker = EmbeddingLexicalChecker(indexer.embedder, scorer=scorer)  # the shipped checker
        summarizer = Summarizer(generator, retriever, checker, store)
        return Composer(recommender, summarizer)

    # A job with nothing written yet: every summary, the story update and the greeting are
    # written now (compose with write=True, as the precompute job does).
    empty = composer()
    nothing, briefing = timed_call(lambda: empty.compose("r02", now, write=True))
    # Production: the scheduler summarizes new articles at ingest, then the precompute job
    # writes the reader's story update; a reader's request composes from what is stored.
    fresh = composer()
    articles = [i.article_id for i in briefing.items if not i.update]
    ingest_s, _ = timed_call(lambda: fresh.summarizer.summarize(articles))
    job, _ = timed_call(lambda: fresh.compose("r02", now, write=True))
    request = sorted(timed_call(lambda: fresh.compose("r02", now))[0] for _ in range(50))
    return {
        "reader": "r02",
        "items": len(briefing.items),
        "sources": [i.source for i in briefing.items],
        "nothing_generated_s": round(nothing, 2),
        "ingest_time_summaries_s": round(ingest_s, 2),
        "precompute_job_s": round(job, 2),
        "request_from_stored_ms_p50": round(request[len(request) // 2] * 1000, 2),
        "request_from_stored_ms_p99": round(request[int(len(request) * 0.99) - 1] * 1000, 2),
        "greeting": briefing.greeting,
    }


def timed_call(work: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{'backend':<14}{'tokens/s':>10}{'batched tok/s':>15}{'TTFT ms':>10}{'decode/s':>10}")
    for name in ("raw", "llamacpp", "transformers", "openai"):
        row = results[name]
        if "skipped" in row:
            print(f"{name:<14}  skipped: {row['skipped']}")
            continue
        print(
            f"{name:<14}{row['tokens_per_s']:>10}{row.get('batched_tokens_per_s', ''):>15}"
            f"{row.get('ttft_ms', ''):>10}{row.get('decode_pieces_per_s', ''):>10}"
        )
    print(f"llamacpp.ratio_to_raw = {results['llamacpp']['ratio_to_raw']} (target >= 0.9)")
    b = results["briefing"]
    print(
        f"\n5-item briefing for {b['reader']}: a job with nothing written yet {b['nothing_generated_s']} s; "
        f"with article summaries made at ingest ({b['ingest_time_summaries_s']} s) the precompute job "
        f"{b['precompute_job_s']} s; a reader's request from stored texts p50 "
        f"{b['request_from_stored_ms_p50']} ms / p99 {b['request_from_stored_ms_p99']} ms (no LLM)"
    )
    print(f"item texts: {', '.join(b['sources'])}")


if __name__ == "__main__":
    main()
