"""The grounding check: is a generated sentence supported by its evidence, and by which chunks?

`GroundingChecker` contract (tests/unit/test_grounding.py, bench/grounding.py on FRANK):
`check(sentences, evidence)` returns one `Support` per sentence, in order, with a score in
[0, 1], the ids of the evidence chunks that support it, and what it states that the evidence
does not (numbers, names, quotes). A sentence is `supported` only if its score reaches the
threshold and nothing it states is missing: a number, name or quote absent from the evidence
never reaches a reader (DESIGN.md section 5).

The default checker combines up to three signals:
- meaning: the best cosine between the sentence and any evidence sentence or pair of adjacent
  sentences (summaries often fuse two), with the packaged embedding model;
- words: the share of the sentence's content words whose form (the word or its Snowball stem)
  occurs in the evidence;
- likelihood, when a `LikelihoodScorer` is given: how probable the packaged LLM finds the
  sentence after the evidence, against how probable it finds it with no evidence at all (nats
  per token; see `likelihood`). A sentence the evidence does not explain gains little from it,
  whatever its wording; on FRANK's XSum part this is the strongest of the three
  (bench/grounding.py).
The likelihood can lower any sentence's score but raise only one whose words and meaning reach
`likelihood_floor`: copied tokens (an id, a name) make a sentence likely after the evidence
whatever else it says, and once let "The article xsum-34268361 is a great example of how a news
article can be misleading and untrustworthy." through (bench/summaries.py on XSum).
A sentence that closely paraphrases an evidence sentence but flips its negation ("has resigned"
against "has not resigned") is treated like one with a missing fact. What a negation negates is
taken to be the next two content words: a summary that keeps "hosted a visit" and drops the
clause "and said he could not be happier" has not flipped anything.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from briefing.facts import WordForms, canonical_number, evidence_keys, is_typed_name, sentence_facts
from briefing.llm.scoring import LikelihoodScorer
from indexing import STOPWORDS, Embedder

# A sentence ends at . ! or ? (perhaps closing a quote) before a capital or a digit, or at a
# stop standing alone between spaces: tokenized, lower-cased text ("on friday . locke replaced"),
# as some summarizers write it and FRANK stores it. Typographic quotes are meant (RUF001).
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'”’)]))\s+(?=[\"'“‘(]?[A-ZÆØÅ0-9])|(?<=\s[.!?])\s+"  # noqa: RUF001
)
# English and Bokmål abbreviations whose stop ends no sentence (before a capital or a number:
# before a lower-case word `_SENTENCE_END` does not cut), and those that end none before a number
# only ("No. 5", "Dec. 12", "kr. 300"; but "it cost 300 kr. Then ...").
_ABBREVIATIONS = frozenset(
    "dr mr mrs ms prof st sen gen gov rep lt col capt sgt jr ca nr kl bl.a f.eks e.g i.e jf inkl".split()
)
_BEFORE_NUMBERS = frozenset("no kr p s jan feb mar apr jun jul aug sep sept oct okt nov dec des".split())
# A middle initial after a first name ("Franklin D. Roosevelt"; not "as am I." or "labelled C.").
_INITIAL = re.compile(r"\b[A-ZÆØÅ][\wæøå'-]+\s+(?!I\.)[A-ZÆØÅ]\.$")
_LAST_WORD = re.compile(r"(?:^|[\s(\"“«])([^\s(\"“«]+)\.$")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"[\wæøå]+(?:['’][\wæøå]+)?", re.IGNORECASE)  # noqa: RUF001
_QUOTE = re.compile(r"[\"“]([^\"”]{8,}?)[\"”]")
_NAME = re.compile(r"\b[A-ZÆØÅ][\wæøå'-]+")  # a name unless it opens the sentence (`_names`)
_STOP = STOPWORDS
_NEGATION = {"not", "no", "never", "nor", "without", "cannot", "ikke", "aldri", "ingen", "uten"}
# "isn't", and "is n't" as tokenizers write it (FRANK's summaries); typographic apostrophe too.
_CONTRACTED_NEGATION = ("n't", "n’t")  # noqa: RUF001
_NEGATION_SCOPE = 2  # content words after a negation taken as what it negates


@dataclass(frozen=True)
class Evidence:
    chunk_id: str
    text: str


@dataclass(frozen=True)
class Support:
    sentence: str
    score: float
    text_score: float  # words and meaning alone, before the likelihood (`combined_score`)
    likelihood: float | None  # the likelihood signal mapped to [0, 1]; None without a scorer
    citations: tuple[str, ...]
    missing: tuple[str, ...]  # numbers, names and quotes the evidence does not contain
    supported: bool
    # How probable the packaged LLM finds the sentence on its own (mean log-probability per
    # token, nats; None without a scorer): fragments, repeats and broken grammar are improbable
    # whatever the evidence (bench/label_set.py measures it against the `garbled` labels).
    fluency: float | None = None


class GroundingChecker(Protocol):
    def check(self, sentences: Sequence[str], evidence: Sequence[Evidence]) -> list[Support]: ...


@dataclass(frozen=True)
class GroundingConfig:
    threshold: float = 0.6
    meaning_weight: float = 0.3  # the rest is the content-word share (0.3: best on half of FRANK)
    cite_margin: float = 0.1  # evidence this close to the best match is cited too
    # A negation flip counts only against a near-paraphrase: ungated, the rule marked 87% of
    # FRANK's XSum summaries unsupported and cut XSum balanced accuracy from 0.605 to 0.499.
    negation_similarity: float = 0.75
    # Word forms: English and Norwegian stems together cost nothing on FRANK (English) and let
    # Norwegian articles match their inflections.
    stem_languages: tuple[str, ...] = ("english", "norwegian")
    # The likelihood signal: which scorer and model (the curve below is fitted to this model),
    # its share of the score (the other two keep their ratio), and the logistic curve that maps
    # its nats per token to [0, 1].
    likelihood_backend: str = "llamacpp"  # llamacpp, transformers or off
    likelihood_model: str = "packaged:SmolLM2-135M-Instruct"
    # Chosen on FRANK's validation split (bench/grounding.py; the test split is held out).
    likelihood_weight: float = 0.5
    likelihood_prior_weight: float = 0.6  # λ in log p(s | evidence) - λ·log p(s)
    likelihood_center: float = -0.663
    likelihood_scale: float = 0.462
    # Under this text score the likelihood cannot lift a sentence (`combined_score`). Chosen on
    # FRANK's validation split (bench/grounding.py, `floor_sweep`).
    likelihood_floor: float = 0.5


def combined_score(text_score: float, likelihood: float | None, config: GroundingConfig) -> float:
    """A sentence's support from its text score (words and meaning) and its likelihood, both in
    [0, 1]. Under `likelihood_floor` the likelihood can only lower the score."""
    if likelihood is None:
        return text_score
    w = config.likelihood_weight
    score = (1 - w) * text_score + w * likelihood
    return score if text_score >= config.likelihood_floor else min(score, text_score)


def split_sentences(text: str) -> list[str]:
    """The sentences of each line of the text: cut at `_SENTENCE_END`, except after an
    abbreviation or an initial ("Dr. Hansen", "ca. 300 kroner", "John F. Kennedy"), where a cut
    would also open a sentence with a name that the names rule then skips."""
    sentences: list[str] = []
    for block in text.split("\n"):
        merged: list[str] = []
        for part in (p.strip() for p in _SENTENCE_END.split(block)):
            if part and merged and _abbreviated(merged[-1], part):
                merged[-1] = f"{merged[-1]} {part}"
            elif part:
                merged.append(part)
        sentences += merged
    return sentences


def _abbreviated(before: str, after: str) -> bool:
    """Whether `before` ends in an abbreviation's stop rather than a sentence's."""
    last = _LAST_WORD.search(before)
    if last is None:
        return False
    word = last.group(1).lower()
    numbered = word in _BEFORE_NUMBERS and after[:1].isdigit() and last.group(1) != "no"  # "said no. 5"
    return numbered or word in _ABBREVIATIONS or bool(_INITIAL.search(before))


def content_words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP}


def negation_scopes(text: str) -> list[list[str]]:
    """For each negation in the text, the content words it negates (the next two, or fewer at
    the end): "the mayor has not resigned yet" gives [["resigned", "yet"]]."""
    words = [w.lower() for w in _WORD.findall(text)]
    scopes = []
    for n, word in enumerate(words):
        if word in _NEGATION or word.endswith(_CONTRACTED_NEGATION):
            after = (w for w in words[n + 1 :] if w not in _STOP and w not in _NEGATION)
            scope = list(itertools.islice(after, _NEGATION_SCOPE))
            if scope:
                scopes.append(scope)
    return scopes


def stated_facts(sentence: str) -> set[str]:
    """Numbers, names (capitalized words not opening the sentence) and quoted spans, and, as
    written, its dates, ordinals, months, weekdays and numbers with a scale or unit
    (briefing/facts.py)."""
    return _plain_facts(sentence) | {fact.shown for fact in sentence_facts(sentence)}


def missing_facts(sentence: str, evidence: str) -> tuple[str, ...]:
    """What the sentence states that the evidence does not contain, or not in the same sense
    (a "12th" or "12 seats" where the evidence has only "12 employees"): the check's hard rule
    on its own, without embeddings or an LLM."""
    return _missing_facts(sentence, _fact_haystack(evidence))


def _fact_haystack(evidence: str) -> str:
    # Numbers are compared as numbers ("1960" is in "the 1960s", "4,2" is "4.2"), names and
    # quotes as word sequences, typed facts by their keys (briefing/facts.py).
    numbers = sorted(_numbers(evidence))
    keys = sorted(evidence_keys(evidence))
    return " ".join([_normalized(evidence), *numbers, *map(_normalize, numbers), *keys, ""])


def _missing_facts(sentence: str, haystack: str) -> tuple[str, ...]:
    plain = {f for f in _plain_facts(sentence) if f" {_normalize(f)} " not in haystack}
    typed = {
        fact.shown
        for fact in sentence_facts(sentence)
        # a fact resting on an absent number is reported as that number (the plain rule)
        if not plain.intersection(fact.numbers) and not any(f" {key} " in haystack for key in fact.keys)
    }
    return tuple(sorted(plain | typed))


def _plain_facts(sentence: str) -> set[str]:
    # Months, weekdays and currency codes are facts in their own sense (briefing/facts.py).
    names = {n for n in _names(sentence) if n.lower() not in _STOP and not is_typed_name(n)}
    quotes = {q.strip() for q in _QUOTE.findall(sentence)}
    return _numbers(sentence) | names | quotes


def _names(sentence: str) -> set[str]:
    """Capitalized words that do not open the sentence; an abbreviation's stop opens none
    ("Dr. Hansen")."""
    out = set()
    for match in _NAME.finditer(sentence):
        before = sentence[: match.start()].rstrip()
        opens = not before or (before[-1] in ".!?" and not _abbreviated(before, match.group()))
        if not opens:
            out.add(match.group())
    return out


# The likelihood signal's two framings: the sentence after the evidence, and after nothing.
EVIDENCE_HEAD = "Article:\n"
EVIDENCE_TAIL = "\n\nOne-sentence summary of the article above:\n"
PRIOR_PROMPT = "One-sentence summary of a news article:\n"


class EmbeddingLexicalChecker:
    """Meaning by embeddings, words and facts by lookup, likelihood by the LLM when a scorer is
    given; see the module docstring."""

    name = "embedding-lexical"  # what every figure about it names, and the show gate is keyed on

    def __init__(
        self,
        embedder: Embedder,
        config: GroundingConfig | None = None,
        scorer: LikelihoodScorer | None = None,
    ) -> None:
        self.embedder = embedder
        self.config = config or GroundingConfig()
        self.scorer = scorer
        self._forms = WordForms(self.config.stem_languages)

    def check(
        self, sentences: Sequence[str], evidence: Sequence[Evidence], *, bar: float | None = None
    ) -> list[Support]:
        """Each sentence's support. With `bar`, for a caller that asks only which sentences reach
        it: the LLM scores just the sentences that still can (no missing fact, and a text score
        the likelihood could lift to `bar`); the others keep their text score (likelihood None).
        The same sentences reach `bar` either way; the LLM's pass over the evidence is most of a
        check's time, and most XSum reference sentences fail on facts alone."""
        units, owners, singles = _units(evidence)
        if not sentences:
            return []
        vectors = self.embedder.embed_documents([*sentences, *units])
        similarity = vectors[: len(sentences)] @ vectors[len(sentences) :].T
        haystack = " ".join(e.text for e in evidence)
        words = self._forms.of(content_words(haystack))
        facts = _fact_haystack(haystack)

        def support(i: int, signal: tuple[float, float] | None) -> Support:
            sims = similarity[i] if units else np.zeros(0)
            return self._support(sentences[i], sims, (units, singles), owners, (words, facts), signal)

        text_only = [support(i, None) for i in range(len(sentences))]
        if not (self.scorer and evidence):
            return text_only
        todo = [i for i, s in enumerate(text_only) if bar is None or self._can_reach(s, bar)]
        signals = dict(zip(todo, self.signals([sentences[i] for i in todo], evidence), strict=True))
        return [support(i, signals[i]) if i in signals else text_only[i] for i in range(len(sentences))]

    def _can_reach(self, support: Support, bar: float) -> bool:
        # the score grows with the likelihood, so its most is at likelihood 1
        return not support.missing and combined_score(support.text_score, 1.0, self.config) >= bar

    def likelihood(self, sentences: Sequence[str], evidence: Sequence[Evidence]) -> list[float]:
        """The likelihood signal alone (`signals`' first half)."""
        return [gain for gain, _ in self.signals(sentences, evidence)]

    def signals(self, sentences: Sequence[str], evidence: Sequence[Evidence]) -> list[tuple[float, float]]:
        """Per sentence: the likelihood gain and the fluency, from the same two LLM passes.

        The gain is, per sentence and token, the mean of log p(token | evidence) - λ·log p(token | nothing).

        λ = 1 is the information the evidence brings (pointwise mutual information); below 1,
        a sentence the model finds unlikely even after the evidence also counts against it.
        On FRANK, this signal alone (measured with each tokenized CNN/DM summary still scored as
        one sentence): macro AUC 0.753 (validation) and 0.721 (test split) with λ = 0.6, against
        0.724 and 0.654 with λ = 1."""
        assert self.scorer is not None
        context = EVIDENCE_HEAD + "\n\n".join(e.text for e in evidence)
        given = self.scorer.logprobs(context, sentences, tail=EVIDENCE_TAIL)
        prior = self.scorer.logprobs(PRIOR_PROMPT, sentences)
        lam = self.config.likelihood_prior_weight
        return [(float(np.mean(g - lam * p)), float(np.mean(p))) for g, p in zip(given, prior, strict=True)]

    def _support(
        self,
        sentence: str,
        sims: np.ndarray,
        unit_texts: tuple[list[str], list[int]],
        owners: list[tuple[str, ...]],
        haystack: tuple[set[str], str],
        signal: tuple[float, float] | None,
    ) -> Support:
        cfg = self.config
        units, singles = unit_texts
        words, facts = haystack
        meaning = float(sims.max()) if sims.size else 0.0
        own = content_words(sentence)
        share = sum(bool(self._forms(w) & words) for w in own) / len(own) if own else 1.0
        text = float(np.clip(cfg.meaning_weight * meaning + (1 - cfg.meaning_weight) * share, 0.0, 1.0))
        likely = fluency = None
        if signal is not None:
            gain, fluency = signal
            likely = float(1.0 / (1.0 + np.exp(-(gain - cfg.likelihood_center) / cfg.likelihood_scale)))
        score = combined_score(text, likely, cfg)
        missing = _missing_facts(sentence, facts)
        best_sentence = units[max(singles, key=lambda i: sims[i])] if sims.size else ""
        paraphrase = meaning >= cfg.negation_similarity
        if sims.size and paraphrase and self._flips_negation(sentence, best_sentence):
            missing += ("negation",)  # "the mayor has resigned" against "has not resigned"
        near = np.flatnonzero(sims >= meaning - cfg.cite_margin) if sims.size else np.zeros(0, np.int64)
        citations = tuple(dict.fromkeys(c for i in near for c in owners[i]))
        supported = score >= cfg.threshold and not missing
        return Support(sentence, score, text, likely, citations, missing, supported, fluency)

    def _flips_negation(self, sentence: str, evidence: str) -> bool:
        """Whether one side negates words the other states without negating them."""
        return self._negates_what_other_states(sentence, evidence) or self._negates_what_other_states(
            evidence, sentence
        )

    def _negates_what_other_states(self, text: str, other: str) -> bool:
        stated = self._forms.of(content_words(other))
        negated_there = self._forms.of({w for scope in negation_scopes(other) for w in scope})
        return any(
            all(self._forms(w) & stated for w in scope)
            and not any(self._forms(w) & negated_there for w in scope)
            for scope in negation_scopes(text)
        )


def _units(evidence: Sequence[Evidence]) -> tuple[list[str], list[tuple[str, ...]], list[int]]:
    """Evidence sentences and adjacent pairs, each with the chunk ids it comes from, and the
    positions of the single sentences."""
    units: list[str] = []
    owners: list[tuple[str, ...]] = []
    singles: list[int] = []
    for item in evidence:
        parts = split_sentences(item.text)
        for n, part in enumerate(parts):
            singles.append(len(units))
            units.append(part)
            owners.append((item.chunk_id,))
            if n + 1 < len(parts):
                units.append(f"{part} {parts[n + 1]}")
                owners.append((item.chunk_id,))
    return units, owners, singles


def _normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower().replace(",", "")))


def _numbers(text: str) -> set[str]:
    return {canonical_number(n) for n in _NUMBER.findall(text)}


def _normalized(text: str) -> str:
    return f" {_normalize(text)} "
