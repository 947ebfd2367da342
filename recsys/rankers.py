"""Rankers behind one protocol, registered by name so an experiment arm can name one.

`Ranker` contract (tests/unit/test_ranker_contract.py):
- `fit(impressions)` learns from logged impressions (a no-op for rule-based rankers);
- `score(profile, matrix, rows, now)` returns one finite float per row, higher is better,
  without changing its inputs, deterministically.

All work is array work over the candidate matrix: one product of the candidate vectors with the
reader's few interest vectors, and array lookups for the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from recsys.candidates import CandidateMatrix, Floats, Ints
from recsys.profiles import Profile

FEATURES = ("content_max", "content_mean", "section", "tag", "popularity", "freshness", "cold")
FRESHNESS_HOURS = 24.0


@dataclass(frozen=True)
class Impression:
    """One logged impression for training: the reader as they were, what was shown, what was clicked."""

    profile: Profile
    rows: Ints
    labels: np.ndarray
    now: float
    popularity: Floats  # of `rows` as it was then: today's counts would leak the labels


class Ranker(Protocol):
    name: str

    def fit(self, impressions: Sequence[Impression], matrix: CandidateMatrix) -> None: ...
    def score(self, profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float) -> Floats: ...


def features(
    profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float, popularity: Floats | None = None
) -> Floats:
    """(len(rows), len(FEATURES)) feature matrix; see FEATURES for the columns.

    `popularity` overrides the matrix's current counts (training on past impressions)."""
    n = len(rows)
    out = np.zeros((n, len(FEATURES)), dtype=np.float64)
    if not profile.cold:
        sims = matrix.vectors[rows] @ profile.interests.T
        out[:, 0] = sims.max(axis=1)
        out[:, 1] = sims @ profile.interest_weights
    out[:, 2] = _lookup(profile.sections, matrix.sections.names, matrix.section[rows])
    out[:, 3] = _lookup(profile.tags, matrix.tags.names, matrix.tag[rows])
    out[:, 4] = np.log1p(matrix.popularity[rows] if popularity is None else popularity)
    age_hours = np.maximum(now - matrix.modified[rows], 0.0) / 3600
    out[:, 5] = np.exp(-age_hours / FRESHNESS_HOURS)
    out[:, 6] = float(profile.cold)
    return out


def _lookup(affinity: dict[str, float], names: list[str], codes: Ints) -> Floats:
    table = np.array([affinity.get(name, 0.0) for name in names] or [0.0])
    return np.asarray(table[codes], dtype=np.float64)


class PopularityRanker:
    """Recent clicks, decayed (the matrix's popularity), freshness breaking ties."""

    name = "popularity"

    def fit(self, impressions: Sequence[Impression], matrix: CandidateMatrix) -> None:
        return None

    def score(self, profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float) -> Floats:
        f = features(profile, matrix, rows, now)
        return np.asarray(f[:, 4] + 1e-3 * f[:, 5])


class RecencyRanker:
    """Newest first."""

    name = "recency"

    def fit(self, impressions: Sequence[Impression], matrix: CandidateMatrix) -> None:
        return None

    def score(self, profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float) -> Floats:
        return np.asarray(matrix.modified[rows] - now, dtype=np.float64)


class ContentRanker:
    """Similarity of each candidate to the reader's closest interest vector, plus section
    affinity. A reader with no history gets popularity and freshness instead."""

    name = "content"
    section_weight = 0.2

    def fit(self, impressions: Sequence[Impression], matrix: CandidateMatrix) -> None:
        return None

    def score(self, profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float) -> Floats:
        f = features(profile, matrix, rows, now)
        if profile.cold:
            return np.asarray(f[:, 4] + f[:, 5])
        return np.asarray(f[:, 0] + self.section_weight * f[:, 2])


class LearnedRanker:
    """Gradient-boosted trees (scikit-learn) over `features`, trained on impression logs.

    Until fitted (or with too few clicks to learn from) it scores with fixed weights that
    encode the same intuition, so it can always serve.
    """

    name = "learned"
    min_clicks = 20
    fallback_weights = np.array([1.0, 0.5, 0.3, 0.2, 0.3, 0.3, 0.0])

    def __init__(self, **params: Any) -> None:
        self.params = {
            "max_iter": 150,
            "learning_rate": 0.05,
            "max_leaf_nodes": 15,
            "random_state": 0,
        } | params
        self.model: Any = None

    def fit(self, impressions: Sequence[Impression], matrix: CandidateMatrix) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        if not impressions:
            return
        x = np.vstack([features(i.profile, matrix, i.rows, i.now, i.popularity) for i in impressions])
        y = np.concatenate([i.labels for i in impressions])
        if y.sum() < self.min_clicks or y.sum() == len(y):
            return
        self.model = HistGradientBoostingClassifier(**self.params).fit(x, y)

    def score(self, profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float) -> Floats:
        f = features(profile, matrix, rows, now)
        if self.model is None:
            return np.asarray(f @ self.fallback_weights)
        return np.asarray(self.model.predict_proba(f)[:, 1])


RANKERS: dict[str, Callable[[], Ranker]] = {
    "popularity": PopularityRanker,
    "recency": RecencyRanker,
    "content": ContentRanker,
    "learned": LearnedRanker,
}


def make_ranker(name: str) -> Ranker:
    try:
        return RANKERS[name]()
    except KeyError:
        raise ValueError(f"unknown ranker {name!r}; known: {', '.join(RANKERS)}") from None
