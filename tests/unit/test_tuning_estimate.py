"""The tune time estimate (briefing/tuning/estimate.py): rates measured by a run, recorded under
DATA_DIR/tuning, read back by the next estimate, with the built-in rates where none was measured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from briefing.tuning.estimate import DEFAULTS, REPORTS, StageClock, estimate, last_rates, rates_of, record_run


def test_rates_are_seconds_per_unit_of_the_stages_that_did_work() -> None:
    clock = StageClock(articles=10)
    clock.add("sample", 60.0, 80)
    clock.add("train", 30.0, 6)
    clock.add("gate", 8.0, 2)
    clock.add("gate", 12.0, 2)  # the candidate's side adds to the baseline's
    clock.add("dpo", 5.0, 0)  # nothing trained: no rate rather than a division by zero
    rates = rates_of(clock.stages, clock.articles, train_examples=6)
    assert rates == {
        "sample_s": 0.75,
        "train_example_s": 5.0,
        "gate_article_s": 5.0,
        "train_examples_per_article": 0.6,
    }
    assert rates_of({}, 0, 0) == {}


def test_the_estimate_with_built_in_rates_is_the_sum_of_its_stages() -> None:
    # 100 articles x 2 templates x 4 candidates sampled, the training examples they yield; the
    # eval split holds a quarter as many rows (20/80), and at most its 20 articles are gated per side
    sampling = 100 * 2 * 4 * DEFAULTS["sample_s"]
    examples = 100 * DEFAULTS["train_examples_per_article"]
    training = examples * DEFAULTS["train_example_s"]
    gating = 2 * 20 * DEFAULTS["gate_article_s"]  # every held-out article (20%), reference or not
    plain = estimate(100, 4, preference=False, measured={})
    assert plain.seconds == pytest.approx(sampling + training + gating)
    assert plain.measured == () and "built-in rates" in plain.source()
    # the DPO step trains again and gates a third side
    dpo = estimate(100, 4, preference=True, measured={})
    assert dpo.seconds == pytest.approx(sampling + 2 * training + 2 * gating)
    # at most eval_limit articles are gated, and never more than the eval split holds
    capped = estimate(100, 4, False, {}, eval_limit=3)
    assert capped.seconds == pytest.approx(sampling + training + 2 * 3 * DEFAULTS["gate_article_s"])
    every = estimate(10, 4, False, {"train_examples_per_article": 50.0}, eval_share=0.5)
    assert every.seconds == pytest.approx(
        80 * DEFAULTS["sample_s"] + 500 * DEFAULTS["train_example_s"] + 2 * 5 * DEFAULTS["gate_article_s"]
    )
    # the service samples training articles only and gates the index's held-out ones
    held = estimate(10, 4, False, {"train_examples_per_article": 50.0}, held_out=30)
    assert held.seconds == pytest.approx(every.seconds + 2 * 25 * DEFAULTS["gate_article_s"])


def test_measured_rates_replace_the_built_in_ones_and_the_line_says_which() -> None:
    some = estimate(10, 4, False, {"sample_s": 1.0}, "2026-12-03 15:00:00")
    examples = 10 * DEFAULTS["train_examples_per_article"]
    gated = 2  # 20% of 10 held out
    expected = 80 * 1.0 + examples * DEFAULTS["train_example_s"] + 2 * gated * DEFAULTS["gate_article_s"]
    assert some.seconds == pytest.approx(expected)
    assert some.measured == ("sample_s",)
    assert "2026-12-03 15:00:00" in some.source() and "built-in gate_article_s" in some.source()
    every = estimate(10, 4, False, dict.fromkeys(DEFAULTS, 1.0), "then")
    assert every.seconds == pytest.approx(80 + 10 + 2 * 2)
    assert every.source() == "rates measured by the last run here (then)"


def test_the_next_estimate_reads_the_newest_recorded_rate_of_each_stage(tmp_path: Path) -> None:
    assert last_rates(tmp_path) == ({}, None)
    record_run(tmp_path, {"candidate": "a", "rates": {"sample_s": 2.0, "gate_article_s": 3.0}})
    record_run(tmp_path, {"candidate": None, "rates": {"sample_s": 1.5}})  # trained nothing
    rates, at = last_rates(tmp_path)
    assert rates == {"sample_s": 1.5, "gate_article_s": 3.0}
    lines = (tmp_path / REPORTS).read_text().splitlines()
    assert at == json.loads(lines[-1])["finished_at"]


def test_cut_short_corrupt_and_absurd_report_lines_are_skipped(tmp_path: Path) -> None:
    record_run(tmp_path, {"rates": {"sample_s": 2.0, "train_example_s": 4.0}})
    with (tmp_path / REPORTS).open("a") as out:
        out.write('{"rates": {"sample_s": -1, "train_example_s": NaN, "gate_article_s": true}}\n')
        out.write('["not", "a", "report"]\n')
        out.write('{"rates": "none"}\n')
        out.write('{"rates": {"sample_s": 9.0')  # a crash mid-write
    rates, _ = last_rates(tmp_path)
    assert rates == {"sample_s": 2.0, "train_example_s": 4.0}
    assert estimate(1, 1, False, rates).seconds > 0
