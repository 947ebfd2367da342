"""The tune loop: dataset snapshot → LoRA training → GGUF conversion → gate against the serving
adapter → promote or keep (DESIGN §5: adapters are promoted only through a measured gate).

With the "per-language" layout (TuneConfig.layout) a candidate is an adapter set: one part per
language with enough examples, trained on that language's rows (DPO on its pairs, from its SFT
part), converted and installed together, gated and promoted as one record (briefing.tuning.layouts).

Each step leaves a complete state or none: a snapshot and an adapter are written under a staging
name and renamed, the registry learns of a candidate only once its files are installed, and a
promotion is one registry transaction. A crash anywhere before `promote` leaves the promoted
adapter serving; training resumes from its last checkpoint on the next run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from briefing.summarize import Request, Summarizer
from briefing.tuning.config import TrainConfig, TuneConfig
from briefing.tuning.data import Example, PreferencePair, Snapshot
from briefing.tuning.estimate import StageClock, rates_of
from briefing.tuning.evaluate import GateReport, GateRule, Outcome, decide, evaluate_summaries, write_outputs
from briefing.tuning.gguf_lora import to_gguf_lora
from briefing.tuning.layouts import Trained, parts_rows, stage_name, too_few
from briefing.tuning.registry import (
    JOINT,
    AdapterRecord,
    AdapterRegistry,
    AdapterState,
    hash_file,
    install_adapter,
    install_adapter_set,
    new_adapter_id,
)
from briefing.tuning.serving import serve_summarizer
from briefing.tuning.train import TrainResult, train_dpo, train_sft
from indexing import Embedder

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    """Where tuning writes under DATA_DIR: snapshots and training runs, and installed adapters."""

    data_dir: Path

    @property
    def tuning(self) -> Path:
        return self.data_dir / "tuning"

    @property
    def adapters(self) -> Path:
        return self.data_dir / "adapters"

    def run_dir(self, snapshot_id: str, config: TrainConfig, stage: str) -> Path:
        """One folder per (snapshot, hyper-parameters, stage): a rerun of the same resumes there."""
        digest = _digest(config.hyper())
        return self.tuning / "runs" / f"{snapshot_id}-{digest}-{stage}"


@dataclass(frozen=True)
class TuneReport:
    snapshot: str
    candidate: str | None
    stage: str | None  # "sft" or "dpo": the training that produced the candidate
    promoted: bool
    reasons: tuple[str, ...]
    gate: Mapping[str, Any] | None
    train: Mapping[str, Any] | None
    seconds: float
    stages: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # wall seconds, units
    rates: Mapping[str, float] = field(default_factory=dict)  # seconds per unit (estimate.rates_of)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def eval_requests(
    summarizer: Summarizer, examples: Sequence[Example], limit: int
) -> list[tuple[Example, Request]]:
    """Up to `limit` eval examples of article tasks with their serving requests (one per article:
    the gate measures what a reader of that article would be shown)."""
    chosen: dict[str, Example] = {}
    for example in sorted(examples, key=lambda e: e.id):
        if example.article_id not in chosen and not example.task.startswith("update"):
            chosen[example.article_id] = example
    pairs: list[tuple[Example, Request]] = []
    for example in list(chosen.values())[:limit]:
        requests = summarizer.article_requests([example.article_id], example.task)
        pairs.extend((example, r) for r in requests)
    return pairs


def nothing_to_gate(snapshot: Snapshot) -> str:
    """Why `eval_requests` found nothing to gate on `snapshot`: its eval split is empty, or holds
    no article summary of an indexed article."""
    # The eval split holds only rows whose text passed (self-training keeps a few in ten): say
    # which side is empty, the split or the index, so the operator knows what to add.
    held = len(snapshot.eval)
    where = (
        "has no eval rows" if held == 0 else f"has {held} eval rows, none of an article summary in the index"
    )
    return f"snapshot {snapshot.id} {where}: nothing can be gated (more articles or editor decisions)"


def gate_outcomes(
    summarizer: Summarizer, pairs: Sequence[tuple[Example, Request]], adapter: str | None
) -> list[Outcome]:
    """The eval articles through the serving backend, as `adapter` (None: the base model)."""
    examples = [e for e, _ in pairs]
    return evaluate_summaries(summarizer, [r for _, r in pairs], examples, adapter)


@dataclass
class Tuner:
    """One newsroom's tune loop over its summarizer (whose generator serves the adapters)."""

    summarizer: Summarizer
    registry: AdapterRegistry
    workspace: Workspace
    base: str  # the transformers folder training starts from (briefing.llm.hf.dequantized)
    base_gguf: Path  # the GGUF the serving backend runs (the adapter is converted for it)
    base_model: str  # its name, recorded with each adapter
    backend: str  # the serving backend's name (llamacpp, transformers, openai)
    embedder: Embedder | None = None
    config: TuneConfig = field(default_factory=TuneConfig)
    rule: GateRule = field(default_factory=GateRule)
    progress: bool = False
    stop: Callable[[], bool] | None = None
    _clock: StageClock = field(default_factory=StageClock, init=False, repr=False)  # this run's

    def run(
        self,
        snapshot: Snapshot,
        *,
        actor: str = "job",
        role: str = "job",
        deadline_s: float | None = None,
        clock: StageClock | None = None,
    ) -> TuneReport:
        """Train a candidate on `snapshot`, gate it against the promoted adapter, promote if it passes.
        `clock` holds what the caller measured before (sampling); the stages here are added to it,
        and the report carries the rates (`briefing.tuning.estimate`)."""
        start = time.monotonic()
        self._clock = clock = clock or StageClock()
        if len(snapshot.train) < self.config.min_examples:
            few = len(snapshot.train)
            reason = f"{few} training examples, fewer than {self.config.min_examples}: nothing trained"
            return self._untrained(snapshot, reason, start)
        if not self._sft_rows(snapshot):
            return self._untrained(snapshot, too_few(snapshot.train, self.config.min_examples), start)
        pairs = eval_requests(self.summarizer, snapshot.eval, self.config.eval_limit)
        if not pairs:
            reason = nothing_to_gate(snapshot)
            return self._untrained(snapshot, reason, start)
        current = self.registry.promoted()
        baseline = self._gated(pairs, current.id if current else None)
        record, trained, outcomes = self._train_and_measure(snapshot, None, pairs, deadline_s)
        report = decide(baseline, outcomes, self.embedder, self.rule)
        if self.config.preference and self._dpo_pairs(snapshot, trained):
            record, trained, outcomes, report = self._maybe_dpo(
                snapshot, record, trained, outcomes, report, baseline, pairs, deadline_s
            )
        rates = rates_of(clock.stages, clock.articles, len(snapshot.train))
        measured = {"train": trained.to_json(), "stages": clock.stages, "rates": rates}
        self.registry.set_report(record.id, {**report.to_json(), **measured})
        write_outputs(self.workspace.tuning / "gate" / f"{record.id}.jsonl", baseline, outcomes)
        if report.promote:
            self.registry.promote(record.id, actor, role=role)
            log.info("adapter %s promoted: %s", record.id, "; ".join(report.reasons))
        else:
            log.info("adapter %s kept as a candidate: %s", record.id, "; ".join(report.reasons))
        return TuneReport(
            snapshot.id,
            record.id,
            trained.stage,
            report.promote,
            report.reasons,
            report.to_json(),
            trained.to_json(),
            time.monotonic() - start,
            clock.stages,
            rates,
        )

    def _untrained(self, snapshot: Snapshot, reason: str, start: float) -> TuneReport:
        """The report of a run that trained nothing (its sampling rates are still measured)."""
        clock = self._clock
        rates = rates_of(clock.stages, clock.articles, len(snapshot.train))
        seconds = time.monotonic() - start
        return TuneReport(snapshot.id, None, None, False, (reason,), None, None, seconds, clock.stages, rates)

    def train(
        self, snapshot: Snapshot, sft: Trained | None = None, *, deadline_s: float | None = None
    ) -> tuple[AdapterRecord, Trained]:
        """SFT on the snapshot's train split (or, given the SFT result, DPO on its preference
        pairs from there), each part on its own rows (`_sft_rows`), registered as one candidate."""
        config = self.config.train
        kwargs: dict[str, Any] = {"progress": self.progress, "stop": self.stop, "deadline_s": deadline_s}
        began = time.monotonic()
        parts: dict[str | None, TrainResult] = {}
        if sft is None:
            rows = self._sft_rows(snapshot)
            if not rows:
                raise ValueError(too_few(snapshot.train, self.config.min_examples))
            for language, examples in rows.items():
                out = self.workspace.run_dir(snapshot.id, config, stage_name("sft", language))
                parts[language] = train_sft(examples, self.base, out, config, **kwargs)
        else:
            pairs = self._dpo_pairs(snapshot, sft)
            if not pairs:
                raise ValueError(f"no part has {self.config.min_pairs} preference pairs: no DPO step")
            for language, part in sft.parts.items():
                if language not in pairs:  # too few pairs in its language: its SFT part stays
                    parts[language] = part
                    continue
                out = self.workspace.run_dir(snapshot.id, config, stage_name("dpo", language))
                parts[language] = train_dpo(
                    pairs[language], self.base, part.adapter_dir, out, config, **kwargs
                )
        trained = Trained("sft" if sft is None else "dpo", parts)
        record = self.register(snapshot, trained)
        # A resumed or already finished run took part of its time in an earlier call: its own
        # record of training time (loading excluded) is then the larger and truer figure.
        seconds = max(time.monotonic() - began, trained.seconds)
        epochs = config.epochs if sft is None else config.dpo_epochs
        self._clock.add("train" if sft is None else "dpo", seconds, trained.examples * epochs)
        return record, trained

    def _sft_rows(self, snapshot: Snapshot) -> dict[str | None, list[Example]]:
        """Each part's training rows (a joint adapter trains on whatever the split holds)."""
        layout = self.config.layout
        minimum = 1 if layout == JOINT else self.config.min_examples
        return parts_rows(snapshot.train, layout, minimum)

    def _dpo_pairs(self, snapshot: Snapshot, sft: Trained) -> dict[str | None, list[PreferencePair]]:
        """Each SFT part's preference pairs, for the parts with at least `min_pairs` of them."""
        rows = parts_rows(snapshot.pairs, sft.layout, self.config.min_pairs)
        return {language: pairs for language, pairs in rows.items() if language in sft.parts}

    def register(self, snapshot: Snapshot, trained: Trained | TrainResult) -> AdapterRecord:
        """Convert each part for llama.cpp, install the files, then record the candidate (in that
        order). A bare `TrainResult` is a joint adapter."""
        if not isinstance(trained, Trained):
            trained = Trained(trained.stage, {None: trained})
        now = datetime.now(UTC)
        adapter_id = new_adapter_id(now)
        files: dict[str | None, tuple[Path, Path]] = {}
        for language, part in trained.parts.items():
            gguf_file = part.adapter_dir.parent / f"{part.stage}.gguf"
            to_gguf_lora(part.adapter_dir, self.base_gguf, gguf_file)
            files[language] = (part.adapter_dir, gguf_file)
        root = self.workspace.adapters
        if trained.layout == JOINT:
            path = install_adapter(root, adapter_id, *files[None])
            languages = sorted({row.language for row in snapshot.train})  # what it was trained on
        else:
            path = install_adapter_set(root, adapter_id, {k: v for k, v in files.items() if k is not None})
            languages = list(trained.languages)
        record = AdapterRecord(
            id=adapter_id,
            base_model=self.base_model,
            base_hash=hash_file(self.base_gguf),
            snapshot_id=snapshot.id,
            hyper={
                **self.config.train.hyper(),
                "stage": trained.stage,
                "layout": trained.layout,
                "languages": languages,
            },
            report=None,
            state=AdapterState.CANDIDATE,
            created_at=now,
            promoted_at=None,
            path=path,
            previous=None,
        )
        return self.registry.add(record)

    def outcomes(self, record: AdapterRecord, pairs: Sequence[tuple[Example, Request]]) -> list[Outcome]:
        """The eval articles drafted with the candidate (loaded into the serving backend first)."""
        began = time.monotonic()
        serve_summarizer(self.summarizer, self.backend, self.workspace.adapters, record)
        outcomes = gate_outcomes(self.summarizer, pairs, record.id)
        self._clock.add("gate", time.monotonic() - began, len(pairs))
        return outcomes

    def _gated(self, pairs: Sequence[tuple[Example, Request]], adapter: str | None) -> list[Outcome]:
        began = time.monotonic()
        outcomes = gate_outcomes(self.summarizer, pairs, adapter)
        self._clock.add("gate", time.monotonic() - began, len(pairs))
        return outcomes

    def _train_and_measure(
        self,
        snapshot: Snapshot,
        sft: Trained | None,
        pairs: Sequence[tuple[Example, Request]],
        deadline_s: float | None,
    ) -> tuple[AdapterRecord, Trained, list[Outcome]]:
        record, trained = self.train(snapshot, sft, deadline_s=deadline_s)
        return record, trained, self.outcomes(record, pairs)

    def _maybe_dpo(
        self,
        snapshot: Snapshot,
        record: AdapterRecord,
        trained: Trained,
        outcomes: list[Outcome],
        report: GateReport,
        baseline: list[Outcome],
        pairs: Sequence[tuple[Example, Request]],
        deadline_s: float | None,
    ) -> tuple[AdapterRecord, Trained, list[Outcome], GateReport]:
        """The DPO step on top of SFT, kept only when it beats SFT alone on the gate's rule."""
        dpo_record, dpo_trained, dpo_outcomes = self._train_and_measure(snapshot, trained, pairs, deadline_s)
        versus_sft = decide(outcomes, dpo_outcomes, self.embedder, self.rule)
        if not versus_sft.promote:
            reason = "DPO did not beat SFT alone: " + "; ".join(versus_sft.reasons)
            self.registry.set_report(dpo_record.id, {**versus_sft.to_json(), "train": dpo_trained.to_json()})
            return record, trained, outcomes, replace(report, reasons=(*report.reasons, reason))
        versus_current = decide(baseline, dpo_outcomes, self.embedder, self.rule)
        return dpo_record, dpo_trained, dpo_outcomes, versus_current


def _digest(value: Mapping[str, Any]) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:10]
