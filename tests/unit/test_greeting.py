"""The LLM's greeting is kept only when it says something true about this reader's briefing:
it names one of the items, in the reader's language, without repeating itself; otherwise the
catalogue's template greeting stands (briefing.compose._greeting_ok)."""

from __future__ import annotations

import pytest

from briefing import BriefingItem, SummarySentence
from briefing.compose import _greeting_ok


def item(article_id: str, title: str, *sentences: str) -> BriefingItem:
    cited = tuple(SummarySentence(s, 0.9, (f"{article_id}@h#0",)) for s in sentences)
    return BriefingItem(
        "s", article_id, title, "https://x.example/a", "local", False, "", "draft", None, None, cited
    )


ENGLISH = [
    item(
        "pol-0001",
        "Ferry terminal will cost NOK 186 million more",
        "The council voted 27 to 22 to rebuild the Nordkai terminal.",
    ),
    item("spo-0001", "Havnby wins the cup final"),
]
BOKMAL = [item("nob-0001", "Ferjeanlegget blir dyrere", "Bystyret vedtok å bygge nytt anlegg på Nordkai.")]


@pytest.mark.parametrize(
    "line",
    [
        "The latest news from the latest news briefing.",  # names nothing, and says it twice
        "Welcome back, here is what is new since your last visit!",  # names nothing
        "Here are the latest stories and updates for you today.",  # only generic words
        "Welcome back: the ferry news and more ferry news.",  # names an item, but repeats itself
        "Welcome back: the ferry terminal and the Oslo marathon.",  # Oslo is in no item
        "Velkommen tilbake, her er det nytt om ferjeanlegget siden sist!",  # Bokmål to an English reader
    ],
)
def test_an_english_greeting_that_names_nothing_true_is_refused(line: str) -> None:
    assert not _greeting_ok(line, ENGLISH, "en")


@pytest.mark.parametrize(
    "line",
    [
        "Welcome back: the ferry terminal and the cup final lead your briefing.",
        "Good evening, with the Nordkai rebuild at the top.",  # a name from the shown summary
        "Welcome back, there is more on the ferries tonight.",  # another form of a title word
    ],
)
def test_an_english_greeting_that_names_an_item_is_kept(line: str) -> None:
    assert _greeting_ok(line, ENGLISH, "en")


@pytest.mark.parametrize(
    "line",
    [
        "Velkommen tilbake, her er det nytt siden sist!",  # names nothing
        "Her er de siste nyhetene fra de siste nyhetene.",  # names nothing, and says it twice
        "Velkommen tilbake, ferjeanlegget og mer om ferjeanlegget venter.",  # repeats itself
        "Welcome back: the ferry terminal costs more.",  # English to a Bokmål reader
    ],
)
def test_a_bokmal_greeting_that_names_nothing_true_is_refused(line: str) -> None:
    assert not _greeting_ok(line, BOKMAL, "nb")


@pytest.mark.parametrize(
    "line",
    [
        "Velkommen tilbake, her er det nytt om ferjeanlegget siden sist!",
        "Hei, i dag handler det om bystyret og Nordkai.",  # words from the shown summary
    ],
)
def test_a_bokmal_greeting_that_names_an_item_is_kept(line: str) -> None:
    assert _greeting_ok(line, BOKMAL, "nb")


def test_without_items_no_greeting_can_name_one() -> None:
    assert not _greeting_ok("Welcome back: the ferry terminal leads your briefing.", [], "en")
