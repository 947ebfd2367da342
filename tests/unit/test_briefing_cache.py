"""A retraction drops every cached briefing that shows or cites the article: a story update's
sentences cite the story's earlier articles, which are not the item's own article."""

from __future__ import annotations

from datetime import UTC, datetime

from briefing import Briefing, BriefingItem, BriefingPolicy, SummarySentence
from server.service import BriefingCache, shows_or_cites

NOW = datetime(2026, 11, 19, 22, tzinfo=UTC)


def item(article_id: str, *cited: str) -> BriefingItem:
    sentences = tuple(SummarySentence(f"From {a}.", 0.9, (f"{a}@h#0",)) for a in cited)
    return BriefingItem(
        "story-1",
        article_id,
        "Title",
        "https://example.org/a",
        "news",
        bool(cited),
        "why",
        "draft",
        None,
        None,
        sentences,
    )


def briefing(reader: str, *items: BriefingItem) -> Briefing:
    return Briefing(reader, NOW, None, "control", BriefingPolicy(), "Hello.", items)


def test_an_update_citing_an_earlier_article_is_dropped_with_it() -> None:
    cache = BriefingCache()
    cache.put(("r1",), briefing("r1", item("pol-0011", "pol-0006", "pol-0011")), cache.epoch())
    cache.put(("r2",), briefing("r2", item("pol-0011")), cache.epoch())
    cache.put(("r3",), briefing("r3", item("spo-0001", "spo-0001")), cache.epoch())
    dropped = cache.drop(lambda b: not any(shows_or_cites(i, "pol-0006") for i in b.items))
    assert dropped == 1 and cache.get(("r1",)) is None
    assert cache.get(("r2",)) is not None and cache.get(("r3",)) is not None
    assert cache.drop(lambda b: not any(shows_or_cites(i, "pol-0011") for i in b.items)) == 1  # r2
