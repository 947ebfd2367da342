""" "Because you read X" only when X is unusually close: above the candidate's typical similarity to
articles of its language. An English-only embedding model puts every pair of Bokmål articles
near 0.75, so an absolute threshold named unrelated articles as the reason (a theatre premiere
"because you read" a mackerel quota)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from recsys import ArticleInfo, CandidateMatrix, Event, EventType, InMemoryEventStore, Recommender
from tests.factories import make_article

NOW = datetime(2026, 11, 19, 22, tzinfo=UTC)


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def alike(n: int, dim: int, cosine: float, seed: int) -> list[np.ndarray]:
    """n unit vectors whose pairwise cosines are about `cosine` (a shared direction plus noise)."""
    rng = np.random.default_rng(seed)
    shared = unit(rng.normal(size=dim))
    return [
        unit(np.sqrt(cosine) * shared + np.sqrt(1 - cosine) * unit(rng.normal(size=dim))) for _ in range(n)
    ]


def reasons(language: str, cosine: float) -> list[str]:
    dim = 64
    vectors = alike(12, dim, cosine, seed=3)
    published = NOW - timedelta(hours=30)
    infos = [
        ArticleInfo(
            make_article(
                f"a-{n}", language=language, section="local", published_at=published + timedelta(hours=n)
            ),
            f"story-{n}",
            v,
        )
        for n, v in enumerate(vectors)
    ]
    events = InMemoryEventStore()
    read_at = published + timedelta(hours=1, minutes=30)
    events.add(
        [Event(event_id="e1", reader_id="r", type=EventType.READ, article_id="a-0", at=read_at, dwell_s=60)]
    )
    recommender = Recommender(CandidateMatrix(infos, dim), events)
    recommender.refresh(recommender.matrix, NOW)
    return [i.reason for i in recommender.recommend("r", NOW, k=5, since=read_at)]


def test_articles_that_all_look_alike_are_no_reason() -> None:
    assert not any(r.startswith("because you read") for r in reasons("nb", cosine=0.75))


def test_typical_similarity_is_the_mean_cosine_within_a_language() -> None:
    vectors = alike(6, 32, 0.75, seed=1) + [unit(v) for v in np.eye(32, dtype=np.float32)[:6]]
    infos = [
        ArticleInfo(make_article(f"a-{n}", language="nb" if n < 6 else "en"), f"s-{n}", v)
        for n, v in enumerate(vectors)
    ]
    matrix = CandidateMatrix(infos, 32)
    assert np.all(matrix.typical[:6] > 0.6)  # Bokmål: every article is like the average one
    assert np.allclose(matrix.typical[6:], 1 / 6)  # orthogonal English articles: only itself
