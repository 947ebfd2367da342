"""The show gate: in which languages, for which writer, and under which rule, unreviewed generated
text may reach readers (DESIGN §5).

Unreviewed text shows only while the active checker's measured precision on the project's
labelled sentences (data/labels, the report half) is at least `TARGET_PRECISION` under the rule
in use, per language. The rule (`ShowRule`) is chosen on the other half: a support threshold at
or above the checker's own (which decides what is drafted, for editors), and a fluency floor
(the LLM's likelihood of the sentence on its own: garbled text is improbable). The precision must
also hold for the prompt template that wrote the draft (`ShowRule.templates`): a language's pooled
figure is carried by its most frequent template, and an experiment arm with another template
would otherwise inherit a gate it never earned. Likewise for the writer (`Writer`: the model and
LoRA adapter that wrote the draft): labels measure one writer's errors, and a fine-tuned adapter
errs differently from the model it was trained on, so a draft shows only under a rule measured
for its own writer; an adapter nobody has labelled gets reviewed text or the article's words
while the base model's drafts keep showing under theirs. A draft shows only if every generated
sentence in it passes; otherwise the reader gets the reviewed text or the article's own words,
and the draft waits for an editor. `bench/label_set.py score --gate` measures one writer and
writes (or replaces) its entry in the gate file; the service reads it at start. A gate measured
for another checker or threshold, a language with too few shown sentences to measure, a writer
entry that does not say exactly which writer it is, or no gate file at all: nothing passes there.

The gate file: `{"checker", "threshold", "target_precision", "writers": [{"model", "adapter",
"languages": {language: figures}}]}`, `adapter` null for the base model. A file from before
writers were recorded has `languages` at the top and no `writers`: every gate written then was
measured on the packaged model's sentences without an adapter, so it is read as `BASE_WRITER`'s.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from briefing.summaries import Summary, SummarySentence

log = logging.getLogger(__name__)

TARGET_PRECISION = 0.95
MIN_SHOWN = 30  # fewer shown sentences than this measure nothing (one error moves it by 3 points)
GATE_FILE = Path(__file__).resolve().parent.parent / "data" / "labels" / "gate.json"


@dataclass(frozen=True)
class Writer:
    """Who wrote a draft: the generator's model name (llama.cpp: the GGUF file's stem) and the
    LoRA adapter id it ran with (None: the model alone)."""

    model: str
    adapter: str | None = None

    @classmethod
    def of(cls, model: str, adapter: str | None) -> Writer:
        """From a draft's (or candidate's) provenance: local backends name an adapter's output
        "model+adapter" (briefing.llm), which is this writer's model with that adapter."""
        if adapter is not None and model.endswith(f"+{adapter}"):
            model = model.removesuffix(f"+{adapter}")
        return cls(model, adapter)

    @classmethod
    def of_summary(cls, summary: Summary) -> Writer:
        return cls.of(summary.model, summary.adapter)

    def to_json(self) -> dict[str, str | None]:
        return {"model": self.model, "adapter": self.adapter}


# What the labelled sentences of a gate file without writers were written by: the packaged
# SmolLM2-135M-Instruct GGUF through llama.cpp, no adapter (the `model` of every candidate row in
# data/labels; tests/unit/test_gate.py checks that). Another backend names the same weights
# otherwise (transformers: "...-f32") and computes differently, so it is not this writer.
BASE_WRITER = Writer("SmolLM2-135M-Instruct.Q4_1", None)


@dataclass(frozen=True)
class ShowRule:
    """What an unreviewed generated sentence needs to reach readers in one language."""

    threshold: float  # support at least this (and no fact missing from its evidence)
    fluency_floor: float | None = None  # and this fluency, when the rule has a floor
    # The prompt templates (ids such as "article@1") whose own measured precision passes under
    # this rule; None: any (a gate file that measured no template on its own).
    templates: frozenset[str] | None = None
    # The writer whose labelled sentences measured the rule; None: any writer, only for rules
    # made in code (a demo, a test): every rule read from a gate file names its writer.
    writer: Writer | None = None

    def allows(self, prompt: str | None) -> bool:
        """Whether drafts written by this template may show under the rule."""
        return self.templates is None or prompt in self.templates

    def measured_for(self, writer: Writer | None) -> bool:
        """Whether drafts by `writer` (None: not known) may show under the rule."""
        return self.writer is None or self.writer == writer

    def shows(self, sentence: SummarySentence) -> bool:
        if sentence.extractive:  # the article's own words, quoted
            return True
        fluent = self.fluency_floor is None or (
            sentence.fluency is not None and sentence.fluency >= self.fluency_floor
        )
        return sentence.score >= self.threshold and not sentence.missing and fluent

    def shows_all(self, sentences: Iterable[SummarySentence]) -> bool:
        return all(self.shows(s) for s in sentences)


def show_rules(path: Path, checker: str, threshold: float) -> tuple[tuple[str, ShowRule], ...]:
    """(language, rule) for every writer and language whose measured precision passes, for this
    checker at this threshold, each rule naming its writer; sorted by language, then writer. A
    language appears once per writer that passes in it."""
    gate = _read(path)
    if gate is None:
        return ()
    if gate.get("checker") != checker or gate.get("threshold") != threshold:
        log.info(
            "show gate %s was measured for %s at %s, not %s at %s: drafts show in no language",
            path,
            gate.get("checker"),
            gate.get("threshold"),
            checker,
            threshold,
        )
        return ()
    rules = [
        (language, _rule(figures, threshold, writer))
        for writer, languages in writer_entries(gate, path)
        for language, figures in languages.items()
        if isinstance(figures, dict) and passes(figures)
    ]
    return tuple(sorted(rules, key=lambda r: (r[0], *_key(r[1].writer))))


def draft_languages(path: Path, checker: str, threshold: float) -> frozenset[str]:
    """The languages where some writer's measured precision passes, for this checker at this
    threshold."""
    return frozenset(language for language, _ in show_rules(path, checker, threshold))


def passes(figures: dict[str, Any]) -> bool:
    precision = figures.get("precision")
    return precision is not None and precision >= TARGET_PRECISION and figures.get("shown", 0) >= MIN_SHOWN


def writer_entries(gate: dict[str, Any], path: Path | str = "gate") -> list[tuple[Writer, dict[str, Any]]]:
    """Each writer the gate file measured, with its languages' figures. A gate file from before
    writers were recorded (`languages` at the top) is `BASE_WRITER`'s. An entry that does not
    say exactly which writer it is (no model, an adapter that is neither an id nor null, no
    `adapter` key at all) or names a writer twice is left out with a warning: figures whose
    writer is unknown vouch for no one."""
    if "writers" not in gate:
        languages = gate.get("languages", {})
        return [(BASE_WRITER, languages)] if isinstance(languages, dict) else []
    if "languages" in gate:
        log.warning("show gate %s has both `writers` and top-level `languages`: the latter are ignored", path)
    entries = gate["writers"]
    if not isinstance(entries, list):
        log.warning(
            "show gate %s: `writers` must be a list of writers, got %r: drafts show nowhere", path, entries
        )
        return []
    found = [(_writer(entry, path), entry) for entry in entries]
    counts = Counter(w for w, _ in found if w is not None)
    for writer, n in counts.items():
        if n > 1:
            log.warning("show gate %s measures %s %d times: none of its entries is used", path, writer, n)
    return [(w, e["languages"]) for w, e in found if w is not None and counts[w] == 1]


def _writer(entry: Any, path: Path | str) -> Writer | None:
    """The writer an entry names, or None (logged) when it does not name one exactly."""
    ok = (
        isinstance(entry, dict)
        and isinstance(entry.get("model"), str)
        and bool(entry["model"].strip())
        and "adapter" in entry
        and (
            entry["adapter"] is None or (isinstance(entry["adapter"], str) and bool(entry["adapter"].strip()))
        )
        and isinstance(entry.get("languages"), dict)
    )
    if not ok:
        shown = {k: v for k, v in entry.items() if k != "languages"} if isinstance(entry, dict) else entry
        log.warning(
            "show gate %s: writer entry %r needs a model name, an adapter id or null, and languages:"
            " drafts show for no writer under it",
            path,
            shown,
        )
        return None
    return Writer(entry["model"], entry["adapter"])


def _key(writer: Writer | None) -> tuple[str, str]:
    """A sort key: the base model before its adapters."""
    return ("", "") if writer is None else (writer.model, writer.adapter or "")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        gate = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("show gate %s unreadable (%s): drafts show in no language", path, exc)
        return None
    if not isinstance(gate, dict):
        log.warning("show gate %s is not a JSON object: drafts show in no language", path)
        return None
    return gate


def _rule(figures: dict[str, Any], threshold: float, writer: Writer) -> ShowRule:
    rule = figures.get("rule") or {}
    floor = rule.get("fluency_floor")
    templates = figures.get("templates")
    return ShowRule(
        threshold=max(threshold, float(rule.get("threshold", threshold))),
        fluency_floor=None if floor is None else float(floor),
        templates=None if templates is None else frozenset(t for t, f in templates.items() if passes(f)),
        writer=writer,
    )
