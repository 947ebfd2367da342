"""The show gate: in which languages, and under which rule, unreviewed generated text may reach
readers (DESIGN §5).

Unreviewed text shows only while the active checker's measured precision on the project's
labelled sentences (data/labels, the report half) is at least `TARGET_PRECISION` under the rule
in use, per language. The rule (`ShowRule`) is chosen on the other half: a support threshold at
or above the checker's own (which decides what is drafted, for editors), and a fluency floor
(the LLM's likelihood of the sentence on its own: garbled text is improbable). The precision must
also hold for the prompt template that wrote the draft (`ShowRule.templates`): a language's pooled
figure is carried by its most frequent template, and an experiment arm with another template
would otherwise inherit a gate it never earned. A draft shows only if every generated sentence in
it passes; otherwise the reader gets the reviewed text or the
article's own words, and the draft waits for an editor. `bench/label_set.py score --gate`
measures it and writes the gate file; the service reads it at start. A gate measured for another
checker or threshold, a language with too few shown sentences to measure, or no gate file at
all: no language passes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from briefing.summaries import SummarySentence

log = logging.getLogger(__name__)

TARGET_PRECISION = 0.95
MIN_SHOWN = 30  # fewer shown sentences than this measure nothing (one error moves it by 3 points)
GATE_FILE = Path(__file__).resolve().parent.parent / "data" / "labels" / "gate.json"


@dataclass(frozen=True)
class ShowRule:
    """What an unreviewed generated sentence needs to reach readers in one language."""

    threshold: float  # support at least this (and no fact missing from its evidence)
    fluency_floor: float | None = None  # and this fluency, when the rule has a floor
    # The prompt templates (ids such as "article@1") whose own measured precision passes under
    # this rule; None: any (a gate file that measured no template on its own).
    templates: frozenset[str] | None = None

    def allows(self, prompt: str | None) -> bool:
        """Whether drafts written by this template may show under the rule."""
        return self.templates is None or prompt in self.templates

    def shows(self, sentence: SummarySentence) -> bool:
        if sentence.extractive:  # the article's own words, quoted
            return True
        fluent = self.fluency_floor is None or (
            sentence.fluency is not None and sentence.fluency >= self.fluency_floor
        )
        return sentence.score >= self.threshold and not sentence.missing and fluent

    def shows_all(self, sentences: Iterable[SummarySentence]) -> bool:
        return all(self.shows(s) for s in sentences)


def show_rules(path: Path, checker: str, threshold: float) -> dict[str, ShowRule]:
    """The languages whose measured precision passes, for this checker at this threshold, each
    with the rule it was measured under."""
    try:
        gate: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("show gate %s unreadable (%s): drafts show in no language", path, exc)
        return {}
    if gate.get("checker") != checker or gate.get("threshold") != threshold:
        log.info(
            "show gate %s was measured for %s at %s, not %s at %s: drafts show in no language",
            path,
            gate.get("checker"),
            gate.get("threshold"),
            checker,
            threshold,
        )
        return {}
    return {
        language: _rule(figures, threshold)
        for language, figures in gate.get("languages", {}).items()
        if passes(figures)
    }


def draft_languages(path: Path, checker: str, threshold: float) -> frozenset[str]:
    """The languages whose measured precision passes, for this checker at this threshold."""
    return frozenset(show_rules(path, checker, threshold))


def passes(figures: dict[str, Any]) -> bool:
    precision = figures.get("precision")
    return precision is not None and precision >= TARGET_PRECISION and figures.get("shown", 0) >= MIN_SHOWN


def _rule(figures: dict[str, Any], threshold: float) -> ShowRule:
    rule = figures.get("rule") or {}
    floor = rule.get("fluency_floor")
    templates = figures.get("templates")
    return ShowRule(
        threshold=max(threshold, float(rule.get("threshold", threshold))),
        fluency_floor=None if floor is None else float(floor),
        templates=None if templates is None else frozenset(t for t, f in templates.items() if passes(f)),
    )
