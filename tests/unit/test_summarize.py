"""What the summarizer removes before the grounding check: sentences that are not news."""

from __future__ import annotations

import pytest

from briefing.summarize import _complete, _not_news

TITLE = "Council approves the ferry terminal"


@pytest.mark.parametrize(
    "sentence",
    [
        "Council approves the ferry terminal.",  # the title, shown with the item anyway
        "Title: Council approves the ferry terminal",
        "The article xsum-34268361 is a great example of how a news article can be misleading.",
        "This text describes a council meeting.",
        "Artikkelen handler om et bystyremøte.",
    ],
)
def test_echoes_and_talk_about_the_article_are_not_news(sentence: str) -> None:
    assert _not_news(sentence, TITLE)


@pytest.mark.parametrize(
    "sentence",
    [
        "The council approved the terminal by 27 votes to 22.",
        "The text of the bill was published on Monday.",
        "The UK triggered Article 50 in March 2017.",
        "Britain will leave once the article 50 period ends.",
    ],
)
def test_news_is_news(sentence: str) -> None:
    assert not _not_news(sentence, TITLE)


@pytest.mark.parametrize(
    ("reason", "sentences", "kept"),
    [
        ("stop", ["The council voted 27 to 22.", "The terminal will open in"], 2),
        ("length", ["The council voted 27 to 22.", "The terminal will open in"], 1),
        ("timeout", ["The council voted 27 to 22.", "The terminal will open in"], 1),
        ("timeout", ["The council voted 27 to 22.", "It opens in 2028."], 2),
        ("timeout", [], 0),
    ],
)
def test_a_sentence_cut_off_by_a_limit_is_not_checked(reason: str, sentences: list[str], kept: int) -> None:
    assert _complete(sentences, reason) == sentences[:kept]
