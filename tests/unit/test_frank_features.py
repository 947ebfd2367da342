"""bench/frank_features.py: token pieces grouped into content words, their PMI features, and the
validation-fitted combination scoring a held-out split it never saw."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from bench.frank_features import (
    TOKEN_FEATURES,
    content_words,
    fitted_rows,
    sentence_features,
    summary_features,
)


def test_content_words_group_a_words_tokens_and_skip_stopwords() -> None:
    pieces = [b"The", b" coach", b" John", b" Sm", b"ith", b" said", b" it", b"."]
    assert content_words(pieces) == [[1], [2], [3, 4]]  # "said" is a stopword


def test_the_invented_word_is_the_minimum_and_the_mean_dilutes_it() -> None:
    pieces = [b"Coach", b" Sm", b"ith", b" won", b" the", b" cup"]
    given = np.array([-1.0, -6.0, -0.5, -1.0, -0.2, -1.0])
    prior = np.array([-3.0, -4.0, -0.5, -3.0, -0.2, -3.0])  # "Smith" less likely after the article
    features = sentence_features(pieces, given, prior)
    assert features["pmi_min"] == -2.0  # (-6 + 4) + (-0.5 + 0.5): the word "Smith"
    assert features["pmi_low3"] == (-2.0 + 2.0 + 2.0) / 3
    assert features["pmi_neg_share"] == 1 / 4
    assert features["given_min"] == -6.5
    assert features["pmi_mean"] == (2 - 2 + 0 + 2 + 0 + 2) / 6
    assert np.isclose(features["gain_min"], -6.5 + 0.6 * 4.5)  # the same word: log p(w | a) - 0.6 log p(w)
    assert np.isclose(features["gain_content"], np.mean([-1 + 1.8, -6 + 2.4, -0.5 + 0.3, -1 + 1.8, -1 + 1.8]))


def test_a_truncated_or_empty_sentence_has_features() -> None:
    features = sentence_features([b"Cup", b" won"], np.array([-1.0]), np.array([-2.0]))
    assert features["pmi_min"] == 1.0  # only the scored token counts
    assert sentence_features([b"."], np.array([-1.0]), np.array([-1.0]))["pmi_neg_share"] == 0.0


def test_a_summary_is_as_weak_as_its_weakest_sentence() -> None:
    first = {k: 0.0 for k in TOKEN_FEATURES} | {"pmi_min": -1.0, "pmi_low3": 0.5, "pmi_neg_share": 0.2}
    second = {k: 1.0 for k in TOKEN_FEATURES} | {"pmi_min": 0.5, "pmi_low3": -0.5, "pmi_neg_share": 0.6}
    worst = summary_features([first, second])
    assert (worst["pmi_min"], worst["pmi_low3"], worst["pmi_neg_share"], worst["gain_min"]) == (
        -1.0,
        -0.5,
        0.6,
        0.0,
    )


def test_a_fit_on_validation_ranks_held_out_test_summaries_by_the_informative_feature() -> None:
    rng = random.Random(3)
    rows = []
    for split in ("validation", "test"):
        for part in ("cnndm", "xsum"):
            for _ in range(60):
                faithful = rng.random() < 0.5
                row: dict[str, Any] = {
                    "part": part,
                    "split": split,
                    "faithful": faithful,
                    "vetoed": False,
                    "missing": 0,
                }
                for key in ("score", "text", "likelihood", *TOKEN_FEATURES):
                    row[key] = rng.random()  # noise
                row["pmi_min"] = (1.0 if faithful else 0.0) + 0.3 * rng.random()
                rows.append(row)
    out = fitted_rows(rows, rounds=20)
    assert out["signal_pmi_min"]["by_split"]["test"]["auc_macro"] == 1.0
    assert out["fit_tokens"]["by_split"]["test"]["auc_macro"] > 0.95
    assert out["fit_shipped_parts"]["by_split"]["test"]["auc_macro"] < 0.8  # it reads only noise
