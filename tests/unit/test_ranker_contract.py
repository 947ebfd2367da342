"""The `Ranker` contract on every registered ranker, over a synthetic candidate matrix."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from recsys import RANKERS, ArticleInfo, CandidateMatrix, Impression, Profile, make_ranker, mmr
from recsys.profiles import spherical_kmeans
from tests.factories import make_article

DIM = 16
NOW = datetime(2026, 11, 19, 12, tzinfo=UTC)
SECTIONS = ["sport", "local", "politics", "culture"]


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def matrix() -> CandidateMatrix:
    rng = np.random.default_rng(0)
    vectors = unit(rng, 200)
    infos = [
        ArticleInfo(
            make_article(f"c-{i}", section=SECTIONS[i % 4], published_at=NOW - timedelta(hours=i % 48)),
            f"s-{i // 2}",
            vectors[i],
        )
        for i in range(200)
    ]
    m = CandidateMatrix(infos, DIM)
    m.exposure = rng.poisson(30, size=200).astype(np.float64)
    m.popularity = rng.binomial(m.exposure.astype(np.int64), 0.1).astype(np.float64)
    return m


def profile_for(matrix: CandidateMatrix, rows: list[int]) -> Profile:
    vectors = matrix.vectors[rows]
    interests, weights = spherical_kmeans(vectors, np.ones(len(rows)), 2)
    return Profile("r", interests, weights, sections={"sport": 0.8}, history_vectors=vectors)


COLD = Profile("cold", np.zeros((0, DIM), np.float32), np.zeros(0, np.float32))


@pytest.mark.parametrize("name", list(RANKERS))
@pytest.mark.parametrize("cold", [False, True])
def test_scores_are_finite_deterministic_and_pure(matrix: CandidateMatrix, name: str, cold: bool) -> None:
    ranker = make_ranker(name)
    profile = COLD if cold else profile_for(matrix, [0, 4, 8])
    rows = np.arange(0, 200, 3)
    before = matrix.vectors.copy()
    first = ranker.score(profile, matrix, rows, NOW.timestamp())
    assert first.shape == (len(rows),) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, ranker.score(profile, matrix, rows, NOW.timestamp()))
    np.testing.assert_array_equal(before, matrix.vectors)
    assert ranker.score(profile, matrix, rows[:0], NOW.timestamp()).shape == (0,)


def test_content_ranker_prefers_what_the_reader_read(matrix: CandidateMatrix) -> None:
    profile = profile_for(matrix, [10, 20])
    rows = np.arange(200)
    scores = make_ranker("content").score(profile, matrix, rows, NOW.timestamp())
    assert set(np.argsort(-scores)[:2]) == {10, 20}


def test_learned_ranker_learns_a_planted_preference(matrix: CandidateMatrix) -> None:
    """Readers click sport only: after fitting, sport outranks the rest for a sport reader."""
    rng = np.random.default_rng(1)
    impressions = []
    for _ in range(60):
        rows = rng.choice(200, size=10, replace=False)
        labels = np.array([SECTIONS[r % 4] == "sport" for r in rows], dtype=np.int64)
        counts = matrix.popularity[rows], matrix.exposure[rows]
        impressions.append(Impression(profile_for(matrix, [0, 4]), rows, labels, NOW.timestamp(), *counts))
    ranker = make_ranker("learned")
    ranker.fit(impressions, matrix)
    rows = np.arange(200)
    top = np.argsort(-ranker.score(profile_for(matrix, [0, 4]), matrix, rows, NOW.timestamp()))[:10]
    assert all(SECTIONS[r % 4] == "sport" for r in top)


def test_unknown_ranker_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown ranker 'best'"):
        make_ranker("best")


def test_mmr_trades_relevance_for_novelty() -> None:
    vectors = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    relevance = np.array([1.0, 0.99, 0.5])
    assert mmr(relevance, vectors, 2, diversity=0.0) == [0, 1]
    assert mmr(relevance, vectors, 2, diversity=0.5) == [0, 2]


def test_candidates_one_per_story_newest_unread(matrix: CandidateMatrix) -> None:
    since = NOW - timedelta(hours=100)
    rows = matrix.candidates(since, NOW, {})
    stories = [matrix.story[r] for r in rows]
    assert len(stories) == len(set(stories)) == 100
    # story s-0 holds c-0 (newest) and c-1; having read it after both, nothing is new.
    read = {"s-0": NOW.timestamp()}
    assert matrix.row["c-0"] in rows and matrix.row["c-0"] not in matrix.candidates(since, NOW, read)
