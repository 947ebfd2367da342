"""Assignment (server/experiments/assign.py): known bucket values, the same answer in another
process, uniform buckets, independent experiments, weights honoured, one experiment per reader and
layer, layer slices allocated first fit, the long-term holdout, and targeting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2_contingency, chisquare

from server.experiments import (
    Experiment,
    ExperimentInvalid,
    ReaderFacts,
    allocate,
    assign,
    bucket,
    parse_experiment,
    started,
    stopped,
    to_json,
)

NOW = datetime(2026, 11, 19, 12, tzinfo=UTC)
READERS = [f"reader-{i}" for i in range(100_000)]


def experiment(key: str, weights: tuple[float, ...] = (0.5, 0.5), **extra: Any) -> Experiment:
    arms = [{"name": "control", "weight": weights[0]}]
    arms += [{"name": f"arm-{i}", "weight": w} for i, w in enumerate(weights[1:], 1)]
    return parse_experiment({"key": key, "hypothesis": "h", "arms": arms, "primary": "ctr", **extra})


def running(key: str, range_start: float = 0.0, **extra: Any) -> Experiment:
    return started(experiment(key, **extra), range_start, NOW)


def reader(reader_id: str, language: str = "en", new: bool = False) -> ReaderFacts:
    return ReaderFacts(reader_id, language, new)


def test_bucket_known_answers() -> None:
    """sha256("<salt>\\x1f<unit>"), first 8 bytes big-endian / 2**64, computed by hand with hashlib:
    experiment/one-sentence·reader-1 -> a257161a38d9f2c3, layer/briefing·reader-1 -> 8badff43606005e2,
    holdout·reader-1 -> 07177f33064b687a."""
    assert bucket("experiment/one-sentence", "reader-1") == 0xA257161A38D9F2C3 / 2**64
    assert bucket("experiment/one-sentence", "reader-1") == pytest.approx(0.6341413320559253, abs=1e-15)
    assert bucket("layer/briefing", "reader-1") == pytest.approx(0.545623735379536, abs=1e-15)
    assert bucket("holdout", "reader-1") == pytest.approx(0.027702283818411673, abs=1e-15)
    # the separator keeps ("a", "bc") and ("ab", "c") apart
    assert bucket("a", "bc") == pytest.approx(0.38398581048625713, abs=1e-15)
    assert bucket("ab", "c") == pytest.approx(0.5863001957090903, abs=1e-15)


def test_a_known_reader_gets_a_known_arm() -> None:
    """reader-1: layer place 0.546 is inside a slice [0.5, 1.0); experiment place 0.634 is past a 0.5
    control (second arm) but inside a 0.7 control; holdout place 0.028 is under 0.05, not 0.02."""
    half = running("one-sentence", 0.5, targeting={"traffic": 0.5})
    assert assign([half], reader("reader-1")) == {"one-sentence": half.arms[1]}
    mostly_control = running("one-sentence", 0.5, weights=(0.7, 0.3), targeting={"traffic": 0.5})
    assert assign([mostly_control], reader("reader-1"))["one-sentence"].name == "control"
    low_slice = running("one-sentence", 0.0, targeting={"traffic": 0.5})
    assert assign([low_slice], reader("reader-1")) == {}  # 0.546 is outside [0, 0.5)
    assert assign([half], reader("reader-1"), holdout=0.05) == {}
    assert assign([half], reader("reader-1"), holdout=0.02) == {"one-sentence": half.arms[1]}


def test_another_process_with_another_hash_seed_assigns_the_same() -> None:
    e = running("sticky-test", weights=(0.25, 0.25, 0.5))
    ids = READERS[:200]
    here = [assign([e], reader(r))["sticky-test"].name for r in ids]
    code = (
        "import json, sys\n"
        "from server.experiments import parse_experiment, assign, ReaderFacts\n"
        "e = parse_experiment(json.loads(sys.argv[1]), lifecycle=True)\n"
        "arms = [assign([e], ReaderFacts(r, 'en', False))['sticky-test'].name for r in sys.argv[2:]]\n"
        "print(json.dumps(arms))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(to_json(e)), *ids],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=os.getcwd(),
    )
    assert json.loads(out.stdout) == here
    assert set(here) == {"control", "arm-1", "arm-2"}


def test_buckets_are_uniform_over_100k_readers() -> None:
    values = np.array([bucket("experiment/uniform", r) for r in READERS])
    counts = np.bincount((values * 20).astype(int), minlength=20)
    assert len(counts) == 20
    assert chisquare(counts).pvalue > 0.001
    assert values.min() >= 0.0 and values.max() < 1.0


def test_two_experiments_assign_independently() -> None:
    """Two 50/50 experiments in different layers: a reader's arm in one says nothing of the other."""
    a = running("first-exp", layer="surface-a")
    b = running("second-exp", layer="surface-b")
    table = Counter(tuple(arm.name for arm in assign([a, b], reader(r)).values()) for r in READERS)
    assert sum(table.values()) == len(READERS)  # everyone is in both
    cells = np.array(
        [
            [table["control", "control"], table["control", "arm-1"]],
            [table["arm-1", "control"], table["arm-1", "arm-1"]],
        ]
    )
    assert chi2_contingency(cells).pvalue > 0.001


def test_weights_of_90_and_10_give_about_10_percent() -> None:
    e = running("ninety-ten", weights=(0.9, 0.1))
    share = sum(assign([e], reader(r))["ninety-ten"].name == "arm-1" for r in READERS) / len(READERS)
    assert share == pytest.approx(0.1, abs=0.005)  # binomial sd 0.00095: over 5 sd


def test_a_layer_never_puts_a_reader_in_two_of_its_experiments() -> None:
    layer: list[Experiment] = []
    for key, traffic in (("layer-one", 0.3), ("layer-two", 0.3), ("layer-three", 0.4)):
        e = experiment(key, targeting={"traffic": traffic})
        layer.append(started(e, allocate(layer, traffic), NOW))
    assert [e.range_start for e in layer] == [0.0, 0.3, 0.6]
    other = running("other-layer", layer="greeting")
    seen = Counter[str]()
    for r in READERS[:30_000]:
        arms = assign([*layer, other], reader(r))
        assert len(arms.keys() - {"other-layer"}) == 1  # the three fill the layer: exactly one
        assert "other-layer" in arms
        seen.update(arms.keys())
    for e in layer:
        assert seen[e.key] / 30_000 == pytest.approx(e.targeting.traffic, abs=0.015)


def test_overlapping_slices_still_give_one_experiment_per_layer() -> None:
    """Slices that overlap (a store bug) must not put a reader in both: the lower slice wins."""
    a, b = running("overlap-a", 0.0), running("overlap-b", 0.0)
    assert all(len(assign([a, b], reader(r))) == 1 for r in READERS[:2000])


def test_allocate_finds_the_first_free_slice_and_refuses_a_full_layer() -> None:
    a = running("slice-a", 0.0, targeting={"traffic": 0.3})
    c = running("slice-c", 0.5, targeting={"traffic": 0.3})
    assert allocate([a, c], 0.2) == pytest.approx(0.3)
    assert allocate([a, c], 0.15) == pytest.approx(0.3)
    with pytest.raises(ExperimentInvalid) as refused:
        allocate([a, c], 0.25)
    assert refused.value.reasons[0].startswith("layer 'briefing' has only 0.20 of its traffic free")
    assert allocate([stopped(a, NOW), c], 0.5) == 0.0  # a stopped experiment gives its slice back
    tenths = [running(f"tenth-{i}", i / 10, targeting={"traffic": 0.1}) for i in range(3)]
    assert allocate(tenths, 0.7) == pytest.approx(0.3)  # 0.1 + 0.2 is not exactly 0.3 in floats
    whole = running("whole-layer", 0.0)
    with pytest.raises(ExperimentInvalid, match=r"layer 'briefing' has only 0\.00 of its traffic free"):
        allocate([whole], 0.1)
    other = running("elsewhere", 0.0, layer="greeting")
    with pytest.raises(ExperimentInvalid, match="layer 'greeting'"):
        allocate([other], 0.5)


def test_holdout_readers_get_no_experiment() -> None:
    a, b = running("held-a", layer="one"), running("held-b", layer="two")
    ids = READERS[:20_000]
    held = {r for r in ids if not assign([a, b], reader(r), holdout=0.1)}
    assert len(held) / len(ids) == pytest.approx(0.1, abs=0.01)
    assert held == {r for r in ids if bucket("holdout", r) < 0.1}
    assert all(len(assign([a, b], reader(r), holdout=0.1)) == 2 for r in ids if r not in held)


def test_only_running_experiments_assign() -> None:
    draft = experiment("draft-exp")
    ended = stopped(running("ended-exp"), NOW)
    assert all(assign([draft, ended], reader(r)) == {} for r in READERS[:500])


def test_targeting_by_language_and_new_or_returning_readers() -> None:
    nb_new = running("nb-new", targeting={"languages": ["nb"], "readers": "new"})
    returning = running("returning-only", layer="other", targeting={"readers": "returning"})
    for r in READERS[:1000]:
        assert set(assign([nb_new, returning], reader(r, "nb", new=True))) == {"nb-new"}
        assert set(assign([nb_new, returning], reader(r, "en", new=True))) == set()
        assert set(assign([nb_new, returning], reader(r, "nb", new=False))) == {"returning-only"}
