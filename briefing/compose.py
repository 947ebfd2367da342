"""The personalized briefing: reader → recommender → one grounded item per chosen story.

For each story the recommender picks, the item text is
- a story update, when the reader already read earlier articles of that story: only what the
  newest article adds (evidence: that article; the read ones are named in the prompt);
- otherwise the article's summary: an approved or edited one if an editor reviewed it, else a
  checked draft when the policy allows drafts, else the article's own first sentence.
A one-line greeting opens the briefing; it must state no fact absent from the item titles.
Composed briefings are cached per reader, variant, window and article versions, so a repeat
visit costs one recommendation and one index lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from briefing.grounding import missing_facts
from briefing.llm import GenerationError
from briefing.summaries import Status, Summary, SummarySentence
from briefing.summarize import Summarizer
from indexing import ArticleRecord
from recsys import Item, Recommender


@dataclass(frozen=True)
class Variant:
    """An experiment arm: which prompts and adapter write the text."""

    name: str
    article_prompt: str = "article"
    update_prompt: str = "update"
    greeting_prompt: str = "greeting"


CACHE_SIZE = 10_000  # composed briefings kept (least recently used out first)

VARIANTS = {
    v.name: v for v in (Variant("control"), Variant("one-sentence", article_prompt="article-one-sentence"))
}


@dataclass(frozen=True)
class BriefingPolicy:
    """Per surface: whether checked but unreviewed drafts may reach readers."""

    name: str = "front-page"
    allow_drafts: bool = True
    items: int = 5
    llm_greeting: bool = True  # off: a template greeting, and no LLM call on a cache miss


@dataclass(frozen=True)
class BriefingItem:
    story_id: str
    article_id: str
    title: str
    url: str
    section: str
    update: bool
    reason: str
    source: str  # "approved", "edited", "draft", "update" or "extractive"
    summary_id: str | None
    model: str | None  # the model that wrote the text; None when copied from the article
    sentences: tuple[SummarySentence, ...]

    @property
    def citations(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for s in self.sentences for c in s.citations))


@dataclass(frozen=True)
class Briefing:
    reader_id: str
    generated_at: datetime
    since: datetime | None
    variant: str
    policy: BriefingPolicy
    greeting: str
    items: tuple[BriefingItem, ...]
    models: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["generated_at"] = self.generated_at.isoformat()
        data["since"] = self.since.isoformat() if self.since else None
        return data


class Composer:
    def __init__(
        self,
        recommender: Recommender,
        summarizer: Summarizer,
        *,
        policy: BriefingPolicy | None = None,
        variants: dict[str, Variant] | None = None,
    ) -> None:
        self.recommender = recommender
        self.summarizer = summarizer
        self.policy = policy or BriefingPolicy()
        self.variants = variants or VARIANTS
        self._cache: OrderedDict[tuple[Any, ...], Briefing] = OrderedDict()
        # An article version's own first sentence and its check: the same for every reader, and
        # the costly part of an uncached briefing without LLM text (a retrieval and an embedding).
        self._extractive: dict[tuple[str, str], tuple[SummarySentence, ...]] = {}

    def compose(
        self, reader_id: str, now: datetime, *, since: datetime | None = None, variant: str = "control"
    ) -> Briefing:
        arm = self._variant(variant)
        profile = self.recommender.profile(reader_id, now)
        since = since or profile.last_visit
        picked = self.recommender.recommend(reader_id, now, k=self.policy.items, since=since)
        versions = self.summarizer.retriever.index.get([i.article_id for i in picked])
        key = (
            reader_id,
            arm.name,
            since,
            tuple(
                (i.article_id, versions[i.article_id].content_hash)
                for i in picked
                if i.article_id in versions
            ),
        )
        if key not in self._cache:
            items = self._items(picked, versions, profile.history, arm)
            greeting = self._greeting(items, since, arm)
            models = tuple(sorted({i.model for i in items if i.model}))
            self._cache[key] = Briefing(reader_id, now, since, arm.name, self.policy, greeting, items, models)
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        self._cache.move_to_end(key)
        return self._cache[key]

    def invalidate(self, article_id: str) -> int:
        """Forget cached briefings citing this article (it was updated or retracted)."""
        stale = [k for k, b in self._cache.items() if any(i.article_id == article_id for i in b.items)]
        for k in stale:
            del self._cache[k]
        for version in [v for v in self._extractive if v[0] == article_id]:
            del self._extractive[version]
        return len(stale)

    def forget_reader(self, reader_id: str) -> None:
        """Drop a reader's cached briefings (erasure)."""
        for key in [k for k in self._cache if k[0] == reader_id]:
            del self._cache[key]

    def _variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise ValueError(f"unknown variant {name!r}; choose one of {sorted(self.variants)}")
        return self.variants[name]

    def _items(
        self,
        picked: Sequence[Item],
        versions: Mapping[str, ArticleRecord],
        history: Sequence[Any],
        arm: Variant,
    ) -> tuple[BriefingItem, ...]:
        reviewed = {i.article_id: self._reviewed(versions.get(i.article_id), arm) for i in picked}
        fresh = [i.article_id for i in picked if not i.update and reviewed[i.article_id] is None]
        drafts = (
            self.summarizer.summarize(fresh, prompt=arm.article_prompt) if self.policy.allow_drafts else []
        )
        by_article = {s.article_id: s for s in drafts}
        out = []
        for item in picked:
            if item.update and self.policy.allow_drafts:  # an update is unreviewed generated text
                read = [h.article.id for h in history if h.story_id == item.story_id]
                summary = self.summarizer.update(item.article_id, read, prompt=arm.update_prompt)
            else:
                summary = reviewed[item.article_id] or by_article.get(item.article_id)
            out.append(self._item(item, versions, summary))
        return tuple(out)

    def _reviewed(self, current: ArticleRecord | None, arm: Variant) -> Summary | None:
        """An editor-approved (or edited) summary of this article version, by the arm's prompt."""
        if current is None:
            return None
        prompt = self.summarizer.prompts.get(arm.article_prompt).id
        return next(
            (
                s
                for s in self.summarizer.store.find(current.article.id)
                if s.status in (Status.APPROVED, Status.EDITED)
                and s.prompt == prompt
                and s.content_hash == current.content_hash
            ),
            None,
        )

    def _item(
        self, item: Item, versions: Mapping[str, ArticleRecord], summary: Summary | None
    ) -> BriefingItem:
        if summary is None:  # nothing reviewed and drafts not allowed: the article's own words
            sentences = self._own_words(versions[item.article_id])
            source, summary_id, model = "extractive", None, None
        else:
            sentences, summary_id = summary.sentences, summary.id
            source = _source(summary)
            model = None if summary.extractive else summary.model
        return BriefingItem(
            item.story_id,
            item.article_id,
            item.title,
            item.url,
            item.section,
            item.update,
            item.reason,
            source,
            summary_id,
            model,
            sentences,
        )

    def _own_words(self, record: ArticleRecord) -> tuple[SummarySentence, ...]:
        version = (record.article.id, record.content_hash)
        if version not in self._extractive:
            chunks = self.summarizer.retriever.article(record.article.id, record.article.title)
            self._extractive[version] = tuple(self.summarizer.extractive(record.article, chunks))
        return self._extractive[version]

    def _greeting(self, items: Sequence[BriefingItem], since: datetime | None, arm: Variant) -> str:
        fallback = _plain_greeting(len(items), since)
        if not items or not self.policy.llm_greeting:
            return fallback
        template = self.summarizer.prompts.get(arm.greeting_prompt)
        topics = "; ".join(i.title for i in items)
        when = f"on {since:%A %d %B at %H:%M}" if since else "never before"
        try:
            answer = self.summarizer.generator.generate(
                [template.render(since=when, topics=topics)], template.params
            )
        except GenerationError:
            return fallback
        line = answer[0].text.strip().split("\n")[0].strip(' "')
        return line if _greeting_ok(line, items) else fallback


def _source(summary: Summary) -> str:
    if summary.extractive:
        return "extractive"
    if summary.kind == "update":
        return "update"
    return str(summary.status.value)


def _greeting_ok(line: str, items: Sequence[BriefingItem]) -> bool:
    """A greeting may be warm but not factual: every name, number and quote must be in a title.
    Only that rule applies (no support score: a greeting paraphrases nothing)."""
    if not line or len(line.split()) > 30 or not line.endswith((".", "!")):
        return False  # cut off, or more than a greeting
    return not missing_facts(line, " ".join(i.title for i in items))


def _plain_greeting(n: int, since: datetime | None) -> str:
    stories = f"{n} {'story' if n == 1 else 'stories'}"
    return (
        f"Since you were last here on {since:%A %d %B}: {stories} for you."
        if since
        else f"Welcome: {stories} to start with."
    )
