"""Adapter layouts: what each part of a candidate trains on, and what its training produced.

"joint" trains one adapter on every row. "per-language" (the default) trains one part per
language that has enough rows, each on that language's rows only, and the parts are installed,
gated and promoted as one adapter set (bench/results/tuning_layouts.json: an adapter per language
was as good as a joint one in English and better in Bokmål). A language with too few rows gets
no part: the base model writes its articles. Light to import (no torch).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from briefing.tuning.data import Example, PreferencePair
from briefing.tuning.registry import JOINT, PER_LANGUAGE

if TYPE_CHECKING:
    from briefing.tuning.train import TrainResult

R = TypeVar("R", Example, PreferencePair)


def parts_rows(rows: Sequence[R], layout: str, minimum: int) -> dict[str | None, list[R]]:
    """The rows each part trains on: {None: every row} for a joint adapter (when there are
    `minimum`), else {language: its rows} for each language with at least `minimum`."""
    if layout == JOINT:
        return {None: list(rows)} if len(rows) >= minimum and rows else {}
    if layout != PER_LANGUAGE:
        raise ValueError(f"unknown adapter layout {layout!r}")
    counts = Counter(row.language for row in rows)
    return {
        language: [row for row in rows if row.language == language]
        for language in sorted(counts)
        if counts[language] >= max(minimum, 1)
    }


def too_few(rows: Sequence[Example], minimum: int) -> str:
    """Why `parts_rows` found no language to train ("en: 3, nb: 2, fewer than 8 each")."""
    counts = Counter(row.language for row in rows)
    each = ", ".join(f"{language}: {n}" for language, n in sorted(counts.items())) or "no rows"
    return f"no language has {minimum} training examples ({each}): nothing trained"


def stage_name(stage: str, language: str | None) -> str:
    """A part's run folder suffix: "sft" for a joint adapter, "sft-nb" for a set's Bokmål part."""
    return stage if language is None else f"{stage}-{language}"


@dataclass(frozen=True)
class Trained:
    """One candidate's training: a `TrainResult` per part (key None: a joint adapter). In a DPO
    set, a language without enough preference pairs keeps its SFT part (its stage says so)."""

    stage: str  # "sft" or "dpo": the step that produced the candidate
    parts: Mapping[str | None, TrainResult]

    @property
    def layout(self) -> str:
        return JOINT if None in self.parts else PER_LANGUAGE

    @property
    def languages(self) -> tuple[str, ...]:
        """A set's languages (those with a part); () for a joint adapter."""
        return tuple(sorted(language for language in self.parts if language is not None))

    def fresh(self) -> dict[str | None, TrainResult]:
        """The parts trained in this step (not those a DPO set kept from SFT)."""
        return {language: r for language, r in self.parts.items() if r.stage == self.stage}

    @property
    def steps(self) -> int:
        return sum(r.steps for r in self.fresh().values())

    @property
    def examples(self) -> int:
        return sum(r.examples for r in self.fresh().values())

    @property
    def tokens(self) -> int:
        return sum(r.tokens for r in self.fresh().values())

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.fresh().values())

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A joint adapter's training as before sets existed; a set's totals and its parts."""
        if self.layout == JOINT:
            return result_json(self.parts[None])
        totals = {"steps": self.steps, "examples": self.examples, "tokens": self.tokens}
        parts = {str(language): result_json(r) for language, r in self.parts.items()}
        return {
            "stage": self.stage,
            "layout": self.layout,
            "languages": list(self.languages),
            **totals,
            "seconds": self.seconds,
            "tokens_per_s": self.tokens_per_s,
            "parts": parts,
        }


def result_json(trained: TrainResult) -> dict[str, Any]:
    data = asdict(trained)
    data["adapter_dir"] = str(trained.adapter_dir)
    data["losses"] = list(trained.losses)[-20:]  # the tail: the whole curve is in the run folder
    return data
