"""Recommender evaluation on MIND click logs, and scoring latency.

    python bench/recsys.py --data ../shared/datasets/mind_small --out bench/results/recsys_mind_small.json

DIR holds MIND `news.tsv` with `impressions.jsonl` (a `variant` per impression) or
`behaviors.tsv`, or EB-NeRD's `articles.parquet`, `behaviors.parquet` and `history.parquet`
anywhere below it (research-only data, read in place; see recsys/datasets.py). Each impression
is scored separately and AUC, MRR, nDCG@5 and nDCG@10 are averaged over impressions (the MIND
protocol), with 95% bootstrap intervals. Impressions are split in two by a seeded shuffle of
their ids: the learned ranker trains on the first half and every ranker is scored on the second;
popularity counts come from the first half only. MIND has no publication times: no recency row.

Latency: one reader against 1k, 10k and 100k synthetic candidates (384-d), ranker + MMR.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, write_results

from indexing import Article, SentenceTransformerEmbedder
from recsys import (
    ArticleInfo,
    CandidateMatrix,
    Event,
    Impression,
    Profile,
    RecsysConfig,
    build_profile,
    make_ranker,
    mmr,
)
from recsys.datasets import LoggedImpression, load_logs
from recsys.evaluation import METRICS, impression_metrics, summarize
from recsys.recommend import top_diverse

T0 = datetime(2019, 11, 15, tzinfo=UTC)
NOW = (T0 + timedelta(hours=1)).timestamp()
DIVERSITY = 0.3
Scorer = Callable[[Profile, dict[str, Any]], np.ndarray]


def main() -> None:
    args = parse_args()
    logs = load_logs(args.data)
    articles = logs.articles
    vectors = embed(articles, args.cache)
    matrix = CandidateMatrix(
        [ArticleInfo(a, a.id, v) for a, v in zip(articles, vectors, strict=True)], vectors.shape[1]
    )
    impressions = prepare(logs.impressions, matrix)
    train, test = split(impressions)
    matrix.popularity, matrix.exposure = counts(train, matrix)
    profiles = {imp["key"]: profile(imp, matrix) for imp in impressions}

    learned = make_ranker("learned")
    learned.fit([training_example(i, profiles, matrix) for i in train], matrix)
    rankers = scorers(matrix, learned, with_recency=logs.source == "ebnerd")
    results: dict[str, Any] = {
        "data": str(args.data),
        "format": logs.source,
        "split": split_description(train, test),
    }
    # An impression listed under several variants counts once overall, once per variant below.
    unique = list({i["id"]: i for i in test}.values())
    for name, score in rankers.items():
        results[name] = summarize([r for _, r in evaluate(unique, profiles, score)]).as_dict()
    results["by_reader_kind"] = by_kind(evaluate(test, profiles, rankers["final"]))
    results["latency_p99_ms"], results["latency_p50_ms"], results["memory_mb_per_100k"] = latency(learned)
    results["machine"] = machine()
    print_tables(results)
    write_results(results, args.out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="MIND directory (news.tsv + impressions)")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--cache", type=Path, default=Path("var/bench-cache"), help="embedding cache")
    return parser.parse_args()


def embed(articles: list[Article], cache: Path) -> np.ndarray:
    texts = [f"{a.title}\n\n{a.lead}".strip() for a in articles]
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"mind-{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = SentenceTransformerEmbedder().embed_documents(texts, progress=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def prepare(logged: list[LoggedImpression], matrix: CandidateMatrix) -> list[dict[str, Any]]:
    """Impressions as matrix rows; candidates and history without metadata are left out."""
    out = []
    for n, imp in enumerate(logged):
        known = [(c, y) for c, y in zip(imp.candidates, imp.labels, strict=True) if c in matrix.row]
        now = imp.at or datetime.fromtimestamp(NOW, UTC)
        before = now - timedelta(hours=1)  # a history without times happened before the impression
        out.append(
            {
                "key": n,
                "id": imp.impression_id,
                "variant": imp.variant,
                "history": [(h, at or before) for h, at in imp.history if h in matrix.row],
                "rows": np.array([matrix.row[c] for c, _ in known], dtype=np.int64),
                "labels": np.array([y for _, y in known], dtype=np.int64),
                "now": now,
            }
        )
    return out


def split(impressions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Half the impression ids train, half test; a repeated impression stays on one side."""
    ids = sorted({i["id"] for i in impressions})
    random.Random(13).shuffle(ids)
    train_ids = set(ids[: len(ids) // 2])
    return [i for i in impressions if i["id"] in train_ids], [
        i for i in impressions if i["id"] not in train_ids
    ]


def split_description(train: list[dict[str, Any]], test: list[dict[str, Any]]) -> str:
    return (
        f"impression ids shuffled (seed 13) and halved: learned ranker fitted on {len(train)} impressions, "
        f"all rankers scored on the other {len({i['id'] for i in test})} (distinct ids); "
        "popularity and exposure = clicks and impressions in the training half"
    )


def counts(impressions: list[dict[str, Any]], matrix: CandidateMatrix) -> tuple[np.ndarray, np.ndarray]:
    """Clicks and impressions of each news in `impressions`."""
    clicked = np.zeros(len(matrix), dtype=np.float64)
    shown = np.zeros(len(matrix), dtype=np.float64)
    for imp in impressions:
        np.add.at(clicked, imp["rows"], imp["labels"])
        np.add.at(shown, imp["rows"], 1.0)
    return clicked, shown


def profile(imp: dict[str, Any], matrix: CandidateMatrix) -> Profile:
    events = [
        Event(event_id=f"{imp['key']}-{n}", reader_id="r", type="click", article_id=a, at=at)
        for n, (a, at) in enumerate(imp["history"])
        if at < imp["now"]
    ]
    lookup = lambda ids: {i: matrix.infos[matrix.row[i]] for i in ids}  # noqa: E731
    return build_profile("r", events, lookup, imp["now"])


def training_example(
    imp: dict[str, Any], profiles: dict[int, Profile], matrix: CandidateMatrix
) -> Impression:
    # Leave this impression out of the counts it is trained with: they would leak its labels.
    rows, labels = imp["rows"], imp["labels"]
    clicked, shown = matrix.popularity[rows] - labels, matrix.exposure[rows] - 1
    return Impression(profiles[imp["key"]], rows, labels, imp["now"].timestamp(), clicked, shown)


def scorers(matrix: CandidateMatrix, learned: Any, *, with_recency: bool) -> dict[str, Scorer]:
    rng = np.random.default_rng(0)

    def ranker(name: str) -> Scorer:
        r = learned if name == "learned" else make_ranker(name)
        return lambda p, imp: r.score(p, matrix, imp["rows"], imp["now"].timestamp())

    def final(p: Profile, imp: dict[str, Any]) -> np.ndarray:
        rows = imp["rows"]
        scores = learned.score(p, matrix, rows, imp["now"].timestamp())
        order = mmr(scores, matrix.vectors[rows], len(rows), DIVERSITY)
        ranked = np.zeros(len(rows))
        ranked[order] = np.arange(len(rows), 0, -1)
        return ranked

    names = ["popularity", *(["recency"] if with_recency else []), "content", "learned"]
    return {
        "random": lambda p, imp: rng.random(len(imp["rows"])),
        **{name: ranker(name) for name in names},
        "final": final,
    }


def evaluate(
    impressions: list[dict[str, Any]], profiles: dict[int, Profile], score: Scorer
) -> list[tuple[dict[str, Any], dict[str, float]]]:
    out = []
    for imp in impressions:
        metrics = impression_metrics(imp["labels"], score(profiles[imp["key"]], imp))
        if metrics:
            out.append((imp, metrics))
    return out


def by_kind(rows: list[tuple[dict[str, Any], dict[str, float]]]) -> dict[str, Any]:
    """Final-pipeline metrics by reader kind, read from the `variant` field."""
    groups: dict[str, list[dict[str, float]]] = {}
    for imp, metrics in rows:
        variant = imp["variant"]
        if not variant:
            continue
        cold = "warm (history > 5)" if "non_cold_user" in variant else "cold (history <= 5)"
        topic = "no topic match" if "not_match_topic" in variant else "topic match"
        for kind in (cold, topic):
            groups.setdefault(kind, []).append(metrics)
    return {
        kind: summarize(metrics).as_dict() for kind, metrics in sorted(groups.items()) if len(metrics) > 1
    }


def latency(learned: Any) -> tuple[dict[str, float], dict[str, float], float]:
    rng = np.random.default_rng(0)
    p99: dict[str, float] = {}
    p50: dict[str, float] = {}
    memory = 0.0
    for n in (1_000, 10_000, 100_000):
        matrix = synthetic_matrix(n, rng)
        if n == 100_000:
            memory = matrix.nbytes() / 2**20
        vectors = matrix.vectors[rng.choice(n, 12, replace=False)]
        events_profile = Profile("r", vectors[:3], np.full(3, 1 / 3, dtype=np.float32), {"sport": 0.6})
        rows = np.arange(n)
        now = T0.timestamp()
        times = []
        for _ in range(200 if n < 100_000 else 50):
            started = time.perf_counter()
            scores = learned.score(events_profile, matrix, rows, now)
            top_diverse(scores, matrix.vectors, 10, RecsysConfig.pool, DIVERSITY)
            times.append((time.perf_counter() - started) * 1000)
        p99[str(n)] = float(np.percentile(times, 99))
        p50[str(n)] = float(np.percentile(times, 50))
    return p99, p50, memory


def synthetic_matrix(n: int, rng: np.random.Generator) -> CandidateMatrix:
    vectors = rng.normal(size=(n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sections = ["sport", "local", "politics", "culture", "business", "world"]
    base = Article.model_construct(
        id="x", url="https://x.example/", title="t", lead="", body="b", section="sport", tags=["t"],
        language="en", publication="p", published_at=T0, updated_at=None,
    )  # fmt: skip
    infos = [
        ArticleInfo(base.model_copy(update={"id": f"s{i}", "section": sections[i % 6]}), f"s{i}", vectors[i])
        for i in range(n)
    ]
    matrix = CandidateMatrix(infos, 384)
    matrix.exposure = rng.poisson(20, size=n).astype(np.float64)
    matrix.popularity = rng.binomial(matrix.exposure.astype(np.int64), 0.1).astype(np.float64)
    return matrix


def print_tables(r: dict[str, Any]) -> None:
    print(f"\n{r['split']}\n")
    head = f"{'ranker':<12}" + "".join(f"{m:>22}" for m in METRICS)
    print(head)
    for name in ("random", "popularity", "recency", "content", "learned", "final"):
        if name not in r:
            continue
        row = r[name]
        cells = "".join(
            f"{row[m]:>9.4f} [{row[m + '_ci_low']:.3f},{row[m + '_ci_high']:.3f}]" for m in METRICS
        )
        print(f"{name:<12}{cells}")
    print(
        f"\nfinal pipeline by reader kind\n{'kind':<16}{'impressions':>12}{'auc':>8}{'mrr':>8}{'ndcg10':>8}"
    )
    for kind, row in r["by_reader_kind"].items():
        print(f"{kind:<16}{row['impressions']:>12}{row['auc']:>8.4f}{row['mrr']:>8.4f}{row['ndcg10']:>8.4f}")
    print("\nlatency, one reader (learned ranker + MMR top 10)")
    for n in r["latency_p99_ms"]:
        p50, p99 = r["latency_p50_ms"][n], r["latency_p99_ms"][n]
        print(f"  {int(n):>7} candidates: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"  memory per 100k candidates: {r['memory_mb_per_100k']:.0f} MB")


if __name__ == "__main__":
    main()
