"""Experiments in SQL on SQLite and PostgreSQL: the lifecycle and its refusals, audit entries,
exposures once per served briefing, and metrics from planted events with hand-computed answers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect
from sqlalchemy.orm import Session

from briefing import PROMPTS
from server.db import MIGRATIONS, BriefingRow, EventRow, SummaryRow
from server.experiments.metric_sql import rejections
from server.experiments.metrics import daily, metrics_and_days, reader_metrics
from server.experiments.model import Experiment, ExperimentInvalid, parse_experiment
from server.experiments.store import Experiments
from server.service import Actor, NotFound
from server.stores import AuditLog
from tests.conftest import migrated

S = datetime(2026, 12, 1, tzinfo=UTC)  # the experiment's start
NOW = S + timedelta(days=10)
PAT = Actor("pat", "product")
H, D, M = timedelta(hours=1), timedelta(days=1), timedelta(minutes=1)


def definition(
    key: str = "one-sentence-test", traffic: float = 1.0, layer: str = "briefing"
) -> dict[str, Any]:
    return {
        "key": key,
        "hypothesis": "One-sentence summaries get more clicks.",
        "arms": [
            {"name": "control", "weight": 0.5},
            {"name": "one-sentence", "weight": 0.5, "article_prompt": "article-one-sentence"},
        ],
        "targeting": {"traffic": traffic},
        "primary": "clicks_per_visit",
        "secondary": ["ctr", "reads_per_visit", "dwell_per_visit", "thumbs_up_share", "return_7d"],
        "layer": layer,
    }


def experiment(**kwargs: Any) -> Experiment:
    return parse_experiment(definition(**kwargs))


def test_the_lifecycle_goes_draft_running_stopped_decided_with_an_audit_entry_each(engine: Any) -> None:
    store = Experiments(engine, refresh_s=0)
    created = store.create(PAT, experiment())
    assert store.get(created.key) == created and store.list() == [created]
    running = store.start(PAT, created.key, S)
    assert (running.status, running.start, running.range_start) == ("running", S, 0.0)
    assert store.running() == [running] == [store.get(created.key)]
    stopped = store.stop(PAT, created.key, S + D)
    assert (stopped.status, stopped.stop) == ("stopped", S + D) and store.running() == []
    done = store.decide(PAT, created.key, "one-sentence", S + 2 * D)
    assert (done.status, done.decision, done.stop) == ("decided", "one-sentence", S + D)
    assert store.get(created.key) == done
    entries = AuditLog(engine).entries(target=created.key)
    assert [e["action"] for e in reversed(entries)] == [
        "experiment-create",
        "experiment-start",
        "experiment-stop",
        "experiment-decide",
    ]
    assert {e["actor"] for e in entries} == {"pat"} and {e["role"] for e in entries} == {"product"}
    assert entries[0]["detail"]["decision"] == "one-sentence"
    assert entries[-1]["detail"]["arms"][1]["article_prompt"] == "article-one-sentence"


def refused(call: Any, *args: Any) -> str:
    with pytest.raises(ExperimentInvalid) as caught:
        call(*args)
    return str(caught.value)


def test_bad_transitions_are_refused_with_a_reason(engine: Any) -> None:
    store = Experiments(engine)
    e = store.create(PAT, experiment())
    assert "already exists" in refused(store.create, PAT, experiment())
    assert "only a running experiment can stop" in refused(store.stop, PAT, e.key, S)
    assert "only a running or stopped one can be decided" in refused(store.decide, PAT, e.key, "control", S)
    store.start(PAT, e.key, S)
    assert "only a draft can start" in refused(store.start, PAT, e.key, S)
    assert "not one of" in refused(store.decide, PAT, e.key, "no-such-arm", S)
    store.stop(PAT, e.key, S + D)
    assert "only a draft can start" in refused(store.start, PAT, e.key, S + 2 * D)  # never restarts
    with pytest.raises(NotFound):
        store.get("no-such-experiment")
    with pytest.raises(NotFound):
        store.start(PAT, "no-such-experiment", S)
    assert [a["action"] for a in AuditLog(engine).entries(target=e.key)] == [
        "experiment-stop",
        "experiment-start",
        "experiment-create",
    ]


def test_a_running_experiment_keeps_its_arms_weights_and_layer(engine: Any) -> None:
    store = Experiments(engine)
    e = store.create(PAT, experiment())
    arms = definition()["arms"]
    reweighted = [{**arms[0], "weight": 0.7}, {**arms[1], "weight": 0.3}]
    draft = store.update(PAT, e.key, {"arms": reweighted})  # a draft may change anything
    assert [a.weight for a in draft.arms] == [0.7, 0.3]
    assert "weights sum to 1.2" in refused(
        store.update, PAT, e.key, {"arms": [{**arms[0], "weight": 0.7}, arms[1]]}
    )
    store.start(PAT, e.key, S)
    assert "arms and weights of a running experiment" in refused(store.update, PAT, e.key, {"arms": arms})
    assert "layer of a running experiment" in refused(store.update, PAT, e.key, {"layer": "other"})
    assert "key" in refused(store.update, PAT, e.key, {"key": "renamed"})
    assert "set by start" in refused(store.update, PAT, e.key, {"status": "draft"})
    changed = store.update(PAT, e.key, {"hypothesis": "Shorter is better.", "secondary": ["ctr"]})
    assert (changed.hypothesis, changed.secondary, changed.status) == (
        "Shorter is better.",
        ("ctr",),
        "running",
    )
    assert store.get(e.key) == changed
    latest = AuditLog(engine).entries(target=e.key)[0]
    assert (latest["action"], latest["detail"]) == (
        "experiment-update",
        {"hypothesis": "Shorter is better.", "secondary": ["ctr"]},
    )
    store.stop(PAT, e.key, S + D)
    assert "finished experiment cannot change" in refused(store.update, PAT, e.key, {"hypothesis": "x"})


def test_experiments_in_one_layer_take_disjoint_slices(engine: Any) -> None:
    store = Experiments(engine, refresh_s=0)
    first, second = (store.create(PAT, experiment(key=k, traffic=0.6)) for k in ("first-one", "second-one"))
    elsewhere = store.create(PAT, experiment(key="other-layer", traffic=0.6, layer="greeting"))
    assert store.start(PAT, first.key, S).range_start == 0.0
    assert "has only 0.40 of its traffic free" in refused(store.start, PAT, second.key, S)
    assert store.get(second.key).status == "draft"
    assert store.start(PAT, elsewhere.key, S).range_start == 0.0  # another layer, other readers' hashes
    store.stop(PAT, first.key, S + D)
    assert store.start(PAT, second.key, S + D).range_start == 0.0
    assert [e.key for e in store.running()] == ["other-layer", "second-one"]


def test_the_running_list_is_cached_and_sees_another_process_after_refresh_s(engine: Any) -> None:
    server, cli = Experiments(engine, refresh_s=3600), Experiments(engine)
    e = cli.create(PAT, experiment())
    assert server.running() == []
    cli.start(PAT, e.key, S)
    assert server.running() == []  # the copy is younger than refresh_s
    server.refresh_s = 0
    assert [r.key for r in server.running()] == [e.key]


def test_a_cached_briefing_served_again_is_the_same_exposure(engine: Any) -> None:
    store = Experiments(engine)
    e = store.start(PAT, store.create(PAT, experiment()).key, S)
    other = store.start(PAT, store.create(PAT, experiment(key="greeting-test", layer="greeting")).key, S)
    arms = {e.key: e.arms[1], other.key: other.arms[0]}
    store.expose("r1", arms, S + H, "r1|one-sentence|first", 120.0, 5, 1)
    store.expose("r1", arms, S + 2 * H, "r1|one-sentence|first", 3.0, 5, 0)  # from the cache
    store.expose("r1", {e.key: e.arms[1]}, S + D, "r1|one-sentence|" + (S + H).isoformat(), 80.0, 4, 0)
    store.expose("r2", {}, S + D, "r2|control|first", 80.0, 4, 0)  # in no experiment: nothing
    rows = store.exposures(e.key)
    assert [(r["arm"], r["reader_id"], r["count"], r["first_at"]) for r in rows] == [
        ("one-sentence", "r1", 2, S + H)
    ]
    assert (rows[0]["items"], rows[0]["fallback_items"], rows[0]["latency_ms"]) == (9, 1, 100.0)
    assert [(r["arm"], r["count"]) for r in store.exposures(other.key)] == [("control", 1)]
    assert store.arm_counts(e.key) == {"control": 0, "one-sentence": 1}


# Metrics: five readers with planted exposures and events, each value worked out by hand. -----------


def planted(engine: Any) -> Experiment:
    store = Experiments(engine)
    e = store.start(PAT, store.create(PAT, experiment()).key, S)
    control, short = ({e.key: arm} for arm in e.arms)

    def expose(
        reader: str, arm: dict[str, Any], at: datetime, key: str, latency: float, items: int, fb: int
    ) -> None:
        store.expose(reader, arm, at, f"{reader}|{key}", latency, items, fb)

    # r1 (control): two briefings (the first served twice), pre-period activity.
    expose("r1", control, S + H, "b1", 100, 5, 1)
    expose("r1", control, S + H + 5 * M, "b1", 7, 5, 5)  # the cached b1 again: no new exposure
    expose("r1", control, S + D + H, "b2", 300, 5, 0)
    # r5 (control): three briefings, no events; back within the hour (not a return) and after 7 days.
    expose("r5", control, S + 3 * H, "b1", 10, 5, 0)
    expose("r5", control, S + 3 * H + 30 * M, "b2", 20, 5, 5)
    expose("r5", control, S + 9 * D, "b3", 30, 5, 0)
    # r2 and r3 (one-sentence); r3 first came 8 days in: too late to know whether they return.
    expose("r2", short, S + 2 * H, "b1", 50, 4, 2)
    expose("r3", short, S + 8 * D, "b1", 80, 5, 0)
    # r4 saw both arms: left out of every metric.
    expose("r4", control, S + 4 * H, "b1", 10, 5, 0)
    expose("r4", short, S + 5 * H, "b2", 10, 5, 0)
    t1, t2, t3 = S + H, S + 2 * H, S + 8 * D
    events = [
        ("r1", "click", "a1", t1 + M, None),
        ("r1", "click", "a2", t1 + 2 * M, None),
        ("r1", "read", "a1", t1 + 3 * M, 30.0),
        ("r1", "thumbs_up", "a1", t1 + 4 * M, None),
        ("r1", "click", "a3", S + D + H + M, None),
        ("r1", "thumbs_down", "a3", S + D + H + 2 * M, None),
        ("r1", "click", "p1", S - 2 * D, None),
        ("r1", "read", "p1", S - 2 * D, 10.0),
        ("r1", "impression", "p1", S - 2 * D, None),
        ("r1", "impression", "p2", S - 2 * D, None),
        ("r1", "click", "old", t1 - 20 * D, None),  # before the 14-day pre-period
        ("r2", "click", "a1", t2 + M, None),
        ("r2", "read", "a1", t2 + 2 * M, 60.0),
        ("r2", "click", "a2", t2 + 30 * M, None),  # within the hour: the same visit, not a return
        ("r3", "click", "a1", t3 + M, None),
        ("r3", "click", "a2", NOW + H, None),  # after the look
        ("r4", "click", "a1", S + 4 * H + M, None),
        ("r9", "click", "a1", S + H, None),  # never exposed
    ]
    with Session(engine) as session:
        session.add_all(
            EventRow(reader_id=r, event_id=f"{r}-{i}", type=t, article_id=a, at=at, dwell_s=dwell)
            for i, (r, t, a, at, dwell) in enumerate(events)
        )
        for minute, cached in ((0, False), (1, True)):  # r1's pre-period visit, and a reload of it
            session.add(
                BriefingRow(
                    reader_id="r1",
                    served_at=S - 2 * D + minute * M,
                    since=None,
                    variant="control",
                    policy="front-page",
                    cached=cached,
                    items=[],
                )
            )
        session.add_all(drafts())
        session.commit()
    return e


def drafts() -> list[SummaryRow]:
    """Decided drafts of each arm's templates: control 1 of 5 rejected, one-sentence 2 of 3."""
    article, short, update = (PROMPTS.get(n).id for n in ("article", "article-one-sentence", "update"))
    made = [
        (article, "rejected"),
        (article, "approved"),
        (article, "approved"),
        (article, "edited"),
        (update, "approved"),
        (short, "rejected"),
        (short, "rejected"),
        (short, "draft"),
        (article, "retracted"),
    ]
    rows = [summary(f"s{i}", prompt, status, S + D) for i, (prompt, status) in enumerate(made)]
    return [*rows, summary("before", article, "rejected", S - D)]  # written before the start


def summary(sid: str, prompt: str, status: str, at: datetime) -> SummaryRow:
    return SummaryRow(
        id=sid,
        kind="article",
        article_id="a",
        content_hash="h",
        prompt=prompt,
        model="m",
        adapter=None,
        status=status,
        created_at=at,
        seconds=1.0,
        basis=[],
        sentences=[],
        dropped=[],
        reviewed_at=at if status != "draft" else None,
    )


EXPECTED = {  # metric: ((control values, pre), (one-sentence values, pre)); readers r1, r5 | r2, r3
    "clicks_per_visit": (([1.5, 0.0], [1.0, 0.0]), ([2.0, 1.0], [0.0, 0.0])),
    "ctr": (([0.3, 0.0], [0.5, 0.0]), ([0.5, 0.2], [0.0, 0.0])),
    "reads_per_visit": (([0.5, 0.0], [1.0, 0.0]), ([1.0, 0.0], [0.0, 0.0])),
    "dwell_per_visit": (([15.0, 0.0], [10.0, 0.0]), ([60.0, 0.0], [0.0, 0.0])),
    "thumbs_up_share": (([0.5], [0.0]), ([], [])),
    "return_7d": (([1.0, 0.0], [1.0, 0.0]), ([0.0], [0.0])),
    "fallback_share": (([0.1, 1 / 3], None), ([0.5, 0.0], None)),
    "latency_ms": (([200.0, 20.0], None), ([50.0, 80.0], None)),
    "rejection_rate": (([1.0, 0.0, 0.0, 0.0, 0.0], None), ([1.0, 1.0, 0.0], None)),
}


def test_metrics_of_planted_events_match_the_hand_computed_values(engine: Any) -> None:
    e = planted(engine)
    got = reader_metrics(engine, e, NOW)
    assert set(got) == set(EXPECTED) == set(e.metrics)
    for metric, arms in EXPECTED.items():
        for arm, (values, pre) in zip(("control", "one-sentence"), arms, strict=True):
            data = got[metric][arm]
            assert data.name == arm
            np.testing.assert_allclose(np.sort(data.values), np.sort(values), err_msg=f"{metric} {arm}")
            if pre is None:
                assert data.pre is None, metric
            else:
                assert data.pre is not None
                np.testing.assert_allclose(data.pre, pre, err_msg=f"{metric} {arm} pre")


def test_an_arm_without_an_adapter_owns_the_drafts_of_whatever_writes_drafts(engine: Any) -> None:
    """The control names no adapter: its drafts are the base model's and the promoted adapter's
    ("lora-p"), never those of the adapter another arm names ("lora-t")."""
    arms = [{"name": "control", "weight": 0.5}, {"name": "tuned", "weight": 0.5, "adapter": "lora-t"}]
    data = {**definition(key="adapter-test"), "arms": arms}
    e = replace(parse_experiment(data, known_adapters={"lora-t"}), start=S)
    article = PROMPTS.get("article").id
    written = [(None, "approved"), ("lora-p", "rejected"), ("lora-p", "approved"), ("lora-t", "rejected")]
    rows = [summary(f"a{i}", article, status, S + D) for i, (_, status) in enumerate(written)]
    for row, (adapter, _) in zip(rows, written, strict=True):
        row.adapter = adapter
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
    with engine.connect() as connection:
        got = rejections(connection, e, NOW)
    np.testing.assert_array_equal(np.sort(got["control"]), [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(got["tuned"], [1.0])


def test_metrics_stop_at_the_stop_and_nothing_is_measured_before_the_start(engine: Any) -> None:
    e = planted(engine)
    store = Experiments(engine)
    stopped = store.stop(PAT, e.key, S + 6 * H)  # r3 (day 8) and r1's second briefing come later
    got = reader_metrics(engine, stopped, NOW)
    np.testing.assert_allclose(got["clicks_per_visit"]["control"].values, [2.0, 0.0])  # r1: 2 clicks, 1 visit
    np.testing.assert_allclose(got["clicks_per_visit"]["one-sentence"].values, [2.0])
    assert got["return_7d"]["control"].values.size == 0  # no one's 7 days fit before the stop
    draft = experiment(key="never-started")
    assert all(
        a.values.size == 0 for arms in reader_metrics(engine, draft, NOW).values() for a in arms.values()
    )


def test_daily_looks_are_cumulative_and_the_last_equals_the_full_analysis(engine: Any) -> None:
    e = planted(engine)
    days = daily(engine, e, NOW)
    assert [d.day for d in days] == list(range(10)) and days[-1].end == NOW and days[0].end == S + D
    first = days[0]
    assert first.readers == {"control": 2, "one-sentence": 1}  # r1, r5 | r2 (r4 is in both: out)
    assert first.exposures == {"control": 4, "one-sentence": 2}  # r1 b1, r5 b1 b2, r4 | r2, r4
    np.testing.assert_allclose(first.metric["control"].values, [2.0, 0.0])  # r1: 2 clicks in 1 visit
    np.testing.assert_allclose(first.metric["control"].pre, [1.0, 0.0])  # type: ignore[arg-type]
    np.testing.assert_allclose(days[1].metric["control"].values, [1.5, 0.0])
    assert days[8].readers == {"control": 2, "one-sentence": 2}
    assert days[-1].exposures == {"control": 6, "one-sentence": 3}
    full = reader_metrics(engine, e, NOW)["clicks_per_visit"]
    together, looks = metrics_and_days(engine, e, NOW)
    assert [(d.day, d.end, d.readers, d.exposures) for d in looks] == [
        (d.day, d.end, d.readers, d.exposures) for d in days
    ]
    for arm in ("control", "one-sentence"):
        np.testing.assert_array_equal(together["clicks_per_visit"][arm].values, full[arm].values)
        np.testing.assert_array_equal(looks[3].metric[arm].values, days[3].metric[arm].values)
        np.testing.assert_allclose(days[-1].metric[arm].values, full[arm].values)
        np.testing.assert_allclose(days[-1].metric[arm].pre, full[arm].pre)  # type: ignore[arg-type]


def test_daily_looks_of_a_share_and_of_return_within_7_days(engine: Any) -> None:
    e = planted(engine)
    thumbs = daily(engine, replace(e, primary="thumbs_up_share"), NOW)
    np.testing.assert_allclose(thumbs[0].metric["control"].values, [1.0])  # r1: one up on day 0
    np.testing.assert_allclose(thumbs[1].metric["control"].values, [0.5])  # and one down on day 1
    returns = daily(engine, replace(e, primary="return_7d"), NOW)
    assert all(d.metric["control"].values.size == 0 for d in returns[:7])  # no one's 7 days are over
    np.testing.assert_allclose(returns[7].metric["control"].values, [1.0, 0.0])  # r1 came back, r5 not
    np.testing.assert_allclose(returns[7].metric["one-sentence"].values, [0.0])  # r2


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_migration_goes_down_and_up_again(kind: str, tmp_path: Path) -> None:
    for engine in migrated(kind, tmp_path):
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
        assert not {"experiments", "exposures"} & set(inspect(engine).get_table_names())
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
        assert {"experiments", "exposures"} <= set(inspect(engine).get_table_names())
