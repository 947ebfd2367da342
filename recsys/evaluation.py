"""Offline evaluation, the MIND protocol: score each impression separately, then average.

AUC, MRR and nDCG@k per impression as MIND's official evaluation script computes them, except
for ties: the script's sort (like a stable one) puts tied candidates in an order the log decides,
so a ranker that ties everything scores whatever the log's order is worth. Here MRR and nDCG
take the expectation over a random order of each tie group (AUC already counts ties half), so a
constant scorer gets exactly what a random order gets. Impressions without a click or without a
non-click are skipped. Intervals are percentile bootstraps over impressions. `variant_kinds`
reads MIND-small's sampling variants (cold or warm reader, topic match or not) into reader kinds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

METRICS = ("auc", "mrr", "ndcg5", "ndcg10")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC with ties counted half (Mann-Whitney U)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tie_averaged(scores: np.ndarray, discount: np.ndarray) -> np.ndarray:
    """Each item's `discount[position - 1]` averaged over the positions its tie group spans.

    In a random order of a tie group each member is equally likely at each of its positions, so
    this is the expected discount; by linearity, sums of gain times it are expected MRR and DCG.
    """
    from scipy.stats import rankdata

    first = rankdata(-scores, method="min").astype(np.int64)  # 1-based, best first
    last = rankdata(-scores, method="max").astype(np.int64)
    cumulative = np.concatenate([[0.0], np.cumsum(discount)])
    return np.asarray((cumulative[last] - cumulative[first - 1]) / (last - first + 1))


def mrr(labels: np.ndarray, scores: np.ndarray) -> float:
    reciprocal = 1.0 / np.arange(1, len(labels) + 1)
    return float(np.sum(labels * tie_averaged(scores, reciprocal)) / np.sum(labels))


def dcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    positions = np.arange(1, len(labels) + 1)
    discount = np.where(positions <= k, 1.0 / np.log2(positions + 1), 0.0)
    return float(np.sum((2.0**labels - 1) * tie_averaged(scores, discount)))


def ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    return dcg(labels, scores, k) / dcg(labels, labels.astype(float), k)


def impression_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float] | None:
    """The four metrics of one impression, or None when it has no click or no non-click."""
    if len(labels) == 0 or labels.min() == labels.max():
        return None
    return {
        "auc": auc(labels, scores),
        "mrr": mrr(labels, scores),
        "ndcg5": ndcg(labels, scores, 5),
        "ndcg10": ndcg(labels, scores, 10),
    }


# MIND-small's `variant` is 'variantN/' then '-'-separated sampling tags; a tag is matched whole,
# since 'cold_user' is also a substring of 'non_cold_user' and 'match_topic' of 'not_match_topic'.
VARIANT_KINDS = {
    "cold_user": "cold (history <= 5)",
    "non_cold_user": "warm (history > 5)",
    "match_topic": "topic match",
    "not_match_topic": "no topic match",
}


def variant_kinds(variant: str) -> list[str]:
    """The reader kinds a variant name states; a variant without a tag is in none of its groups."""
    tags = variant.rpartition("/")[2].split("-")
    return [VARIANT_KINDS[tag] for tag in tags if tag in VARIANT_KINDS]


@dataclass(frozen=True)
class Summary:
    means: dict[str, float]
    low: dict[str, float]
    high: dict[str, float]
    impressions: int

    def as_dict(self) -> dict[str, float | int]:
        out: dict[str, float | int] = {"impressions": self.impressions}
        for m in METRICS:
            out |= {m: self.means[m], f"{m}_ci_low": self.low[m], f"{m}_ci_high": self.high[m]}
        return out


def summarize(per_impression: Sequence[dict[str, float]], resamples: int = 1000, seed: int = 0) -> Summary:
    """Means over impressions with 95% bootstrap intervals."""
    table = np.array([[row[m] for m in METRICS] for row in per_impression])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(table), size=(resamples, len(table)))
    boot = table[picks].mean(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5], axis=0)
    return Summary(
        means=dict(zip(METRICS, table.mean(axis=0).tolist(), strict=True)),
        low=dict(zip(METRICS, low.tolist(), strict=True)),
        high=dict(zip(METRICS, high.tolist(), strict=True)),
        impressions=len(table),
    )
