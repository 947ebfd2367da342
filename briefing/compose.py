"""The personalized briefing: reader → recommender → one grounded item per chosen story.

For each story the recommender picks, the item text is
- a story update, when the reader already read earlier articles of that story: everything since
  their last read of it (evidence: every article of the story published or updated in place since
  then, newest first in the prompt; the read ones are named), with the corrections owed to them
  quoted first and no superseded number stated as current (briefing/developments.py). Until one
  is written, an update that covers more than one article or owes a correction shows one lead
  sentence per development, newest first; a single development, that article's summary;
- otherwise the article's summary: an approved or edited one if an editor reviewed it, else a
  checked draft when the policy allows drafts by its writer (model and adapter: briefing.gate),
  newest first, else the article's own first sentence.
Rejected and retracted texts are never used, whatever the policy. A one-line greeting opens the
briefing; it must state no fact absent from the item titles.

Composing a reader's request (`compose`) never runs the LLM: it uses the texts jobs have already
written and stored, so a briefing costs one recommendation, one index lookup and a few reads.
Jobs and the CLI call `compose(..., write=True)`, which first writes the missing drafts and story
updates (and lets the LLM write the greeting). The service keeps the only cache of composed
briefings; here only an article version's own first sentence is cached (the same for everyone),
and the summarizer caches quoted updates per basis.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from briefing.facts import WordForms
from briefing.gate import ShowRule, Writer
from briefing.grounding import missing_facts
from briefing.llm import GenerationError
from briefing.summaries import REVIEWED, Status, Summary, SummarySentence
from briefing.summarize import Followed, Request, Summarizer
from briefing.wording import Audience, in_language, last_seen, plain_greeting, reason_text
from indexing import CALENDAR_WORDS, STOPWORDS, ArticleRecord
from recsys import CandidateMatrix, Item, Profile, Reason, Recommender

_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class Variant:
    """An experiment arm: which prompts, adapter and backend write the text, and how many items a
    briefing has (None: the policy's). The composer reads prompts, items and the adapter (an arm
    naming one shows only that adapter's text, and jobs write its drafts with it); `backend` is
    recorded but not yet used by the drafting jobs."""

    name: str
    article_prompt: str = "article"
    update_prompt: str = "update"
    greeting_prompt: str = "greeting"
    adapter: str | None = None
    backend: str | None = None
    items: int | None = None
    policy: str = "gated"  # one of ARM_POLICIES: which unreviewed drafts this arm's readers may see


# An arm's policy: "gated", the surface's policy (checked drafts where the measured show gate
# passes); "reviewed-only", only editor-reviewed text, else the article's own words.
ARM_POLICIES = ("gated", "reviewed-only")


VARIANTS = {
    v.name: v for v in (Variant("control"), Variant("one-sentence", article_prompt="article-one-sentence"))
}


@dataclass(frozen=True)
class BriefingPolicy:
    """Per surface: whether checked but unreviewed drafts may reach readers. By DESIGN §5 they
    may only in the languages whose checker precision was measured to pass (`show_rules`, from
    briefing.gate) for the draft's own writer (model and adapter), and only drafts whose every
    generated sentence passes that language's rule, unless `allow_drafts` forces them everywhere
    (a demo of generation)."""

    name: str = "front-page"
    allow_drafts: bool = False
    items: int = 5
    llm_greeting: bool = True  # off: a template greeting, and no LLM call on a cache miss
    # (language, rule), a language once per writer measured in it: a tuple keeps it hashable
    show_rules: tuple[tuple[str, ShowRule], ...] = ()

    @property
    def draft_languages(self) -> frozenset[str]:
        return frozenset(language for language, _ in self.show_rules)

    def drafts_show(self, language: str) -> bool:
        return self.allow_drafts or language in self.draft_languages

    def rule(self, language: str, writer: Writer | None = None) -> ShowRule | None:
        """The measured rule for unreviewed drafts by `writer` in `language`; None where none
        passed. Without a writer (pages describing the policy): the rule with the lowest
        threshold, so what is said of it holds for every writer's drafts."""
        rules = [r for lang, r in self.show_rules if lang == language]
        if writer is not None:
            return next((r for r in rules if r.measured_for(writer)), None)
        return min(rules, key=lambda r: r.threshold, default=None)

    def draft_shows(
        self,
        sentences: Sequence[SummarySentence],
        language: str,
        prompt: str | None = None,
        writer: Writer | None = None,
    ) -> bool:
        """Whether a draft with these sentences, written by the `prompt` template and `writer`
        (`Writer.of_summary`; None: unknown, so only a rule made for any writer applies), may
        reach a reader of this language."""
        if self.allow_drafts:
            return True
        rules = (r for lang, r in self.show_rules if lang == language and r.measured_for(writer))
        rule = next(rules, None)
        return rule is not None and rule.allows(prompt) and rule.shows_all(sentences)

    def summary_shows(self, summary: Summary, language: str) -> bool:
        """`draft_shows` for a stored draft: its sentences, template and writer."""
        return self.draft_shows(summary.sentences, language, summary.prompt, Writer.of_summary(summary))

    @property
    def any_drafts(self) -> bool:
        return self.allow_drafts or bool(self.draft_languages)


@dataclass(frozen=True)
class BriefingItem:
    story_id: str
    article_id: str
    title: str
    url: str
    section: str
    update: bool
    reason: str  # `why` in the reader's language ("Why you see this")
    source: str  # "approved", "edited", "draft" or "extractive" (an update is flagged by `update`)
    summary_id: str | None
    model: str | None  # the model that wrote the text; None when copied from the article
    sentences: tuple[SummarySentence, ...]
    why: Reason | None = None  # the reason as data (recsys.Reason)

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
        data["policy"]["draft_languages"] = sorted(self.policy.draft_languages)
        data["policy"]["show_rules"] = [_rule_json(lang, rule) for lang, rule in self.policy.show_rules]
        for item in data["items"]:
            if item["why"] and item["why"]["read_at"]:
                item["why"]["read_at"] = item["why"]["read_at"].isoformat()
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
        # An article version's own first sentence and its citation: the same for every reader
        # (a retrieval, and an embedding when the sentence is not found word for word in a chunk).
        self._extractive: dict[tuple[str, str], tuple[SummarySentence, ...]] = {}

    def compose(
        self,
        reader_id: str,
        now: datetime,
        *,
        since: datetime | None = None,
        variant: str | Variant = "control",
        write: bool = False,
        audience: Audience | None = None,
    ) -> Briefing:
        """The reader's briefing from stored texts; with `write`, missing texts are generated first.
        Greeting and reasons are in the `audience`'s language and time zone (default: English, UTC).
        `variant` is a registered variant's name or an experiment arm's own `Variant`."""
        audience = audience or Audience()
        arm = variant if isinstance(variant, Variant) else self._variant(variant)
        profile = self.recommender.profile(reader_id, now)
        since = since or profile.last_visit
        k = arm.items or self.policy.items
        picked = self.recommender.recommend(reader_id, now, k=k, since=since, profile=profile)
        versions = self.summarizer.retriever.index.get([i.article_id for i in picked])
        picked = [i for i in picked if i.article_id in versions]  # retracted since the matrix was built
        reads = {i.article_id: _read(i, profile, self.recommender.matrix, now) for i in picked}
        if write and self.policy.any_drafts:
            self._write_missing(picked, reads, arm)
        texts = [self._text(i, versions[i.article_id], reads, arm) for i in picked]
        items = tuple(
            self._item(i, versions, text, audience, reads[i.article_id])
            for i, text in zip(picked, texts, strict=True)
        )
        greeting = self._greeting(items, since, arm, audience, llm=write)
        models = tuple(sorted({i.model for i in items if i.model}))
        return Briefing(reader_id, now, since, arm.name, self.policy, greeting, items, models)

    def invalidate(self, article_id: str) -> None:
        """Forget the cached own words of an article (it was updated or retracted)."""
        for version in [v for v in self._extractive if v[0] == article_id]:
            self._extractive.pop(version, None)

    def _variant(self, name: str) -> Variant:
        if name not in self.variants:
            raise ValueError(f"unknown variant {name!r}; choose one of {sorted(self.variants)}")
        return self.variants[name]

    def _write_missing(self, picked: Sequence[Item], reads: Mapping[str, Followed], arm: Variant) -> None:
        """Drafts for picked articles that have none, and the story updates (jobs and CLI only)."""
        fresh = [i.article_id for i in picked if not i.update]
        adapter = arm.adapter or ...  # an arm's own adapter, else the one drafts use
        self.summarizer.summarize(fresh, prompt=arm.article_prompt, adapter=adapter)
        for item in picked:
            if item.update:
                read = reads[item.article_id]
                self.summarizer.update(item.article_id, read, prompt=arm.update_prompt, adapter=adapter)

    def _text(
        self, item: Item, current: ArticleRecord, reads: Mapping[str, Followed], arm: Variant
    ) -> Summary | None:
        """The text to show for an item, or None for the article's own words. An update item
        shows its stored update; else, when it covers more than one development or owes the
        reader a correction, the articles' own words (one article's summary would leave out
        the rest); else the newest article's summary."""
        if item.update:
            request = self.summarizer.update_request(
                item.article_id, reads[item.article_id], arm.update_prompt
            )
            update = self._update(request, current.article.language, arm) if request else None
            if update is not None:
                return update
            if request is not None and (len(request.developments) > 1 or request.notes):
                return None
        prompt = self.summarizer.article_template(arm.article_prompt, current).id
        # an arm naming an adapter set shows what wrote its drafts in this language: the set's
        # part, or the base model where the set has none (Summarizer.writer)
        writer = self.summarizer.writer(current.article.language, arm.adapter)
        # newest first: after an adapter is promoted, its drafts replace the old adapter's
        mine = sorted(
            (
                s
                for s in self.summarizer.store.find(current.article.id)
                if s.kind == "article"
                and s.prompt == prompt
                and s.content_hash == current.content_hash
                and (arm.adapter is None or s.adapter == writer)  # an arm's adapter: its own text
            ),
            key=lambda s: s.created_at,
            reverse=True,
        )
        reviewed = [s for s in mine if s.status in REVIEWED]
        language = current.article.language
        return next(iter(reviewed), None) or next((s for s in mine if self._shows(s, language, arm)), None)

    def _update(self, request: Request, language: str, arm: Variant) -> Summary | None:
        """The stored update for `request` this policy lets the reader see: the one written with
        the arm's adapter (else the one drafts use); for an arm naming no adapter, else the base
        model's, kept from before an adapter was promoted (an adapter without measured precision
        does not hide the base model's text that has it)."""
        summarizer = self.summarizer
        ids = dict.fromkeys(
            [summarizer.summary_id(request, arm.adapter or ...)]
            + ([summarizer.summary_id(request, None)] if arm.adapter is None else [])
        )
        found = (summarizer.store.get(i) for i in ids)
        return next((s for s in found if s is not None and self._shows(s, language, arm)), None)

    def _shows(self, summary: Summary, language: str, arm: Variant) -> bool:
        """Whether this policy lets a reader see the summary: reviewed, or a draft its writer
        (model and adapter) may show unreviewed in its language (never under an arm's
        "reviewed-only" policy); rejected and retracted text never."""
        draft = (
            arm.policy == "gated"
            and summary.status is Status.DRAFT
            and self.policy.summary_shows(summary, language)
        )
        return summary.status in REVIEWED or draft

    def _item(
        self,
        item: Item,
        versions: Mapping[str, ArticleRecord],
        summary: Summary | None,
        audience: Audience,
        followed: Followed | None = None,
    ) -> BriefingItem:
        if summary is None:  # no text this policy may show: the article's own words
            sentences = self._own_words(item, versions[item.article_id], followed)
            source, summary_id, model = "extractive", None, None
        else:
            sentences, summary_id = summary.sentences, summary.id
            source = _source(summary)
            model = None if summary.extractive else written_by(summary)
        return BriefingItem(
            item.story_id,
            item.article_id,
            item.title,
            item.url,
            item.section,
            item.update,
            reason_text(item.why, audience),
            source,
            summary_id,
            model,
            sentences,
            item.why,
        )

    def _own_words(
        self, item: Item, record: ArticleRecord, followed: Followed | None = None
    ) -> tuple[SummarySentence, ...]:
        """The article's first sentence; for a story update, one per development and the
        corrections owed (`Summarizer.quoted_update`, cached there per basis)."""
        if item.update and followed is not None:
            request = self.summarizer.update_request(item.article_id, followed)
            if request is not None:
                return self.summarizer.quoted_update(request)
        version = (record.article.id, record.content_hash)
        if version not in self._extractive:
            chunks = self.summarizer.retriever.article(record.article.id, record.article.title)
            self._extractive[version] = tuple(self.summarizer.extractive(record.article, chunks))
        return self._extractive[version]

    def _greeting(
        self,
        items: Sequence[BriefingItem],
        since: datetime | None,
        arm: Variant,
        audience: Audience,
        *,
        llm: bool,
    ) -> str:
        """The LLM's greeting in the reader's language (its prompt is that language's), or the
        catalogue's template greeting when there is no LLM call or its line fails a check."""
        fallback = _plain_greeting(len(items), since, audience)
        if not items or not llm or not self.policy.llm_greeting:
            return fallback
        template = self.summarizer.prompts.localized(arm.greeting_prompt, audience.language)
        topics = "; ".join(i.title for i in items)
        chat = template.render(since=last_seen(since, audience), topics=topics)
        try:
            answer = self.summarizer.generator.generate([chat], template.params)
        except GenerationError:
            return fallback
        line = answer[0].text.strip().split("\n")[0].strip(' "')
        prompt = " ".join(m["content"] for m in chat)
        return line if _greeting_ok(line, items, audience.language, prompt) else fallback


def _rule_json(language: str, rule: ShowRule) -> dict[str, Any]:
    templates = None if rule.templates is None else sorted(rule.templates)
    writer = None if rule.writer is None else rule.writer.to_json()
    return {
        "language": language,
        "threshold": rule.threshold,
        "fluency_floor": rule.fluency_floor,
        "templates": templates,
        "writer": writer,
    }


def _source(summary: Summary) -> str:
    """How the reader's page labels the text: reviewed (approved, edited), a draft, or quoted."""
    return "extractive" if summary.extractive else str(summary.status.value)


def _read(item: Item, profile: Profile, matrix: CandidateMatrix, now: datetime) -> Followed:
    """Where the reader stands in this item's story: what they read of it, when they last read
    it, and the story's articles in the recommender's window (so no index scan is needed)."""
    if not item.update:
        return Followed(())
    read = tuple(h.article.id for h in profile.history if h.story_id == item.story_id)
    at = profile.story_read_at.get(item.story_id)
    read_at = datetime.fromtimestamp(at, UTC) if at is not None else None
    return Followed(read, read_at, now, _story_articles(matrix, item.story_id))


def _story_articles(matrix: CandidateMatrix, story_id: str) -> tuple[str, ...]:
    code = matrix.stories.code.get(story_id)
    return () if code is None else tuple(matrix.ids[r] for r in np.flatnonzero(matrix.story == code))


def _greeting_ok(line: str, items: Sequence[BriefingItem], language: str = "en", prompt: str = "") -> bool:
    """A greeting may be warm but must say something true about this briefing: it names at
    least one word of the items' titles or shown text that is not generic ("The latest news
    from the latest news briefing" names nothing), states no name, number or quote absent from
    them (no support score: a greeting paraphrases nothing), and does not repeat itself. It
    must also be in the reader's language (a small model asked in Bokmål may well answer in
    English) and not repeat its `prompt` (the packaged 135M model often answers with its
    instructions)."""
    if not line or len(line.split()) > 30 or not line.endswith((".", "!")):
        return False  # cut off, or more than a greeting
    if not in_language(line, language) or _shingles(line) & _shingles(prompt):
        return False
    shown = " ".join(f"{i.title} {' '.join(s.text for s in i.sentences)}" for i in items)
    return _names_an_item(line, shown) and not _repeats(line) and not missing_facts(line, shown)


# Words any greeting may use whatever the news: naming them says nothing about the reader's
# items, even where a title happens to contain one ("Latest figures ...", "Siste nytt ...").
_GENERIC = (
    STOPWORDS
    | CALENDAR_WORDS
    | frozenset(
        """news newsletter briefing briefings latest today todays tonight update updates updated
        story stories headline headlines day days week weekend morning afternoon evening night
        welcome back hello hi dear reader readers here there time last since visit catch happening
        happened going whats what's everything things thing top big great good best quick look few
        stay informed enjoy read reading hope wonderful exciting interesting important recent
        recently fresh brief summary summaries personal around world local business culture
        politics sport sports lot lots much many just now
        nyheter nyhetene nyhet nytt nye ny siste sist dag dagen dagens idag kveld morgen uke uken
        helg oppdatering oppdateringer oppdatert sak saker saken sakene oversikt oversikten
        nyhetsoversikt nyhetsoversikten velkommen tilbake hei god godt gode der leser tid skjedd
        skjer besøk lese les kort viktig viktige spennende fin fint håper alt litt mye noe mer deg
        din ditt dine du gang verden lokalt kultur politikk næringsliv utenriks""".split()
    )
)
_FORMS = WordForms(("english", "norwegian"))  # "ferries" names "ferry", "ferja" "ferje"


def _names_an_item(line: str, shown: str) -> bool:
    """Whether `line` has a word (or a form of one) of the items' `shown` text that is not generic."""
    named = {w for w in _WORDS.findall(line.lower()) if len(w) > 2 and w not in _GENERIC and not w.isdigit()}
    return bool(_FORMS.of(named) & _FORMS.of(set(_WORDS.findall(shown.lower()))))


def _repeats(line: str) -> bool:
    """Whether a word other than a stop word comes back in `line` (in any form)."""
    words = [_FORMS(w) for w in _WORDS.findall(line.lower()) if len(w) > 2 and w not in STOPWORDS]
    return any(forms & later for n, forms in enumerate(words) for later in words[n + 1 :])


def _shingles(text: str, n: int = 4) -> set[tuple[str, ...]]:
    """Every run of `n` words of `text`, lowercased: two texts sharing one share a phrase."""
    words = _WORDS.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _plain_greeting(n: int, since: datetime | None, audience: Audience) -> str:
    return plain_greeting(n, since, audience)


def written_by(summary: Summary) -> str:
    """The model and adapter that wrote a summary, as readers and editors see it ("model+adapter")."""
    if summary.adapter is None or summary.model.endswith(f"+{summary.adapter}"):
        return summary.model
    return f"{summary.model}+{summary.adapter}"
