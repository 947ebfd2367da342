"""From a reader to a ranked, diverse list of stories since their last visit, each explained.

reader -> events -> profile -> candidates (one row per story updated since the last visit) ->
ranker scores -> MMR re-ranking (relevance against similarity to what is already picked) ->
items with a reason ("because you read ...").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import numpy as np

from recsys.candidates import ArticleInfo, CandidateMatrix, Floats, Ints, popularity_at
from recsys.events import EventRepository, EventType
from recsys.profiles import Profile, ProfileConfig, build_profile
from recsys.rankers import Impression, Ranker, make_ranker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecsysConfig:
    k: int = 8
    ranker: str = "learned"
    diversity: float = 0.3  # MMR weight of novelty against relevance; 0 keeps the ranker's order
    pool: int = 100  # top candidates that MMR re-ranks
    first_visit_hours: float = 24.0
    popularity_half_life_hours: float = 24.0
    because_threshold: float = 0.5  # cosine to a read article for "because you read"
    # ... and that much above the article's typical cosine in its language: otherwise a reason
    # names an unrelated article (for Bokmål, every pair is about 0.75 with the English MiniLM)
    because_margin: float = 0.3
    profile: ProfileConfig = field(default_factory=ProfileConfig)


@dataclass(frozen=True)
class Reason:
    """Why a story was picked, as data, so a page can say it in the reader's language and zone
    (`briefing.wording.reason_text`); `str()` is the English line.

    kind: "story" (something new in a story the reader read: `read_article_id`, last `read_at`),
    "similar" (close to `title`, which they read), "section" (they often read `section`),
    "popular" (a first visit) or "new" (new in `section`). A story reason names no headline: the
    one the reader read may state facts that a later article superseded."""

    kind: str
    section: str = ""
    title: str = ""
    read_article_id: str = ""
    read_at: datetime | None = None

    def __str__(self) -> str:
        match self.kind:
            case "story":
                when = f" (you last read it {self.read_at:%Y-%m-%d %H:%M} UTC)" if self.read_at else ""
                return f"new in a story you follow{when}"
            case "similar":
                return f"because you read “{self.title}”"
            case "section":
                return f"you often read {self.section}"
            case "popular":
                return "popular and new"
            case _:
                return f"new in {self.section}"


@dataclass(frozen=True)
class Item:
    story_id: str
    article_id: str
    title: str
    section: str
    url: str
    score: float
    reason: str  # `why` in English
    update: bool  # the reader read this story before; this is what is new
    why: Reason = Reason("popular")


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


@dataclass(frozen=True)
class Serving:
    """What requests score against: a candidate matrix and the rankers fitted for it. Swapped
    whole (one attribute write), so a request that took one never sees half of the next."""

    matrix: CandidateMatrix
    rankers: Mapping[str, Ranker]


class Recommender:
    """Owns the serving snapshot (swap it with `refresh` and `use_ranker`) and fits rankers."""

    def __init__(
        self, matrix: CandidateMatrix, events: EventRepository, config: RecsysConfig = RecsysConfig()
    ) -> None:
        self.events = events
        self.config = config
        self._serving = Serving(matrix, {})

    @property
    def matrix(self) -> CandidateMatrix:
        return self._serving.matrix

    def refresh(self, matrix: CandidateMatrix, now: datetime, fit: Sequence[str] = ()) -> None:
        """Swap in a new matrix (after ingest) with popularity from recent clicks; the rankers in
        `fit` are fitted on it first, so no request waits for a fit (one that fails keeps the
        ranker serving now)."""
        matrix.set_popularity(self.events.all_events(), now, self.config.popularity_half_life_hours)
        rankers = {name: self._fit_or_keep(name, matrix) for name in fit}
        self._serving = Serving(matrix, {k: v for k, v in rankers.items() if v is not None})

    def lookup(self, ids: Sequence[str], matrix: CandidateMatrix | None = None) -> Mapping[str, ArticleInfo]:
        m = matrix or self.matrix
        return {i: m.infos[m.row[i]] for i in ids if i in m.row}

    def profile(self, reader_id: str, now: datetime, matrix: CandidateMatrix | None = None) -> Profile:
        m = matrix or self.matrix
        events = [e for e in self.events.for_reader(reader_id) if e.at <= now]
        last_visit = self.events.last_visit(reader_id)
        lookup = partial(self.lookup, matrix=m)
        return build_profile(reader_id, events, lookup, now, last_visit, self.config.profile)

    def ranker(self, name: str) -> Ranker:
        """The serving ranker of this name, fitted now if it has not been (at startup).

        A fit that fails (bad data in the logs) must not take the service down: the `content`
        ranker, which learns nothing from the logs, serves under this name until a refit works."""
        serving = self._serving
        if name in serving.rankers:
            return serving.rankers[name]
        ranker = self._fit_or_keep(name, serving.matrix)
        if ranker is None:
            ranker = make_ranker("content")
            ranker.fit([], serving.matrix)
        self.use_ranker(name, ranker)
        return ranker

    def use_ranker(self, name: str, ranker: Ranker) -> None:
        """Swap in a ranker fitted elsewhere (a scheduled refit), so requests never wait for a fit."""
        serving = self._serving
        self._serving = Serving(serving.matrix, {**serving.rankers, name: ranker})

    def fit(self, name: str, matrix: CandidateMatrix | None = None) -> Ranker:
        """A new ranker fitted on the current impressions (raises if the data cannot be used)."""
        m = matrix or self.matrix
        ranker = make_ranker(name)
        ranker.fit(self.training_impressions(m), m)
        return ranker

    def _fit_or_keep(self, name: str, matrix: CandidateMatrix) -> Ranker | None:
        try:
            return self.fit(name, matrix)
        except Exception:  # data the fit cannot use: keep what serves, and say so in the log
            log.exception("fitting the %s ranker failed; the previous one keeps serving", name)
            return self._serving.rankers.get(name)

    def training_impressions(self, matrix: CandidateMatrix | None = None) -> list[Impression]:
        """Each reader's impressions, grouped by moment, with the reader's profile just before."""
        m = matrix or self.matrix
        by_reader: dict[str, list[tuple[datetime, str]]] = {}
        clicked: set[tuple[str, str]] = set()
        for e in self.events.all_events():
            if e.type is EventType.IMPRESSION and e.article_id in m.row:
                by_reader.setdefault(e.reader_id, []).append((e.at, e.article_id))
            elif e.type is EventType.CLICK:
                clicked.add((e.reader_id, e.article_id))
        events = list(self.events.all_events())
        half_life = self.config.popularity_half_life_hours
        lookup = partial(self.lookup, matrix=m)
        out: list[Impression] = []
        for reader_id, shown in by_reader.items():
            history = self.events.for_reader(reader_id)
            for at in sorted({at for at, _ in shown}):
                ids = list(dict.fromkeys(a for t, a in shown if t == at))  # one row per article
                before = [e for e in history if e.at < at]
                profile = build_profile(reader_id, before, lookup, at, None, self.config.profile)
                rows = np.array([m.row[a] for a in ids], dtype=np.int64)
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
        profile: Profile | None = None,
    ) -> list[Item]:
        """Stories modified since `since` (default: the reader's last visit, or a day back).
        All of it is scored against one serving snapshot."""
        name = ranker or self.config.ranker
        scorer = self.ranker(name)
        serving = self._serving
        profile = profile or self.profile(reader_id, now, serving.matrix)
        since = since or profile.last_visit or now - timedelta(hours=self.config.first_visit_hours)
        rows = serving.matrix.candidates(since, now, profile.story_read_at, profile.languages)
        return self.rank(profile, rows, now, k=k or self.config.k, scorer=scorer, matrix=serving.matrix)

    def rank(
        self, profile: Profile, rows: Ints, now: datetime, *, k: int, scorer: Ranker, matrix: CandidateMatrix
    ) -> list[Item]:
        scores = scorer.score(profile, matrix, rows, now.timestamp())
        picked = top_diverse(scores, matrix.vectors[rows], k, self.config.pool, self.config.diversity)
        return [self._item(profile, matrix, int(rows[p]), float(scores[p])) for p in picked]

    def _item(self, profile: Profile, matrix: CandidateMatrix, row: int, score: float) -> Item:
        info = matrix.infos[row]
        update = info.story_id in profile.story_read_at
        why = self._reason(profile, info, update, float(matrix.typical[row]))
        return Item(
            story_id=info.story_id,
            article_id=info.article.id,
            title=info.article.title,
            section=info.article.section,
            url=str(info.article.url),
            score=score,
            reason=str(why),
            update=update,
            why=why,
        )

    def _reason(self, profile: Profile, info: ArticleInfo, update: bool, typical: float) -> Reason:
        section = info.article.section
        if update:
            read = next((h.article.id for h in profile.history if h.story_id == info.story_id), "")
            at = profile.story_read_at.get(info.story_id)
            return Reason("story", section, read_article_id=read, read_at=_utc(at) if at else None)
        if len(profile.history):
            sims = profile.history_vectors @ info.vector
            best = int(np.argmax(sims))
            if sims[best] >= max(self.config.because_threshold, typical + self.config.because_margin):
                return Reason("similar", section, title=profile.history[best].article.title)
        if profile.sections.get(section, 0.0) > 0.2:
            return Reason("section", section)
        return Reason("popular", section) if not profile.history else Reason("new", section)


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
