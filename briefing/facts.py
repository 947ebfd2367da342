"""Numbers, ordinals, dates, months and weekdays in the same sense (the grounding check's facts).

A bare number matches any occurrence of it in the evidence ("1960" is in "the 1960s"); that let
"…on Nordkaia on December 12th…" through against an article with "12 employees" (issue 17). Here a
sentence's calendar and quantity statements become typed facts, each with the keys that the
evidence must contain for it to hold (`sentence_facts`); `evidence_keys` gives the evidence's:
- a date (day and month, any order and language: "12 December", "December 12th", "12. desember")
  needs that day and month; month and year ("March 2027") need that month and year;
- an ordinal ("12th", Norwegian "12." before a lower-case word) needs that ordinal or a date with
  that day;
- a month or weekday name, in either language and anywhere in the sentence, needs that month or
  weekday ("Tuesday" meets "tirsdag"). May, March and August count only capitalized and not
  opening a sentence (or in a date): "the council may vote", "a march against the merger";
- a number with a scale ("126 million", "3 per cent", "12 prosent", "4.1bn") needs the number
  with the same scale (million ≠ billion; "millioner" is million, "milliarder" billion);
- a currency code (NOK, EUR, USD, GBP) needs that currency, by code, name or symbol;
- a number followed by a unit word ("80 seats", "12 employees") needs that number with a form of
  that word (or a currency synonym: kroner, NOK, kr) within `NEAR` words of it.
Years and bare numbers are left to the plain rule (briefing/grounding.py). Keys hold a colon, so
no word sequence of normalized text can equal one. `WordForms` (a word and its Snowball stems)
lives here because unit words need it; the grounding check and the greeting rule use it too.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import snowballstemmer

from indexing import STOPWORDS


class WordForms:
    """A word and its Snowball stems in the given languages: "resigned" meets "resignation"."""

    def __init__(self, languages: Sequence[str]) -> None:
        unknown = sorted(set(languages) - set(snowballstemmer.algorithms()))
        if unknown:
            raise ValueError(f"no Snowball stemmer for {unknown}; there are {snowballstemmer.algorithms()}")
        self._stemmers = [snowballstemmer.stemmer(language) for language in languages]
        self._lock = threading.Lock()  # Snowball stemmers keep per-call state on the object

    def __call__(self, word: str) -> set[str]:
        with self._lock:
            return {word, *(stemmer.stemWord(word) for stemmer in self._stemmers)}

    def of(self, words: set[str]) -> set[str]:
        return {form for word in words for form in self(word)}


NEAR = 5  # words either side of a number in the evidence that can be its unit

_MONTHS = {
    **{m: n for n, m in enumerate("january february march april may june july august".split(), 1)},
    **{"september": 9, "october": 10, "november": 11, "december": 12},
    **{m: n for n, m in enumerate("januar februar mars april mai juni juli august".split(), 1)},
    **{"oktober": 10, "desember": 12},
}
_ABBREVIATED = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9}
_ABBREVIATED |= {"oct": 10, "okt": 10, "nov": 11, "dec": 12, "des": 12}
_COMMON_WORDS = ("may", "march", "august")  # months only when capitalized (or in a date)
_WEEKDAYS = {d: n for n, d in enumerate("monday tuesday wednesday thursday friday saturday sunday".split())}
_UKEDAGER = {d: n for n, d in enumerate("man tirs ons tors fre lør søn".split())}

_UNAMBIGUOUS = sorted(set(_MONTHS) - set(_COMMON_WORDS) - {"mars"}, key=len, reverse=True)
# A month in a date: full names in any case, except that the common words and abbreviations
# must be capitalized ("the 12 may be released" is no date; "Mars" mid-sentence is the planet).
_MONTH = (
    r"(?P<month>(?i:"
    + "|".join(_UNAMBIGUOUS)
    + r")|mars|May|March|August|"
    + "|".join(a.capitalize() for a in _ABBREVIATED)
    + r")\.?"
)
_DAY = r"(?P<day>3[01]|[12]\d|0?[1-9])"
_ORDINAL = r"(?:st|nd|rd|th)"
_YEAR = r"(?P<year>1[89]\d\d|20\d\d)"
# "5. til 15. desember", "5-15 December": the first day of a range shares the month.
_FIRST = r"(?:(?P<first>3[01]|[12]\d|0?[1-9])(?:\.|" + _ORDINAL + r")?\s*(?:-|\u2013|til|to|and|og)\s*)?"
_DATES = (
    re.compile(rf"\b{_FIRST}{_DAY}(?:\.|{_ORDINAL})?\s+(?:of\s+)?{_MONTH}(?:,?\s+{_YEAR})?\b"),
    re.compile(rf"\b{_MONTH}\s+{_DAY}{_ORDINAL}?\b(?:,?\s+{_YEAR}\b)?"),
    re.compile(rf"\b{_MONTH}\s+{_YEAR}\b"),
)
# Outside a date, the Norwegian "mars" is the month only after a preposition ("i mars"): lower-cased
# English text has the planet ("a planet the size of mars").
_MARS = r"(?:(?<=\bi )|(?<=\bfra )|(?<=\btil )|(?<=\binnen )|(?<=\bmedio )|(?<=\bultimo ))mars"
_BARE_MONTH = re.compile(
    r"\b(?:(?i:"
    + "|".join(_UNAMBIGUOUS)
    + r")|"
    + _MARS
    + r"|(?<!^)(?<![.!?]\s)(?:May|March|August))(?:['’]s)?\b"  # noqa: RUF001
)
_WEEKDAY = re.compile(
    r"\b(?i:(?P<en>" + "|".join(_WEEKDAYS) + r")(?:['’]?s)?\b|(?P<nb>" + "|".join(_UKEDAGER) + r")dag\w*)"  # noqa: RUF001
)
_CODE = re.compile(r"\b(?:NOK|EUR|USD|GBP)\b")  # a currency's code needs the currency, named any way
_CURRENCY = re.compile(r"(?i:\b(?:nok|kr|kroner?|kronor|eur|euros?|usd|dollars?|gbp|pounds?)\b)|[$€£]")
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:['’][^\W\d_]+)?|[%$€£]")  # noqa: RUF001
# Ages are written many ways ("the 19-year-old", "Ibe, 19,", "Hannah (13)"): the number alone.
_AGE = re.compile(r"-(?:year-old|åring)", re.IGNORECASE)
_GAP = re.compile(r"\s*|-")
_NORWEGIAN_ORDINAL = re.compile(r"\.\s+[a-zæøå]")

# Scale words, by what they multiply; the first word of two-word scales maps to the pair.
_SCALES = {
    **dict.fromkeys(("thousand", "thousands", "tusen"), "thousand"),
    **dict.fromkeys(("million", "millions", "millioner", "mill", "mln"), "million"),
    **dict.fromkeys(("billion", "billions", "bn", "milliard", "milliarder", "mrd"), "billion"),
    **dict.fromkeys(("trillion", "trillions", "billioner"), "trillion"),
    **dict.fromkeys(("%", "percent", "prosent", "pct"), "percent"),
    **dict.fromkeys(("prosentpoeng", "prosentpoengs"), "points"),
}
_TWO_WORD_SCALES = {
    ("per", "cent"): "percent",
    ("percentage", "point"): "points",
    ("percentage", "points"): "points",
}
_CURRENCIES = {
    **dict.fromkeys(("nok", "kr", "kroner", "krone", "kronor"), "nok"),
    **dict.fromkeys(("eur", "euro", "euros", "€"), "eur"),
    **dict.fromkeys(("usd", "dollar", "dollars", "$"), "usd"),
    **dict.fromkeys(("gbp", "pound", "pounds", "£"), "gbp"),
}


@dataclass(frozen=True)
class Fact:
    """A typed statement of a sentence: as written (`shown`, what editors see when it is
    missing), the keys of which the evidence must hold one, and the bare numbers it rests on
    (when one of those is missing, the plain rule already says so)."""

    shown: str
    keys: frozenset[str]
    numbers: tuple[str, ...] = ()


def canonical_number(raw: str) -> str:
    """A number without thousands commas ("1,950", "150,000"), its decimal comma ("4,2", "38,9")
    a point and its trailing decimal zeros gone: "4,2 millioner" and "4.2 million" state one
    number, and so do "17,0" and "17"."""
    number = re.sub(r",(?=\d{3}(?!\d))", "", raw).replace(",", ".")
    return re.sub(r"(?:(\.\d*?[1-9])|\.)0+$", r"\1", number) if re.fullmatch(r"\d+\.\d+", number) else number


def is_typed_name(word: str) -> bool:
    """A month or weekday name or a currency code: facts in their own sense here, not names
    ("Tuesday's" meets "on Tuesday", "NOK 126 million" meets "126 million kroner")."""
    plain = re.sub(r"['’]s$", "", word.lower())  # noqa: RUF001
    planet = plain == "mars" and not word.islower()  # the month is "mars" in Norwegian
    calendar = (plain in _MONTHS and not planet) or bool(_WEEKDAY.fullmatch(word))
    return calendar or plain in _CURRENCIES


def sentence_facts(sentence: str) -> list[Fact]:
    """The typed facts a sentence states (see the module docstring)."""
    dates = list(_dates(sentence))
    taken = [(start, end) for start, end, *_ in dates]
    facts = [f for d in dates for f in _date_facts(sentence, d)]
    facts += [_named(m.group(), f"month:{_month(m.group())}") for m in _bare_months(sentence, taken)]
    facts += [_named(m.group(), f"weekday:{_weekday(m)}") for m in _WEEKDAY.finditer(sentence)]
    facts += [_named(m.group(), _currency(m.group())) for m in _CODE.finditer(sentence)]
    return facts + [_quantity(*found) for found in _quantities(sentence, taken)]


def evidence_keys(evidence: str) -> set[str]:
    """Every key the evidence holds: what its dates, ordinals, months, weekdays and quantities
    state, and each number with the forms of the words near it."""
    keys: set[str] = set()
    dates = list(_dates(evidence))
    for _, _, days, month, year in dates:
        keys |= {f"date:{d}-{month}" for d in days} | {f"ordinal:{d}" for d in days} | {f"month:{month}"}
        keys |= {f"monthyear:{month}-{year}"} if year else set()
    taken = [(start, end) for start, end, *_ in dates]
    keys |= {f"month:{_month(m.group())}" for m in _bare_months(evidence, taken)}
    keys |= {f"weekday:{_weekday(m)}" for m in _WEEKDAY.finditer(evidence)}
    keys |= {_currency(m.group()) for m in _CURRENCY.finditer(evidence)}
    for number, kind, value, _ in _quantities(evidence, taken):
        if kind != "unit":  # units are matched by nearness (`_near_keys`)
            keys.add(f"ordinal:{number}" if kind == "ordinal" else f"scale:{number}:{value}")
    return keys | _near_keys(evidence)


def _named(shown: str, key: str) -> Fact:
    return Fact(shown, frozenset({key}))


def _currency(word: str) -> str:
    return f"currency:{_CURRENCIES[word.lower()]}"


def _quantity(number: str, kind: str, value: str, shown: str) -> Fact:
    if kind == "ordinal":
        keys = frozenset({f"ordinal:{number}"})
    elif kind == "scale":
        keys = frozenset({f"scale:{number}:{value}"})
    else:
        keys = frozenset(f"near:{number}:{form}" for form in _unit_forms(value))
    return Fact(shown, keys, (number,))


def _date_facts(text: str, date: tuple[int, int, tuple[int, ...], int, int | None]) -> Iterator[Fact]:
    start, end, days, month, year = date
    shown = text[start:end]
    numbers = tuple(str(d) for d in days) + ((str(year),) if year else ())
    if days:
        for day in days:  # a range states each of its days
            yield Fact(shown, frozenset({f"date:{day}-{month}"}), numbers)
    else:
        yield Fact(shown, frozenset({f"monthyear:{month}-{year}"}), numbers)


def _dates(text: str) -> Iterator[tuple[int, int, tuple[int, ...], int, int | None]]:
    """(start, end, days, month, year) of each date, the first pattern winning overlaps."""
    taken: list[tuple[int, int]] = []
    for pattern in _DATES:
        for m in pattern.finditer(text):
            if any(m.start() < e and s < m.end() for s, e in taken):
                continue
            taken.append(m.span())
            found = m.groupdict()
            days = tuple(int(found[g]) for g in ("first", "day") if found.get(g))
            year = int(found["year"]) if found.get("year") else None
            yield m.start(), m.end(), days, _month(found["month"]), year


def _bare_months(text: str, taken: list[tuple[int, int]]) -> Iterator[re.Match[str]]:
    return (m for m in _BARE_MONTH.finditer(text) if not _inside(m.span(), taken))


def _month(word: str) -> int:
    plain = re.sub(r"(?:['’]s|\.)$", "", word.lower())  # noqa: RUF001
    return _MONTHS.get(plain) or _ABBREVIATED[plain]


def _weekday(match: re.Match[str]) -> int:
    if match.group("en"):
        return _WEEKDAYS[match.group("en").lower()]
    return _UKEDAGER[match.group("nb").lower()]


def _quantities(text: str, taken: list[tuple[int, int]]) -> Iterator[tuple[str, str, str, str]]:
    """(number, kind, value, as written) for each number outside a date that is an ordinal
    (value ""), has a scale (value: what it multiplies) or a unit word (value: the word).
    Left out: years and clock times ("in 2024 voters", "at 10:00 on Wednesday"), digits inside a
    word ("Twenty20 international") and the second number of a score or range ("1-0 thanks")."""
    tokens = list(_TOKEN.finditer(text))
    for i, token in enumerate(tokens):
        if not token.group()[0].isdigit() or _inside(token.span(), taken) or _not_a_quantity(text, token):
            continue
        after = _following(text, token, tokens[i + 1 : i + 3])
        found = _ordinal(text, token, after) or _scale_or_unit(text, token, after)
        if found is not None:
            kind, value, end = found
            yield canonical_number(token.group()), kind, value, text[token.start() : end]


def _following(text: str, token: re.Match[str], after: list[re.Match[str]]) -> list[re.Match[str]]:
    """The next two tokens while they follow on directly, or across spaces or a hyphen ("80-seat"):
    a comma ends a quantity ("tom ballard , 26 , plans to climb")."""
    out: list[re.Match[str]] = []
    end = token.end()
    for nxt in after:
        if not _GAP.fullmatch(text, end, nxt.start()):
            break
        out.append(nxt)
        end = nxt.end()
    return out


def _ordinal(text: str, token: re.Match[str], after: list[re.Match[str]]) -> tuple[str, str, int] | None:
    attached = after[0] if after and after[0].start() == token.end() else None
    if attached is not None and attached.group().lower() in ("st", "nd", "rd", "th"):
        return "ordinal", "", attached.end()
    if _NORWEGIAN_ORDINAL.match(text, token.end()) and len(token.group()) <= 3:
        return "ordinal", "", token.end() + 1  # "3. plass", "5. til 15. desember"
    return None


def _scale_or_unit(
    text: str, token: re.Match[str], after: list[re.Match[str]]
) -> tuple[str, str, int] | None:
    if not after:
        return None
    first = after[0].group().lower()
    pair = (first, after[1].group().lower()) if len(after) > 1 else None
    if pair in _TWO_WORD_SCALES:
        return "scale", _TWO_WORD_SCALES[pair], after[1].end()
    if first in _SCALES:
        return "scale", _SCALES[first], after[0].end()
    if first == "m" and after[0].start() == token.end() and text[token.start() - 1 : token.start()] in "£$€":
        return "scale", "million", after[0].end()  # "£80m" (without a currency, "5m" may be metres)
    if _is_unit(first) and not _AGE.match(text, token.end()):
        return "unit", first, after[0].end()
    return None


def _is_unit(word: str) -> bool:
    if word in _CURRENCIES:
        return True
    return word.isalpha() and len(word) > 1 and word not in STOPWORDS and not is_typed_name(word)


def _not_a_quantity(text: str, token: re.Match[str]) -> bool:
    raw, before = token.group(), text[max(0, token.start() - 2) : token.start()]
    year = len(raw) == 4 and raw.isdigit() and 1800 <= int(raw) <= 2099
    time = text[token.end() : token.end() + 1] == ":" or before.endswith(":")
    in_word = before[-1:].isalpha()
    second = bool(re.fullmatch(r"\d[-\u2013]", before))
    return year or time or in_word or second


def _near_keys(evidence: str) -> set[str]:
    tokens = [t.group() for t in _TOKEN.finditer(evidence)]
    keys: set[str] = set()
    for i, token in enumerate(tokens):
        if token[0].isdigit():
            number = canonical_number(token)
            for word in tokens[max(0, i - NEAR) : i + NEAR + 1]:
                if not word[0].isdigit():
                    keys |= {f"near:{number}:{form}" for form in _unit_forms(word.lower())}
    return keys


_FORMS = WordForms(("english", "norwegian"))


@functools.lru_cache(maxsize=1 << 16)
def _unit_forms(word: str) -> frozenset[str]:
    """A unit word's currency, or the word and its English and Norwegian stems."""
    if word in _CURRENCIES:
        return frozenset({_CURRENCIES[word]})
    return frozenset(_FORMS(word))


def _inside(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return any(s <= span[0] and span[1] <= e for s, e in taken)
