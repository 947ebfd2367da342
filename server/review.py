"""Editors' review of generated text: the queue, one summary with its evidence, and decisions.

An approval, an edit or a rejection is written to the audit log and drops every cached briefing
citing the article, so the reader's next briefing shows the decision. A decision is conditional on
the state the editor saw (the summary's version, sent back by the page and the API): if anything
changed in between (a retraction, another editor, a new draft), it is refused as a conflict and
nothing is overwritten. Rejected and retracted summaries are final. An edit keeps the generated
text as `original_text` and is checked against the article like generated text is, so the editor
sees each new sentence's support and the reader still gets citations; the editor's words are
kept even when a sentence scores low (a person vouched for them), and the page says so.

The queue page lists drafts by risk (`Review.risk_queue`): lowest support first, and within a
band of similar support those whose sentences state more numbers, names and quotes first, since
those are where a wrong sentence does harm (each of the three wrong demo sentences issue 17
quotes states a number, a name or a date). Each sentence comes with the check's verdict in
words (`Verdict`): its score against the threshold, the facts missing from its evidence, and
which rules fired. The API's queue (`GET /v1/review/queue`) has the same order and verdicts.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from briefing import (
    Evidence,
    EvidenceChunk,
    Status,
    Summary,
    SummarySentence,
    content_words,
    split_sentences,
)
from briefing.grounding import GroundingConfig, stated_facts
from indexing import CALENDAR_WORDS
from server.service import Actor, NotFound, Service

MAX_EDIT_CHARS = 4000
# Supports this close count as similar: within a band, more stated facts come first. 0.05 is
# finer than the spread of scores the checkers give drafts that pass (0.6 to 1.0: eight bands).
SUPPORT_BAND = 0.05
NEGATION = "negation"  # the marker the check adds to `missing` for a flipped negation
_NAME = re.compile(r"[A-ZÆØÅ][\wæøå'-]*")


class ReviewConflict(ValueError):
    """The decision does not apply to the summary in its current state (HTTP 409)."""


@dataclass(frozen=True)
class Verdict:
    """Why the check kept or dropped one sentence, in an editor's words."""

    sentence: SummarySentence
    threshold: float
    rules: tuple[str, ...]  # what fired: "missing number", "negation flip", "low support", ...
    missing: tuple[str, ...]  # the facts absent from its evidence (without the negation marker)
    facts: tuple[str, ...]  # the numbers, names and quotes it states: what to check by eye

    @property
    def passed(self) -> bool:
        return not self.rules


@dataclass(frozen=True)
class SentenceEvidence:
    sentence: SummarySentence
    chunks: tuple[EvidenceChunk, ...]  # the cited chunks, in citation order
    words: tuple[str, ...]  # the sentence's content words, to highlight in the chunks
    verdict: Verdict


@dataclass(frozen=True)
class ReviewItem:
    summary: Summary
    title: str
    url: str
    sentences: tuple[SentenceEvidence, ...]
    dropped: tuple[SentenceEvidence, ...]
    diff: str | None


@dataclass(frozen=True)
class Risk:
    """How much a draft needs an editor's eye: its weakest generated sentence's support, and
    how many numbers, names and quotes its generated sentences state."""

    support: float  # 1.0 when every sentence is quoted from the article
    facts: int

    @property
    def key(self) -> tuple[int, int, float]:
        """Sorts riskiest first: lowest support band, then most facts, then lowest support."""
        return (math.floor(self.support / SUPPORT_BAND + 1e-9), -self.facts, self.support)


@dataclass(frozen=True)
class Queued:
    summary: Summary
    risk: Risk
    verdicts: tuple[Verdict, ...]  # one per sentence a reader would see


class Review:
    def __init__(self, service: Service) -> None:
        self.service = service

    def risk_queue(self, status: Status = Status.DRAFT, limit: int = 200) -> list[Queued]:
        """The summaries in `status`, riskiest first, each sentence with its verdict (the queue
        page's and the API's)."""
        threshold = self.threshold
        return [
            Queued(s, risk(s), tuple(verdict(x, threshold) for x in s.sentences))
            for s in by_risk(self.service.summaries.by_status(status))[:limit]
        ]

    def next_after(self, after: str) -> str | None:
        """The draft to review after `after` (`next_draft`); None when no other draft waits."""
        return next_draft(self.service.summaries.by_status(Status.DRAFT), after)

    @property
    def threshold(self) -> float:
        """The active checker's threshold (both checkers keep it in their `config`)."""
        config = getattr(self.service.summarizer.checker, "config", None)
        return config.threshold if isinstance(config, GroundingConfig) else GroundingConfig().threshold

    def item(self, summary_id: str) -> ReviewItem:
        summary = self._get(summary_id)
        chunks = self._chunks(summary)
        record = self.service.indexer.index.get([summary.article_id]).get(summary.article_id)
        return ReviewItem(
            summary=summary,
            title=record.article.title if record else "(no longer in the index)",
            url=str(record.article.url) if record else "",
            sentences=tuple(_evidence(s, chunks, self.threshold) for s in summary.sentences),
            dropped=tuple(_evidence(s, chunks, self.threshold) for s in summary.dropped),
            diff=edit_diff(summary),
        )

    def approve(self, actor: Actor, summary_id: str, version: int | None = None) -> Summary:
        summary = self._open(summary_id, version)
        approved = summary.with_status(Status.APPROVED, actor.id, self._now())
        return self._save(actor, summary, approved, "approved", {})

    def reject(self, actor: Actor, summary_id: str, reason: str, version: int | None = None) -> Summary:
        summary = self._open(summary_id, version)
        reason = " ".join(reason.split())
        if not reason:
            raise ReviewConflict("say why the summary is rejected")
        rejected = summary.with_status(Status.REJECTED, actor.id, self._now(), reason=reason)
        return self._save(actor, summary, rejected, "rejected", {"reason": reason})

    def edit(self, actor: Actor, summary_id: str, text: str, version: int | None = None) -> Summary:
        summary = self._open(summary_id, version)
        text = " ".join(text.split())
        if not text:
            raise ReviewConflict("the edited text is empty; reject the summary instead")
        if len(text) > MAX_EDIT_CHARS:
            raise ReviewConflict(f"the edited text has {len(text)} characters; at most {MAX_EDIT_CHARS}")
        edited = summary.edited(self._checked(summary, split_sentences(text)), by=actor.id, at=self._now())
        return self._save(actor, summary, edited, "edit", {"diff": edit_diff(edited) or ""})

    def _now(self) -> datetime:
        return self.service.clock()

    def _save(
        self, actor: Actor, seen: Summary, decision: Summary, action: str, detail: dict[str, Any]
    ) -> Summary:
        """Store the decision only if the summary is still as the editor saw it."""
        stored = self.service.summaries.decide(decision, expected_version=seen.version)
        if stored is None:
            raise _conflict(self._get(seen.id), seen.version)
        self.service.forget_article(stored.article_id)
        self.service.audit.write(
            actor.id, actor.role, action, stored.id, {**detail, "version": stored.version}
        )
        return stored

    def _get(self, summary_id: str) -> Summary:
        summary = self.service.summaries.get(summary_id)
        if summary is None:
            raise NotFound(f"no summary {summary_id!r}")
        return summary

    def _open(self, summary_id: str, version: int | None) -> Summary:
        """The summary to decide on; `version` is the one the editor saw (None: as it is now).
        Checked here too, not only by `decide`, so an edit of a stale text checks nothing."""
        summary = self._get(summary_id)
        if summary.final or (version is not None and version != summary.version):
            raise _conflict(summary, summary.version if version is None else version)
        return summary

    def _chunks(self, summary: Summary) -> dict[str, EvidenceChunk]:
        articles = dict.fromkeys([summary.article_id, *summary.basis])
        retriever = self.service.summarizer.retriever
        return {c.chunk_id: c for a in articles for c in retriever.article(a)}

    def _checked(self, summary: Summary, sentences: list[str]) -> tuple[SummarySentence, ...]:
        chunks = self._chunks(summary)
        evidence = [Evidence(c.chunk_id, c.text) for c in chunks.values()]
        if not evidence:
            raise ReviewConflict(f"article {summary.article_id!r} is no longer in the index")
        # the editor's words are theirs to vouch for; the scores inform, so no LLM pass here
        supports = self.service.summarizer.request_checker.check(sentences, evidence)
        return tuple(
            SummarySentence(s.sentence, round(s.score, 4), s.citations, missing=s.missing) for s in supports
        )


def _conflict(now: Summary, seen_version: int) -> ReviewConflict:
    """Why a decision on `now` (as it is stored) cannot apply to the version the editor saw."""
    if now.status is Status.RETRACTED:
        return ReviewConflict(f"summary {now.id!r} is of a retracted or replaced article version: final")
    if now.status is Status.REJECTED:
        return ReviewConflict(f"summary {now.id!r} was rejected by {now.reviewed_by}; that is final")
    return ReviewConflict(
        f"summary {now.id!r} changed since version {seen_version} was shown: it is now "
        f"{now.status.value} (version {now.version}); reload it and decide again"
    )


def edit_diff(summary: Summary) -> str | None:
    """A unified word diff of the generated text against the editor's, or None if unedited."""
    if summary.original_text is None:
        return None
    lines = difflib.unified_diff(
        split_sentences(summary.original_text),
        [s.text for s in summary.sentences],
        "generated",
        "edited",
        lineterm="",
        n=1,
    )
    return "\n".join(lines)


def _evidence(
    sentence: SummarySentence, chunks: dict[str, EvidenceChunk], threshold: float
) -> SentenceEvidence:
    cited = tuple(chunks[c] for c in sentence.citations if c in chunks)
    words = tuple(sorted(content_words(sentence.text)))
    return SentenceEvidence(sentence, cited, words, verdict(sentence, threshold))


def verdict(sentence: SummarySentence, threshold: float) -> Verdict:
    """The check's reasons for one stored sentence, from its score and missing facts. A sentence
    quoted from the article is the article's own words: no rule applies to it."""
    missing = tuple(f for f in sentence.missing if f != NEGATION)
    facts = tuple(sorted(stated_facts(sentence.text)))
    if sentence.extractive:
        return Verdict(sentence, threshold, (), missing, facts)
    rules = dict.fromkeys(_rule(f) for f in sentence.missing)
    if sentence.score < threshold:
        rules["low support"] = None
    return Verdict(sentence, threshold, tuple(rules), missing, facts)


def _rule(fact: str) -> str:
    """Which rule a missing fact fired: `stated_facts` gives numbers (alone or with a scale or
    unit), dates, weekdays and months, names and quotes."""
    if fact == NEGATION:
        return "negation flip"
    if CALENDAR_WORDS & set(fact.lower().split()):
        return "missing date"
    if any(c.isdigit() for c in fact):
        return "missing number"
    return "missing name" if _NAME.fullmatch(fact) else "missing quote"


def risk(summary: Summary) -> Risk:
    """A summary's risk from the sentences a reader would see; quoted ones risk nothing."""
    generated = [s for s in summary.sentences if not s.extractive]
    support = min((s.score for s in generated), default=1.0)
    return Risk(support, sum(len(stated_facts(s.text)) for s in generated))


def by_risk(summaries: Iterable[Summary]) -> list[Summary]:
    """Riskiest first (`Risk.key`); equal risks oldest first, as the queue was before."""
    return sorted(summaries, key=_order)


def next_draft(drafts: Iterable[Summary], after: str) -> str | None:
    """While `after` is still a draft (the editor skipped it), the one after it in risk order,
    wrapping round; once decided, the riskiest draft left. Going by the decided summary's place
    instead would jump: an edit changes its sentences and so its risk."""
    ids = [d.id for d in by_risk(drafts)]
    if after in ids:
        place = ids.index(after)
        ids = ids[place + 1 :] + ids[:place]
    return next(iter(ids), None)


def _order(summary: Summary) -> tuple[tuple[int, int, float], datetime, str]:
    return (risk(summary).key, summary.created_at, summary.id)
