"""Synthetic (sentence, evidence, label) pairs for training the relation verifier.

A true sentence of an article is supported by the evidence window that contains it; the same
sentence with one thing changed is not, although almost all its words are still in the evidence.
That is the error the word-and-meaning check cannot see (issue 17): the words are in the
article, the article does not say them together. Each error type below is one function
`(sentence, others, rng) -> str | None` (None: the type does not apply to this sentence), in
English and Bokmål:

- `swap_number`: a number replaced by another number of the article (or a shifted one);
- `swap_entity`: a name replaced by a name from another sentence of the same article;
- `swap_date`: a weekday, month or ordinal day replaced by another;
- `swap_roles`: two names of one sentence exchanged (A did X to B -> B did X to A);
- `join_subject_predicate`: the subject of one sentence joined to the predicate of another;
- `flip_negation`: a negation added after the first auxiliary, or removed.

Pure functions of their inputs and the random generator: same seed, same pairs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from briefing.grounding import split_sentences
from indexing import STOPWORDS

SUPPORTED = "supported"

_NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*(?![\w])")
# Capitalized word runs: "Eirik Vangen", "Vestkyst Hospital Trust" (`names` drops "The", "Det").
_NAME = re.compile(r"\b[A-ZÆØÅ][\wæøåÆØÅ'-]+(?:\s+[A-ZÆØÅ][\wæøåÆØÅ'-]+)*")
_WEEKDAYS = {
    "en": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"],
    "nb": ["mandag", "tirsdag", "onsdag", "torsdag", "fredag", "lørdag", "søndag"],
}
_MONTHS = {
    "en": [
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ],
    "nb": [
        "januar", "februar", "mars", "april", "mai", "juni", "juli", "august", "september",
        "oktober", "november", "desember",
    ],
}  # fmt: skip
_ORDINAL_EN = re.compile(r"\b(\d{1,2})(st|nd|rd|th)\b")
_ORDINAL_NB = re.compile(r"\b(\d{1,2})\.(?=\s+(?:" + "|".join(_MONTHS["nb"]) + r")\b)")
# Where a negation goes (after the first auxiliary) and what removing one deletes.
_AUX = {
    "en": (
        "is",
        "was",
        "are",
        "were",
        "has",
        "have",
        "had",
        "will",
        "would",
        "can",
        "could",
        "should",
        "must",
    ),
    "nb": (
        "er",
        "var",
        "har",
        "hadde",
        "vil",
        "skal",
        "kan",
        "kunne",
        "ble",
        "blir",
        "må",
        "skulle",
        "ville",
    ),
}
_NOT = {"en": "not", "nb": "ikke"}
_NEGATED = {
    "en": re.compile(r"\b(?:not|never)\s+|(?<=\w)n't\b|\bcannot\b"),
    "nb": re.compile(r"\b(?:ikke|aldri)\s+"),
}
# Where a sentence's subject ends: the first finite verb among these (common in news text).
_VERBS = {
    "en": (
        *_AUX["en"],
        "said", "says", "told", "announced", "plans", "wants", "voted", "agreed", "found",
        "opened", "closed", "won", "lost", "rose", "fell", "expects", "warned", "proposed",
        "approved", "rejected", "reported", "signed", "scored", "decided",
    ),
    "nb": (
        *_AUX["nb"],
        "sa", "sier", "fortalte", "meldte", "vedtok", "vil", "fikk", "stemte", "foreslo",
        "åpnet", "stengte", "vant", "tapte", "steg", "falt", "advarte", "mener", "ønsker",
        "skriver", "bekrefter",
    ),
}  # fmt: skip
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Pair:
    sentence: str
    evidence: str
    label: int  # 1 supported, 0 not
    kind: str  # SUPPORTED or the error type's name
    language: str


def language_of(text: str) -> str:
    """ "nb" when the text reads as Bokmål (its letters or its commonest words), else "en"."""
    words = {w.lower() for w in re.findall(r"\w+", text)}
    nb_words = {"og", "er", "ikke", "det", "som", "på", "til", "med", "har", "en", "av", "for", "sier"}
    nb_hits = len(words & (nb_words | set(_WEEKDAYS["nb"]) | set(_MONTHS["nb"]) - {"august", "september"}))
    en_hits = len(words & {"and", "is", "not", "the", "which", "on", "to", "with", "has", "a", "of", "for"})
    return "nb" if nb_hits > en_hits or (re.search(r"[æøå]", text) and nb_hits >= en_hits) else "en"


def swap_number(sentence: str, others: Sequence[str], rng: random.Random) -> str | None:
    numbers = list(_NUMBER.finditer(sentence))
    if not numbers:
        return None
    target = rng.choice(numbers)
    pool = sorted({n for o in others for n in _NUMBER.findall(o)} - {target.group()})
    value = target.group()
    new: str
    if pool and rng.random() < 0.7:
        new = str(rng.choice(pool))
    elif value.isdigit():
        new = str(int(value) + rng.choice([-3, -2, -1, 1, 2, 5, 10]) * max(1, int(value) // 10))
    else:
        return None
    if new == value or new.lstrip("-") == "":
        return None
    return sentence[: target.start()] + new + sentence[target.end() :]


def names(text: str) -> list[tuple[int, int, str]]:
    """(start, end, name) for each capitalized word run that is not a function word ("The",
    "Det"), a weekday or a month; a leading function word is left out of the run."""
    found = []
    calendar = {w.lower() for group in (*_WEEKDAYS.values(), *_MONTHS.values()) for w in group}
    for match in _NAME.finditer(text):
        start, words = match.start(), match.group().split()
        while words and (words[0].lower() in STOPWORDS or words[0].lower() in calendar):
            start = text.index(words[1], start + len(words[0])) if len(words) > 1 else match.end()
            words = words[1:]
        if words and not all(w.lower() in calendar for w in words):
            found.append((start, match.end(), text[start : match.end()]))
    return found


def swap_entity(sentence: str, others: Sequence[str], rng: random.Random) -> str | None:
    found = names(sentence)
    if not found:
        return None
    start, end, name = rng.choice(found)
    pool = sorted({n for o in others for _, _, n in names(o)} - {n for _, _, n in found})
    # A name of the same length in words reads naturally in its place.
    fitting = [p for p in pool if len(p.split()) == len(name.split())] or pool
    if not fitting:
        return None
    return sentence[:start] + rng.choice(fitting) + sentence[end:]


def swap_date(sentence: str, others: Sequence[str], rng: random.Random) -> str | None:
    del others
    words: list[tuple[re.Pattern[str], list[str]]] = []  # a calendar word and its replacements
    for group in (*_WEEKDAYS.values(), *_MONTHS.values()):
        for name in group:
            for form in dict.fromkeys((name, name.capitalize())):  # ordered: same seed, same pairs
                pattern = re.compile(rf"\b{form}\b")
                if pattern.search(sentence):
                    words.append(
                        (pattern, [x if form[0].islower() else x.capitalize() for x in group if x != name])
                    )
    ordinals = [m for p in (_ORDINAL_EN, _ORDINAL_NB) if (m := p.search(sentence))]
    pick = rng.randrange(len(words) + len(ordinals)) if words or ordinals else None
    if pick is None:
        return None
    if pick < len(words):
        pattern, choices = words[pick]
        return pattern.sub(rng.choice(choices), sentence, count=1)
    return _shift_ordinal(sentence, ordinals[pick - len(words)], rng)


def _shift_ordinal(sentence: str, match: re.Match[str], rng: random.Random) -> str:
    """ "12th" -> "14th" (English: the suffix follows the new day), "12." -> "14." (Bokmål)."""
    day = int(match.group(1))
    new = (day + rng.choice([-7, -2, -1, 1, 2, 7]) - 1) % 28 + 1
    if match.re is _ORDINAL_EN:
        suffix = "th" if 10 <= new % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(new % 10, "th")
        text = f"{new}{suffix}"
    else:
        text = f"{new}."
    return sentence[: match.start()] + text + sentence[match.end() :]


def swap_roles(sentence: str, others: Sequence[str], rng: random.Random) -> str | None:
    del others, rng
    distinct = list({n: (start, end) for start, end, n in reversed(names(sentence))}.items())[::-1]
    if len(distinct) < 2:
        return None
    (a, (a0, a1)), (b, (b0, b1)) = distinct[0], distinct[1]
    return sentence[:a0] + b + sentence[a1:b0] + a + sentence[b1:]


def _verb_index(words: Sequence[str], language: str) -> int | None:
    verbs = _VERBS[language]
    for n, word in enumerate(words[1:], start=1):
        if word.lower().strip(",;:") in verbs:
            return n
    return None


def join_subject_predicate(sentence: str, others: Sequence[str], rng: random.Random) -> str | None:
    language = language_of(sentence)
    words = _WORD.findall(sentence)
    cut = _verb_index(words, language)
    if cut is None:
        return None
    candidates = []
    for other in others:
        theirs = _WORD.findall(other)
        their_cut = _verb_index(theirs, language)
        if their_cut is not None and theirs[their_cut:] != words[cut:]:
            candidates.append(theirs[their_cut:])
    if not candidates:
        return None
    return " ".join([*words[:cut], *rng.choice(candidates)])


def flip_negation(sentence: str, others: Sequence[str], rng: random.Random) -> str | None:
    del others, rng
    language = language_of(sentence)
    negated = _NEGATED[language]
    if negated.search(sentence):
        removed = negated.sub(lambda m: "can" if m.group() == "cannot" else "", sentence, count=1)
        return removed if removed != sentence else None
    words = _WORD.findall(sentence)
    for n, word in enumerate(words):
        if word.lower() in _AUX[language]:
            return " ".join([*words[: n + 1], _NOT[language], *words[n + 1 :]])
    return None


ERRORS: dict[str, Callable[[str, Sequence[str], random.Random], str | None]] = {
    "number": swap_number,
    "entity": swap_entity,
    "date": swap_date,
    "roles": swap_roles,
    "subject_predicate": join_subject_predicate,
    "negation": flip_negation,
}


def evidence_window(sentences: Sequence[str], n: int, rng: random.Random) -> str:
    """The sentence alone or with a neighbour, as the checker's evidence units are
    (briefing.grounding._units): sentences and adjacent pairs."""
    if len(sentences) > 1 and rng.random() < 0.5:
        start = n - 1 if n + 1 >= len(sentences) or (n > 0 and rng.random() < 0.5) else n
        return f"{sentences[start]} {sentences[start + 1]}"
    return sentences[n]


def article_pairs(
    sentences: Sequence[str], rng: random.Random, *, errors_per_sentence: int = 1
) -> list[Pair]:
    """One supported pair per sentence and up to `errors_per_sentence` unsupported ones, each an
    error type this sentence allows, against the same evidence window as the true sentence.
    An unrelated sentence of the article against this window is one more unsupported kind."""
    pairs: list[Pair] = []
    for n, sentence in enumerate(sentences):
        others = [s for i, s in enumerate(sentences) if i != n]
        language = language_of(sentence)
        window = evidence_window(sentences, n, rng)
        pairs.append(Pair(sentence, window, 1, SUPPORTED, language))
        kinds = list(ERRORS)
        rng.shuffle(kinds)
        made = 0
        for kind in kinds:
            if made >= errors_per_sentence:
                break
            wrong = ERRORS[kind](sentence, others, rng)
            if wrong and wrong.strip() != sentence.strip() and wrong not in window:
                pairs.append(Pair(wrong, window, 0, kind, language))
                made += 1
        unrelated = [s for s in others if s not in window]
        if unrelated and rng.random() < 0.3:
            pairs.append(Pair(rng.choice(unrelated), window, 0, "unrelated", language))
    return pairs


def article_sentences(article: dict[str, str]) -> list[str]:
    """A demo article's title, lead and body as sentences (short fragments dropped)."""
    text = "\n".join(article.get(k) or "" for k in ("title", "lead", "body"))
    return [s for s in split_sentences(text) if len(s.split()) >= 5]


def synthetic_pairs(
    articles: Iterable[Sequence[str]], seed: int = 17, *, errors_per_sentence: int = 1
) -> list[Pair]:
    """Pairs for every article (each a list of sentences), deterministic for a seed."""
    rng = random.Random(seed)
    return [
        p
        for sentences in articles
        for p in article_pairs(sentences, rng, errors_per_sentence=errors_per_sentence)
    ]
