"""Story clustering: articles about the same developing story share a story id.

Incremental and online: each new article joins the story of its best match among the articles
published within `window_hours` of it, if the match is close enough, or starts a story of its own.
Closeness is the cosine of the article vectors plus a bonus for shared names (capitalized words
and numbers, Jaccard overlap) and one for shared words (the TF-IDF cosine of stemmed words, with
document frequencies from the articles remembered so far). Names and words carry most of the
weight: they separate two stories on one topic, and they work for Norwegian, where the English
embedding model sees every article as alike (same-story and other-story pairs both score about
0.8 cosine in the demo corpus). Rare shared words ("Kripos", "tørkehallen", "bearings") weigh
more than the town's name, which is what links a follow-up whose headline says it differently.
Ids are stable: an article keeps its story when it is updated.

`pairwise_scores` measures a clustering against documented threads (pairwise precision/recall);
`batch_stories` re-clusters a whole set at once with the same pair score, to check the incremental
assignment against (bench/stories.py).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import snowballstemmer

from indexing.articles import Article
from indexing.embedding import Vectors
from indexing.text import CALENDAR_WORDS, STOPWORDS

_NOT_NAMES = STOPWORDS | CALENDAR_WORDS  # capitalized, yet not names
_WORD = re.compile(r"\b(?:[A-ZÆØÅ][\w'-]+|\d[\d.,]*\d|\d)\b")
_TERM = re.compile(r"[^\W\d_]{3,}|\d[\d.,]*\d")  # words of 3+ letters, and numbers
_STEMMERS = {"en": "english", "nb": "norwegian", "nn": "norwegian", "no": "norwegian", "sv": "swedish"}


@dataclass(frozen=True)
class StoryConfig:
    # A week: follow-ups on data/eval/stories come up to 128 hours after the story's first
    # article (job cuts revised, a sale voted, a toll ring dropped), and those pairs already
    # pass the threshold. The demo's threads all fit in 96 hours and its scores are the same
    # at 96 and 168 (bench/stories.py), so the demo cannot choose it: a prior, not a fit.
    window_hours: float = 168.0
    # cosine + name_weight * names Jaccard + word_weight * TF-IDF cosine needed to join a story.
    # Chosen on data/demo's 18 threads only (bench/stories.py); data/eval/stories is reported,
    # never tuned on.
    # The lowest threshold of the demo's plateau (1.3-1.45 give F1 0.98): follow-ups in other
    # words score lower than the demo's, so ties go to recall.
    threshold: float = 1.3
    name_weight: float = 0.75
    word_weight: float = 1.5  # the stemmed-words TF-IDF cosine (0: off)
    candidates: int = 50  # nearest articles by cosine whose names and words are compared


def names(article: Article) -> frozenset[str]:
    text = f"{article.title}. {article.lead}\n{article.body}"
    return frozenset(w.lower() for w in _WORD.findall(text) if w.lower() not in _NOT_NAMES)


def words(article: Article) -> Counter[str]:
    """Stemmed words and their counts: follow-ups reuse a story's rarer words ("drying hall",
    "bearings", "tørkehallen") even when headlines and quoted people change."""
    text = f"{article.title}. {article.lead}\n{article.body}".lower()
    stem = _stemmer(article.language)
    return Counter(stem(w) for w in _TERM.findall(text) if w not in _NOT_NAMES)


@cache
def _stemmer(language: str) -> Callable[[str], str]:
    algorithm = _STEMMERS.get(language)
    if algorithm is None:  # no stemmer for this language: words are compared as written
        return str
    stemmer = snowballstemmer.stemmer(algorithm)
    return cache(stemmer.stemWord)


@dataclass(frozen=True)
class Profile:
    """What an article is compared on besides its vector."""

    names: frozenset[str]
    words: Counter[str]

    @classmethod
    def of(cls, article: Article) -> Profile:
        return cls(names(article), words(article))


Idf = Callable[[str], float]


def idf_from(df: Mapping[str, int], n: int, also: Profile | None = None) -> Idf:
    """Smoothed inverse document frequency over `n` articles (a word in all of them weighs 1);
    `also` is one more article counted in `df` without copying it."""
    extra = also.words if also else {}
    return lambda word: math.log((1 + n) / (1 + df.get(word, 0) + (word in extra))) + 1.0


class _WordIndex:
    """Remembered articles' stemmed words as id and 1 + log(count) arrays, with document
    frequencies: the TF-IDF cosines of `pair_score` for 50 candidates in a few numpy calls, where
    dicts took about 20 ms an article on the demo."""

    def __init__(self) -> None:
        self._vocab: dict[str, int] = {}
        self._df = np.zeros(1024, dtype=np.float64)
        self._articles: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, counts: Counter[str]) -> None:
        ids = np.array([self._vocab.setdefault(w, len(self._vocab)) for w in counts], dtype=np.int64)
        if len(self._vocab) > len(self._df):  # grow by doubling, new words at zero
            self._df = np.concatenate([self._df, np.zeros(len(self._vocab))])
        self._df[ids] += 1
        self._articles.append((ids, 1 + np.log(np.array(list(counts.values()), dtype=np.float64))))

    def cosines(self, counts: Counter[str], candidates: np.ndarray) -> np.ndarray:
        """TF-IDF cosine of `counts` (a new article, counted as a document) with each candidate."""
        n = len(self._articles) + 1
        own = np.zeros(len(self._vocab))  # dense over the vocabulary: gathers are cheap
        known = [(self._vocab[w], c) for w, c in counts.items() if w in self._vocab]
        ids = np.array([i for i, _ in known], dtype=np.int64)
        tf = 1 + np.log(np.array([c for _, c in known], dtype=np.float64))
        own[ids] = tf * (np.log((1 + n) / (2 + self._df[ids])) + 1)  # df + this article
        # Words no remembered article has: in no dot product, but in this article's norm.
        new = np.array([c for w, c in counts.items() if w not in self._vocab], dtype=np.float64)
        new_weights = (1 + np.log(new)) * (math.log((1 + n) / 2) + 1)
        own_norm = math.sqrt(float(own @ own) + float(new_weights @ new_weights))
        out = np.zeros(len(candidates))
        for k, i in enumerate(candidates):
            cand_ids, tf = self._articles[i]
            weights = tf * (np.log((1 + n) / (1 + self._df[cand_ids] + (own[cand_ids] > 0))) + 1)
            norm = own_norm * math.sqrt(float(weights @ weights))
            out[k] = float(weights @ own[cand_ids]) / norm if norm else 0.0
        return out


class StoryClusterer:
    """In-memory window of recent articles; `assign` decides a new article's story."""

    def __init__(self, dim: int, config: StoryConfig = StoryConfig()) -> None:
        self.config = config
        self._ids: list[str] = []
        self._story: dict[str, str] = {}
        self._names: list[frozenset[str]] = []
        self._words = _WordIndex()
        self._times = np.zeros(0, dtype=np.float64)
        self._vectors = np.zeros((0, dim), dtype=np.float32)

    def add(self, article: Article, vector: Vectors, story_id: str) -> None:
        """Remember an article already assigned (loaded from the index, or just assigned)."""
        n = len(self._ids)
        if n == len(self._times):  # grow by doubling: appends stay amortized O(1)
            self._times = np.resize(self._times, max(64, 2 * n))
            self._vectors = np.resize(self._vectors, (max(64, 2 * n), self._vectors.shape[1]))
        self._times[n] = article.published_at.timestamp()
        self._vectors[n] = vector
        self._ids.append(article.id)
        self._story[article.id] = story_id
        self._names.append(names(article))
        self._words.add(words(article))

    def assign(self, article: Article, vector: Vectors) -> str:
        """The story id for a new article (and remember it)."""
        if article.id in self._story:
            return self._story[article.id]
        story_id = self._best_story(article, vector) or f"story-{article.id}"
        self.add(article, vector, story_id)
        return story_id

    def _best_story(self, article: Article, vector: Vectors) -> str | None:
        n = len(self._ids)
        cfg = self.config
        near = np.abs(self._times[:n] - article.published_at.timestamp()) <= cfg.window_hours * 3600
        cosine = np.where(near, self._vectors[:n] @ vector, -1.0)
        # Names are compared with the nearest few only, which bounds the Python work per article.
        nearest = np.argpartition(-cosine, min(cfg.candidates, n) - 1)[: cfg.candidates]
        candidates = nearest[near[nearest]]
        if candidates.size == 0:
            return None
        own = names(article)
        scores = cosine[candidates] + cfg.name_weight * np.array(
            [_jaccard(own, self._names[i]) for i in candidates]
        )
        if cfg.word_weight:  # the same sum as `pair_score`, vectorized: it is most of the work
            scores += cfg.word_weight * self._words.cosines(words(article), candidates)
        best = int(np.argmax(scores))
        if scores[best] < cfg.threshold:
            return None
        return self._story[self._ids[candidates[best]]]

    def stories(self) -> dict[str, str]:
        """article id -> story id for every article in the window."""
        return dict(self._story)


def pair_score(cfg: StoryConfig, cosine: float, a: Profile, b: Profile, idf: Idf) -> float:
    """How alike two articles are: the cosine of their vectors, plus the weighted overlap of
    their names and the weighted TF-IDF cosine of their stemmed words."""
    score = cosine + cfg.name_weight * _jaccard(a.names, b.names)
    if cfg.word_weight:
        score += cfg.word_weight * _tfidf_cosine(a.words, b.words, idf)
    return score


def _tfidf_cosine(a: Counter[str], b: Counter[str], idf: Idf) -> float:
    def weights(counts: Counter[str]) -> dict[str, float]:
        return {w: (1 + math.log(n)) * idf(w) for w, n in counts.items()}

    wa, wb = weights(a), weights(b)
    dot = sum(weight * wb[w] for w, weight in wa.items() if w in wb)
    norms = math.sqrt(sum(x * x for x in wa.values()) * sum(x * x for x in wb.values()))
    return dot / norms if norms else 0.0


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


def batch_stories(
    articles: Sequence[Article], vectors: Vectors, config: StoryConfig = StoryConfig()
) -> dict[str, str]:
    """Re-cluster a whole set at once: a check on the incremental `StoryClusterer`.

    Every pair published within the window whose `pair_score` passes the threshold is linked
    (all pairs, not the nearest `candidates`), and a story is a connected component, named after
    its earliest article. Incremental assignment links each article to its best earlier match
    only, so the two differ where publication order mattered. Quadratic: for evaluation sets.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    order = sorted(range(len(articles)), key=lambda i: articles[i].published_at)
    times = np.array([a.published_at.timestamp() for a in articles])
    own = [Profile.of(a) for a in articles]
    idf = idf_from(Counter(w for p in own for w in p.words), len(articles))
    cosine = vectors @ vectors.T
    rows, cols = [], []
    for i in range(len(articles)):
        for j in range(i + 1, len(articles)):
            near = abs(times[i] - times[j]) <= config.window_hours * 3600
            score = pair_score(config, float(cosine[i, j]), own[i], own[j], idf) if near else -1.0
            if score >= config.threshold:
                rows.append(i)
                cols.append(j)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(articles),) * 2)
    _, labels = connected_components(graph, directed=False)
    first: dict[int, str] = {}
    for i in order:
        first.setdefault(int(labels[i]), f"story-{articles[i].id}")
    return {a.id: first[int(labels[i])] for i, a in enumerate(articles)}


@dataclass(frozen=True)
class PairScores:
    precision: float
    recall: float
    predicted_pairs: int
    true_pairs: int

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def pairwise_scores(predicted: Mapping[str, str], threads: Iterable[Iterable[str]]) -> PairScores:
    """Pairwise precision/recall of `predicted` (article -> story) against documented threads.

    Articles outside every thread count as stories of their own; only articles present in
    `predicted` are scored. Counted from cluster sizes, so it is linear in the articles.
    """
    truth = {a: f"thread-{n}" for n, ids in enumerate(threads) for a in ids}
    gold = {a: truth.get(a, f"alone-{a}") for a in predicted}
    same_pred = _pairs(Counter(predicted.values()))
    same_true = _pairs(Counter(gold.values()))
    hit = _pairs(Counter((predicted[a], gold[a]) for a in predicted))
    return PairScores(
        precision=hit / same_pred if same_pred else 1.0,
        recall=hit / same_true if same_true else 1.0,
        predicted_pairs=same_pred,
        true_pairs=same_true,
    )


def _pairs(sizes: Counter[Any]) -> int:
    return sum(n * (n - 1) // 2 for n in sizes.values())
