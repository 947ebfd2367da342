"""A composed briefing back from its JSON (`Briefing.to_json`), exactly: a cache shared by several
API workers (server.shared_redis) stores the JSON, and the worker that reads it needs the
`Briefing` again (to record what was shown and the experiment exposures)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from briefing.compose import Briefing, BriefingItem, BriefingPolicy
from briefing.gate import ShowRule, Writer
from briefing.summaries import SummarySentence
from recsys import Reason


def briefing_from_json(data: dict[str, Any]) -> Briefing:
    """The inverse of `Briefing.to_json` (its derived `policy.draft_languages` is ignored)."""
    return Briefing(
        reader_id=data["reader_id"],
        generated_at=datetime.fromisoformat(data["generated_at"]),
        since=_time(data["since"]),
        variant=data["variant"],
        policy=_policy(data["policy"]),
        greeting=data["greeting"],
        items=tuple(_item(i) for i in data["items"]),
        models=tuple(data["models"]),
    )


def _policy(data: dict[str, Any]) -> BriefingPolicy:
    rules = data["show_rules"]
    if not isinstance(rules, list):
        # JSON from before rules named their writer: a briefing composed then may show an
        # adapter's drafts no gate measured, so it is not decoded (a cache miss recomposes it)
        raise ValueError("a briefing's show_rules must be a list of rules that name their writer")
    return BriefingPolicy(
        name=data["name"],
        allow_drafts=data["allow_drafts"],
        items=data["items"],
        llm_greeting=data["llm_greeting"],
        show_rules=tuple((rule["language"], _rule(rule)) for rule in rules),
    )


def _rule(data: dict[str, Any]) -> ShowRule:
    templates, writer = data["templates"], data["writer"]
    return ShowRule(
        threshold=data["threshold"],
        fluency_floor=data["fluency_floor"],
        templates=None if templates is None else frozenset(templates),
        writer=None if writer is None else Writer(writer["model"], writer["adapter"]),
    )


def _item(data: dict[str, Any]) -> BriefingItem:
    why = data["why"]
    return BriefingItem(
        **{
            **data,
            "sentences": tuple(_sentence(s) for s in data["sentences"]),
            "why": None if why is None else Reason(**{**why, "read_at": _time(why["read_at"])}),
        }
    )


def _sentence(data: dict[str, Any]) -> SummarySentence:
    return SummarySentence(
        text=data["text"],
        score=data["score"],
        citations=tuple(data["citations"]),
        extractive=data["extractive"],
        missing=tuple(data["missing"]),
        fluency=data["fluency"],
    )


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
