"""Offline evaluation, the MIND protocol: score each impression separately, then average.

AUC, MRR and nDCG@k per impression exactly as MIND's official evaluation script computes them;
impressions without a click or without a non-click are skipped. Intervals are percentile
bootstraps over impressions.
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


def mrr(labels: np.ndarray, scores: np.ndarray) -> float:
    ordered = labels[np.argsort(-scores, kind="stable")]
    return float(np.sum(ordered / (np.arange(len(ordered)) + 1)) / np.sum(ordered))


def dcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    ordered = labels[np.argsort(-scores, kind="stable")[:k]]
    return float(np.sum((2.0**ordered - 1) / np.log2(np.arange(len(ordered)) + 2)))


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
