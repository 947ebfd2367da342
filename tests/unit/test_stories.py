from __future__ import annotations

import numpy as np

from indexing import StoryClusterer, StoryConfig, pairwise_scores
from tests.factories import make_article


def test_pairwise_scores_known_values() -> None:
    predicted = {"a": "s1", "b": "s1", "c": "s1", "d": "s2"}
    threads = [["a", "b"], ["c", "d"]]
    scores = pairwise_scores(predicted, threads)
    # predicted pairs: ab ac bc; true pairs: ab cd; correct: ab
    assert (scores.predicted_pairs, scores.true_pairs) == (3, 2)
    assert scores.precision == 1 / 3 and scores.recall == 1 / 2


def test_singletons_are_perfect_when_nothing_is_threaded() -> None:
    scores = pairwise_scores({"a": "a", "b": "b"}, [])
    assert scores.precision == scores.recall == 1.0


def unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def test_clusterer_joins_close_articles_within_window_only() -> None:
    clusterer = StoryClusterer(3, StoryConfig(window_hours=48, threshold=1.1, name_weight=1.5))
    first = make_article("s-1", title="Kvalsund Verft warns of cuts", published_at=0)
    follow = make_article("s-2", title="Kvalsund Verft confirms 140 cuts", published_at=24)
    late = make_article("s-3", title="Kvalsund Verft cuts revisited", published_at=24 * 5)
    other = make_article("s-4", title="Marathon route changes", body="Runners go by the sea.", published_at=2)
    assert clusterer.assign(first, unit([1, 0, 0])) == "story-s-1"
    assert clusterer.assign(other, unit([0, 1, 0])) == "story-s-4"
    assert clusterer.assign(follow, unit([1, 0.1, 0])) == "story-s-1"
    assert clusterer.assign(late, unit([1, 0, 0])) == "story-s-3"  # outside the window
    assert clusterer.assign(follow, unit([0, 0, 1])) == "story-s-1"  # stable on re-assign
