from __future__ import annotations

import numpy as np

from indexing import StoryClusterer, StoryConfig, pairwise_scores
from indexing.stories import batch_stories
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


def test_batch_links_what_publication_order_split() -> None:
    # b is unlike a; c, published last, is like both (cosine 0.71 each). Incremental: a and b
    # are apart when c arrives, and c joins one of them. Batch: c's two links make one story.
    config = StoryConfig(window_hours=48, threshold=0.7, name_weight=0.0)
    articles = [make_article(i, title=i, published_at=h) for i, h in (("a", 0), ("b", 1), ("c", 2))]
    vectors = np.stack([unit([1, 0, 0]), unit([0, 1, 0]), unit([1, 1, 0])])
    clusterer = StoryClusterer(3, config)
    incremental = {a.id: clusterer.assign(a, v) for a, v in zip(articles, vectors, strict=True)}
    assert incremental["a"] != incremental["b"]
    assert batch_stories(articles, vectors, config) == dict.fromkeys("abc", "story-a")


def test_batch_respects_the_window_and_keeps_singletons() -> None:
    config = StoryConfig(window_hours=24, threshold=0.9, name_weight=0.0)
    articles = [make_article(i, published_at=h) for i, h in (("x", 0), ("y", 30), ("z", 31))]
    vectors = np.stack([unit([1, 0, 0]), unit([1, 0, 0]), unit([0, 0, 1])])
    assert batch_stories(articles, vectors, config) == {"x": "story-x", "y": "story-y", "z": "story-z"}
