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
from typing import Protocol

import numpy as np

from recsys.candidates import CandidateMatrix, Floats, Ints
from recsys.profiles import Profile

FEATURES = (
    "content_max",
    "content_mean",
    "section",
    "tag",
    "popularity",
    "ctr",
    "exposure",
    "freshness",
    "cold",
)
COLUMN = {name: i for i, name in enumerate(FEATURES)}
FRESHNESS_HOURS = 24.0


@dataclass(frozen=True)
class Impression:
    """One logged impression for training: the reader as they were, what was shown, what was clicked."""

    profile: Profile
    rows: Ints
    labels: np.ndarray
    now: float
    popularity: Floats  # clicks on `rows` as they were then: today's counts would leak the labels
    exposure: Floats  # impressions of `rows` as they were then


class Ranker(Protocol):
    name: str

    def fit(self, impressions: Sequence[Impression], matrix: CandidateMatrix) -> None: ...
    def score(self, profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float) -> Floats: ...


def features(
    profile: Profile,
    matrix: CandidateMatrix,
    rows: Ints,
    now: float,
    counts: tuple[Floats, Floats] | None = None,
) -> Floats:
    """(len(rows), len(FEATURES)) feature matrix; see FEATURES for the columns.

    `counts` (clicks, impressions) override the matrix's current ones (training on the past).
    The click-through rate is smoothed so an article shown once and clicked once is not a 100%."""
    out = np.zeros((len(rows), len(FEATURES)), dtype=np.float64)
    if not profile.cold:
        sims = _similarities(matrix, rows, profile.interests)
        out[:, COLUMN["content_max"]] = sims.max(axis=1)
        out[:, COLUMN["content_mean"]] = sims @ profile.interest_weights
    out[:, COLUMN["section"]] = _lookup(profile.sections, matrix.sections.names, matrix.section[rows])
    out[:, COLUMN["tag"]] = _lookup(profile.tags, matrix.tags.names, matrix.tag[rows])
    clicks, shown = counts or (matrix.popularity[rows], matrix.exposure[rows])
    out[:, COLUMN["popularity"]] = np.log1p(clicks)
    out[:, COLUMN["ctr"]] = np.log((clicks + 0.1) / (shown + 1.0))
    out[:, COLUMN["exposure"]] = np.log1p(shown)
    out[:, COLUMN["freshness"]] = freshness(matrix, rows, now)
    out[:, COLUMN["cold"]] = float(profile.cold)
    return out


def freshness(matrix: CandidateMatrix, rows: Ints, now: float) -> Floats:
    """1 for an article modified now, decaying by e every FRESHNESS_HOURS."""
    age_hours = np.maximum(now - matrix.modified[rows], 0.0) / 3600
    return np.asarray(np.exp(-age_hours / FRESHNESS_HOURS))


def _popular_and_fresh(matrix: CandidateMatrix, rows: Ints, now: float, fresh_weight: float) -> Floats:
    return np.asarray(np.log1p(matrix.popularity[rows]) + fresh_weight * freshness(matrix, rows, now))


def _similarities(matrix: CandidateMatrix, rows: Ints, interests: np.ndarray) -> Floats:
    # Gathering most of the matrix copies it; one product over all rows is cheaper then.
    if len(rows) * 4 > len(matrix):
        return np.asarray((matrix.vectors @ interests.T)[rows], dtype=np.float64)
    return np.asarray(matrix.vectors[rows] @ interests.T, dtype=np.float64)


def _lookup(affinity: dict[str, float], names: list[str], codes: Ints) -> Floats:
    table = np.array([affinity.get(name, 0.0) for name in names] or [0.0])
    return np.asarray(table[codes], dtype=np.float64)


class PopularityRanker:
    """Recent clicks, decayed (the matrix's popularity), freshness breaking ties."""

    name = "popularity"

    def fit(self, impressions: Sequence[Impression], matrix: CandidateMatrix) -> None:
        return None

    def score(self, profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float) -> Floats:
        return _popular_and_fresh(matrix, rows, now, fresh_weight=1e-3)


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
        if profile.cold:
            return _popular_and_fresh(matrix, rows, now, fresh_weight=1.0)
        f = features(profile, matrix, rows, now)
        return np.asarray(f[:, COLUMN["content_max"]] + self.section_weight * f[:, COLUMN["section"]])


class LearnedRanker:
    """Logistic regression (scikit-learn) over standardized `features`, trained on impression
    logs; serving is one dot product. On MIND-small it beat gradient-boosted trees, which
    overfit the leave-one-out popularity counts (bench/recsys.py).

    Until fitted (or with too few clicks to learn from) it scores with fixed weights that
    encode the same intuition, so it can always serve.
    """

    name = "learned"
    min_clicks = 20
    fallback = np.array([0.0, 1.0, 0.3, 0.2, 0.3, 0.5, 0.0, 0.3, 0.0])

    def __init__(self, c: float = 1.0) -> None:
        self.c = c
        self.mean = np.zeros(len(FEATURES))
        self.scale = np.ones(len(FEATURES))
        self.weights = self.fallback.copy()
        self.fitted = False

    def fit(self, impressions: Sequence[Impression], matrix: CandidateMatrix) -> None:
        from sklearn.linear_model import LogisticRegression

        if not impressions:
            return
        x = np.vstack(
            [features(i.profile, matrix, i.rows, i.now, (i.popularity, i.exposure)) for i in impressions]
        )
        y = np.concatenate([i.labels for i in impressions])
        if y.sum() < self.min_clicks or y.sum() == len(y):
            return
        self.mean, self.scale = x.mean(axis=0), x.std(axis=0)
        self.scale[self.scale == 0] = 1.0
        model = LogisticRegression(C=self.c, max_iter=1000).fit((x - self.mean) / self.scale, y)
        self.weights = model.coef_[0]
        self.fitted = True

    def score(self, profile: Profile, matrix: CandidateMatrix, rows: Ints, now: float) -> Floats:
        f = features(profile, matrix, rows, now)
        return np.asarray(((f - self.mean) / self.scale) @ self.weights)


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
