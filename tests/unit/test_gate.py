"""The show gate (DESIGN §5): drafts show only in languages whose checker precision, measured on
the labelled sentences for this checker at this threshold, reaches the target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from briefing import BriefingPolicy
from briefing.gate import MIN_SHOWN, TARGET_PRECISION, ShowRule, draft_languages, show_rules
from briefing.summaries import SummarySentence


def gate(tmp_path: Path, **changes: Any) -> Path:
    data = {
        "checker": "embedding-lexical",
        "threshold": 0.6,
        "languages": {
            "en": {
                "precision": 0.97,
                "precision_ci_low": 0.91,
                "shown": 120,
                "rule": {"threshold": 0.9, "fluency_floor": -4.5},
            },
            "nb": {"precision": 0.71, "precision_ci_low": 0.6, "shown": 80},
        },
        **changes,
    }
    path = tmp_path / "gate.json"
    path.write_text(json.dumps(data))
    return path


def test_only_languages_that_pass_show_drafts(tmp_path: Path) -> None:
    assert draft_languages(gate(tmp_path), "embedding-lexical", 0.6) == {"en"}


@pytest.mark.parametrize(("checker", "threshold"), [("relation", 0.6), ("embedding-lexical", 0.5)])
def test_a_gate_measured_for_another_checker_or_threshold_passes_nothing(
    tmp_path: Path, checker: str, threshold: float
) -> None:
    assert draft_languages(gate(tmp_path), checker, threshold) == frozenset()


def test_too_few_shown_sentences_measure_nothing(tmp_path: Path) -> None:
    languages = {
        "en": {"precision": 1.0, "shown": MIN_SHOWN - 1},
        "nb": {"precision": TARGET_PRECISION, "shown": MIN_SHOWN},
    }
    assert draft_languages(gate(tmp_path, languages=languages), "embedding-lexical", 0.6) == {"nb"}


@pytest.mark.parametrize("content", [None, "not json", '{"checker": "embedding-lexical"}'])
def test_no_gate_or_a_broken_one_passes_nothing(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "gate.json"
    if content is not None:
        path.write_text(content)
    assert draft_languages(path, "embedding-lexical", 0.6) == frozenset()


def test_the_shipped_policy_shows_no_draft_without_a_passing_gate() -> None:
    policy = BriefingPolicy()
    assert not policy.allow_drafts and not policy.any_drafts
    assert not policy.drafts_show("en") and not policy.drafts_show("nb")
    gated = BriefingPolicy(show_rules=(("en", ShowRule(0.6)),))
    assert gated.drafts_show("en") and not gated.drafts_show("nb") and gated.any_drafts
    assert BriefingPolicy(allow_drafts=True).drafts_show("nb")


def test_the_committed_gate_is_what_the_service_reads() -> None:
    """The service runs the embedding-lexical checker at 0.6 by default: whatever the committed
    gate says for it is what readers get, and a language passes only on measured figures."""
    from server.settings import Settings

    settings = Settings.from_env({})
    languages = draft_languages(settings.show_gate, "embedding-lexical", settings.grounding.threshold)
    if settings.show_gate.exists():
        figures = json.loads(settings.show_gate.read_text())["languages"]
        assert languages == {
            lang
            for lang, f in figures.items()
            if f["precision"] is not None and f["precision"] >= TARGET_PRECISION and f["shown"] >= MIN_SHOWN
        }
    else:
        assert languages == frozenset()


def test_a_briefing_under_a_gated_policy_is_plain_json() -> None:
    """The API caches and sends `Briefing.to_json()`: the policy's languages must serialize."""
    from datetime import UTC, datetime

    from briefing import Briefing

    policy = BriefingPolicy(show_rules=(("en", ShowRule(0.9, -4.5)), ("nb", ShowRule(0.8))))
    briefing = Briefing("r1", datetime(2026, 11, 19, tzinfo=UTC), None, "control", policy, "Hello.", ())
    data = json.loads(json.dumps(briefing.to_json()))
    assert data["policy"]["draft_languages"] == ["en", "nb"] and data["policy"]["allow_drafts"] is False
    assert data["policy"]["show_rules"]["en"] == {"threshold": 0.9, "fluency_floor": -4.5, "templates": None}
    gated = BriefingPolicy(show_rules=(("en", ShowRule(0.9, templates=frozenset({"article@1"}))),))
    briefing = Briefing("r1", datetime(2026, 11, 19, tzinfo=UTC), None, "control", gated, "Hello.", ())
    assert json.loads(json.dumps(briefing.to_json()))["policy"]["show_rules"]["en"]["templates"] == [
        "article@1"
    ]


def test_a_language_passes_with_the_rule_it_was_measured_under(tmp_path: Path) -> None:
    assert show_rules(gate(tmp_path), "embedding-lexical", 0.6) == {"en": ShowRule(0.9, -4.5)}


def _sentence(score: float, fluency: float | None, missing: tuple[str, ...] = ()) -> SummarySentence:
    return SummarySentence("s.", score, ("a@h#0",), missing=missing, fluency=fluency)


@pytest.mark.parametrize(
    ("sentence", "shows"),
    [
        (_sentence(0.95, -3.0), True),
        (_sentence(0.85, -3.0), False),  # under the language's threshold, over the checker's
        (_sentence(0.95, -6.0), False),  # improbable on its own: garbled text
        (_sentence(0.95, None), False),  # fluency never measured: the floor cannot be vouched for
        (_sentence(0.99, -3.0, ("12th",)), False),  # a fact missing from its evidence
        (SummarySentence("Quoted.", 0.2, ("a@h#0",), extractive=True), True),  # the article's words
    ],
)
def test_a_draft_shows_only_if_every_generated_sentence_passes_the_rule(
    sentence: SummarySentence, shows: bool
) -> None:
    policy = BriefingPolicy(show_rules=(("en", ShowRule(0.9, -4.5)),))
    assert policy.draft_shows([_sentence(0.97, -2.0), sentence], "en") is shows
    assert not policy.draft_shows([_sentence(0.97, -2.0)], "nb")  # no rule: no passing gate
    assert BriefingPolicy(allow_drafts=True).draft_shows([sentence], "nb")


def test_only_templates_whose_own_precision_passes_show(tmp_path: Path) -> None:
    """A language's pooled precision is carried by its commonest template: a template measured
    on its own below the target (or on too few sentences) must not ride on it."""
    measured = {"precision": 0.97, "precision_ci_low": 0.91, "shown": 120, "rule": {"threshold": 0.9}}
    templates = {
        "article@1": {"precision": 0.98, "shown": 100},
        "article-one-sentence@1": {"precision": 0.67, "shown": 6},
        "update@2": {"precision": 1.0, "shown": 4},  # right, but too few to measure anything
    }
    path = gate(tmp_path, languages={"en": {**measured, "templates": templates}})
    rule = show_rules(path, "embedding-lexical", 0.6)["en"]
    assert rule.templates == frozenset({"article@1"})
    policy = BriefingPolicy(show_rules=(("en", rule),))
    good = [_sentence(0.97, -2.0)]
    assert policy.draft_shows(good, "en", "article@1")
    assert not policy.draft_shows(good, "en", "article-one-sentence@1")
    assert not policy.draft_shows(good, "en", "update@2")
    assert not policy.draft_shows(good, "en")  # a caller that does not say which template: no
    # a gate file that measured no template on its own keeps the language's rule for all of them
    assert show_rules(gate(tmp_path), "embedding-lexical", 0.6)["en"].allows("update@2")
