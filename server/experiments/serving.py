"""Which briefing variant a reader is served, and what the serve records as exposures.

The service asks `Arms.of(reader)` on every briefing request: a pure function of the reader's id,
language and newness and the running experiments (the store keeps them in memory), so it costs
a few hashes. The reader's arms are merged into one `Variant`
(one arm per layer; with several layers, each arm sets the fields it changes), which the
composer writes the briefing with and the briefing cache keys on (the whole variant, not its
name: two experiments may both call an arm "treatment").

An exposure is recorded when a briefing is actually served under an arm, never at assignment;
its key is the served briefing's identity, so a cached briefing served again is the same exposure
(the store ignores the repeat). Rows go through the visits' write-behind queue (server.visits).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from briefing import Briefing, Variant
from server.experiments.assign import ReaderFacts, assign
from server.experiments.model import Arm, Experiment
from server.experiments.store import exposure_rows

CONTROL = Variant("control")
_DEFAULTS = {f.name: f.default for f in fields(Variant) if f.name != "name"}
_NAME_LENGTH = 50  # briefings_served.variant
Row = dict[str, Any]


@dataclass(frozen=True)
class Assignment:
    """A reader's arms (experiment key -> arm) and the one variant they make together."""

    variant: Variant = CONTROL
    arms: Mapping[str, Arm] = field(default_factory=dict)


class Arms:
    """Each reader's assignment under the running experiments (`running`: the store's list,
    cached there and re-read after a change, so a start or stop reaches every request)."""

    def __init__(self, running: Callable[[], Sequence[Experiment]], holdout: float = 0.0) -> None:
        self._running, self.holdout = running, holdout

    def running(self) -> tuple[Experiment, ...]:
        return tuple(self._running())

    def of(self, reader: ReaderFacts, running: Sequence[Experiment] | None = None) -> Assignment:
        running = self.running() if running is None else running
        arms = assign(running, reader, self.holdout) if running else {}
        return Assignment(merged(arms), arms) if arms else Assignment()


def merged(arms: Mapping[str, Arm]) -> Variant:
    """One variant from one arm per layer, in experiment-key order: each arm sets the fields its
    variant changes from the defaults. Named after the arms (hashed when that is too long)."""
    values: dict[str, object] = {}
    for key in sorted(arms):
        variant = arms[key].variant
        values.update({k: getattr(variant, k) for k, v in _DEFAULTS.items() if getattr(variant, k) != v})
    name = "+".join(f"{key}/{arms[key].name}" for key in sorted(arms))
    if len(name) > _NAME_LENGTH:
        name = "arms-" + hashlib.sha256(name.encode()).hexdigest()[:16]
    return replace(CONTROL, name=name, **values)  # type: ignore[arg-type]


def exposures(assignment: Assignment, briefing: Briefing, at: datetime, latency_ms: float) -> list[Row]:
    """The exposure rows of one serve (none outside experiments). The briefing key is the served
    briefing's identity (reader, variant, since, composed at): served again from the cache, it
    is the same exposure."""
    if not assignment.arms:
        return []
    since = briefing.since.isoformat() if briefing.since else "-"
    key = f"{briefing.reader_id}\x1f{assignment.variant!r}\x1f{since}\x1f{briefing.generated_at.isoformat()}"
    fallback = sum(1 for item in briefing.items if item.source == "extractive")
    return exposure_rows(
        briefing.reader_id, assignment.arms, at, key, latency_ms, len(briefing.items), fallback
    )
