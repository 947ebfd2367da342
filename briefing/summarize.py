"""Grounded summaries: evidence → prompt → LLM → per-sentence grounding check → stored draft.

Every generated sentence is checked against the evidence it was written from. Sentences under
the threshold, or stating a number, name or quote the evidence lacks, are dropped (and kept
aside for editors); an item left with nothing falls back to the article's own first sentence,
marked extractive. Sentences that repeat the prompt or describe the article instead of the news
are removed before the check. Summaries are stored as drafts with the model, prompt and adapter
versions, and reused when the same article version is asked for again with the same settings.
A story update is written from every development of the story since the reader's last read of it
(`update_request`, briefing/developments.py); its id covers what was read and the version of each
development, so a new article or an in-place update makes a new update and an unchanged basis
reuses the stored one. Its sentences that state a superseded or corrected number are dropped, and
the correction notes owed to the reader are quoted first.
Articles are written one at a time and each summary is stored as soon as it is checked, so a
failure (a timeout, say) loses only its own article: `PartlyWritten` carries the rest.
An adapter may be a set with one part per language (`add_parts`, briefing/tuning/serving.py): an
article is then written by its language's part (the generator's `part_name`) and its summary
names the set; an article whose language has no part is written by the base model and its summary
names no adapter, so the show gate (per writer) judges the text by who really wrote it.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import EllipsisType

from briefing.developments import (
    NOTE_SENTENCES,
    Development,
    Note,
    developments,
    last_read,
    quoted,
    relevant,
    select,
    superseded,
)
from briefing.grounding import GroundingChecker, Support, split_sentences
from briefing.llm import Chat, Completion, GenerationError, Generator
from briefing.prompts import PROMPTS, PromptRegistry, PromptTemplate, parse_points, untrusted
from briefing.retrieval import EvidenceChunk, EvidenceRetriever
from briefing.summaries import Summary, SummaryRepository, SummarySentence, summary_id
from indexing import STOPWORDS, Article, ArticleRecord, SearchFilter


@dataclass(frozen=True)
class SummarizerConfig:
    article_prompt: str = "article"
    update_prompt: str = "update"
    greeting_prompt: str = "greeting"
    adapter: str | None = None
    # About 900 tokens: the top of a news article carries its facts, and on a CPU reading the
    # prompt is the slow part (bench/llm.py: 2.1 s to the first token for 1,500 prompt tokens).
    max_input_chars: int = 3500


def part_name(adapter: str, language: str) -> str:
    """The name the generator knows an adapter set's part for `language` by."""
    return f"{adapter}@{language}"


class PartlyWritten(GenerationError):
    """Some summaries could not be written; `done` holds those that were (already stored)."""

    def __init__(self, done: list[Summary], failed: dict[str, GenerationError]) -> None:
        reasons = "; ".join(f"{article}: {error}" for article, error in failed.items())
        super().__init__(f"{len(failed)} of {len(done) + len(failed)} summaries failed: {reasons}")
        self.done, self.failed = done, failed


@dataclass(frozen=True)
class Followed:
    """Where a reader stands in one story: what they read of it, when they last read it, the
    moment of the briefing, and (when the caller knows them) the story's article ids."""

    read: tuple[str, ...]
    read_at: datetime | None = None  # None: as of the newest change to what they read
    now: datetime | None = None  # articles published later are left out
    story: tuple[str, ...] | None = None  # None: the index is asked for the story's articles


@dataclass(frozen=True)
class Request:
    """One summary to write: the article, its evidence, and for an update what was read and
    every development it covers (oldest first, the newest being `record`)."""

    record: ArticleRecord
    evidence: list[EvidenceChunk]
    template: PromptTemplate
    basis: tuple[ArticleRecord, ...] = ()
    developments: tuple[Development, ...] = ()
    notes: tuple[Note, ...] = ()  # correction notes to quote to this reader


class Summarizer:
    def __init__(
        self,
        generator: Generator,
        retriever: EvidenceRetriever,
        checker: GroundingChecker,
        store: SummaryRepository,
        *,
        prompts: PromptRegistry = PROMPTS,
        config: SummarizerConfig | None = None,
        request_checker: GroundingChecker | None = None,
    ) -> None:
        self.generator = generator
        self.retriever = retriever
        self.checker = checker
        # Request paths (a reader's briefing quoting the article, an editor's edit) must not wait
        # for the LLM: they check with `request_checker` (no likelihood signal) when one is given.
        self.request_checker = request_checker or checker
        self.store = store
        self.prompts = prompts
        self.config = config or SummarizerConfig()
        self._quoted: dict[str, tuple[SummarySentence, ...]] = {}  # quoted updates by summary id
        self._quoted_lock = threading.Lock()
        self._parts: dict[str, frozenset[str]] = {}  # adapter set id → languages with a part

    @property
    def adapter(self) -> str | None:
        """The LoRA adapter new drafts are written with (None: the base model)."""
        return self.config.adapter

    def use_adapter(self, adapter: str | None) -> None:
        """Write new drafts with `adapter` from now on; stored drafts keep the adapter that wrote
        them (the summary id names it). One reference swap: a draft in hand finishes as it began."""
        self.config = replace(self.config, adapter=adapter)

    def add_parts(self, adapter: str, languages: Iterable[str]) -> None:
        """Say that `adapter` is a set whose parts for `languages` the generator has loaded (under
        `part_name`); any adapter not named here is one adapter for every language."""
        self._parts = {**self._parts, adapter: frozenset(languages)}  # one swap: readers never lock

    def writer(self, language: str, adapter: str | None) -> str | None:
        """The adapter that writes an article in `language` when drafts use `adapter`: the set
        itself where it has a part for the language, None (the base model) where it has none."""
        parts = self._parts.get(adapter) if adapter is not None else None
        return None if parts is not None and language not in parts else adapter

    def generator_adapter(self, request: Request, adapter: str | None) -> str | None:
        """The name to give the generator to write `request` as `adapter` would (a set's part)."""
        language = request.record.article.language
        written_by = self.writer(language, adapter)
        if written_by is None or written_by not in self._parts:
            return written_by
        return part_name(written_by, language)

    def summarize(
        self,
        article_ids: Sequence[str],
        *,
        prompt: str | None = None,
        refresh: bool = False,
        adapter: str | EllipsisType | None = ...,
    ) -> list[Summary]:
        """Summaries of the current versions of these articles (unknown ids are skipped), written
        with `adapter` (an experiment arm's; default: the one drafts use, None: the base model)."""
        return self._run(self.article_requests(article_ids, prompt), refresh, adapter)

    def article_requests(self, article_ids: Sequence[str], prompt: str | None = None) -> list[Request]:
        """The requests `summarize` would write, with their evidence (unknown ids are skipped)."""
        name = prompt or self.config.article_prompt
        records = self.retriever.index.get(list(article_ids))
        return [
            Request(
                records[a],
                self.retriever.article(a, records[a].article.title),
                self.article_template(name, records[a]),
            )
            for a in article_ids
            if a in records
        ]

    def chat(self, request: Request) -> Chat:
        """The prompt the model is given for `request` (fine-tuning trains on exactly this)."""
        return request.template.render(**self._fields(request))

    def with_evidence(self, request: Request) -> Request:
        """An update request (from `update_request`) with the evidence it is written from."""
        return replace(request, evidence=self._evidence(request))

    def draft(
        self, request: Request, completion: Completion, seconds: float = 0.0, adapter: str | None = None
    ) -> Summary:
        """`completion` (written with `adapter`) checked sentence by sentence as a stored draft
        would be; nothing is stored."""
        written_by = self.writer(request.record.article.language, adapter)
        named = _as_written(completion, self.generator_adapter(request, adapter), written_by)
        return self._ground(request, named, seconds, written_by)

    def article_template(self, prompt: str, record: ArticleRecord) -> PromptTemplate:
        """`prompt` in the article's language where a version for it is registered."""
        return self.prompts.localized(prompt, record.article.language)

    def update(
        self,
        article_id: str,
        read: Sequence[str] | Followed,
        *,
        prompt: str | None = None,
        refresh: bool = False,
        adapter: str | EllipsisType | None = ...,
    ) -> Summary | None:
        """What happened in `article_id`'s story since the reader's last read of it, written from
        every development since then (`read` as bare ids: since the newest change to those)."""
        request = self.update_request(article_id, read, prompt)
        if request is None:
            return None
        return self._run([self.with_evidence(request)], refresh, adapter)[0]

    def stored_update(
        self, article_id: str, read: Sequence[str] | Followed, prompt: str | None = None
    ) -> Summary | None:
        """The update `update` would return, if it has been written; never runs the LLM."""
        request = self.update_request(article_id, read, prompt)
        return None if request is None else self.store.get(self.summary_id(request))

    def update_request(
        self, article_id: str, read: Sequence[str] | Followed, prompt: str | None = None
    ) -> Request | None:
        """An update's request without its evidence (enough to name the summary): index lookups,
        no retrieval and no model."""
        followed = read if isinstance(read, Followed) else Followed(tuple(read))
        records = self.retriever.index.get([article_id, *followed.read, *(followed.story or ())])
        if article_id not in records:
            return None
        newest = records[article_id]
        # the story's language: a Bokmål story is told from a Bokmål prompt where one is registered
        template = self.prompts.localized(prompt or self.config.update_prompt, newest.article.language)
        mine = [records[a] for a in followed.read if a in records and records[a].story_id == newest.story_id]
        basis = tuple(sorted(mine, key=lambda r: r.article.published_at))
        chosen = select(self._story(newest, followed, records), basis, followed.read_at, followed.now, newest)
        devs = tuple(developments(chosen, basis))
        cutoff = last_read(basis, followed.read_at)
        again = [
            d.id for d in devs if d.id in followed.read and cutoff and d.record.article.last_modified > cutoff
        ]
        notes = tuple(relevant((n for d in devs for n in d.notes), basis, again))
        return Request(newest, [], template, basis, devs, notes)

    def quoted_update(self, request: Request) -> tuple[SummarySentence, ...]:
        """An update in the articles' own words: the correction notes owed to the reader, then one
        lead sentence per development, newest first, none stating a superseded number. Cached
        per basis, which is the same for every reader who read the same and was last here before
        the same developments."""
        key = self.summary_id(request)
        cached = self._quoted.get(key)
        if cached is None:
            request = replace(request, evidence=self._evidence(request))
            cached = tuple(self._notes(request) + self._leads(request, request.template.max_sentences))
            with self._quoted_lock:
                if len(self._quoted) >= _QUOTED_CACHE:
                    self._quoted.pop(next(iter(self._quoted)))  # the oldest entry
                self._quoted[key] = cached
        return cached

    def _story(
        self, newest: ArticleRecord, followed: Followed, records: dict[str, ArticleRecord]
    ) -> list[ArticleRecord]:
        """The current versions of the story's articles: those the caller names (the composer,
        from its in-memory matrix), else a payload-filtered scroll of the index (in embedded
        Qdrant about 130 ms at 10k articles)."""
        if followed.story is None:
            where = SearchFilter(story_ids=(newest.story_id,))
            return [r for r in self.retriever.index.scroll(where) if r.story_id == newest.story_id]
        return [records[a] for a in followed.story if a in records]

    def _evidence(self, request: Request) -> list[EvidenceChunk]:
        """The chunks of every development it covers, in reading order, oldest article first."""
        records = [d.record for d in request.developments] or [request.record]
        return [c for r in records for c in self.retriever.article(r.article.id, r.article.title)]

    def _run(
        self, requests: list[Request], refresh: bool, adapter: str | EllipsisType | None = ...
    ) -> list[Summary]:
        # read once: `use_adapter` may swap the configured adapter while the LLM writes
        chosen = self.config.adapter if isinstance(adapter, EllipsisType) else adapter
        done: dict[str, Summary] = {}
        failed: dict[str, GenerationError] = {}
        for request in requests:
            stored = None if refresh else self.store.get(self.summary_id(request, chosen))
            try:
                done[request.record.article.id] = stored or self._write(request, chosen)
            except GenerationError as exc:
                failed[request.record.article.id] = exc
        if failed:
            raise PartlyWritten(list(done.values()), failed)
        return list(done.values())

    def _write(self, request: Request, adapter: str | None) -> Summary:
        start = time.monotonic()
        name = self.generator_adapter(request, adapter)
        (completion,) = self.generator.generate([self.chat(request)], request.template.params, name)
        written_by = self.writer(request.record.article.language, adapter)
        completion = _as_written(completion, name, written_by)
        return self.store.put(self._ground(request, completion, time.monotonic() - start, written_by))

    def summary_id(self, request: Request, adapter: str | EllipsisType | None = ...) -> str:
        """Per article version, prompt, model and adapter, and for an update its whole basis:
        what was read and the version of every development covered, so a new development or
        an in-place update makes a new update."""
        record = request.record
        read = tuple(b.article.id for b in request.basis)
        covered = tuple(f"{d.id}@{d.record.content_hash}" for d in request.developments)
        chosen = self.config.adapter if isinstance(adapter, EllipsisType) else adapter
        return summary_id(
            record.article.id,
            record.content_hash,
            request.template.id,
            self.generator.model,
            self.writer(record.article.language, chosen),  # who writes it, so it is found again
            (*read, *covered),
        )

    def _fields(self, request: Request) -> dict[str, str]:
        article = request.record.article
        if request.developments:
            text = _developments_text(request, self.config.max_input_chars)
        else:
            text = untrusted(
                "\n\n".join(c.text for c in request.evidence) or article.body, self.config.max_input_chars
            )
        read = "\n".join(f"- {_when(b.article)}: {untrusted(b.article.title, 300)}" for b in request.basis)
        return {"title": untrusted(article.title, 300), "text": text, "read": read or "- (nothing)"}

    def _ground(
        self, request: Request, completion: Completion, seconds: float, adapter: str | None
    ) -> Summary:
        template, record = request.template, request.record
        points = parse_points(completion.text, template.max_sentences)
        sentences = [s for p in points for s in split_sentences(p) if not _not_news(s, record.article.title)]
        sentences = _complete(sentences, completion.finish_reason)
        evidence = [c.evidence() for c in request.evidence]
        supports = self.checker.check(_unique(sentences)[: template.max_sentences], evidence)
        kept, dropped = _current(supports, request.developments)
        if request.developments:  # an update: corrections owed first, then what happened
            kept = self._notes(request) + (kept or self._leads(request, template.max_sentences))
        elif not kept:
            kept = self.extractive(record.article, request.evidence)
        return Summary(
            id=self.summary_id(request, adapter),
            kind=template.kind,
            article_id=record.article.id,
            content_hash=record.content_hash,
            prompt=template.id,
            model=completion.model,
            adapter=adapter,
            sentences=tuple(kept),
            dropped=tuple(dropped),
            created_at=datetime.now(UTC),
            seconds=seconds,
            basis=_stored_basis(request),
        )

    def extractive(self, article: Article, chunks: list[EvidenceChunk]) -> list[SummarySentence]:
        """The article's first sentence (its lead, when it has one), with its support and citation.

        A sentence found word for word in a chunk cites that chunk with support 1.0, without a
        model pass (it is quoted, not paraphrased: that was most of an uncached briefing's time);
        otherwise the request checker scores it."""
        return [self._quote(_first_sentence(article), chunks)]

    def _quote(self, sentence: str, chunks: Sequence[EvidenceChunk]) -> SummarySentence:
        """An article's own sentence with its citation and support (see `extractive`)."""
        quoted = _normalized(sentence)
        verbatim = next((c for c in chunks if quoted in _normalized(c.text)), None)
        if verbatim is not None:
            return SummarySentence(sentence, 1.0, (verbatim.chunk_id,), extractive=True)
        evidence = [c.evidence() for c in chunks]
        support = self.request_checker.check([sentence], evidence)[0] if evidence else None
        citations = (
            support.citations if support and support.citations else tuple(c.chunk_id for c in chunks[:1])
        )
        return SummarySentence(sentence, support.score if support else 1.0, citations, extractive=True)

    def _notes(self, request: Request) -> list[SummarySentence]:
        """The correction notes owed to this reader, newest first, quoted as published: the
        correction is stated as a correction, in the newsroom's words."""
        out: list[SummarySentence] = []
        for note in reversed(request.notes):
            chunks = [c for c in request.evidence if c.article_id == note.article_id]
            out += [self._quote(s, chunks) for s in quoted(note)]
        return out[:NOTE_SENTENCES]

    def _leads(self, request: Request, limit: int) -> list[SummarySentence]:
        """One lead sentence per development, newest first, leaving out leads that state a
        number a later development replaced."""
        out: list[SummarySentence] = []
        for dev in reversed(request.developments):
            lead = _first_sentence(dev.record.article)
            if len(out) < limit and not superseded(lead, request.developments):
                out.append(self._quote(lead, [c for c in request.evidence if c.article_id == dev.id]))
        return out


_QUOTED_CACHE = 4096  # quoted updates kept (a few sentences each)


def _as_written(completion: Completion, name: str | None, adapter: str | None) -> Completion:
    """The completion as its summary names it: local backends call a part's output
    "model+<set>@<lang>", a summary "model+<set>" (the writer the show gate knows, with `adapter`)."""
    if name is None or name == adapter or not completion.model.endswith(f"+{name}"):
        return completion
    model = completion.model.removesuffix(f"+{name}")
    return replace(completion, model=f"{model}+{adapter}" if adapter else model)


def _current(
    supports: Sequence[Support], devs: Sequence[Development]
) -> tuple[list[SummarySentence], list[SummarySentence]]:
    """(kept, dropped): supported sentences that state nothing superseded are kept; a dropped
    sentence says why in `missing` (for editors)."""
    kept, dropped = [], []
    for support in supports:
        reason = superseded(support.sentence, devs) if support.supported and devs else None
        if support.supported and reason is None:
            kept.append(_sentence(support))
        else:
            sentence = _sentence(support)
            dropped.append(replace(sentence, missing=(*sentence.missing, reason)) if reason else sentence)
    return kept, dropped


def _developments_text(request: Request, limit: int) -> str:
    """The developments for the prompt, newest first and dated, each cut to its share of
    `limit` characters (the newest is read first); those left without room are named only."""
    share = max(limit // len(request.developments), 700)
    parts, room = [], limit
    for dev in reversed(request.developments):
        article = dev.record.article
        head = f"[{_when(article)}] {untrusted(article.title, 300)}"
        body = "\n\n".join(c.text for c in request.evidence if c.article_id == dev.id) or article.body
        if room >= 200:
            text = untrusted(body, min(share, room))
            room -= len(text)
            parts.append(f"{head}\n{text}")
        else:
            parts.append(f"{head}\n(not shown)")
    return "\n\n---\n\n".join(parts)


def _stored_basis(request: Request) -> tuple[str, ...]:
    """What a stored summary names as its basis: for an update, the articles read and then the
    earlier developments it covers (the newest is its `article_id`), so editors see all the
    evidence it was written from."""
    covered = [d.id for d in request.developments if d.id != request.record.article.id]
    return tuple(dict.fromkeys([*(b.article.id for b in request.basis), *covered]))


def _when(article: Article) -> str:
    """When an article last changed, in its own offset: "Wed 18 Nov 19:30" (+ "updated")."""
    stamp = f"{article.last_modified:%a %d %b %H:%M}"
    return f"{stamp}, updated" if article.updated_at and article.updated_at > article.published_at else stamp


def _first_sentence(article: Article) -> str:
    return (split_sentences(article.lead or "") or split_sentences(article.body) or [article.title])[0]


def _complete(sentences: list[str], finish_reason: str) -> list[str]:
    """Without the last one if a time or token limit cut it off mid-sentence."""
    cut = finish_reason != "stop" and sentences and not sentences[-1].rstrip().endswith(_ENDS)
    return sentences[:-1] if cut else sentences


_ENDS = (".", "!", "?", '"', "”", "»", ")")


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def _sentence(support: Support) -> SummarySentence:
    fluency = None if support.fluency is None else round(support.fluency, 4)
    return SummarySentence(
        support.sentence, round(support.score, 4), support.citations, missing=support.missing, fluency=fluency
    )


# "the article", "this text", "artikkelen", but not "the text of the bill" or "Article 50".
_ABOUT_THE_TEXT = re.compile(
    r"\b(?:the|this) (?:article|text|passage)\b(?! of\b)(?!\s*\d)|\b(?:artikkelen|teksten)\b"
    r"|\ban? (?:article|story|report) (?:about|on)\b|\ban? news (?:article|story|report)\b",
    re.IGNORECASE,
)


def _not_news(sentence: str, title: str) -> bool:
    """Small models repeat the prompt (its title, shown with the item anyway, or its markup) or
    describe their input instead of the news ("The article is a great example of ..."): the
    likelihood signal favours such sentences when they copy the title, and they tell a reader
    nothing."""
    plain = " ".join(sentence.lower().split()).strip(" .")
    echo = plain.startswith(_PROMPT_LABELS) or plain == " ".join(title.lower().split()).strip(" .")
    return echo or bool(_STAMPED.match(sentence.strip(" -[*"))) or bool(_ABOUT_THE_TEXT.search(sentence))


# What the prompts label their parts with: read back, they are headings, not news.
_PROMPT_LABELS = (
    "<",
    "title:",
    "tittel:",
    "newest headline:",
    "newer headline:",
    "nyeste tittel:",
    "already read",
    "allerede lest",
    "(not shown)",
)
# A development's or read article's heading as the update prompts date it (`_when`: "Tue 17 Nov
# 11:30: <headline>"), also misdated ("Mon 16 Nov 2022: ..."): the labelled demo set found the
# model copying these lines as its points.
_STAMPED = re.compile(r"\[?[A-Z][a-z]{2} \d{1,2} [A-Z][a-z]{2}\b[^:]{0,12}:")


def _unique(sentences: list[str]) -> list[str]:
    """The sentences worth checking, in order: whole ones (`_fragment`), each said once. Small
    models loop: a sentence that repeats an earlier one (`_near_duplicate`) is dropped."""
    out: list[str] = []
    for sentence in sentences:
        whole = not _fragment(sentence) and not _repeats_itself(sentence)
        if whole and not any(_near_duplicate(sentence, kept) for kept in out):
            out.append(sentence)
    return out


MIN_WORDS = 4
NEAR_DUPLICATE = 0.8  # token-set Jaccard from which two sentences say the same
_WORDS = re.compile(r"\w+")
_PAIRS = (("(", ")"), ("[", "]"), ("“", "”"), ("«", "»"))


def _fragment(sentence: str) -> bool:
    """Not a whole sentence: under `MIN_WORDS` words (a list marker alone has none), a heading
    ("Key points:"), no sentence-final punctuation (cut off, or a headline) or an unclosed quote
    or bracket (half a quotation, or a cut)."""
    text = sentence.strip()
    unbalanced = text.count('"') % 2 == 1 or any(text.count(a) != text.count(b) for a, b in _PAIRS)
    return len(_WORDS.findall(text)) < MIN_WORDS or not text.endswith(_ENDS) or unbalanced


def _repeats_itself(sentence: str) -> bool:
    """A small model's stutter inside one sentence: a word twice in a row ("etter etter") or a
    pair of content words said twice ("a 17th-century merchant ship ... a 17th-century ship",
    "a new day ... a new day"). Found in the labelled demo set, where such sentences passed the
    check with support above 0.95; news copy does not repeat itself within a sentence."""
    words = [w.lower() for w in _WORDS.findall(sentence)]
    if any(a == b and not a.isdigit() for a, b in itertools.pairwise(words)):
        return True
    content = [w for w in words if w not in STOPWORDS]
    pairs = list(itertools.pairwise(content))
    triples = [t for t in zip(words, words[1:], words[2:], strict=False) if not set(t) <= STOPWORDS]
    return len(set(pairs)) < len(pairs) or len(set(triples)) < len(triples)


def _near_duplicate(sentence: str, earlier: str) -> bool:
    """Whether the two say the same: their word sets overlap by `NEAR_DUPLICATE` (Jaccard), or
    one's words run, in order, inside the other's ("The council voted 27 to 22." and "The
    council voted 27 to 22 on Tuesday.")."""
    a, b = _WORDS.findall(sentence.lower()), _WORDS.findall(earlier.lower())
    if len(set(a) & set(b)) >= NEAR_DUPLICATE * len(set(a) | set(b)):
        return True
    short, long = sorted((a, b), key=len)
    return f" {' '.join(short)} " in f" {' '.join(long)} "
