"""The show gate (DESIGN §5): drafts show only in languages whose checker precision, measured on
the labelled sentences for this checker at this threshold and for the draft's own writer (model
and adapter), reaches the target."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from briefing import BriefingPolicy
from briefing.gate import (
    BASE_WRITER,
    MIN_SHOWN,
    TARGET_PRECISION,
    ShowRule,
    Writer,
    draft_languages,
    show_rules,
    writer_entries,
)
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
        entries = writer_entries(json.loads(settings.show_gate.read_text()))
        assert languages == {
            lang
            for _, figures in entries
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
    assert data["policy"]["show_rules"][0] == {
        "language": "en",
        "threshold": 0.9,
        "fluency_floor": -4.5,
        "templates": None,
        "writer": None,
    }
    rule = ShowRule(0.9, templates=frozenset({"article@1"}), writer=Writer("m", "ad-1"))
    gated = BriefingPolicy(show_rules=(("en", rule),))
    briefing = Briefing("r1", datetime(2026, 11, 19, tzinfo=UTC), None, "control", gated, "Hello.", ())
    (shown,) = json.loads(json.dumps(briefing.to_json()))["policy"]["show_rules"]
    assert (shown["templates"], shown["writer"]) == (["article@1"], {"model": "m", "adapter": "ad-1"})


def test_a_language_passes_with_the_rule_it_was_measured_under(tmp_path: Path) -> None:
    # a gate file from before writers were recorded: measured on the base packaged model's text
    expected = (("en", ShowRule(0.9, -4.5, writer=BASE_WRITER)),)
    assert show_rules(gate(tmp_path), "embedding-lexical", 0.6) == expected


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
    rule = dict(show_rules(path, "embedding-lexical", 0.6))["en"]
    assert rule.templates == frozenset({"article@1"})
    policy = BriefingPolicy(show_rules=(("en", rule),))
    good = [_sentence(0.97, -2.0)]
    assert policy.draft_shows(good, "en", "article@1", BASE_WRITER)
    assert not policy.draft_shows(good, "en", "article-one-sentence@1", BASE_WRITER)
    assert not policy.draft_shows(good, "en", "update@2", BASE_WRITER)
    assert not policy.draft_shows(
        good, "en", writer=BASE_WRITER
    )  # a caller that does not say which template: no
    # a gate file that measured no template on its own keeps the language's rule for all of them
    assert dict(show_rules(gate(tmp_path), "embedding-lexical", 0.6))["en"].allows("update@2")


# -- writers: the model and adapter whose labelled sentences measured the gate -----------------

PASSING = {"precision": 0.97, "shown": 120, "rule": {"threshold": 0.9}}
ADAPTER = Writer(BASE_WRITER.model, "ad-20261201120000-abc123")


def _write(tmp_path: Path, entries: Any) -> Path:
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"checker": "embedding-lexical", "threshold": 0.6, "writers": list(entries)}))
    return path


def entry(writer: Writer, **languages: Any) -> dict[str, Any]:
    return {"model": writer.model, "adapter": writer.adapter, "languages": languages}


def test_the_base_writer_is_what_wrote_the_committed_labels() -> None:
    """An old gate file means "measured on the packaged model without an adapter": that is the
    writer every labelled candidate names (bench/label_set.py generate records it)."""
    from bench.label_set import LABELS, candidate_files, read_jsonl, row_writer

    rows = [r for path in candidate_files(LABELS / "candidates.jsonl") for r in read_jsonl(path)]
    assert rows and {row_writer(r) for r in rows} == {BASE_WRITER}


def test_a_writer_is_its_model_and_adapter_whatever_the_backend_calls_it() -> None:
    assert Writer.of(f"{BASE_WRITER.model}+{ADAPTER.adapter}", ADAPTER.adapter) == ADAPTER  # llama.cpp
    assert Writer.of(BASE_WRITER.model, None) == BASE_WRITER
    assert Writer.of("SmolLM2-135M-Instruct-f32", None) != BASE_WRITER  # transformers: not measured
    assert Writer.of("x+ad-1", "ad-2") == Writer("x+ad-1", "ad-2")  # another adapter's suffix stays


def test_each_writer_passes_where_its_own_labels_measured_it(tmp_path: Path) -> None:
    lower = {**PASSING, "rule": {"threshold": 0.8}}
    path = _write(tmp_path, [entry(BASE_WRITER, en=PASSING), entry(ADAPTER, en=lower, nb=PASSING)])
    rules = show_rules(path, "embedding-lexical", 0.6)
    assert rules == (
        ("en", ShowRule(0.9, writer=BASE_WRITER)),
        ("en", ShowRule(0.8, writer=ADAPTER)),
        ("nb", ShowRule(0.9, writer=ADAPTER)),
    )
    assert draft_languages(path, "embedding-lexical", 0.6) == {"en", "nb"}
    policy = BriefingPolicy(show_rules=rules)
    at_085 = [_sentence(0.85, -3.0)]
    assert policy.draft_shows(at_085, "en", writer=ADAPTER)  # the adapter's own, lower threshold
    assert not policy.draft_shows(at_085, "en", writer=BASE_WRITER)  # the base model's is 0.9
    assert policy.draft_shows([_sentence(0.95, -3.0)], "nb", writer=ADAPTER)
    assert not policy.draft_shows([_sentence(0.95, -3.0)], "nb", writer=BASE_WRITER)  # never measured
    assert policy.rule("en", ADAPTER) == ShowRule(0.8, writer=ADAPTER)
    assert policy.rule("en") == ShowRule(0.8, writer=ADAPTER)  # pages: what holds for every writer
    assert policy.rule("nb", BASE_WRITER) is None


def test_an_adapter_nobody_labelled_shows_nothing_unreviewed(tmp_path: Path) -> None:
    """The base model's measured gate does not carry over to an adapter trained from it, nor to
    a writer the caller cannot name."""
    rules = show_rules(gate(tmp_path), "embedding-lexical", 0.6)  # an old file: the base model's
    policy = BriefingPolicy(show_rules=rules)
    good = [_sentence(0.97, -2.0)]
    assert policy.draft_shows(good, "en", writer=BASE_WRITER)
    assert not policy.draft_shows(good, "en", writer=ADAPTER)
    assert not policy.draft_shows(good, "en", writer=Writer("other-model"))
    assert not policy.draft_shows(good, "en")  # a caller that does not say who wrote it: no
    assert policy.drafts_show("en")  # the language still shows someone's drafts


@pytest.mark.parametrize(
    "bad",
    [
        {"model": BASE_WRITER.model, "languages": {"en": PASSING}},  # no adapter key: not "the base"
        {"model": BASE_WRITER.model, "adapter": 7, "languages": {"en": PASSING}},
        {"model": BASE_WRITER.model, "adapter": " ", "languages": {"en": PASSING}},
        {"model": "", "adapter": None, "languages": {"en": PASSING}},
        {"adapter": None, "languages": {"en": PASSING}},
        {"model": BASE_WRITER.model, "adapter": None, "languages": [PASSING]},
        "SmolLM2-135M-Instruct.Q4_1",
    ],
)
def test_a_writer_entry_that_does_not_name_its_writer_vouches_for_no_one(
    tmp_path: Path, bad: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="briefing.gate"):
        assert show_rules(_write(tmp_path, [bad]), "embedding-lexical", 0.6) == ()
    assert "writer entry" in caplog.text and "drafts show for no writer under it" in caplog.text
    # a well-formed entry beside it still counts: only the unnamed figures are left out
    rules = show_rules(_write(tmp_path, [bad, entry(ADAPTER, en=PASSING)]), "embedding-lexical", 0.6)
    assert rules == (("en", ShowRule(0.9, writer=ADAPTER)),)


def test_a_writer_measured_twice_or_writers_not_a_list_show_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="briefing.gate"):
        twice = _write(tmp_path, [entry(ADAPTER, en=PASSING), entry(ADAPTER, nb=PASSING)])
        assert show_rules(twice, "embedding-lexical", 0.6) == ()
        assert "measures" in caplog.text and "2 times" in caplog.text
        path = tmp_path / "gate.json"
        path.write_text(json.dumps({"checker": "embedding-lexical", "threshold": 0.6, "writers": {"en": 1}}))
        assert show_rules(path, "embedding-lexical", 0.6) == ()
        assert "must be a list" in caplog.text
        path.write_text("[1, 2]")
        assert show_rules(path, "embedding-lexical", 0.6) == ()
        # both layouts at once: the writers list wins, the unnamed top-level figures do not count
        both = {"checker": "embedding-lexical", "threshold": 0.6, "languages": {"en": PASSING}}
        path.write_text(json.dumps({**both, "writers": [entry(ADAPTER, nb=PASSING)]}))
        assert show_rules(path, "embedding-lexical", 0.6) == (("nb", ShowRule(0.9, writer=ADAPTER)),)
        assert "top-level `languages`" in caplog.text
