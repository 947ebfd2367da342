"""Reader profiles from events: what a reader is interested in, and what they have seen.

Each positive event weighs in by kind (a long read counts more than a click, a thumbs-up more
than either) and halves every `half_life_hours`. Interest vectors are weighted spherical k-means
centroids of the positively read articles' vectors, so a reader of sport and of politics gets two
vectors instead of one average that matches neither. Section and tag affinities are the decayed
positive share per section or tag, minus the thumbs-down share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from indexing import Vectors
from recsys.candidates import ArticleInfo
from recsys.events import Event, EventType

Lookup = Callable[[Sequence[str]], Mapping[str, ArticleInfo]]


@dataclass(frozen=True)
class ProfileConfig:
    half_life_hours: float = 72.0
    max_interests: int = 3
    articles_per_interest: int = 4  # a second interest vector needs at least this many reads
    dwell_saturation_s: float = 120.0


@dataclass(frozen=True)
class Profile:
    reader_id: str
    interests: Vectors  # (k, dim) unit vectors; k = 0 for a reader with no positive history
    interest_weights: Vectors
    sections: dict[str, float] = field(default_factory=dict)
    tags: dict[str, float] = field(default_factory=dict)
    story_read_at: dict[str, float] = field(default_factory=dict)  # story id -> last read (epoch s)
    history: tuple[ArticleInfo, ...] = ()  # positively read articles, most weighted first
    history_vectors: Vectors = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    last_visit: datetime | None = None
    languages: tuple[str, ...] = ()  # of what they read; none means any

    @property
    def cold(self) -> bool:
        return len(self.interests) == 0


def signal(event: Event, config: ProfileConfig) -> float:
    """How much one event says the reader likes the article (negative: dislikes)."""
    match event.type:
        case EventType.READ:
            return 1.0 + min(event.dwell_s or 0.0, config.dwell_saturation_s) / config.dwell_saturation_s
        case EventType.CLICK:
            return 0.5
        case EventType.THUMBS_UP:
            return 2.0
        case EventType.THUMBS_DOWN:
            return -2.0
        case _:
            return 0.0


def build_profile(
    reader_id: str,
    events: Sequence[Event],
    lookup: Lookup,
    now: datetime,
    last_visit: datetime | None = None,
    config: ProfileConfig = ProfileConfig(),
) -> Profile:
    infos = lookup(sorted({e.article_id for e in events}))
    weights: dict[str, float] = {}
    story_read_at: dict[str, float] = {}
    for event in events:
        info = infos.get(event.article_id)
        if info is None or event.at > now:
            continue
        decay = 0.5 ** ((now - event.at).total_seconds() / 3600 / config.half_life_hours)
        weights[event.article_id] = weights.get(event.article_id, 0.0) + signal(event, config) * decay
        if event.type in (EventType.CLICK, EventType.READ):
            at = event.at.timestamp()
            story_read_at[info.story_id] = max(story_read_at.get(info.story_id, 0.0), at)
    positive = sorted((a for a, w in weights.items() if w > 0), key=lambda a: -weights[a])
    history = tuple(infos[a] for a in positive)
    vectors = np.asarray([i.vector for i in history], dtype=np.float32)
    interests, interest_weights = _interests(vectors, np.array([weights[a] for a in positive]), config)
    return Profile(
        reader_id=reader_id,
        interests=interests,
        interest_weights=interest_weights,
        sections=_affinity({a: infos[a].article.section for a in weights}, weights),
        tags=_affinity({a: t for a in weights for t in infos[a].article.tags[:1]}, weights),
        story_read_at=story_read_at,
        history=history,
        history_vectors=vectors,
        last_visit=last_visit,
        languages=tuple(sorted({i.article.language for i in history})),
    )


def _affinity(key_of: Mapping[str, str], weights: Mapping[str, float]) -> dict[str, float]:
    positive = sum(w for a, w in weights.items() if w > 0 and a in key_of) or 1.0
    negative = -sum(w for a, w in weights.items() if w < 0 and a in key_of) or 1.0
    affinity: dict[str, float] = {}
    for article_id, key in key_of.items():
        w = weights[article_id]
        affinity[key] = affinity.get(key, 0.0) + (w / positive if w > 0 else w / negative)
    return affinity


def _interests(vectors: Vectors, weights: np.ndarray, config: ProfileConfig) -> tuple[Vectors, Vectors]:
    if len(vectors) == 0:
        dim = vectors.shape[1] if vectors.ndim == 2 else 0
        return np.zeros((0, dim), dtype=np.float32), np.zeros(0, dtype=np.float32)
    k = max(1, min(config.max_interests, len(vectors) // config.articles_per_interest))
    centroids, share = spherical_kmeans(vectors, weights, k)
    return centroids, share


def spherical_kmeans(
    vectors: Vectors, weights: np.ndarray, k: int, iterations: int = 10
) -> tuple[Vectors, Vectors]:
    """Weighted k-means on the unit sphere; deterministic (farthest-point start from the heaviest)."""
    centers = [vectors[int(np.argmax(weights))]]
    while len(centers) < k:
        nearest = np.max(vectors @ np.asarray(centers).T, axis=1)
        centers.append(vectors[int(np.argmin(nearest))])
    c = np.asarray(centers, dtype=np.float32)
    for _ in range(iterations):
        assign = np.argmax(vectors @ c.T, axis=1)
        for j in range(k):
            members = assign == j
            if members.any():
                mean = (vectors[members] * weights[members, None]).sum(axis=0)
                c[j] = mean / (np.linalg.norm(mean) or 1.0)
    assign = np.argmax(vectors @ c.T, axis=1)
    share = np.array([weights[assign == j].sum() for j in range(k)], dtype=np.float32)
    keep = share > 0
    return c[keep], (share[keep] / share.sum()).astype(np.float32)
