"""Experiment definitions (server/experiments/model.py): a valid one parses with its defaults and
survives a JSON round trip; every refusal reason is given, all at once, naming its field; hostile
input (non-numeric weights, thousands of arms, unicode keys, missing fields) is refused quickly;
status transitions refuse the wrong order."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from briefing import (
    VARIANTS,
    BriefingPolicy,
    Composer,
    EmbeddingLexicalChecker,
    EvidenceRetriever,
    FileSummaryStore,
    Summarizer,
    Variant,
)
from indexing import Indexer
from recsys import CandidateMatrix, InMemoryEventStore, Recommender, load_readers
from server.experiments import (
    GUARDRAILS,
    METRICS,
    Experiment,
    ExperimentInvalid,
    decided,
    parse_experiment,
    started,
    stopped,
    to_json,
)
from tests.conftest import DEMO

NOW = datetime(2026, 11, 19, 12, tzinfo=UTC)


def definition(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": "one-sentence-2026",
        "hypothesis": "One-sentence summaries get more clicks per visit.",
        "arms": [
            {"name": "control", "weight": 0.5},
            {"name": "one-sentence", "weight": 0.5, "article_prompt": "article-one-sentence", "items": 3},
        ],
        "targeting": {"languages": ["en"], "readers": "returning", "traffic": 0.4},
        "primary": "clicks_per_visit",
        "secondary": ["ctr", "return_7d"],
    }
    data.update(changes)
    return data


def reasons(data: Any, **known: Any) -> list[str]:
    with pytest.raises(ExperimentInvalid) as refused:
        parse_experiment(data, **known)
    assert str(refused.value) == "; ".join(refused.value.reasons)
    return refused.value.reasons


def arms(*weights: Any) -> list[dict[str, Any]]:
    return [{"name": f"arm-{i}", "weight": w} for i, w in enumerate(weights)]


def test_a_valid_definition_parses_with_its_defaults() -> None:
    e = parse_experiment(definition())
    assert e.key == "one-sentence-2026" and e.status == "draft" and e.layer == "briefing"
    assert e.control.name == "control" and e.control.variant == VARIANTS["control"]
    assert e.arm("one-sentence").variant == Variant(
        "one-sentence", article_prompt="article-one-sentence", items=3
    )
    assert (e.targeting.languages, e.targeting.readers, e.targeting.traffic) == (("en",), "returning", 0.4)
    assert e.guardrails == GUARDRAILS == ("fallback_share", "rejection_rate", "latency_ms")
    assert e.metrics == ("clicks_per_visit", "ctr", "return_7d", *GUARDRAILS)
    assert e.sequential and e.start is None and e.range_start is None and e.decision is None
    with pytest.raises(KeyError, match="no arm 'nope'"):
        e.arm("nope")


def test_json_round_trip_through_every_status() -> None:
    e = parse_experiment(definition(layer="greeting", sequential=False, guardrails=["latency_ms"]))
    run = started(e, 0.25, NOW)
    stop = stopped(run, NOW + timedelta(days=14))
    done = decided(stop, "one-sentence", NOW + timedelta(days=15))
    for state in (e, run, stop, done):
        data = json.loads(json.dumps(to_json(state)))  # plain JSON all the way
        assert parse_experiment(data, lifecycle=True) == state
    assert (
        to_json(done)["start"] == "2026-11-19T12:00:00+00:00" and to_json(done)["decision"] == "one-sentence"
    )


def test_a_stored_time_without_a_zone_is_utc() -> None:
    data = to_json(started(parse_experiment(definition()), 0.0, NOW))
    data["start"] = "2026-11-19T12:00:00"  # SQLite keeps no zone
    assert parse_experiment(data, lifecycle=True).start == NOW


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"arms": arms(0.5, 0.4)}, "arms[].weight: weights sum to 0.9, not 1"),
        ({"arms": arms(0.6, 0.6)}, "arms[].weight: weights sum to 1.2, not 1"),
        ({"arms": arms(1.0, 0.0)}, "arms[1].weight: must be above 0 and at most 1, got 0"),
        ({"arms": arms(1.5, 0.5)}, "arms[0].weight: must be above 0 and at most 1, got 1.5"),
        ({"arms": arms("half", 0.5)}, "arms[0].weight: expected a number between 0 and 1, got 'half'"),
        ({"arms": arms(True, 0.5)}, "arms[0].weight: expected a number between 0 and 1, got True"),
        ({"arms": arms(float("nan"), 0.5)}, "arms[0].weight: expected a number between 0 and 1, got nan"),
        ({"arms": arms(None, 0.5)}, "arms[0].weight: expected a number between 0 and 1, got None"),
        ({"arms": arms(1.0)}, "arms: needs at least 2 arms (the first is the control), got 1"),
        ({"arms": []}, "arms: needs at least 2 arms (the first is the control), got 0"),
        ({"arms": arms(*[1 / 9] * 9)}, "arms: at most 8 arms, got 9"),
        ({"arms": {"control": 1}}, "arms: expected a list of arms, got dict"),
        (
            {"arms": ["control", {"name": "b", "weight": 1}]},
            "arms[0]: expected an object with name and weight, got str",
        ),
        (
            {"arms": [{"name": "a", "weight": 0.5}, {"name": "a", "weight": 0.5}]},
            "arms[1].name: 'a' is already the name of arms[0]",
        ),
        ({"arms": [{"weight": 0.5}, {"name": "b", "weight": 0.5}]}, "arms[0].name: required"),
        (
            {"arms": [{"name": "Ctrl Arm", "weight": 0.5}, {"name": "b", "weight": 0.5}]},
            "arms[0].name: 'Ctrl Arm' must be 1 to 40 of a-z, 0-9, '-' and '_'",
        ),
        (
            {
                "arms": [
                    {"name": "a", "weight": 0.5},
                    {"name": "b", "weight": 0.5, "article_prompt": "artcle"},
                ]
            },
            "arms[1].article_prompt: unknown article template 'artcle'; known: article, article-nb,",
        ),
        (
            {
                "arms": [
                    {"name": "a", "weight": 0.5},
                    {"name": "b", "weight": 0.5, "greeting_prompt": "update"},
                ]
            },
            "arms[1].greeting_prompt: 'update' is a template of kind 'update'; this field takes kind",
        ),
        (
            {
                "arms": [
                    {"name": "a", "weight": 0.5},
                    {"name": "b", "weight": 0.5, "update_prompt": "update@9"},
                ]
            },
            "arms[1].update_prompt: unknown update template 'update@9'",
        ),
        (
            {"arms": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5, "adapter": "edits-lora"}]},
            "arms[1].adapter: unknown adapter 'edits-lora'; no adapters are registered yet",
        ),
        (
            {"arms": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5, "backend": "gpt-5"}]},
            "arms[1].backend: unknown backend 'gpt-5'; known: llamacpp, openai, transformers",
        ),
        (
            {"arms": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5, "items": 0}]},
            "arms[1].items: expected a whole number of items from 1 to 20, got 0",
        ),
        (
            {"arms": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5, "items": True}]},
            "arms[1].items: expected a whole number of items from 1 to 20, got True",
        ),
        (
            {"arms": [{"name": "a", "weight": 0.5}, {"name": "b", "weight": 0.5, "colour": "red"}]},
            "arms[1]: unknown field 'colour'; fields are name, weight,",
        ),
        ({"primary": "clicks"}, "primary: unknown metric 'clicks'; choose from clicks_per_visit, ctr,"),
        ({"primary": "latency_ms"}, "primary: 'latency_ms' is a guardrail metric; list it under guardrails"),
        ({"primary": None}, "primary: required; one of clicks_per_visit"),
        ({"secondary": ["clicks_per_visit"]}, "secondary: 'clicks_per_visit' is already the primary metric"),
        ({"secondary": ["ctr", "ctr"]}, "secondary[1]: 'ctr' is listed twice"),
        ({"secondary": ["bounce"]}, "secondary[0]: unknown metric 'bounce'"),
        ({"secondary": "ctr"}, "secondary: expected a list of at most 9 metric names"),
        (
            {"guardrails": ["ctr"]},
            "guardrails[0]: 'ctr' is not a guardrail metric; guardrails are fallback_share, rejection_rate,",
        ),
        ({"guardrails": ["crashes"]}, "guardrails[0]: unknown metric 'crashes'; choose from fallback_share,"),
        ({"targeting": {"traffic": 0}}, "targeting.traffic: a share of traffic above 0 and at most 1, got 0"),
        (
            {"targeting": {"traffic": 1.5}},
            "targeting.traffic: a share of traffic above 0 and at most 1, got 1.5",
        ),
        (
            {"targeting": {"traffic": "all"}},
            "targeting.traffic: a share of traffic above 0 and at most 1, got 'all'",
        ),
        (
            {"targeting": {"readers": "old"}},
            "targeting.readers: expected one of all, new, returning, got 'old'",
        ),
        (
            {"targeting": {"languages": ["English"]}},
            "targeting.languages[0]: 'English' is not a language code",
        ),
        (
            {"targeting": {"languages": "en"}},
            "targeting.languages: expected a list of at most 20 language codes",
        ),
        ({"targeting": ["en"]}, "targeting: expected an object with languages, readers, traffic, got list"),
        ({"targeting": {"country": "no"}}, "targeting: unknown field 'country'"),
        ({"key": "AB"}, "key: 'AB' must be 3 to 60 of a-z, 0-9 and '-', starting with a letter or digit"),
        ({"key": "ab"}, "key: 'ab' must be 3 to 60"),
        ({"key": "a" * 61}, "key: '" + "a" * 36 + "... must be 3 to 60"),
        ({"key": "-lead"}, "key: '-lead' must be 3 to 60"),
        ({"key": "ønske"}, "key: 'ønske' must be 3 to 60"),
        ({"key": "has space"}, "key: 'has space' must be 3 to 60"),
        ({"key": 123}, "key: 123 must be 3 to 60"),
        ({"key": None}, "key: required"),
        ({"hypothesis": "  "}, "hypothesis: required: say what you expect to change and why"),
        ({"hypothesis": "x" * 2001}, "hypothesis: at most 2000 characters, got 2001"),
        ({"layer": "Front Page"}, "layer: 'Front Page' must be 1 to 40 of a-z, 0-9 and '-'"),
        ({"layer": "holdout"}, "layer: 'holdout' is reserved for the long-term holdout"),
        ({"sequential": "yes"}, "sequential: expected true or false, got 'yes'"),
        ({"status": "running"}, "status: is set by start, stop and decide, not in a definition"),
        ({"range_start": 0.0}, "range_start: is set by start, stop and decide, not in a definition"),
        ({"trafic": 0.5}, "experiment: unknown field 'trafic'; fields are key, hypothesis, arms,"),
        ({"ключ": 1}, "experiment: unknown field 'ключ'"),
    ],
)
def test_every_refusal_names_its_field(changes: dict[str, Any], expected: str) -> None:
    found = reasons(definition(**changes))
    assert any(r.startswith(expected) for r in found), found
    assert len(found) == 1, found  # one problem, one reason


def test_a_missing_field_is_a_reason() -> None:
    for name in ("key", "hypothesis", "arms", "primary"):
        data = definition()
        del data[name]
        assert [r.split(":")[0] for r in reasons(data)] == [name]


def test_every_problem_is_reported_at_once() -> None:
    data = definition(
        key="X",
        arms=[{"name": "a", "weight": "half"}, {"name": "a", "weight": 0.4, "adapter": "lora"}],
        primary="latency_ms",
        targeting={"traffic": 2},
        guardrails=["ctr"],
    )
    fields = [r.split(":")[0] for r in reasons(data)]
    assert fields == [
        "key",
        "arms[0].weight",
        "arms[1].adapter",
        "arms[1].name",
        "targeting.traffic",
        "primary",
        "guardrails[0]",
    ]


@pytest.mark.parametrize("data", [None, [], "experiment", 42, [("key", "abc")]])
def test_something_other_than_an_object_is_refused(data: Any) -> None:
    assert reasons(data) == [f"experiment: expected an object, got {type(data).__name__}"]


def test_hostile_input_is_refused_quickly_with_few_reasons() -> None:
    began = time.perf_counter()
    huge = reasons(definition(arms=[{"name": f"a{i}", "weight": 1e-5} for i in range(100_000)]))
    assert huge == ["arms: at most 8 arms, got 100000"]
    keys = reasons({**definition(), **{f"k{i}🙂": i for i in range(10_000)}})
    assert len(keys) == 6 and keys[-1] == "experiment: 9995 more unknown fields"
    long_name = reasons(definition(key="k" * 1_000_000))
    assert len(long_name[0]) < 200  # the value is cut in the message
    assert time.perf_counter() - began < 2.0


def test_known_registries_can_be_given() -> None:
    two = [
        {"name": "a", "weight": 0.5},
        {"name": "b", "weight": 0.5, "adapter": "edits-v1", "backend": "vllm"},
    ]
    e = parse_experiment(
        definition(arms=two),
        known_adapters={"edits-v1"},
        known_backends={"vllm"},
        known_prompts={"article", "update", "greeting"},
    )
    assert (e.arms[1].variant.adapter, e.arms[1].variant.backend) == ("edits-v1", "vllm")
    # a plain set of names checks membership only; the default registry also checks kinds
    only_article = reasons(
        definition(arms=two), known_adapters={"edits-v1"}, known_backends={"vllm"}, known_prompts={"article"}
    )
    assert only_article[0].startswith("arms[0].update_prompt: unknown update template")


def test_weights_summing_to_one_within_float_error_are_accepted() -> None:
    e = parse_experiment(definition(arms=arms(0.1, 0.2, 0.3, 0.4)))
    assert [a.weight for a in e.arms] == [0.1, 0.2, 0.3, 0.4]
    assert parse_experiment(definition(arms=arms(*[1 / 7] * 7))).arms[6].weight == pytest.approx(1 / 7)
    assert parse_experiment(definition(arms=arms(1, 0.5 - 0.5 + 1e-12, 0.0 + 1e-12))) is not None


def test_a_stored_experiment_must_agree_with_its_status() -> None:
    run = to_json(started(parse_experiment(definition()), 0.5, NOW))
    assert reasons({**run, "range_start": None}, lifecycle=True) == [
        "status: a running experiment has a start time and a range of its layer"
    ]
    assert reasons({**run, "range_start": 0.7}, lifecycle=True)[0].startswith("range_start: must leave room")
    assert reasons({**run, "decision": "control"}, lifecycle=True) == [
        "decision: is set exactly when the experiment is decided"
    ]
    assert reasons({**run, "status": "stopped"}, lifecycle=True) == [
        "stop: a stopped experiment has a stop time"
    ]
    assert reasons({**run, "stop": "2026-11-01T00:00:00+00:00"}, lifecycle=True) == ["stop: is before start"]
    assert reasons({**run, "start": "yesterday"}, lifecycle=True)[0] == (
        "start: expected an ISO 8601 time, got 'yesterday'"
    )
    assert reasons({**run, "status": "paused"}, lifecycle=True)[0].startswith(
        "status: expected one of draft,"
    )
    done = {**run, "status": "decided", "stop": "2026-12-01T00:00:00+00:00", "decision": "winner"}
    assert reasons(done, lifecycle=True) == ["decision: 'winner' is not one of the arms"]


def test_transitions_refuse_the_wrong_order() -> None:
    draft = parse_experiment(definition())
    run = started(draft, 0.0, NOW)
    assert (run.status, run.start, run.range_start) == ("running", NOW, 0.0)
    with pytest.raises(ExperimentInvalid, match="is running; only a draft can start"):
        started(run, 0.0, NOW)
    with pytest.raises(ExperimentInvalid, match="is draft; only a running experiment can stop"):
        stopped(draft, NOW)
    with pytest.raises(ExperimentInvalid, match="is draft; only a running or stopped one can be decided"):
        decided(draft, "control", NOW)
    with pytest.raises(ExperimentInvalid, match="decision: 'winner' is not one of control, one-sentence"):
        decided(run, "winner", NOW)
    later = NOW + timedelta(days=3)
    assert decided(run, "control", later).stop == later  # deciding a running one stops it
    stop = stopped(run, later)
    assert decided(stop, "one-sentence", later + timedelta(days=1)).stop == later
    with pytest.raises(ExperimentInvalid, match="only a draft can start"):
        started(stop, 0.0, NOW)  # a stopped experiment does not restart: its exposures are over


def test_the_metric_registry() -> None:
    outcomes = {
        "clicks_per_visit",
        "ctr",
        "reads_per_visit",
        "dwell_per_visit",
        "thumbs_up_share",
        "return_7d",
    }
    assert set(METRICS) == outcomes | {"fallback_share", "rejection_rate", "latency_ms"}
    assert {m.name for m in METRICS.values() if m.guardrail} == set(GUARDRAILS)
    assert not any(METRICS[g].higher_is_better for g in GUARDRAILS)
    assert METRICS["return_7d"].kind == "proportion"
    assert all(m.name == name and m.label for name, m in METRICS.items())


def test_an_experiment_is_hashable_and_frozen() -> None:
    e = parse_experiment(definition())
    assert isinstance(e, Experiment) and hash(e) == hash(parse_experiment(definition()))
    with pytest.raises(AttributeError):
        e.key = "other"  # type: ignore[misc]


@pytest.mark.slow
def test_the_composer_gives_an_arm_its_own_number_of_items(
    demo: Indexer, llamacpp: Any, tmp_path: Path
) -> None:
    """An arm's `items` overrides the policy's for its readers; an arm's Variant composes directly
    (it need not be registered by name). No LLM call: stored texts only."""
    summarizer = Summarizer(
        llamacpp,
        EvidenceRetriever(demo.index, demo.embedder),
        EmbeddingLexicalChecker(demo.embedder),
        FileSummaryStore(tmp_path),
    )
    events = InMemoryEventStore()
    load_readers(DEMO / "readers.jsonl", events)
    recommender = Recommender(CandidateMatrix.from_index(demo.index, demo.embedder.dim), events)
    now = datetime.fromisoformat("2026-11-19T23:00:00+01:00")
    recommender.refresh(recommender.matrix, now)
    composer = Composer(recommender, summarizer, policy=BriefingPolicy(items=5))
    arm = parse_experiment(definition()).arm("one-sentence")
    assert arm.variant.items == 3
    short = composer.compose("r01", now, variant=arm.variant)
    full = composer.compose("r01", now, variant="control")
    assert (len(short.items), len(full.items), short.variant) == (3, 5, "one-sentence")
    assert [i.article_id for i in short.items] == [i.article_id for i in full.items[:3]]


def test_an_arm_may_ask_for_reviewed_text_only() -> None:
    """`policy: reviewed-only`: the arm's readers see editor-reviewed text or the article's own
    words, never an unreviewed draft, even where the surface's policy would show it."""
    from dataclasses import replace
    from typing import cast

    from briefing import BriefingPolicy, Composer, Status, Summary, SummarySentence

    arms: list[dict[str, Any]] = [
        {"name": "control", "weight": 0.5},
        {"name": "reviewed", "weight": 0.5, "policy": "reviewed-only"},
    ]
    definition = {"key": "reviewed-only", "hypothesis": "h", "arms": arms, "primary": "ctr"}
    control, reviewed = (a.variant for a in parse_experiment(definition).arms)
    assert (control.policy, reviewed.policy) == ("gated", "reviewed-only")
    composer = Composer(cast(Any, None), cast(Any, None), policy=BriefingPolicy(allow_drafts=True))
    sentence = SummarySentence("A.", 0.99, ())
    at = datetime(2026, 11, 19, tzinfo=UTC)
    draft = Summary("s", "article", "a-1", "h", "article@1", "m", None, (sentence,), (), at, 1.0)
    approved = replace(draft, status=Status.APPROVED)
    assert composer._shows(draft, "en", control) and not composer._shows(draft, "en", reviewed)
    assert composer._shows(approved, "en", reviewed)
    bad = [arms[0], {"name": "x", "weight": 0.5, "policy": "drafts-always"}]
    with pytest.raises(ExperimentInvalid, match=r"unknown policy 'drafts-always'") as refused:
        parse_experiment({**definition, "arms": bad})
    assert refused.value.reasons[0].startswith("arms[1].policy")
