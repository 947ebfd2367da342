"""Story updates: which articles an update covers, and which of their facts are no longer current.

A reader who last read a story at time t gets an update written from every article of that story
changed after t: new follow-ups, and in-place updates of articles they had read (`select`), in
time order. Two rules keep superseded facts out of what they are shown (DESIGN.md section 5):

- Correction notes ("Correction: ...", "Rettelse: ...", "An earlier version said ...") are found
  in the developments (`find_notes`); the numbers, and misspelled names, a note says were wrong are
  never stated as current, and a note about something the reader read is quoted in the update as
  the newsroom wrote it (`relevant`), so the correction is stated as a correction.
- A number from an older development is superseded when a later one states it only as the old
  value ("from 140 to 60", "instead of 140", "than the NOK 80 million", "not 18 million"), or
  states a new value in the same unit about the same thing (two content words shared by the
  sentences around the two values) without repeating the old one (`superseded`). A sentence that
  states the new value too describes the change and is kept.

What it simplifies: it reads numbers and misspelled names only. A changed name in words (a new
headliner) or a date is left to the grounding check and to editors; day-of-month and clock times
are not compared at all (a follow-up names other days without correcting anything).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from difflib import SequenceMatcher
from functools import cached_property

from briefing.grounding import content_words, split_sentences
from indexing import CALENDAR_WORDS, STOPWORDS, ArticleRecord

# A note opens with a label or says an earlier version was wrong (English and Bokmål).
_NOTE_CUE = re.compile(
    r"^\W*(?:correction|clarification|rettelse|korrigering|presisering)\s*:"
    r"|\b(?:an earlier version|a previous version|tidligere versjon|feilaktig"
    r"|incorrectly (?:stated|reported|said))\b",
    re.IGNORECASE,
)
# Where a note turns from the wrong value to the right one.
_RIGHT = re.compile(r";|\b(?:the correct|correctly|it (?:is|was)|riktig|korrekt)\b", re.IGNORECASE)
_APOLOGY = re.compile(r"\b(?:apologi[sz]e|beklager)\b", re.IGNORECASE)
_CORRECTING = re.compile(
    r"\b(?:correct\w*|rettelse|rettet|wrong|feil\w*|earlier version|mistake|misspel\w*)\b", re.IGNORECASE
)
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|januar|februar"
    "|mars|mai|juni|juli|oktober|desember|jan|feb|mar|apr|jun|jul|aug|sept?|oct|okt|nov|dec|des"
)
# Day-of-month and clock times: other days are named in every follow-up, so they are not compared.
_DAY_OR_TIME = re.compile(
    rf"\b\d{{1,2}}\.?\s+(?:{_MONTHS})\b\.?|\b(?:{_MONTHS})\.?\s+\d{{1,2}}\b(?![.,]\d)|\b\d{{1,2}}:\d{{2}}\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# A value stated as the one replaced: "from 140 to 60", "instead of 140", "than the NOK 80 million".
_OLD_BEFORE = re.compile(
    r"(?:\bfrom|\bfra|\binstead of|\brather than|\bi stedet for|\bthan the|\bnot|\bikke)\s+"
    r"(?:the\s+|around\s+|about\s+|NOK\s+|kr\.?\s+|USD\s+|\$\s*)*$",
    re.IGNORECASE,
)
_TO_AFTER = re.compile(r"^\s*(?:[^\d\s]+\s+){0,2}(?:to|til)\s+(?:NOK\s+|kr\.?\s+)?\d", re.IGNORECASE)
_FROM = re.compile(r"(?:\bfrom|\bfra)\s+(?:\S+\s+)*$", re.IGNORECASE)
_UNIT_WORDS = frozenset(
    {"million", "millioner", "billion", "milliarder", "kroner", "nok", "kr", "dollars", "percent"}
)
# A value anchored in the past stays true when a later one differs ("previously raised 22 million").
_PAST = re.compile(
    r"\b(?:previously|earlier|formerly|last (?:year|week|month)|yesterday|tidligere|i fjor|i går|forrige)\b",
    re.IGNORECASE,
)
_NAME = re.compile(r"\b[A-ZÆØÅ][a-zæøå]{3,}\b")
SAME_THING_WORDS = 2  # content words two sentences must share for their values to be of one thing
NOTE_SENTENCES = 3  # at most this many quoted note sentences in one update


@dataclass(frozen=True)
class Value:
    """One number as an article states it: normalized, its unit word, the sentence around it."""

    number: str
    unit: str
    context: frozenset[str]
    old: bool  # stated as the value replaced ("from 140 to 60"), or a note's wrong value


@dataclass(frozen=True)
class Note:
    """A correction or update note in an article, and the facts it says were wrong."""

    article_id: str
    sentences: tuple[str, ...]  # as published, to be quoted
    wrong: frozenset[str]  # normalized numbers and names


@dataclass(frozen=True)
class Development:
    """An article version an update covers, with its notes and the values it states."""

    record: ArticleRecord
    notes: tuple[Note, ...]

    @property
    def id(self) -> str:
        return self.record.article.id

    @cached_property
    def values(self) -> tuple[Value, ...]:
        wrong = {f for n in self.notes for f in n.wrong}
        return tuple(
            Value(v.number, v.unit, v.context, v.old or v.number in wrong)
            for s in _sentences(self.record)
            for v in values_in(s)
        )

    def current(self, number: str) -> bool:
        return any(v.number == number and not v.old for v in self.values)

    def replaced(self, number: str) -> bool:
        return any(v.number == number and v.old for v in self.values)


def select(
    story: Iterable[ArticleRecord],
    read: Sequence[ArticleRecord],
    read_at: datetime | None,
    now: datetime | None,
    newest: ArticleRecord,
) -> list[ArticleRecord]:
    """The story's article versions changed after the reader's last read of it and published by
    `now`, oldest first, `newest` among them. Without `read_at`, the newest change of what they
    read stands in for it (they read it at that time or later)."""
    cutoff = last_read(read, read_at)
    chosen = {
        r.article.id: r
        for r in story
        if r.article.language == newest.article.language
        and (now is None or r.article.published_at <= now)
        and (cutoff is None or r.article.last_modified > cutoff)
    }
    chosen[newest.article.id] = newest
    return sorted(chosen.values(), key=lambda r: (r.article.last_modified, r.article.id))


def last_read(read: Sequence[ArticleRecord], read_at: datetime | None) -> datetime | None:
    """The reader's last read of the story, or the newest change to what they read."""
    return read_at or max((r.article.last_modified for r in read), default=None)


def developments(records: Sequence[ArticleRecord], read: Sequence[ArticleRecord]) -> list[Development]:
    """Each record with its notes; a note's wrong facts are judged against everything older."""
    out: list[Development] = []
    for n, record in enumerate(records):
        older = [*read, *records[:n]]
        out.append(Development(record, tuple(find_notes(record, older))))
    return out


def find_notes(record: ArticleRecord, older: Sequence[ArticleRecord] = ()) -> list[Note]:
    """The correction and update notes of an article: from the first sentence of a paragraph
    that has a note cue to the end of that paragraph."""
    notes = []
    paragraphs = _paragraphs(record)
    for p, paragraph in enumerate(paragraphs):
        sentences = split_sentences(paragraph)
        start = next((i for i, s in enumerate(sentences) if _NOTE_CUE.search(s)), None)
        if start is None:
            continue
        note = sentences[start:]
        rest = " ".join([*paragraphs[:p], *sentences[:start], *paragraphs[p + 1 :]])
        wrong = _wrong_numbers(note, rest) | _misspelled(note, rest, older)
        notes.append(Note(record.article.id, tuple(note), frozenset(wrong)))
    return notes


def relevant(notes: Iterable[Note], read: Sequence[ArticleRecord], updated: Iterable[str]) -> list[Note]:
    """Notes the reader should be told about: those correcting a fact in something they read,
    and those of an article they read that was updated in place since (`updated`). A note in an
    article they read as it is now, they have seen."""
    seen = set().union(*(_facts(_text(r)) for r in read)) if read else set()
    again = set(updated)
    known = {r.article.id for r in read} - again
    return [n for n in notes if n.article_id not in known and (n.wrong & seen or n.article_id in again)]


def quoted(note: Note) -> list[str]:
    """What to quote of a note: its first sentence, then those naming a wrong or right value."""
    out = [note.sentences[0]]
    for sentence in note.sentences[1:]:
        if _APOLOGY.search(sentence) or not (_RIGHT.search(sentence) or _facts(sentence) & note.wrong):
            break
        out.append(sentence)
    return out


def superseded(sentence: str, devs: Sequence[Development]) -> str | None:
    """Why `sentence` would present a superseded or corrected number as current, or None."""
    stated = values_in(sentence)
    numbers = {v.number for v in stated}
    if _CORRECTING.search(sentence):
        return None  # it states the correction itself
    facts = {v.number for v in stated if not v.old} | set(_NAME.findall(sentence))
    for note in (n for d in devs for n in d.notes):
        wrong = facts & note.wrong
        if wrong:
            return f"corrected in {note.article_id}: {', '.join(sorted(wrong))}"
    historical = bool(_PAST.search(sentence))
    for value in (v for v in stated if not v.old):  # "not 18 million" states no 18 as current
        reason = _replaced(value, numbers, devs, historical)
        if reason:
            return reason
    return None


def values_in(text: str) -> list[Value]:
    """The numbers a sentence states (days of the month and clock times left out)."""
    masked = _DAY_OR_TIME.sub(lambda m: " " * len(m.group()), text)
    context = frozenset(w for w in content_words(text) if not _plain(w)) - _UNIT_WORDS
    out = []
    for match in _NUMBER.finditer(masked):
        before, after = masked[: match.start()], masked[match.end() :]
        old = bool(_OLD_BEFORE.search(before)) and (
            not _FROM.search(before[-12:]) or bool(_TO_AFTER.match(after))
        )
        out.append(Value(_norm(match.group()), _unit(after), context, old))
    return out


def _replaced(value: Value, numbers: set[str], devs: Sequence[Development], historical: bool) -> str | None:
    """Whether a development after the last one stating `value` replaced it. A `historical`
    sentence ("previously raised NOK 22 million") is not replaced by a new value of its unit."""
    stating = [n for n, d in enumerate(devs) if d.current(value.number)]
    if not stating:  # stated only as a replaced value ("adjusted from 241.3 to 246.7"), or absent
        replaced = next((d for d in devs if d.replaced(value.number)), None)
        if replaced is not None and not numbers & {v.number for v in replaced.values if not v.old}:
            return f"replaced in {replaced.id}: {value.number}"
        return None  # absent from the evidence: the grounding check's business
    last = devs[stating[-1]]
    before = {v.number for d in devs[: stating[-1] + 1] for v in d.values}
    for later in devs[stating[-1] + 1 :]:
        if later.replaced(value.number):
            if not numbers & {v.number for v in later.values if not v.old}:
                return f"superseded in {later.id}: {value.number}"
            continue
        for new in [] if historical else _same_thing(value.number, last, later, before):
            if new not in numbers:
                return f"superseded in {later.id}: {value.number} (now {new})"
    return None


def _same_thing(number: str, old: Development, new: Development, known: set[str]) -> list[str]:
    """New values in `new` of the unit `number` has in `old`, about the same thing."""
    mine = [v for v in old.values if v.number == number and not v.old and v.unit]
    out = []
    for candidate in new.values:
        if candidate.old or candidate.number in known or candidate.number == number:
            continue
        if any(
            m.unit == candidate.unit and len((m.context & candidate.context) - {m.unit}) >= SAME_THING_WORDS
            for m in mine
        ):
            out.append(candidate.number)
    return out


def _wrong_numbers(note: list[str], rest: str) -> set[str]:
    """Numbers stated before the note turns to the right value, and nowhere else as current."""
    text = " ".join(note)
    marker = _RIGHT.search(text)
    head = text[: marker.start()] if marker else text
    current = {v.number for v in values_in(rest) if not v.old}
    return {v.number for v in values_in(head)} - current


def _misspelled(note: list[str], rest: str, older: Sequence[ArticleRecord]) -> set[str]:
    """Of two near-identical names in a note (Eikland, Eikeland), the one an older article used
    and this article does not use outside the note."""
    names = set(_NAME.findall(" ".join(note))) - {w.capitalize() for w in CALENDAR_WORDS}
    earlier = " ".join(_text(r) for r in older)
    out = set()
    for name in names:
        twins = [o for o in names if o != name and SequenceMatcher(None, name, o).ratio() >= 0.85]
        if twins and re.search(rf"\b{name}\b", earlier) and not re.search(rf"\b{name}\b", rest):
            out.add(name)
    return out


def _facts(text: str) -> set[str]:
    return {v.number for v in values_in(text)} | set(_NAME.findall(text))


def _unit(after: str) -> str:
    """The word after a number ("140 jobs", "28 million kroner"): "" when it is part of a word
    ("16-year-old") or ends the sentence."""
    if not after[:1].isspace() and after[:1] != "%":
        return ""
    word = next(iter(re.findall(r"[a-zæøå%]+", after[:30].lower())), "")
    return "" if word in STOPWORDS else word


def _norm(number: str) -> str:
    return number.replace(",", "").rstrip(".")


def _plain(word: str) -> bool:
    return word.isdigit() or word in CALENDAR_WORDS


def _paragraphs(record: ArticleRecord) -> list[str]:
    article = record.article
    return [p for p in [article.title, article.lead or "", *article.body.split("\n\n")] if p.strip()]


def _sentences(record: ArticleRecord) -> list[str]:
    return [s for p in _paragraphs(record) for s in split_sentences(p)]


def _text(record: ArticleRecord) -> str:
    return "\n\n".join(_paragraphs(record))
