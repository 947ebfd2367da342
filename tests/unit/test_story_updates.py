"""Known answers for story updates on the demo newsroom's own threads, without a model: which
articles an update covers, in what order, which correction notes it owes the reader, and which
numbers it must not state as current (briefing/developments.py)."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

from briefing.developments import (
    Development,
    developments,
    find_notes,
    quoted,
    relevant,
    select,
    superseded,
)
from indexing import Article, ArticleRecord
from tests.conftest import DEMO
from tests.factories import make_article


@pytest.fixture(scope="module")
def records(demo_articles: list[Article]) -> dict[str, ArticleRecord]:
    """The current version of every demo article (a later line with the same id wins)."""
    latest = {a.id: a for a in demo_articles}
    return {i: _record(a) for i, a in latest.items()}


def _record(article: Article, story: str = "s") -> ArticleRecord:
    return ArticleRecord(article, f"hash-{article.id}", story, 1, np.zeros(3, dtype=np.float32))


def at(text: str) -> datetime:
    return datetime.fromisoformat(f"2026-11-{text}+01:00")


def thread(records: dict[str, ArticleRecord], *ids: str) -> list[ArticleRecord]:
    return [records[i] for i in ids]


def devs(records: dict[str, ArticleRecord], read: list[str], ids: list[str]) -> list[Development]:
    return developments(thread(records, *ids), thread(records, *read))


NORDKAI = ("pol-0001", "pol-0006", "pol-0011")  # days 1, 2 and 3 of the ferry terminal story


def chosen(records: dict[str, ArticleRecord], read: list[str], read_at: str | None, now: str) -> list[str]:
    story, newest = thread(records, *NORDKAI), records["pol-0011"]
    if at(now) < newest.article.published_at:
        newest = records["pol-0006"]
    picked = select(story, thread(records, *read), at(read_at) if read_at else None, at(now), newest)
    return [r.article.id for r in picked]


def test_a_reader_of_day_1_gets_days_2_and_3_in_time_order(records: dict[str, ArticleRecord]) -> None:
    # r02 read pol-0001 on 16 November and was last here at 20:00 that day
    assert chosen(records, ["pol-0001"], "16T08:10:00", "19T23:00:00") == ["pol-0006", "pol-0011"]


def test_a_reader_of_day_2_gets_only_day_3(records: dict[str, ArticleRecord]) -> None:
    assert chosen(records, ["pol-0001", "pol-0006"], "17T21:00:00", "19T23:00:00") == ["pol-0011"]


def test_developments_after_now_are_left_out(records: dict[str, ArticleRecord]) -> None:
    assert chosen(records, ["pol-0001"], "16T08:10:00", "18T12:00:00") == ["pol-0006"]


def test_without_a_read_time_the_newest_change_to_what_was_read_stands_in(
    records: dict[str, ArticleRecord],
) -> None:
    assert chosen(records, ["pol-0006"], None, "19T23:00:00") == ["pol-0011"]
    assert chosen(records, [], None, "19T23:00:00") == list(NORDKAI)  # read nothing: all of it


def test_an_article_read_before_its_in_place_update_is_covered_again(
    records: dict[str, ArticleRecord],
) -> None:
    # r21 read the live pol-0007 at 15:00; at 17:40 it was updated with the 88-81 vote result
    story = thread(records, "pol-0002", "pol-0007", "pol-0013")
    read = thread(records, "pol-0002", "pol-0007")
    picked = select(story, read, at("17T15:00:00"), at("19T23:00:00"), records["pol-0013"])
    assert [r.article.id for r in picked] == ["pol-0007", "pol-0013"]
    # read after the update: nothing of pol-0007 is new
    picked = select(story, read, at("17T18:00:00"), at("19T23:00:00"), records["pol-0013"])
    assert [r.article.id for r in picked] == ["pol-0013"]


def test_another_languages_articles_are_not_mixed_in(records: dict[str, ArticleRecord]) -> None:
    story = [*thread(records, *NORDKAI), records["nob-0002"]]
    picked = select(story, [records["pol-0001"]], at("16T08:10:00"), None, records["pol-0011"])
    assert [r.article.id for r in picked] == ["pol-0006", "pol-0011"]


# (article, the numbers and names its note says were wrong): data/demo/README.md, "Corrections"
NOTES = [
    ("cul-0006", ["cul-0001"], {"150000", "Eikland"}),
    ("wld-0006", ["wld-0001"], {"148"}),
    ("spo-0009", ["spo-0002"], {"112.5"}),
    ("loc-0008", ["loc-0002"], {"18"}),
    ("nob-0003", [], {"42", "188"}),  # in place: NOK 4,2 (to 18,8) million corrected to 2,4 (17,0)
    ("nob-0013", ["nob-0003"], {"42"}),
    ("bus-0007", ["bus-0002"], set()),  # an update note: "An earlier version cited ... up to 200"
]


@pytest.mark.parametrize(("article", "older", "wrong"), NOTES)
def test_correction_notes_and_what_they_say_was_wrong(
    records: dict[str, ArticleRecord], article: str, older: list[str], wrong: set[str]
) -> None:
    (note,) = find_notes(records[article], thread(records, *older))
    assert note.wrong == wrong
    assert note.sentences[0] in records[article].article.body


def test_articles_without_a_note_have_none(records: dict[str, ArticleRecord]) -> None:
    # cul-0003 says a painting was "listed under the wrong artist": news, not a correction
    noted = {i for i, r in records.items() if find_notes(r)}
    assert noted == {"cul-0006", "wld-0006", "spo-0009", "loc-0008", "nob-0003", "nob-0013", "bus-0007"}


def test_the_quoted_note_states_the_wrong_and_the_right_value(records: dict[str, ArticleRecord]) -> None:
    (note,) = find_notes(records["wld-0006"], [records["wld-0001"]])
    assert quoted(note) == [
        'Correction: An earlier article in this series, published on 16 November ("Tessaro summit opens '
        'with push for Blue Carbon Fund to protect coasts"), said that 148 national delegations had '
        "registered for the Tessaro summit.",
        "That figure was wrong; the correct number is 184.",
    ]
    (note,) = find_notes(records["cul-0006"], [records["cul-0001"]])
    assert quoted(note)[-1].endswith("as Tormod Eikland.")  # the apology is not quoted
    assert len(quoted(note)) == 2


def test_a_correction_of_what_the_reader_read_is_owed_to_them(records: dict[str, ArticleRecord]) -> None:
    # r23 read the four day-1 articles later corrected
    for wrong, story in [("loc-0002", ["loc-0008", "loc-0019"]), ("cul-0001", ["cul-0006", "cul-0016"])]:
        found = devs(records, [wrong], story)
        notes = relevant([n for d in found for n in d.notes], [records[wrong]], [])
        assert [n.article_id for n in notes] == [story[0]]
    # a reader who read only the correcting article is owed nothing, nor one who read both
    found = devs(records, ["cul-0006"], ["cul-0016"])
    assert relevant([n for d in found for n in d.notes], [records["cul-0006"]], []) == []
    found = devs(records, ["cul-0001"], ["cul-0006", "cul-0016"])
    both = thread(records, "cul-0001", "cul-0006")
    assert relevant([n for d in found for n in d.notes], both, []) == []
    # one who read nob-0003 before its in-place correction is told about it
    found = devs(records, ["nob-0003"], ["nob-0003", "nob-0013"])
    notes = relevant([n for d in found for n in d.notes], [records["nob-0003"]], ["nob-0003"])
    assert {n.article_id for n in notes} == {"nob-0003", "nob-0013"}


# (read, developments, sentence, whether it states a superseded or corrected fact as current)
SENTENCES = [
    (["bus-0002"], ["bus-0007", "bus-0017"], "Kvalsund Verft will cut 140 jobs.", True),
    (["bus-0002"], ["bus-0007", "bus-0017"], "The yard now expects to cut 60 jobs instead of 140.", False),
    (["bus-0002"], ["bus-0007", "bus-0017"], "The ferry contract is worth about NOK 780 million.", False),
    ([], ["bus-0008", "bus-0018"], "Tidevann Power is in talks to raise around NOK 80 million.", True),
    ([], ["bus-0008", "bus-0018"], "Tidevann Power raised NOK 85 million.", False),
    ([], ["bus-0008", "bus-0018"], "Tidevann Power previously raised NOK 22 million.", False),
    (["nob-0003"], ["nob-0003", "nob-0013"], "Budsjettet økes til 17,0 millioner kroner til brøyting.", True),
    (
        ["nob-0003"],
        ["nob-0003", "nob-0013"],
        "Kommunen får 17,3 millioner kroner til brøyting og strøing.",
        False,
    ),
    (["nob-0003"], ["nob-0003", "nob-0013"], "Brøytebudsjettet økes med 4,2 millioner kroner.", True),
    (["loc-0002"], ["loc-0008", "loc-0019"], "The repair will cost 18 million kroner.", True),
    (["loc-0002"], ["loc-0008", "loc-0019"], "The repair costs 28 million kroner, not 18 million.", False),
    (["loc-0002"], ["loc-0008", "loc-0019"], "The measures will cost around 3.2 million kroner.", False),
    (["wld-0001"], ["wld-0006", "wld-0016"], "148 national delegations registered for the summit.", True),
    (["wld-0001"], ["wld-0006", "wld-0016"], "171 of the 184 delegations backed the deal.", False),
    (["cul-0001"], ["cul-0006", "cul-0016"], '"Salt Ledger" by Tormod Eikland is on the shortlist.', True),
    (["cul-0001"], ["cul-0006", "cul-0016"], "Tormod Eikeland won the NOK 200,000 prize.", False),
    (["cul-0001"], ["cul-0006", "cul-0016"], "The prize is worth NOK 150,000.", True),
    (["spo-0002"], ["spo-0009"], "Holm jumped 112.5 metres.", True),
    (["spo-0002"], ["spo-0009"], "Holm's total score was 241.3 points.", True),
    (["spo-0002"], ["spo-0009"], "Her score was adjusted from 241.3 to 246.7 points.", False),
    (["pol-0001"], ["pol-0006", "pol-0011"], "Last winter emergency repairs cost 7.4 million kroner.", False),
    (["pol-0001"], ["pol-0006", "pol-0011"], "The county will contribute 60 million kroner.", False),
    (
        ["pol-0001"],
        ["pol-0006", "pol-0011"],
        "The council approved 186 million kroner, 27 votes to 22.",
        False,
    ),
]


@pytest.mark.parametrize(("read", "story", "sentence", "stale"), SENTENCES)
def test_superseded_and_corrected_numbers_are_caught(
    records: dict[str, ArticleRecord], read: list[str], story: list[str], sentence: str, stale: bool
) -> None:
    reason = superseded(sentence, devs(records, read, story))
    assert (reason is not None) == stale, reason


def test_a_quoted_correction_is_not_itself_flagged(records: dict[str, ArticleRecord]) -> None:
    found = devs(records, ["loc-0002"], ["loc-0008", "loc-0019"])
    for note in (n for d in found for n in d.notes):
        assert all(superseded(s, found) is None for s in quoted(note))


def test_no_sentence_of_a_threads_newest_article_is_flagged(records: dict[str, ArticleRecord]) -> None:
    """The newest article is current by definition: over all 18 demo threads, none of its
    sentences may be taken for a superseded one (the check's false alarms where they cost most)."""
    from briefing.grounding import split_sentences

    for line in (DEMO / "threads").glob("*.jsonl"):
        for raw in line.read_text().splitlines():
            ids = json.loads(raw)["article_ids"]
            story = sorted(thread(records, *ids), key=lambda r: r.article.last_modified)
            found = developments(story, [])
            newest = story[-1].article
            for sentence in split_sentences(f"{newest.lead}\n{newest.body}"):
                assert superseded(sentence, found) is None, (newest.id, sentence)


def test_days_and_times_are_not_taken_for_corrected_values() -> None:
    body = (
        "The hall opens on 18 November at 19:30.\n\n"
        "Correction: An earlier version said the hall holds 900 people; it holds 1,200."
    )
    article = make_article("x-2", body=body, published_at=30)
    (note,) = find_notes(_record(article), [_record(make_article("x-1", body="The hall holds 900 people."))])
    assert note.wrong == {"900"}
    found = developments([_record(article)], [])
    assert superseded("The hall opens on 18 November at 19:30.", found) is None
    assert superseded("The hall holds 900 people.", found) is not None
    assert superseded("The hall holds 1,200 people.", found) is None


def test_text_that_only_looks_like_a_note_is_not_one() -> None:
    body = "The correct answer to the quiz was 42, said the host.\n\nA previous winner scored 17."
    assert find_notes(_record(make_article("q-1", body=body))) == []


def test_a_bokmal_story_is_told_from_the_bokmal_update_prompt() -> None:
    from briefing import PROMPTS

    assert PROMPTS.localized("update", "en").id == "update@2"
    bokmal = PROMPTS.localized("update", "nb")
    assert (bokmal.id, bokmal.kind, bokmal.language) == ("update-nb@1", "update", "nb")
    chat = bokmal.render(title="T", text="Tekst.", read="- Dag 1")
    assert "<article>" in chat[1]["content"] and "Dag 1" in chat[1]["content"]
