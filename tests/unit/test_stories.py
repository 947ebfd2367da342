from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from indexing import (
    Article,
    Chunker,
    SentenceTransformerEmbedder,
    StoryClusterer,
    StoryConfig,
    pairwise_scores,
)
from indexing.stories import Profile, batch_stories, idf_from, pair_score, words
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
    config = StoryConfig(window_hours=48, threshold=0.7, name_weight=0.0, word_weight=0.0)
    articles = [make_article(i, title=i, published_at=h) for i, h in (("a", 0), ("b", 1), ("c", 2))]
    vectors = np.stack([unit([1, 0, 0]), unit([0, 1, 0]), unit([1, 1, 0])])
    clusterer = StoryClusterer(3, config)
    incremental = {a.id: clusterer.assign(a, v) for a, v in zip(articles, vectors, strict=True)}
    assert incremental["a"] != incremental["b"]
    assert batch_stories(articles, vectors, config) == dict.fromkeys("abc", "story-a")


def test_batch_respects_the_window_and_keeps_singletons() -> None:
    config = StoryConfig(window_hours=24, threshold=0.9, name_weight=0.0, word_weight=0.0)
    articles = [make_article(i, published_at=h) for i, h in (("x", 0), ("y", 30), ("z", 31))]
    vectors = np.stack([unit([1, 0, 0]), unit([1, 0, 0]), unit([0, 0, 1])])
    assert batch_stories(articles, vectors, config) == {"x": "story-x", "y": "story-y", "z": "story-z"}


def _vector(article: Article, embedder: SentenceTransformerEmbedder, chunker: Chunker) -> np.ndarray:
    vectors = embedder.embed_documents([c.embed_text for c in chunker.split(article)])
    mean = vectors.mean(axis=0)
    return np.asarray(mean / np.linalg.norm(mean), dtype=np.float32)


FIRE = make_article(
    "fire-1",
    title="Fire destroys drying hall at Solberg sawmill",
    lead="A night fire burned down the drying hall at Solberg Sag in Fossdal. Nobody was hurt.",
    body=(
        "Firefighters spent five hours on the fire at Solberg Sag, which started in the drying hall "
        "shortly after midnight. The planing mill and the timber stacks were saved.\n\n"
        '"The whole drying hall was burning when we arrived," said fire chief Randi Moe.\n\n'
        "The 28 workers at the sawmill were sent home. Police have not said what caused the fire."
    ),
    published_at=300,
)
FOLLOW_UP = make_article(
    "fire-2",
    title="Police appeal for witnesses after blaze at timber yard",
    lead="Investigators do not rule out that the drying hall was set alight on purpose.",
    body=(
        "Police in Fossdal want to talk to the driver of a van seen leaving the yard minutes before "
        "the alarm.\n\n"
        '"We keep every possibility open," said police lawyer Eirik Dahl. The drying hall at the '
        "family-owned sawmill burned to the ground on Monday night.\n\n"
        "Owner Petter Solberg said the damage could reach NOK 40 million."
    ),
    published_at=330,
)
OTHER_FIRE = make_article(
    "fire-3",
    title="Family escapes chimney fire in Fossdal",
    lead="A family of four got out unhurt when a chimney fire spread to the roof of their house.",
    body=(
        "The fire service had the fire out within an hour, but the loft was badly damaged.\n\n"
        '"This is the season for chimney fires. Have your chimney swept," said fire chief Randi Moe.\n\n'
        "Police said there was nothing suspicious about the fire in Fossdal."
    ),
    published_at=340,
)


def test_paraphrased_follow_up_joins_and_same_town_fire_does_not(
    embedder: SentenceTransformerEmbedder, chunker: Chunker, demo_articles: list[Article]
) -> None:
    # A newsroom with history: the demo's articles, 12 days earlier and so outside the window,
    # count only in the word frequencies (their vectors never meet these articles).
    clusterer = StoryClusterer(embedder.dim)  # the default settings
    for old in demo_articles:
        clusterer.add(old, np.zeros(embedder.dim, dtype=np.float32), f"story-{old.id}")
    stories = [clusterer.assign(a, _vector(a, embedder, chunker)) for a in (FIRE, FOLLOW_UP, OTHER_FIRE)]
    assert stories == ["story-fire-1", "story-fire-1", "story-fire-3"]


def test_words_weigh_by_rarity() -> None:
    # "Fossdal" is in every article, "drying" in two: sharing only the rare word counts more.
    a, b = Profile.of(FIRE), Profile.of(FOLLOW_UP)
    idf = idf_from(Counter({"fossdal": 3, "dri": 2}), 3)
    assert idf("fossdal") == pytest.approx(1.0) and idf("dri") > idf("fossdal")
    assert "dri" in a.words and "dri" in b.words  # "drying" stemmed alike in both
    assert pair_score(StoryConfig(name_weight=0, word_weight=1), 0.0, a, b, idf) > 0.1


def test_words_are_stemmed_per_language() -> None:
    nb = make_article(
        "nb-1", title="Brannen i tørkehallen", lead="", body="Tørkehallene brant.", language="nb"
    )
    assert words(nb)["tørkehall"] == 2
    unknown = make_article("xx-1", title="Brannen", lead="", body="Brannen.", language="de")
    assert words(unknown) == Counter({"brannen": 2})  # no stemmer for it: words as written


def test_vectorized_word_cosines_equal_pair_score() -> None:
    # The clusterer's numpy path must score as `pair_score` does (the batch check uses that).
    empty = make_article("e-1", title="X", lead="", body="1")  # no words at all
    remembered = [FIRE, OTHER_FIRE, empty]
    clusterer = StoryClusterer(3, StoryConfig(name_weight=0, word_weight=1))
    for article in remembered:
        clusterer.add(article, unit([1, 0, 0]), f"story-{article.id}")
    new = Profile.of(FOLLOW_UP)
    df = Counter(w for a in remembered for w in words(a))
    idf = idf_from(df, len(remembered) + 1, also=new)
    expected = [
        pair_score(StoryConfig(name_weight=0, word_weight=1), 0.0, new, Profile.of(a), idf)
        for a in remembered
    ]
    got = clusterer._words.cosines(new.words, np.arange(len(remembered)))
    assert got == pytest.approx(expected) and expected[0] > expected[1] > 0 == expected[2]


def test_default_window_keeps_a_follow_up_five_days_on_and_drops_one_after_a_week() -> None:
    # The job cuts revised five days later (124 h, as in data/eval/stories) stay one story;
    # the same words eight days on start a new one. Incremental and batch agree.
    body = "Vangen Industrier will cut jobs at the Elvestad plant as orders fall, said Rune Fossum."
    articles = [
        make_article("v-1", title="Vangen Industrier to cut 85 jobs", body=body, published_at=0),
        make_article("v-2", title="New order cuts Vangen job losses to 60", body=body, published_at=124),
        make_article("v-3", title="Vangen Industrier cuts revisited", body=body, published_at=124 + 192),
    ]
    vectors = np.stack([unit([1, 0, 0])] * 3)
    clusterer = StoryClusterer(3)  # the default settings
    incremental = {a.id: clusterer.assign(a, v) for a, v in zip(articles, vectors, strict=True)}
    expected = {"v-1": "story-v-1", "v-2": "story-v-1", "v-3": "story-v-3"}
    assert incremental == expected
    assert batch_stories(articles, vectors) == expected
