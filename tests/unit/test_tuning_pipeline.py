"""What the tune loop decides without a model (briefing/tuning/pipeline.py, layouts.py): a snapshot
with nothing to gate says which side is empty, the eval split or the index; the per-language layout
trains a part for each language with enough rows, on its rows only; TUNE_LAYOUT is checked; and
`briefing tune list` shows each adapter's languages."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from briefing.tuning.config import TrainConfig, TuneConfig
from briefing.tuning.data import Example, PreferencePair, build_snapshot, example, split_of
from briefing.tuning.layouts import Trained, parts_rows, too_few
from briefing.tuning.pipeline import nothing_to_gate
from briefing.tuning.registry import AdapterRecord, AdapterState, new_adapter_id
from briefing.tuning.train import TrainResult
from server.settings import Settings
from server.tuning_commands import _record_json, _record_line

CHAT = (("system", "You summarize."), ("user", "Summarize it."))


def _row(article: str) -> Example:
    return example("self", "article@1", "en", [article], CHAT, f"About {article}.", {})


def test_nothing_to_gate_says_whether_the_eval_split_or_the_index_is_empty() -> None:
    # "a-1" is in the eval split and "pol-0001" in the train split (test_tuning_data's known buckets)
    assert (split_of("a-1"), split_of("pol-0001")) == ("eval", "train")
    trained_only = build_snapshot([_row("pol-0001")], [], {})
    reason = nothing_to_gate(trained_only)
    assert reason == f"snapshot {trained_only.id} has no eval rows: nothing can be gated " + (
        "(more articles or editor decisions)"
    )
    held = build_snapshot([_row("pol-0001"), _row("a-1")], [], {})
    assert len(held.eval) == 1
    assert f"snapshot {held.id} has 1 eval rows, none of an article summary in the index" in nothing_to_gate(
        held
    )


def _lang_row(article: str, language: str) -> Example:
    return example("self", "article@1", language, [article], CHAT, f"About {article}.", {})


def test_per_language_parts_train_each_language_with_enough_rows_on_its_own_rows() -> None:
    rows = [_lang_row(f"en-{n}", "en") for n in range(3)] + [_lang_row("nb-0", "nb")]
    parts = parts_rows(rows, "per-language", 2)
    assert list(parts) == ["en"]  # Bokmål has 1 row, fewer than 2: no part, the base model writes it
    assert [r.article_id for r in parts["en"]] == ["en-0", "en-1", "en-2"]
    assert parts_rows(rows, "per-language", 1) == {"en": rows[:3], "nb": rows[3:]}
    assert parts_rows(rows, "joint", 2) == {None: rows}  # one adapter on every row
    assert parts_rows(rows[:1], "joint", 2) == {}
    assert too_few(rows, 5) == "no language has 5 training examples (en: 3, nb: 1): nothing trained"
    # one language only: the set's one part trains on exactly the joint adapter's rows
    assert parts_rows(rows[:3], "per-language", 2)["en"] == parts_rows(rows[:3], "joint", 2)[None]


def _result(stage: str, steps: int) -> TrainResult:
    return TrainResult(
        Path(f"/runs/{stage}"), steps, steps * 2, steps * 100, float(steps), 100.0, (), None, stage
    )


def test_a_dpo_set_counts_only_the_parts_it_trained() -> None:
    trained = Trained("dpo", {"en": _result("dpo", 4), "nb": _result("sft", 10)})  # nb: too few pairs
    assert trained.layout == "per-language" and trained.languages == ("en", "nb")
    assert (trained.steps, trained.examples, trained.tokens) == (4, 8, 400)
    report = trained.to_json()
    assert report["parts"]["nb"]["stage"] == "sft" and report["languages"] == ["en", "nb"]
    joint = Trained("sft", {None: _result("sft", 3)})
    assert joint.layout == "joint" and joint.languages == () and joint.to_json()["steps"] == 3


def test_tune_layout_is_read_from_the_environment_and_checked() -> None:
    assert Settings.from_env({}).tune.layout == "per-language"
    assert Settings.from_env({"TUNE_LAYOUT": "joint"}).tune.layout == "joint"
    with pytest.raises(ValueError, match="TUNE_LAYOUT must be one of per-language, joint, got 'merged'"):
        Settings.from_env({"TUNE_LAYOUT": "merged"})
    with pytest.raises(ValueError, match="tune layout must be one of"):
        TuneConfig(layout="merged")


def test_tune_device_is_read_from_the_environment_and_checked() -> None:
    assert Settings.from_env({}).tune.train.device == "auto"
    assert Settings.from_env({"TUNE_DEVICE": "cuda:1"}).tune.train.device == "cuda:1"
    with pytest.raises(ValueError, match="training device must be auto, cpu, cuda or cuda:N, got 'gpu'"):
        Settings.from_env({"TUNE_DEVICE": "gpu"})
    # the device decides where, not what: a checkpoint written on one resumes on the other
    assert TrainConfig(device="cpu").hyper() == TrainConfig(device="cuda").hyper()


def test_tune_list_shows_each_adapters_languages() -> None:
    at = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)

    def record(hyper: dict[str, object]) -> AdapterRecord:
        return AdapterRecord(
            new_adapter_id(at),
            "m",
            "0" * 16,
            "ds-x",
            hyper,
            None,
            AdapterState.CANDIDATE,
            at,
            None,
            "p",
            None,
        )

    adapter_set = record({"layout": "per-language", "languages": ["en", "nb"]})
    assert " en+nb " in _record_line(adapter_set)
    assert " joint (en, nb) " in _record_line(record({"layout": "joint", "languages": ["en", "nb"]}))
    assert " joint " in _record_line(record({}))  # a record from before adapter sets
    assert _record_json(adapter_set)["languages"] == ["en", "nb"]


def test_dpo_trains_each_part_with_enough_pairs_from_its_own_sft_part() -> None:
    from types import SimpleNamespace

    from briefing.tuning.data import pair
    from briefing.tuning.pipeline import Tuner

    def preference(article: str, language: str) -> PreferencePair:
        return pair("self", "article@1", language, [article], CHAT, "Better.", f"Worse {article}.", {})

    pairs = [preference(f"en-{n}", "en") for n in range(3)] + [preference("nb-0", "nb")]
    snapshot = build_snapshot([], pairs, {}, eval_share=0.0)
    sft = Trained("sft", {"en": _result("sft", 2), "nb": _result("sft", 2)})
    tuner: Any = SimpleNamespace(config=TuneConfig(min_pairs=2))
    chosen = Tuner._dpo_pairs(tuner, snapshot, sft)
    assert list(chosen) == ["en"] and len(chosen["en"]) == 3  # nb keeps its SFT part
    joint = Trained("sft", {None: _result("sft", 2)})
    assert [len(p) for p in Tuner._dpo_pairs(tuner, snapshot, joint).values()] == [4]
