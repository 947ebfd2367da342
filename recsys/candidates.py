"""The in-memory candidate matrix: the recent window's article vectors and metadata.

Scoring a reader against 10,000 fresh candidates is one matrix product over this matrix, not
10,000 vector searches (Qdrant's embedded mode evaluates filters in Python). It is rebuilt from
the index after ingest (`CandidateMatrix.from_index`) and is read-only afterwards, so readers of
one matrix never see a half-refreshed state; the owner swaps in a new one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from indexing import Article, QdrantIndex, SearchFilter, Vectors
from recsys.events import Event, EventType

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ArticleInfo:
    """What the recommender needs of one article."""

    article: Article
    story_id: str
    vector: Vectors


class Codes:
    """Strings to dense integer codes, so per-candidate lookups are array indexing."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.names: list[str] = []
        self.code: dict[str, int] = {}
        for value in values:
            self.add(value)

    def add(self, value: str) -> int:
        if value not in self.code:
            self.code[value] = len(self.names)
            self.names.append(value)
        return self.code[value]

    def array(self, values: Iterable[str]) -> Ints:
        return np.fromiter((self.add(v) for v in values), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.names)


class CandidateMatrix:
    """Row i is article `ids[i]`: its unit vector, story, section, first tag, language, times."""

    def __init__(self, infos: Sequence[ArticleInfo], dim: int) -> None:
        self.infos = list(infos)
        self.ids = [i.article.id for i in self.infos]
        self.row = {article_id: n for n, article_id in enumerate(self.ids)}
        self.vectors = np.asarray([i.vector for i in self.infos], dtype=np.float32).reshape(-1, dim)
        self.stories, self.sections, self.tags, self.languages = Codes(), Codes(), Codes(), Codes()
        self.story = self.stories.array(i.story_id for i in self.infos)
        self.section = self.sections.array(i.article.section for i in self.infos)
        self.tag = self.tags.array((i.article.tags or [""])[0] for i in self.infos)
        self.language = self.languages.array(i.article.language for i in self.infos)
        self.published = np.array([i.article.published_at.timestamp() for i in self.infos], dtype=np.float64)
        self.modified = np.array([i.article.last_modified.timestamp() for i in self.infos], dtype=np.float64)
        self.typical = self._typical_similarity()
        self.popularity = np.zeros(len(self.infos), dtype=np.float64)  # decayed clicks
        self.exposure = np.zeros(len(self.infos), dtype=np.float64)  # decayed impressions

    def _typical_similarity(self) -> Floats:
        """Each article's mean cosine to the articles of its language (its similarity to the
        average one): what "similar" must beat. An English-only model puts every Bokmål pair
        near 0.75, and any two English articles about one town near 0.3."""
        typical = np.zeros(len(self.infos), dtype=np.float64)
        for code in range(len(self.languages)):
            rows = self.language == code
            if rows.any():
                typical[rows] = self.vectors[rows] @ self.vectors[rows].mean(axis=0)
        return typical

    @classmethod
    def from_index(cls, index: QdrantIndex, dim: int, since: datetime | None = None) -> CandidateMatrix:
        """The articles published at or after `since` (all when None)."""
        where = SearchFilter(since=since) if since else None
        infos = [ArticleInfo(r.article, r.story_id, r.vector) for r in index.scroll(where)]
        return cls(infos, dim)

    def __len__(self) -> int:
        return len(self.ids)

    def nbytes(self) -> int:
        arrays = (self.vectors, self.story, self.section, self.tag, self.language)
        floats = (self.published, self.modified, self.typical, self.popularity, self.exposure)
        return sum(a.nbytes for a in (*arrays, *floats))

    def set_popularity(self, events: Iterable[Event], now: datetime, half_life_hours: float = 24.0) -> None:
        """Clicks and impressions per article before `now`, halved in weight every half-life."""
        self.popularity, self.exposure = popularity_at(self.row, events, now.timestamp(), half_life_hours)

    def candidates(
        self, since: datetime, now: datetime, story_read_at: dict[str, float], languages: Sequence[str] = ()
    ) -> Ints:
        """Rows to consider: one per story updated in (since, now], its newest article that is
        new to the reader; stories read with nothing new since are left out."""
        fresh = (self.modified > since.timestamp()) & (self.published <= now.timestamp())
        if languages:
            codes = [self.languages.code[lang] for lang in languages if lang in self.languages.code]
            fresh &= np.isin(self.language, codes)
        read_at = np.zeros(len(self.stories), dtype=np.float64)
        for story_id, at in story_read_at.items():
            if story_id in self.stories.code:
                read_at[self.stories.code[story_id]] = at
        rows = np.flatnonzero(fresh & (self.modified > read_at[self.story]))
        # Newest first within each story, then the first row of each story.
        order = rows[np.lexsort((-self.modified[rows], self.story[rows]))]
        _, first = np.unique(self.story[order], return_index=True)
        return np.asarray(order[first], dtype=np.int64)


def popularity_at(
    rows: Mapping[str, int], events: Iterable[Event], now: float, half_life_hours: float
) -> tuple[Floats, Floats]:
    """(decayed clicks, decayed impressions) per row from the events before `now`, in any order.

    The arrays have a slot for every row `rows` names, up to its largest: a mapping built from a
    list that repeats an article (the event API accepts the same article twice in one impression)
    names fewer articles than its largest row, and sizing by its length raised IndexError.
    A reader's impression or click of one article at one moment counts once, whatever its event
    ids: a page that sends an impression twice has not shown the article twice."""
    size = max(rows.values(), default=-1) + 1
    clicks = np.zeros(size, dtype=np.float64)
    shown = np.zeros(size, dtype=np.float64)
    seen: set[tuple[str, str, str, float]] = set()
    for event in events:
        row = rows.get(event.article_id)
        at = event.at.timestamp()
        key = (event.reader_id, event.type.value, event.article_id, at)
        if row is None or at >= now or key in seen:
            continue  # the same thing twice at one moment (two event ids, one click) counts once
        seen.add(key)
        weight = 0.5 ** ((now - at) / 3600 / half_life_hours)
        if event.type is EventType.CLICK:
            clicks[row] += weight
        elif event.type is EventType.IMPRESSION:
            shown[row] += weight
    return clicks, shown
