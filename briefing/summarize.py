"""Grounded summaries: evidence → prompt → LLM → per-sentence grounding check → stored draft.

Every generated sentence is checked against the evidence it was written from. Sentences under
the threshold, or stating a number, name or quote the evidence lacks, are dropped (and kept
aside for editors); an item left with nothing falls back to the article's own first sentence,
marked extractive. Sentences that repeat the prompt or describe the article instead of the news
are removed before the check. Summaries are stored as drafts with the model, prompt and adapter
versions, and reused when the same article version is asked for again with the same settings.
Articles are written one at a time and each summary is stored as soon as it is checked, so a
failure (a timeout, say) loses only its own article: `PartlyWritten` carries the rest.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from briefing.grounding import GroundingChecker, Support, split_sentences
from briefing.llm import Completion, GenerationError, Generator
from briefing.prompts import PROMPTS, PromptRegistry, PromptTemplate, parse_points, untrusted
from briefing.retrieval import EvidenceChunk, EvidenceRetriever
from briefing.summaries import Summary, SummaryRepository, SummarySentence, summary_id
from indexing import Article, ArticleRecord


@dataclass(frozen=True)
class SummarizerConfig:
    article_prompt: str = "article"
    update_prompt: str = "update"
    greeting_prompt: str = "greeting"
    adapter: str | None = None
    # About 900 tokens: the top of a news article carries its facts, and on a CPU reading the
    # prompt is the slow part (bench/llm.py: 2.1 s to the first token for 1,500 prompt tokens).
    max_input_chars: int = 3500


class PartlyWritten(GenerationError):
    """Some summaries could not be written; `done` holds those that were (already stored)."""

    def __init__(self, done: list[Summary], failed: dict[str, GenerationError]) -> None:
        reasons = "; ".join(f"{article}: {error}" for article, error in failed.items())
        super().__init__(f"{len(failed)} of {len(done) + len(failed)} summaries failed: {reasons}")
        self.done, self.failed = done, failed


@dataclass(frozen=True)
class Request:
    """One summary to write: the article, its evidence, and for an update what was read."""

    record: ArticleRecord
    evidence: list[EvidenceChunk]
    template: PromptTemplate
    basis: tuple[ArticleRecord, ...] = ()


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

    def summarize(
        self, article_ids: Sequence[str], *, prompt: str | None = None, refresh: bool = False
    ) -> list[Summary]:
        """Summaries of the current versions of these articles (unknown ids are skipped)."""
        template = self.prompts.get(prompt or self.config.article_prompt)
        records = self.retriever.index.get(list(article_ids))
        requests = [
            Request(records[a], self.retriever.article(a, records[a].article.title), template)
            for a in article_ids
            if a in records
        ]
        return self._run(requests, refresh)

    def update(
        self, article_id: str, read: Sequence[str], *, prompt: str | None = None, refresh: bool = False
    ) -> Summary | None:
        """What `article_id` adds to a story for a reader who read the articles in `read`."""
        request = self._update_request(article_id, read, prompt)
        if request is None:
            return None
        evidence = self.retriever.article(article_id, request.record.article.title)
        return self._run([replace(request, evidence=evidence)], refresh)[0]

    def stored_update(
        self, article_id: str, read: Sequence[str], prompt: str | None = None
    ) -> Summary | None:
        """The update `update` would return, if it has been written; never runs the LLM."""
        request = self._update_request(article_id, read, prompt)
        return None if request is None else self.store.get(self._id(request))

    def _update_request(self, article_id: str, read: Sequence[str], prompt: str | None) -> Request | None:
        """An update's request without its evidence (enough to name the summary)."""
        template = self.prompts.get(prompt or self.config.update_prompt)
        records = self.retriever.index.get([article_id, *read])
        if article_id not in records:
            return None
        basis = tuple(
            sorted((records[a] for a in read if a in records), key=lambda r: r.article.published_at)
        )
        return Request(records[article_id], [], template, basis)

    def _run(self, requests: list[Request], refresh: bool) -> list[Summary]:
        done: dict[str, Summary] = {}
        failed: dict[str, GenerationError] = {}
        for request in requests:
            stored = None if refresh else self.store.get(self._id(request))
            try:
                done[request.record.article.id] = stored or self._write(request)
            except GenerationError as exc:
                failed[request.record.article.id] = exc
        if failed:
            raise PartlyWritten(list(done.values()), failed)
        return list(done.values())

    def _write(self, request: Request) -> Summary:
        start = time.monotonic()
        chat = request.template.render(**self._fields(request))
        (completion,) = self.generator.generate([chat], request.template.params, self.config.adapter)
        return self.store.put(self._ground(request, completion, time.monotonic() - start))

    def _id(self, request: Request) -> str:
        record = request.record
        basis = tuple(b.article.id for b in request.basis)
        return summary_id(
            record.article.id,
            record.content_hash,
            request.template.id,
            self.generator.model,
            self.config.adapter,
            basis,
        )

    def _fields(self, request: Request) -> dict[str, str]:
        article = request.record.article
        text = "\n\n".join(c.text for c in request.evidence) or article.body
        read = "\n".join(f"- {untrusted(b.article.title, 300)}" for b in request.basis) or "- (nothing)"
        return {
            "title": untrusted(article.title, 300),
            "text": untrusted(text, self.config.max_input_chars),
            "read": read,
        }

    def _ground(self, request: Request, completion: Completion, seconds: float) -> Summary:
        template, record = request.template, request.record
        points = parse_points(completion.text, template.max_sentences)
        sentences = [s for p in points for s in split_sentences(p) if not _not_news(s, record.article.title)]
        sentences = _complete(sentences, completion.finish_reason)
        evidence = [c.evidence() for c in request.evidence]
        supports = self.checker.check(_unique(sentences)[: template.max_sentences], evidence)
        kept = [_sentence(s) for s in supports if s.supported]
        dropped = [_sentence(s) for s in supports if not s.supported]
        if not kept:
            kept = self.extractive(record.article, request.evidence)
        return Summary(
            id=self._id(request),
            kind=template.kind,
            article_id=record.article.id,
            content_hash=record.content_hash,
            prompt=template.id,
            model=completion.model,
            adapter=self.config.adapter,
            sentences=tuple(kept),
            dropped=tuple(dropped),
            created_at=datetime.now(UTC),
            seconds=seconds,
            basis=tuple(b.article.id for b in request.basis),
        )

    def extractive(self, article: Article, chunks: list[EvidenceChunk]) -> list[SummarySentence]:
        """The article's first sentence (its lead, when it has one), with its support and citation.

        A sentence found word for word in a chunk cites that chunk with support 1.0, without a
        model pass (it is quoted, not paraphrased: that was most of an uncached briefing's time);
        otherwise the request checker scores it."""
        first = (split_sentences(article.lead or "") or split_sentences(article.body) or [article.title])[0]
        quoted = _normalized(first)
        verbatim = next((c for c in chunks if quoted in _normalized(c.text)), None)
        if verbatim is not None:
            return [SummarySentence(first, 1.0, (verbatim.chunk_id,), extractive=True)]
        evidence = [c.evidence() for c in chunks]
        support = self.request_checker.check([first], evidence)[0] if evidence else None
        citations = (
            support.citations if support and support.citations else tuple(c.chunk_id for c in chunks[:1])
        )
        return [SummarySentence(first, support.score if support else 1.0, citations, extractive=True)]


def _complete(sentences: list[str], finish_reason: str) -> list[str]:
    """Without the last one if a time or token limit cut it off mid-sentence."""
    cut = finish_reason != "stop" and sentences and not sentences[-1].rstrip().endswith(_ENDS)
    return sentences[:-1] if cut else sentences


_ENDS = (".", "!", "?", '"', "”", "»", ")")


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def _sentence(support: Support) -> SummarySentence:
    return SummarySentence(
        support.sentence, round(support.score, 4), support.citations, missing=support.missing
    )


# "the article", "this text", "artikkelen", but not "the text of the bill" or "Article 50".
_ABOUT_THE_TEXT = re.compile(
    r"\b(?:the|this) (?:article|text|passage)\b(?! of\b)(?!\s*\d)|\b(?:artikkelen|teksten)\b", re.IGNORECASE
)


def _not_news(sentence: str, title: str) -> bool:
    """Small models repeat the prompt (its title, shown with the item anyway, or its markup) or
    describe their input instead of the news ("The article is a great example of ..."): the
    likelihood signal favours such sentences when they copy the title, and they tell a reader
    nothing."""
    plain = " ".join(sentence.lower().split()).strip(" .")
    echo = plain.startswith(("title:", "<")) or plain == " ".join(title.lower().split()).strip(" .")
    return echo or bool(_ABOUT_THE_TEXT.search(sentence))


def _unique(sentences: list[str]) -> list[str]:
    """Drop repeats (small models loop), keeping the first."""
    seen: set[str] = set()
    out = []
    for sentence in sentences:
        key = " ".join(sentence.lower().split())
        if key not in seen:
            seen.add(key)
            out.append(sentence)
    return out
