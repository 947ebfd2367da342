"""The tune loop's refusals (briefing/tuning/pipeline.py) that need no model: a snapshot with
nothing to gate says which side is empty, the eval split or the index."""

from __future__ import annotations

from briefing.tuning.data import Example, build_snapshot, example, split_of
from briefing.tuning.pipeline import nothing_to_gate

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
