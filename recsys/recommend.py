"""From a reader to a ranked, diverse list of stories since their last visit, each explained.

reader -> events -> profile -> candidates (one row per story updated since the last visit) ->
ranker scores -> MMR re-ranking (relevance against similarity to what is already picked) ->
items with a reason ("because you read ...").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from recsys.candidates import ArticleInfo, CandidateMatrix, Floats, Ints, popularity_at
from recsys.events import EventRepository, EventType
from recsys.profiles import Profile, ProfileConfig, build_profile
from recsys.rankers import Impression, Ranker, make_ranker


@dataclass(frozen=True)
class RecsysConfig:
    k: int = 8
    ranker: str = "learned"
    diversity: float = 0.3  # MMR weight of novelty against relevance; 0 keeps the ranker's order
    pool: int = 100  # top candidates that MMR re-ranks
    first_visit_hours: float = 24.0
    popularity_half_life_hours: float = 24.0
    because_threshold: float = 0.5  # cosine to a read article for "because you read"
    profile: ProfileConfig = field(default_factory=ProfileConfig)


@dataclass(frozen=True)
class Item:
    story_id: str
    article_id: str
    title: str
    section: str
    url: str
    score: float
    reason: str
    update: bool  # the reader read this story before; this is what is new


def mmr(relevance: Floats, vectors: np.ndarray, k: int, diversity: float) -> list[int]:
    """Maximal marginal relevance: positions into `relevance`, picked greedily."""
    if len(relevance) == 0:
        return []
    spread = float(relevance.max() - relevance.min()) or 1.0
    rel = (relevance - relevance.min()) / spread
    chosen: list[int] = []
    max_sim = np.full(len(rel), -np.inf)
    for _ in range(min(k, len(rel))):
        gain = (1 - diversity) * rel - diversity * np.maximum(max_sim, 0.0)
        gain[chosen] = -np.inf
        pick = int(np.argmax(gain))
        chosen.append(pick)
        max_sim = np.maximum(max_sim, vectors @ vectors[pick])
    return chosen


def top_diverse(scores: Floats, vectors: np.ndarray, k: int, pool: int, diversity: float) -> list[int]:
    """Positions of the k items MMR picks from the `pool` best-scored ones."""
    top = np.argpartition(-scores, pool - 1)[:pool] if len(scores) > pool else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    return [int(top[p]) for p in mmr(scores[top], vectors[top], k, diversity)]


class Recommender:
    """Owns the candidate matrix (swap it with `refresh`) and the fitted rankers."""

    def __init__(
        self, matrix: CandidateMatrix, events: EventRepository, config: RecsysConfig = RecsysConfig()
    ) -> None:
        self.matrix = matrix
        self.events = events
        self.config = config
        self._rankers: dict[str, Ranker] = {}

    def refresh(self, matrix: CandidateMatrix, now: datetime) -> None:
        """Swap in a new matrix (after ingest) with popularity from recent clicks."""
        matrix.set_popularity(self.events.all_events(), now, self.config.popularity_half_life_hours)
        self.matrix = matrix
        self._rankers.clear()

    def lookup(self, ids: Sequence[str]) -> Mapping[str, ArticleInfo]:
        return {i: self.matrix.infos[self.matrix.row[i]] for i in ids if i in self.matrix.row}

    def profile(self, reader_id: str, now: datetime) -> Profile:
        events = [e for e in self.events.for_reader(reader_id) if e.at <= now]
        last_visit = self.events.last_visit(reader_id)
        return build_profile(reader_id, events, self.lookup, now, last_visit, self.config.profile)

    def ranker(self, name: str) -> Ranker:
        if name not in self._rankers:
            ranker = make_ranker(name)
            ranker.fit(self.training_impressions(), self.matrix)
            self._rankers[name] = ranker
        return self._rankers[name]

    def use_ranker(self, name: str, ranker: Ranker) -> None:
        """Swap in a ranker fitted elsewhere (a scheduled refit), so requests never wait for a fit."""
        self._rankers[name] = ranker

    def training_impressions(self) -> list[Impression]:
        """Each reader's impressions, grouped by moment, with the reader's profile just before."""
        by_reader: dict[str, list[tuple[datetime, str]]] = {}
        clicked: set[tuple[str, str]] = set()
        for e in self.events.all_events():
            if e.type is EventType.IMPRESSION and e.article_id in self.matrix.row:
                by_reader.setdefault(e.reader_id, []).append((e.at, e.article_id))
            elif e.type is EventType.CLICK:
                clicked.add((e.reader_id, e.article_id))
        events = list(self.events.all_events())
        half_life = self.config.popularity_half_life_hours
        out: list[Impression] = []
        for reader_id, shown in by_reader.items():
            history = self.events.for_reader(reader_id)
            for at in sorted({at for at, _ in shown}):
                ids = [a for t, a in shown if t == at]
                before = [e for e in history if e.at < at]
                profile = build_profile(reader_id, before, self.lookup, at, None, self.config.profile)
                rows = np.array([self.matrix.row[a] for a in ids], dtype=np.int64)
                labels = np.array([(reader_id, a) in clicked for a in ids], dtype=np.int64)
                index = {a: n for n, a in enumerate(ids)}
                clicks, exposure = popularity_at(index, events, at.timestamp(), half_life)
                out.append(Impression(profile, rows, labels, at.timestamp(), clicks, exposure))
        return out

    def recommend(
        self,
        reader_id: str,
        now: datetime,
        *,
        k: int | None = None,
        ranker: str | None = None,
        since: datetime | None = None,
    ) -> list[Item]:
        """Stories modified since `since` (default: the reader's last visit, or a day back)."""
        profile = self.profile(reader_id, now)
        since = since or profile.last_visit or now - timedelta(hours=self.config.first_visit_hours)
        rows = self.matrix.candidates(since, now, profile.story_read_at, profile.languages)
        return self.rank(profile, rows, now, k=k or self.config.k, ranker=ranker or self.config.ranker)

    def rank(self, profile: Profile, rows: Ints, now: datetime, *, k: int, ranker: str) -> list[Item]:
        scores = self.ranker(ranker).score(profile, self.matrix, rows, now.timestamp())
        picked = top_diverse(scores, self.matrix.vectors[rows], k, self.config.pool, self.config.diversity)
        return [self._item(profile, int(rows[p]), float(scores[p])) for p in picked]

    def _item(self, profile: Profile, row: int, score: float) -> Item:
        info = self.matrix.infos[row]
        update = info.story_id in profile.story_read_at
        return Item(
            story_id=info.story_id,
            article_id=info.article.id,
            title=info.article.title,
            section=info.article.section,
            url=str(info.article.url),
            score=score,
            reason=self._reason(profile, info, update),
            update=update,
        )

    def _reason(self, profile: Profile, info: ArticleInfo, update: bool) -> str:
        if update:
            read = next((h.article.title for h in profile.history if h.story_id == info.story_id), None)
            return f"new in a story you follow{f': you read “{read}”' if read else ''}"
        if len(profile.history):
            sims = profile.history_vectors @ info.vector
            best = int(np.argmax(sims))
            if sims[best] >= self.config.because_threshold:
                return f"because you read “{profile.history[best].article.title}”"
        if profile.sections.get(info.article.section, 0.0) > 0.2:
            return f"you often read {info.article.section}"
        return "popular and new" if not profile.history else f"new in {info.article.section}"
