"""What the summarizer removes before the grounding check: sentences that are not news, cut
off, not whole, or said before."""

from __future__ import annotations

import pytest

from briefing.summarize import _complete, _fragment, _near_duplicate, _not_news, _repeats_itself, _unique

TITLE = "Council approves the ferry terminal"


@pytest.mark.parametrize(
    "sentence",
    [
        "Council approves the ferry terminal.",  # the title, shown with the item anyway
        "Title: Council approves the ferry terminal",
        "The article xsum-34268361 is a great example of how a news article can be misleading.",
        "This text describes a council meeting.",
        "Artikkelen handler om et bystyremøte.",
        # the update prompts' dated headings and labels, read back (found in the labelled set)
        "Tue 17 Nov 11:30: Family appeals for help to find dog missing on Varden",
        "- Mon 16 Nov 2022: Tessaro Accord agreed: Blue Carbon Fund gets its own secretariat",
        "[Wed 18 Nov 19:30, updated] Council approves the terminal",
        "Newer headline: Tessaro Accord agreed: Blue Carbon Fund gets its own secretariat",
        "Tittel: Teaterlaget øver på årets juleforestilling",
        "A news article about a university college's plans to build a new research vessel.",
        "Solvik needs knee surgery and will miss four months, a news article reports.",
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
        "On Tue 17 Nov the council met at 11:30: it approved the terminal.",
        "The story of the ferry began in 1960, when the first quay was built.",
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


@pytest.mark.parametrize(
    "sentence",
    [
        "Fire on Nordkaia.",  # under four words
        "Regjeringspartnerne.",
        "-",  # a list marker alone
        "2.",
        "Key points from the council meeting:",  # a heading
        "Hovedpunkter fra møtet i kommunestyret:",
        "The terminal will open in",  # cut off
        "Media playback is not supported on this device",  # no sentence-final punctuation
        "Den unevnelige plan B | Friskoler |",
        '"We cannot keep patching a quay that is literally rusting.',  # half a quotation
        "Solheim said the quay is “literally rusting under our feet.",
        "Ordføreren sa at kaia «ruster under føttene våre.",
        "The council (which met on Tuesday voted 27 to 22.",  # an unclosed bracket
    ],
)
def test_fragments_are_not_whole_sentences(sentence: str) -> None:
    assert _fragment(sentence)


@pytest.mark.parametrize(
    "sentence",
    [
        "No one was injured.",
        "Ingen ble skadd i brannen.",
        'Solheim said: "We cannot keep patching a quay that is literally rusting."',
        "Ordføreren sa at kaia «ruster under føttene våre».",
        "Striker Ingrid Solvik (24) needs knee surgery.",
        "Will the council approve the terminal?",
        "Hannah Jones overbeviste helsemyndighetene (13)",  # a closing bracket ends a sentence too
    ],
)
def test_whole_sentences_are_not_fragments(sentence: str) -> None:
    assert not _fragment(sentence)


@pytest.mark.parametrize(
    ("sentence", "earlier", "same"),
    [
        ("The council voted 27 to 22.", "the council  voted 27 to 22 .", True),  # case and spacing
        (
            "On Wednesday the council approved the new ferry terminal.",
            "The council approved the new ferry terminal on Wednesday.",
            True,  # the same words in another order: Jaccard 1
        ),
        (
            "The council approved the ferry terminal on Wednesday after a long debate.",
            "The council approved the ferry terminal on Wednesday after a debate.",
            True,  # Jaccard 10/11 = 0.91
        ),
        ("The council voted 27 to 22 on Wednesday.", "The council voted 27 to 22.", True),  # contained
        ("Kommunestyret stemte 27 mot 22.", "Kommunestyret stemte 27 mot 22 for terminalen i går.", True),
        (
            "The council voted 22 to 27 against the terminal.",
            "The council voted 27 to 22 for the terminal.",
            False,  # Jaccard 7/9 = 0.78, and neither runs inside the other
        ),
        ("The opposition wants a cheaper plan.", "The council approved the terminal.", False),
    ],
)
def test_near_duplicates(sentence: str, earlier: str, same: bool) -> None:
    assert _near_duplicate(sentence, earlier) is same
    assert _near_duplicate(earlier, sentence) is same  # symmetric


def test_unique_keeps_the_first_whole_sentence_of_each_repeat() -> None:
    generated = [
        "The council voted",  # a fragment: removed first, so it cannot hide what follows
        "The council voted 27 to 22 for the terminal.",
        "The council voted 27 to 22 for the terminal.",
        "Key points:",
        "On Wednesday, the council voted 27 to 22 for the terminal.",  # Jaccard 8/10, and contains it
        "The opposition wants a cheaper plan of 300 million kroner.",
        "The opposition wants a cheaper plan.",  # contained in the one before
    ]
    assert _unique(generated) == [
        "The council voted 27 to 22 for the terminal.",
        "The opposition wants a cheaper plan of 300 million kroner.",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "Forslaget ble vedtatt med 31 mot 14 stemmer etter etter.",
        "A 17th-century merchant ship found off Isla Corva has been discovered by divers, with a "
        "17th-century ship lying nearly intact.",
        "A new day in the valley has arrived, with a new day set to bring peace.",
    ],
)
def test_a_sentence_that_repeats_itself_is_garbled(sentence: str) -> None:
    """From the labelled demo set: each passed the check with support above 0.95."""
    assert _repeats_itself(sentence) and _unique([sentence]) == []


@pytest.mark.parametrize(
    "sentence",
    [
        "The council voted 27 to 22 on Tuesday, and the county voted 11 to 6 on Wednesday.",
        "Havnby IL won 2-1, and Storøy FK must now win by two goals in the return leg.",
        "Det var 10 10-åringer med.",  # a number twice in a row is not a stutter
    ],
)
def test_news_that_repeats_small_words_is_whole(sentence: str) -> None:
    assert not _repeats_itself(sentence)
