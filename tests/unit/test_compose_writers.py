"""Composition under a show gate measured per writer (issue 18; DESIGN §5): a draft reaches a
reader unreviewed only when the gate measured its own writer, model and adapter. Stored texts
only: composing never runs the LLM, so none is loaded here (the generator only names its model)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from briefing import BriefingPolicy, Composer, Status, Summary, SummarySentence, Variant
from briefing.gate import BASE_WRITER, Writer, show_rules
from briefing.summaries import InMemorySummaryStore
from briefing.summarize import Request, Summarizer, SummarizerConfig
from indexing import ArticleRecord
from recsys import Item
from tests.factories import make_article

ADAPTER = "ad-20261201120000-abc123"
AT = datetime(2026, 11, 19, 8, tzinfo=UTC)
PASSING = {"precision": 0.97, "shown": 120, "rule": {"threshold": 0.9}}
GOOD = (SummarySentence("The ferry was cancelled on Monday.", 0.97, ("a-1@h#0",), fluency=-2.0),)


class Named:
    """The generator as composing sees it: a model name (no text is generated here)."""

    model = BASE_WRITER.model


def gate(tmp_path: Path, *writers: Writer) -> BriefingPolicy:
    """The policy the service builds from a gate measured, English passing, for `writers`."""
    entries = [{"model": w.model, "adapter": w.adapter, "languages": {"en": PASSING}} for w in writers]
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"checker": "embedding-lexical", "threshold": 0.6, "writers": entries}))
    return BriefingPolicy(show_rules=show_rules(path, "embedding-lexical", 0.6))


def record(article_id: str = "a-1", hours: int = 0) -> ArticleRecord:
    article = make_article(article_id, published_at=hours)
    return ArticleRecord(article, f"hash-{article_id}", "s-1", 1, np.zeros(3, dtype=np.float32))


def composer(policy: BriefingPolicy) -> Composer:
    """A promoted adapter writes new drafts (`SummarizerConfig.adapter`), as after a promotion."""
    summarizer = Summarizer(
        cast(Any, Named()),
        cast(Any, None),
        cast(Any, None),
        InMemorySummaryStore(),
        config=SummarizerConfig(adapter=ADAPTER),
    )
    return Composer(cast(Any, None), summarizer, policy=policy)


def draft(c: Composer, current: ArticleRecord, adapter: str | None, minutes: int = 0) -> Summary:
    """A stored, passing draft of the article written by the base model or `adapter` (local
    backends name an adapter's output "model+adapter")."""
    prompt = c.summarizer.article_template("article", current).id
    model = BASE_WRITER.model if adapter is None else f"{BASE_WRITER.model}+{adapter}"
    summary = Summary(
        f"{current.article.id}--{adapter}",
        "article",
        current.article.id,
        current.content_hash,
        prompt,
        model,
        adapter,
        GOOD,
        (),
        AT + timedelta(minutes=minutes),
        1.0,
    )
    return c.summarizer.store.put(summary)


def shown(c: Composer, current: ArticleRecord, arm: Variant | None = None) -> Summary | None:
    item = Item("s-1", current.article.id, "T", "local", "u", 1.0, "why", False)
    return c._text(item, current, {}, arm or Variant("control"))


def test_an_unmeasured_adapters_draft_waits_while_the_base_models_shows(tmp_path: Path) -> None:
    """After a promotion the adapter's newer draft is not shown (no labels measured it); the base
    model's draft of the same article, kept with its version, still shows under its gate."""
    c = composer(gate(tmp_path, BASE_WRITER))
    current = record()
    base = draft(c, current, None)
    draft(c, current, ADAPTER, minutes=5)
    assert shown(c, current) == base
    # an arm that asks for the adapter's own text gets the article's own words instead
    assert shown(c, current, Variant("tuned", adapter=ADAPTER)) is None


def test_a_gate_measured_for_the_adapter_shows_its_newer_draft(tmp_path: Path) -> None:
    c = composer(gate(tmp_path, BASE_WRITER, Writer(BASE_WRITER.model, ADAPTER)))
    current = record()
    draft(c, current, None)
    tuned = draft(c, current, ADAPTER, minutes=5)
    assert shown(c, current) == tuned


def test_with_only_the_adapters_draft_the_reader_gets_the_articles_words_or_reviewed_text(
    tmp_path: Path,
) -> None:
    c = composer(gate(tmp_path, BASE_WRITER))
    current = record()
    tuned = draft(c, current, ADAPTER)
    assert shown(c, current) is None  # the article's own words
    approved = c.summarizer.store.decide(tuned.with_status(Status.APPROVED, "editor", AT), tuned.version)
    assert approved is not None and shown(c, current) == approved  # an editor vouched for it


def test_an_old_gate_file_shows_the_base_models_drafts_only(tmp_path: Path) -> None:
    path = tmp_path / "gate.json"
    path.write_text(
        json.dumps({"checker": "embedding-lexical", "threshold": 0.6, "languages": {"en": PASSING}})
    )
    policy = BriefingPolicy(show_rules=show_rules(path, "embedding-lexical", 0.6))
    c = composer(policy)
    current = record()
    base = draft(c, current, None)
    tuned = draft(c, current, ADAPTER, minutes=5)
    assert shown(c, current) == base
    assert policy.summary_shows(base, "en") and not policy.summary_shows(tuned, "en")


@pytest.mark.parametrize(
    ("measured", "expected"),
    [((BASE_WRITER,), "base"), ((BASE_WRITER, Writer(BASE_WRITER.model, ADAPTER)), "tuned"), ((), None)],
)
def test_a_story_update_by_an_unmeasured_adapter_yields_to_the_base_models(
    tmp_path: Path, measured: tuple[Writer, ...], expected: str | None
) -> None:
    c = composer(gate(tmp_path, *measured))
    old, new = record("a-0"), record("a-1", hours=24)
    request = Request(new, [], c.summarizer.prompts.localized("update", "en"), basis=(old,))
    updates = {}
    for name, adapter in (("base", None), ("tuned", ADAPTER)):
        model = BASE_WRITER.model if adapter is None else f"{BASE_WRITER.model}+{adapter}"
        summary_id = c.summarizer.summary_id(request, adapter)
        summary = Summary(
            summary_id,
            "update",
            "a-1",
            new.content_hash,
            request.template.id,
            model,
            adapter,
            GOOD,
            (),
            AT,
            1.0,
        )
        updates[name] = c.summarizer.store.put(replace(summary, basis=("a-0",)))
    found = c._update(request, "en", Variant("control"))
    assert found == (updates[expected] if expected else None)
    # an arm naming the adapter never falls back to another writer's text
    tuned_arm = c._update(request, "en", Variant("tuned", adapter=ADAPTER))
    assert tuned_arm == (updates["tuned"] if expected == "tuned" else None)


def test_an_arm_naming_an_adapter_set_shows_the_base_models_text_where_the_set_has_no_part(
    tmp_path: Path,
) -> None:
    """A set with an English part only: its arm's jobs draft Bokmål articles with the base model
    (adapter None), so the arm shows that draft, not the article's own words; in English it
    shows only the part's text."""
    entry = {"model": BASE_WRITER.model, "adapter": None, "languages": {"en": PASSING, "nb": PASSING}}
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"checker": "embedding-lexical", "threshold": 0.6, "writers": [entry]}))
    c = composer(BriefingPolicy(show_rules=show_rules(path, "embedding-lexical", 0.6)))
    c.summarizer.add_parts(ADAPTER, ["en"])
    arm = Variant("tuned", adapter=ADAPTER)
    english = record("a-1")
    draft(c, english, None)
    assert shown(c, english, arm) is None  # the base model's English draft is not the set's
    article = make_article("a-2", published_at=0, language="nb")
    norwegian = ArticleRecord(article, "hash-a-2", "s-1", 1, np.zeros(3, dtype=np.float32))
    base = draft(c, norwegian, None)
    assert shown(c, norwegian, arm) == base
