"""bench/experiments.py at a tiny size: the JSON the issue asks for, an A/A false-positive rate
the sequential mode keeps low under daily peeking, and SQL results equal to the arrays'."""

from __future__ import annotations

import json
from pathlib import Path

from bench.experiments import main

TINY = [
    *("--aa", "200", "--aa-readers", "600"),
    *("--power", "10", "--power-readers", "2000", "--lift", "0.2"),
    *("--srm", "10", "--srm-readers", "1000,4000", "--srm-bug", "0.2"),
    *("--sql-aa", "1", "--sql-planted", "1"),
    *("--timing-exposures", "2000", "--timing-events", "20000"),
]


def test_a_tiny_run_writes_the_issues_keys_and_holds_the_a_a_rate(tmp_path: Path) -> None:
    out = tmp_path / "experiments.json"
    main([*TINY, "--out", str(out)])
    r = json.loads(out.read_text())

    for path in (
        "aa.sequential.false_positive_rate",
        "aa.naive_peeking.false_positive_rate",
        "aa.fixed_horizon_end.false_positive_rate",
        "power.sequential",
        "cuped.ci_width_ratio",
        "cuped.theoretical_sqrt_1_minus_rho2",
        "srm.detection_rate",
        "srm.false_alarm_rate",
        "analysis_seconds_1m",
        "provenance.commit",
        "machine.python",
    ):
        value = r
        for part in path.split("."):
            value = value[part]
        assert value is not None, path
    aa = r["aa"]
    assert aa["experiments"] == 200 and aa["looks"] == 14
    assert aa["sequential"]["false_positive_rate"] <= 0.1
    # peeking every day at a fixed-horizon test finds "effects" in far more A/A experiments
    assert aa["naive_peeking"]["false_positive_rate"] > 2 * aa["sequential"]["false_positive_rate"] + 0.05
    # a planted 20% lift is found, and a 20% assignment bug at 4,000 readers always alarms
    assert r["power"]["fixed_horizon_end"] >= 0.8
    assert r["srm"]["detection_rate"] == 1.0
    # CUPED's interval is narrower, by what the pre-period's correlation predicts
    assert 0 < r["cuped"]["ci_width_ratio"] < 1
    assert abs(r["cuped"]["ci_width_ratio"] - r["cuped"]["theoretical_sqrt_1_minus_rho2"]) < 0.02
    # the SQLite path (exposures, events, metrics.py, analyse) gives the arrays' numbers
    e2e = r["end_to_end"]
    assert e2e["experiments"] == 2 and e2e["max_abs_difference"]["n_mismatches"] == 0
    assert e2e["max_abs_difference"]["p_value"] < 1e-9 and e2e["max_abs_difference"]["srm_p"] < 1e-9
    # the timing run loads the sizes asked for (exposures follow the simulated visit rate)
    assert abs(r["timing"]["events"] - 20000) < 1000 and abs(r["timing"]["exposures"] - 2000) < 400
