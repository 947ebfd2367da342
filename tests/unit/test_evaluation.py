"""The MIND protocol metrics: known answers, ties as a random order of the tied, variant names."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from recsys.evaluation import auc, impression_metrics, mrr, ndcg, variant_kinds


def logged_order_mrr(labels: np.ndarray, scores: np.ndarray) -> float:
    """MRR as MIND's script computes it when there are no ties (ties keep the given order)."""
    ordered = labels[np.argsort(-scores, kind="stable")]
    return float(np.sum(ordered / np.arange(1, len(ordered) + 1)) / np.sum(ordered))


def logged_order_ndcg(labels: np.ndarray, scores: np.ndarray, k: int) -> float:
    def dcg(order: np.ndarray) -> float:
        gains = 2.0 ** labels[order][:k] - 1
        return float(np.sum(gains / np.log2(np.arange(2, len(gains) + 2))))

    return dcg(np.argsort(-scores, kind="stable")) / dcg(np.argsort(-labels, kind="stable"))


def over_all_orders(
    metric: Callable[[np.ndarray, np.ndarray], float], labels: np.ndarray, scores: np.ndarray
) -> float:
    """`metric` averaged over every order of the candidates, hence over every order of each tie group."""
    orders = [list(o) for o in itertools.permutations(range(len(labels)))]
    return float(np.mean([metric(labels[o], scores[o]) for o in orders]))


@pytest.mark.parametrize("click", range(4))
def test_constant_scores_get_the_random_order_mrr(click: int) -> None:
    labels = np.zeros(4, dtype=np.int64)
    labels[click] = 1
    # A random order puts the one click at each position with probability 1/4.
    assert mrr(labels, np.zeros(4)) == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


def test_constant_scores_get_the_random_order_ndcg() -> None:
    labels = np.array([0, 0, 0, 0, 0, 1])
    expected = np.mean(1 / np.log2(np.arange(2, 8)))  # the click equally likely at positions 1..6
    assert ndcg(labels, np.ones(6), 10) == pytest.approx(expected)
    assert ndcg(labels, np.ones(6), 2) == pytest.approx((1 + 1 / np.log2(3)) / 6)


def test_constant_scores_get_the_random_order_on_every_metric() -> None:
    labels = np.array([1, 0, 0, 1, 0, 0, 0])
    metrics = impression_metrics(labels, np.full(7, 3.0))
    assert metrics is not None
    assert metrics["auc"] == pytest.approx(0.5)
    assert metrics["mrr"] == pytest.approx(np.mean(1 / np.arange(1, 8)))


@pytest.mark.parametrize("seed", range(5))
def test_ties_score_the_average_over_their_orders(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.array([1, 0, 1, 0, 0, 0])
    scores = rng.integers(0, 3, size=6).astype(float)  # few values: ties, and tie groups of clicks
    assert mrr(labels, scores) == pytest.approx(over_all_orders(logged_order_mrr, labels, scores))
    ndcg3 = over_all_orders(lambda y, s: logged_order_ndcg(y, s, 3), labels, scores)
    assert ndcg(labels, scores, 3) == pytest.approx(ndcg3)


def test_without_ties_the_metrics_are_the_mind_script_ones() -> None:
    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    scores = rng.normal(size=12)
    assert mrr(labels, scores) == pytest.approx(logged_order_mrr(labels, scores))
    for k in (5, 10):
        assert ndcg(labels, scores, k) == pytest.approx(logged_order_ndcg(labels, scores, k))
    assert auc(labels, scores) == pytest.approx(
        np.mean([s > t for s in scores[labels == 1] for t in scores[labels == 0]])
    )


def test_a_perfect_ranking_scores_one() -> None:
    labels = np.array([0, 1, 0, 1])
    metrics = impression_metrics(labels, labels.astype(float))
    assert metrics == pytest.approx({"auc": 1.0, "mrr": (1 + 1 / 2) / 2, "ndcg5": 1.0, "ndcg10": 1.0})


@pytest.mark.parametrize(
    ("variant", "kinds"),
    [
        ("variant1/cold_user-short_candidate-match_topic", ["cold (history <= 5)", "topic match"]),
        ("variant2/non_cold_user-not_match_topic", ["warm (history > 5)", "no topic match"]),
        ("variant3/cold_user-not_match_topic-fix_candidate", ["cold (history <= 5)", "no topic match"]),
        ("variant4/non_cold_user-match_topic-fix_candidate", ["warm (history > 5)", "topic match"]),
        ("variant9/long_candidate", []),  # says nothing about the reader: in no group, not "cold"
        ("", []),
    ],
)
def test_variant_kinds_read_whole_tags(variant: str, kinds: list[str]) -> None:
    assert variant_kinds(variant) == kinds
