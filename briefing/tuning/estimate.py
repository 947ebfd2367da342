"""How long a tune takes here: each run's measured per-stage rates, and the estimate the next one prints.

A tune measures its stages' wall time and how much each did (`StageClock`): sampling (one
self-training candidate: a generation and its grounding check), SFT training (one example of one
epoch, model loading, GGUF conversion and install included), gating (one article through the
serving backend, per side). `rates_of` turns these into seconds per unit, and a run's report
carries them (`TuneReport.rates`, the registry's report of its candidate); `record_run` appends
the report to DATA_DIR/tuning/reports.jsonl, and `last_rates` reads the newest measured value of
each rate back, so the next estimate is this machine's, under its present load. A rate no run has
measured yet falls back to `DEFAULTS`, and `Estimate.source` says which were used.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPORTS = "reports.jsonl"  # under DATA_DIR/tuning: one tune report per line, oldest first

# Fallbacks until a run on this DATA_DIR has measured its own, on the 2-core dev machine with
# SmolLM2-135M Q4_1 on llama.cpp (1 thread) and LoRA training in torch. sample_s and
# train_examples_per_article were measured by `make tune` on the demo newsroom on 2026-12-03
# (76 samples in 621 s, 10 of them kept, on 19 article templates) under nice 19 with a load
# average of about 6 on the 2 cores: bench/tuning.py on an otherwise busy core sampled XSum at
# 4.8 s a sample the same day. train_example_s and gate_article_s are that benchmark's (1 thread):
# 82 examples in 585 s of training, and 60 XSum articles through llama.cpp and the check in
# 248-294 s per side (Bokmål's longer articles took 13-16 s each).
DEFAULTS: Mapping[str, float] = {
    "sample_s": 8.0,  # one self-training candidate: a generation and its grounding check
    "train_example_s": 7.0,  # one SFT example of one epoch (loading, conversion, install included)
    "gate_article_s": 5.0,  # one eval article through the serving backend, on one side
    "train_examples_per_article": 1.0,  # kept candidates of both templates in the train split
}


@dataclass
class StageClock:
    """One run's measurements: wall seconds and units of work per stage ("sample", "train",
    "dpo", "gate"), summed, and how many articles it sampled."""

    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    articles: float = 0.0  # sampled article templates over the templates an article has

    def add(self, name: str, seconds: float, units: float) -> None:
        entry = self.stages.setdefault(name, {"seconds": 0.0, "units": 0.0})
        entry["seconds"] = round(entry["seconds"] + seconds, 3)
        entry["units"] += units


def rates_of(
    stages: Mapping[str, Mapping[str, float]], articles: float, train_examples: int
) -> dict[str, float]:
    """Seconds per unit of each stage that did some work; the training examples per sampled article
    (the share of articles whose candidates passed the check, over both templates)."""
    names = {"sample": "sample_s", "train": "train_example_s", "gate": "gate_article_s"}
    rates = {
        rate: round(stages[stage]["seconds"] / stages[stage]["units"], 4)
        for stage, rate in names.items()
        if stage in stages and stages[stage]["units"] > 0
    }
    if articles > 0 and "sample_s" in rates:
        rates["train_examples_per_article"] = round(train_examples / articles, 4)
    return rates


@dataclass(frozen=True)
class Estimate:
    seconds: float
    measured: tuple[str, ...]  # the rates taken from an earlier run here; the rest are DEFAULTS
    measured_at: str | None  # when the newest run that measured one finished

    def source(self) -> str:
        if not self.measured:
            return "built-in rates: no run on this DATA_DIR has measured its own yet"
        if len(self.measured) == len(DEFAULTS):
            return f"rates measured by the last run here ({self.measured_at})"
        missing = sorted(set(DEFAULTS) - set(self.measured))
        return f"rates measured by the last run here ({self.measured_at}), built-in {', '.join(missing)}"


def estimate(
    articles: int,
    candidates: int,
    preference: bool,
    measured: Mapping[str, float],
    measured_at: str | None = None,
    *,
    eval_share: float = 0.2,
    eval_limit: int = 40,
    held_out: int | None = None,
) -> Estimate:
    """Seconds a tune should take: sampling both article templates of every article, training on
    what passed (twice with the DPO step), gating both sides (and the DPO candidate) on the
    held-out articles (every one, with a reference or without: at most `eval_limit`). `held_out`
    is how many the index holds (the service's runs sample none of them); without it, an
    `eval_share` of `articles`."""
    rate = {**DEFAULTS, **{k: v for k, v in measured.items() if k in DEFAULTS}}
    sampling = articles * 2 * candidates * rate["sample_s"]
    examples = articles * rate["train_examples_per_article"]
    training = examples * rate["train_example_s"]
    gated = min(eval_limit, articles * eval_share if held_out is None else held_out)
    gating = 2 * gated * rate["gate_article_s"] * (2 if preference else 1)
    total = sampling + training * (2 if preference else 1) + gating
    used = tuple(k for k in DEFAULTS if k in measured)
    return Estimate(total, used, measured_at if used else None)


def record_run(tuning_dir: Path, report: Mapping[str, Any]) -> None:
    """Append a run's report (JSON) to reports.jsonl, flushed to disk: the next estimate reads it."""
    tuning_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), **report}, default=str)
    with (tuning_dir / REPORTS).open("a", encoding="utf-8") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def last_rates(tuning_dir: Path) -> tuple[dict[str, float], str | None]:
    """The newest recorded value of each rate, and when the newest run that measured one finished.
    A line cut short by a crash, or not JSON, is skipped."""
    path = tuning_dir / REPORTS
    if not path.is_file():
        return {}, None
    found: dict[str, float] = {}
    newest: str | None = None
    for line in reversed(path.read_text(encoding="utf-8").splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        rates = report.get("rates") if isinstance(report, dict) else None
        if not isinstance(rates, dict):
            continue
        usable = {k: float(v) for k, v in rates.items() if k in DEFAULTS and _rate(v)}
        if usable and newest is None:
            newest = str(report.get("finished_at", "?"))
        found = {**usable, **found}  # newer lines win
    return found, newest


def _rate(value: Any) -> bool:
    # A hand-edited or corrupt value must not make the estimate negative, infinite or NaN.
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < math.inf
