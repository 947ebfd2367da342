"""A composed briefing comes back from its JSON exactly (server.shared_redis caches the JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from briefing import Briefing, BriefingItem, BriefingPolicy, SummarySentence, briefing_from_json
from briefing.gate import BASE_WRITER, ShowRule, Writer
from recsys import Reason

OSLO = timezone(timedelta(hours=1))


def rich() -> Briefing:
    rules = (
        ("en", ShowRule(0.62, 0.1, frozenset({"article@1", "update@2"}), BASE_WRITER)),
        ("en", ShowRule(0.8, writer=Writer(BASE_WRITER.model, "ad-20261201120000-abc123"))),
        ("nb", ShowRule(0.7)),
    )
    sentences = (
        SummarySentence("Rates rose 0.25 points.", 0.8125, ("eco-1@ab#0", "eco-0@cd#2"), fluency=-1.5),
        SummarySentence("The bank said so.", 1.0, ("eco-1@ab#1",), extractive=True),
    )
    why = Reason("story", "economy", "", "eco-0", datetime(2026, 11, 18, 7, 30, 1, 5, tzinfo=UTC))
    update = BriefingItem(
        "s-1",
        "eco-1",
        "Rates up",
        "https://x/eco-1",
        "economy",
        True,
        "new in a story",
        "draft",
        "eco-1--abc",
        "smollm2",
        sentences,
        why,
    )
    plain = BriefingItem(
        "s-2",
        "spo-3",
        "Cup final",
        "https://x/spo-3",
        "sport",
        False,
        "popular",
        "extractive",
        None,
        None,
        (SummarySentence("A goal.", 0.5, ("spo-3@ef#0",), True),),
        Reason("popular"),
    )
    return Briefing(
        "reader-7",
        datetime(2026, 11, 19, 23, 0, 0, 123456, tzinfo=OSLO),
        datetime(2026, 11, 19, 8, tzinfo=OSLO),
        "one-sentence",
        BriefingPolicy("front-page", False, 4, False, rules),
        "Good evening.",
        (update, plain),
        ("smollm2",),
    )


def test_a_briefing_round_trips_through_json_text_exactly() -> None:
    original = rich()
    again = briefing_from_json(json.loads(json.dumps(original.to_json())))
    assert again == original
    assert again.since is not None and again.since.utcoffset() == timedelta(hours=1)  # the offset kept
    assert json.loads(json.dumps(again.to_json())) == json.loads(json.dumps(original.to_json()))


def test_a_known_json_gives_the_known_briefing() -> None:
    data = {
        "reader_id": "r1",
        "generated_at": "2026-11-19T22:00:00+00:00",
        "since": None,
        "variant": "control",
        "policy": {
            "name": "front-page",
            "allow_drafts": True,
            "items": 5,
            "llm_greeting": True,
            "show_rules": [
                {
                    "language": "en",
                    "threshold": 0.6,
                    "fluency_floor": None,
                    "templates": None,
                    "writer": {"model": "m", "adapter": None},
                }
            ],
            "draft_languages": ["en"],
        },
        "greeting": "Hello.",
        "items": [
            {
                "story_id": "s",
                "article_id": "a",
                "title": "T",
                "url": "u",
                "section": "news",
                "update": False,
                "reason": "why",
                "source": "approved",
                "summary_id": "a--1",
                "model": "m",
                "sentences": [
                    {
                        "text": "One.",
                        "score": 0.9,
                        "citations": ["a@h#0"],
                        "extractive": False,
                        "missing": [],
                        "fluency": None,
                    }
                ],
                "why": None,
            }
        ],
        "models": ["m"],
    }
    expected = Briefing(
        "r1",
        datetime(2026, 11, 19, 22, tzinfo=UTC),
        None,
        "control",
        BriefingPolicy("front-page", True, 5, True, (("en", ShowRule(0.6, writer=Writer("m"))),)),
        "Hello.",
        (
            BriefingItem(
                "s",
                "a",
                "T",
                "u",
                "news",
                False,
                "why",
                "approved",
                "a--1",
                "m",
                (SummarySentence("One.", 0.9, ("a@h#0",)),),
            ),
        ),
        ("m",),
    )
    assert briefing_from_json(data) == expected


def test_a_briefing_cached_before_rules_named_their_writer_is_not_decoded() -> None:
    """Its policy may have shown an adapter's drafts that no gate measured: the shared cache
    treats the ValueError as a miss and the briefing is composed again under today's gate."""
    data = json.loads(json.dumps(rich().to_json()))
    data["policy"]["show_rules"] = {"en": {"threshold": 0.6, "fluency_floor": None, "templates": None}}
    with pytest.raises(ValueError, match="name their writer"):
        briefing_from_json(data)
