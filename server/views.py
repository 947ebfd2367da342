"""What the pages show beyond what `Service` and `Review` return: whether a summary is live to
readers, the passages a briefing cites and when each update sentence was published, more
stories past the briefing, an article's text by paragraph, stable ids for the events a page
reports, and job run details in words.

Pure reads of the service's parts: nothing here writes, so the pages can call it on any request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from briefing import REVIEWED, BriefingItem, Status, Summary
from briefing.wording import reason_text
from indexing import Article, Hit
from recsys import Item
from server.service import Service

LEAD_CHARS = 300


@dataclass(frozen=True)
class Live:
    """Whether readers whose briefing picks the article see this text now, and if not, why."""

    live: bool
    why: str


def live_to_readers(service: Service, summaries: Sequence[Summary]) -> dict[str, Live]:
    """Per summary id, under the serving policy (the rules `Composer` applies): reviewed text of
    the article's current version shows; a draft shows only where drafts may and no reviewed text
    of that version exists; rejected and retired text never."""
    current = service.indexer.index.get(sorted({s.article_id for s in summaries}))
    policy = service.composer.policy
    reviewed: dict[str, set[tuple[str, str]]] = {}
    for article_id in {s.article_id for s in summaries if s.status is Status.DRAFT}:
        found = service.summaries.find(article_id)
        reviewed[article_id] = {(s.content_hash, s.kind) for s in found if s.status in REVIEWED}
    out: dict[str, Live] = {}
    for s in summaries:
        record = current.get(s.article_id)
        drafts = record is not None and policy.summary_shows(s, record.article.language)
        out[s.id] = _live(s, record.content_hash if record else None, drafts, reviewed)
    return out


def _live(
    s: Summary, current_hash: str | None, allow_drafts: bool, reviewed: dict[str, set[tuple[str, str]]]
) -> Live:
    if s.status is Status.REJECTED:
        return Live(False, "rejected: readers never see it")
    if s.status is Status.RETRACTED:
        return Live(False, "retired with its article version")
    if current_hash is None:
        return Live(False, "its article is no longer published")
    if s.content_hash != current_hash:
        return Live(False, "its article changed since it was written")
    if s.status is Status.DRAFT and not allow_drafts:
        return Live(False, "not shown unreviewed: its language or one of its sentences fails the show gate")
    if s.status is Status.DRAFT and (s.content_hash, s.kind) in reviewed.get(s.article_id, set()):
        return Live(False, "a reviewed text of this article shows instead")
    if s.status is Status.DRAFT:
        return Live(True, "live, labelled as not yet reviewed")
    return Live(True, "live")


def passages(service: Service, items: Iterable[BriefingItem]) -> dict[str, Hit]:
    """Every chunk the items cite, by chunk id, in one index request (not one per citation):
    the reader page shows each citation's passage from what is stored, with no model call."""
    cited = sorted({c for item in items for s in item.sentences for c in s.citations})
    return service.indexer.index.chunks_by_id(cited)


def published(items: Iterable[BriefingItem], cited: Mapping[str, Hit]) -> dict[tuple[str, int], datetime]:
    """When each sentence of a story update was published, by (item's article, sentence index):
    the newest article it cites (from the cited passages). An update quotes earlier developments,
    and without its date a state since changed ("the route is closed") reads as current."""
    out: dict[tuple[str, int], datetime] = {}
    for item in items:
        for n, sentence in enumerate(item.sentences if item.update else ()):
            times = [cited[c].published_at for c in sentence.citations if c in cited]
            if times:
                out[(item.article_id, n)] = datetime.fromtimestamp(max(times), UTC)
    return out


@dataclass(frozen=True)
class MoreItem:
    item: Item
    lead: str  # the article's own first words: "more stories" never calls the LLM
    reason: str  # "why you see this" in the reader's language


def more_stories(service: Service, reader_id: str, extra: int) -> list[MoreItem]:
    """The next `extra` recommendations after this visit's briefing, for the same "since", from
    the recommender and the articles' own text only. Records nothing (no visit, no briefing)."""
    now = service.clock()
    since = service.visits.current(reader_id, now).since
    shown_items = service.composer.policy.items
    picked = service.recommender.recommend(reader_id, now, k=shown_items + extra, since=since)
    variant = service.assignment(reader_id, since is None).variant
    cached = service.cache.get((reader_id, variant, since))
    shown = {i.article_id for i in (cached[0].items if cached else picked[:shown_items])}
    rest = [i for i in picked if i.article_id not in shown][:extra]
    records = service.indexer.index.get([i.article_id for i in rest])
    audience = service.audience(reader_id)
    return [
        MoreItem(i, lead(records[i.article_id].article), reason_text(i.why, audience))
        for i in rest
        if i.article_id in records
    ]


def lead(article: Article) -> str:
    text = article.lead.strip() or next(iter(paragraphs(article.body)), "")
    return text if len(text) <= LEAD_CHARS else text[:LEAD_CHARS].rsplit(" ", 1)[0] + " …"


def paragraphs(text: str) -> list[str]:
    """Paragraphs split on blank lines, inner line breaks kept as spaces."""
    return [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]


def event_id(*parts: str) -> str:
    """A stable event id (the API's id pattern, under 100 characters) for an event the page may
    send more than once, such as an impression on every reload of one briefing."""
    return "imp-" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def describe(detail: Any) -> list[tuple[str, str]]:
    """A job run's detail as (what, how many) lines; an empty mapping says nothing was configured,
    which is what a job with no work to read (no FEEDS) returns."""
    if not isinstance(detail, dict):
        return [("result", str(detail))]
    return [(str(key), _words(value)) for key, value in detail.items()]


def _words(value: Any) -> str:
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_words(v)}" for k, v in value.items()) if value else "nothing configured"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) if value else "none"
    return str(value)


def every(seconds: float) -> str:
    """A schedule in words; 0 means the job is not scheduled (nothing configured for it)."""
    if seconds <= 0:
        return "not scheduled: nothing configured"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"every {unit}" if n == 1 else f"every {n} {unit}s"
    return f"every {seconds:g} s"


def count_by_status(summaries: Iterable[Summary]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in summaries:
        counts[s.status.value] = counts.get(s.status.value, 0) + 1
    return counts
