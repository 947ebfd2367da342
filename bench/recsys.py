"""Recommender evaluation on MIND click logs, and scoring latency.

    python bench/recsys.py --data ../shared/datasets/mind_small --out bench/results/recsys_mind_small.json

DIR holds MIND `news.tsv` with `impressions.jsonl` (a `variant` per impression) or
`behaviors.tsv`, or EB-NeRD's `articles.parquet`, `behaviors.parquet` and `history.parquet`
anywhere below it (research-only data, read in place; see recsys/datasets.py). Each impression
is scored separately and AUC, MRR, nDCG@5 and nDCG@10 are averaged over impressions (the MIND
protocol), with 95% bootstrap intervals; tied scores count as a random order of the tied.

Impressions are split in two: by time where every impression has one (the earlier half trains,
and every test impression is later than every training one), else by a seeded shuffle of their
ids. The learned ranker trains on the first half and every ranker is scored on the second.
Popularity and exposure (clicks and impressions per news) come from the training half, each
impression id counted once however many variants list it; a training row is fitted with the
counts of the other training impressions (by time: of the earlier ones) so its own click never
feeds its features. MIND has no publication times: no recency row.

The JSON records the git commit it ran on, any uncommitted change to the code that shapes the
numbers, the command line and the settings.

Latency: one reader against 1k, 10k and 100k synthetic candidates (384-d), ranker + MMR.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import random
import subprocess
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

from indexing import PACKAGED_MINILM, Article, SentenceTransformerEmbedder
from recsys import (
    ArticleInfo,
    CandidateMatrix,
    Event,
    EventType,
    Impression,
    Profile,
    RecsysConfig,
    build_profile,
    make_ranker,
    mmr,
)
from recsys.datasets import LoggedImpression, load_logs
from recsys.evaluation import METRICS, impression_metrics, summarize, variant_kinds
from recsys.recommend import top_diverse

T0 = datetime(2019, 11, 15, tzinfo=UTC)
NOW = (T0 + timedelta(hours=1)).timestamp()
DIVERSITY = 0.3
SPLIT_SEED = 13
RANDOM_SEED = 0
BOOTSTRAP = {"resamples": 1000, "seed": 0}  # recsys.evaluation.summarize's defaults
ROOT = Path(__file__).resolve().parent.parent
CODE = ("bench/recsys.py", "bench/_common.py", "recsys", "indexing")  # what shapes the numbers
Scorer = Callable[[Profile, dict[str, Any]], np.ndarray]
Counts = tuple[np.ndarray, np.ndarray]  # clicks, impressions


def main() -> None:
    args = parse_args()
    logs = load_logs(args.data)
    articles = logs.articles
    vectors = embed(articles, args.cache)
    matrix = CandidateMatrix(
        [ArticleInfo(a, a.id, v) for a, v in zip(articles, vectors, strict=True)], vectors.shape[1]
    )
    impressions = prepare(logs.impressions, matrix)
    timed = all(i["timed"] for i in impressions)
    train, test = split(impressions, timed)
    matrix.popularity, matrix.exposure = counts(train, len(matrix))
    profiles = {imp["key"]: profile(imp, matrix) for imp in impressions}

    learned = make_ranker("learned")
    past = training_counts(train, len(matrix), timed)
    learned.fit([training_example(i, profiles, past[i["key"]]) for i in train], matrix)
    rankers = scorers(matrix, learned, with_recency=logs.source == "ebnerd")
    results: dict[str, Any] = {
        "data": str(args.data),
        "format": logs.source,
        "split": split_description(train, test, timed),
        **settings(timed, len(logs.impressions), len(articles)),
    }
    # An impression listed under several variants counts once overall, once per variant below.
    unique = list({i["id"]: i for i in test}.values())
    for name, score in rankers.items():
        results[name] = summarize([r for _, r in evaluate(unique, profiles, score)]).as_dict()
    results["by_reader_kind"] = by_kind(evaluate(test, profiles, rankers["final"]))
    results["latency_p99_ms"], results["latency_p50_ms"], results["memory_mb_per_100k"] = latency(learned)
    results["machine"] = machine()
    print_tables(results)
    write_results(results, args.out, args)


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
        return np.asarray(np.load(path))
    vectors = SentenceTransformerEmbedder().embed_documents(texts, progress=True)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def prepare(logged: list[LoggedImpression], matrix: CandidateMatrix) -> list[dict[str, Any]]:
    """Impressions as matrix rows; candidates and history without metadata are left out."""
    out = []
    for n, imp in enumerate(logged):
        known = [(c, y) for c, y in zip(imp.candidates, imp.labels, strict=True) if c in matrix.row]
        now = imp.at or datetime.fromtimestamp(NOW, UTC)  # all at one moment when not logged
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
                "timed": imp.at is not None,
            }
        )
    return out


def split(
    impressions: list[dict[str, Any]], timed: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and test halves; a repeated impression (one id, several variants) stays on one side."""
    if timed:
        # The earlier half trains; impressions at the cut all test, so no test one is earlier.
        cut = sorted(i["now"] for i in impressions)[len(impressions) // 2]
        return [i for i in impressions if i["now"] < cut], [i for i in impressions if i["now"] >= cut]
    ids = sorted({i["id"] for i in impressions})
    random.Random(SPLIT_SEED).shuffle(ids)
    train_ids = set(ids[: len(ids) // 2])
    return [i for i in impressions if i["id"] in train_ids], [
        i for i in impressions if i["id"] not in train_ids
    ]


def split_description(train: list[dict[str, Any]], test: list[dict[str, Any]], timed: bool) -> str:
    how = (
        "impressions split by time: test ones all later than training ones"
        if timed
        else f"impression ids shuffled (seed {SPLIT_SEED}) and halved"
    )
    return (
        f"{how}: learned ranker fitted on {len(train)} impressions, "
        f"all rankers scored on the other {len({i['id'] for i in test})} (distinct ids); "
        "popularity and exposure = clicks and impressions in the training half, each impression id once; "
        "a training row's counts leave out its own impression id"
        + (" and every impression not before it" if timed else "")
    )


def settings(timed: bool, impressions: int, articles: int) -> dict[str, Any]:
    """What a rerun at the recorded commit (`provenance`, added by write_results) needs to get the
    same numbers, and which files of the code that shapes them differed from that commit (the
    provenance's `dirty` covers the whole tree, where others may be mid-edit on other files)."""
    return {
        "uncommitted_code": git("status", "--porcelain", "--", *CODE).splitlines(),
        "settings": {
            "logged_impressions": impressions,
            "articles": articles,
            "split": "time" if timed else f"impression-id shuffle, seed {SPLIT_SEED}",
            "train_share": 0.5,  # of the impression ids, or of the impressions by time
            "embedder": PACKAGED_MINILM,
            "learned_ranker": f"logistic regression, C={getattr(make_ranker('learned'), 'c', None)}",
            "diversity": DIVERSITY,
            "random_scorer_seed": RANDOM_SEED,
            "bootstrap": BOOTSTRAP,
            "ties": "expected value over a random order of tied scores (MRR, nDCG); AUC counts ties half",
            "untimed_now": None if timed else datetime.fromtimestamp(NOW, UTC).isoformat(),
            "history_without_time": "1 hour before the impression",
        },
    }


def git(*command: str) -> str:
    try:
        done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()


def logged(impressions: list[dict[str, Any]]) -> dict[int, dict[int, int]]:
    """Each impression id once, as row -> label: listed under several variants it is still one
    display, and its clicks must neither count twice nor survive leaving one copy out."""
    out: dict[int, dict[int, int]] = {}
    for imp in impressions:
        seen = out.setdefault(imp["id"], {})
        for row, label in zip(imp["rows"].tolist(), imp["labels"].tolist(), strict=True):
            seen[row] = max(seen.get(row, 0), label)
    return out


def add(totals: Counts, seen: dict[int, int], sign: float = 1.0) -> None:
    rows = np.fromiter(seen, dtype=np.int64, count=len(seen))  # distinct rows: plain += is safe
    totals[0][rows] += sign * np.fromiter(seen.values(), dtype=np.float64, count=len(seen))
    totals[1][rows] += sign


def counts(impressions: list[dict[str, Any]], n: int) -> Counts:
    """Clicks and impressions of each of the `n` news in `impressions`, each impression id once."""
    totals = (np.zeros(n), np.zeros(n))
    for seen in logged(impressions).values():
        add(totals, seen)
    return totals


def training_counts(train: list[dict[str, Any]], n: int, timed: bool) -> dict[int, Counts]:
    """The counts each training impression (by key) is fitted with, at its rows: those of the other
    impression ids, or by time those of the strictly earlier ones. Its own click never counts."""
    by_id = logged(train)
    if not timed:
        totals = counts(train, n)
        return {i["key"]: leave_out(totals, by_id[i["id"]], i["rows"]) for i in train}
    running = (np.zeros(n), np.zeros(n))
    out: dict[int, Counts] = {}
    for _, moment in itertools.groupby(sorted(train, key=lambda i: i["now"]), key=lambda i: i["now"]):
        group = list(moment)
        out |= {i["key"]: (running[0][i["rows"]], running[1][i["rows"]]) for i in group}
        for impression_id in {i["id"] for i in group}:
            add(running, by_id[impression_id])
    return out


def leave_out(totals: Counts, seen: dict[int, int], rows: np.ndarray) -> Counts:
    own_clicks = np.array([seen[r] for r in rows.tolist()], dtype=np.float64)
    return totals[0][rows] - own_clicks, totals[1][rows] - 1.0


def profile(imp: dict[str, Any], matrix: CandidateMatrix) -> Profile:
    events = [
        Event(event_id=f"{imp['key']}-{n}", reader_id="r", type=EventType.CLICK, article_id=a, at=at)
        for n, (a, at) in enumerate(imp["history"])
        if at < imp["now"]
    ]
    lookup = lambda ids: {i: matrix.infos[matrix.row[i]] for i in ids}  # noqa: E731
    return build_profile("r", events, lookup, imp["now"])


def training_example(imp: dict[str, Any], profiles: dict[int, Profile], past: Counts) -> Impression:
    rows, labels = imp["rows"], imp["labels"]
    return Impression(profiles[imp["key"]], rows, labels, imp["now"].timestamp(), *past)


def scorers(matrix: CandidateMatrix, learned: Any, *, with_recency: bool) -> dict[str, Scorer]:
    rng = np.random.default_rng(RANDOM_SEED)

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
    """Final-pipeline metrics by reader kind, as the `variant` field names it (none: no group)."""
    groups: dict[str, list[dict[str, float]]] = {}
    for imp, metrics in rows:
        for kind in variant_kinds(imp["variant"]):
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
