"""Which arm a reader gets: deterministic hashing, mutually exclusive layers, a long-term holdout.

Owns `bucket` (a reader's place in [0, 1) for a salt), `assign` (reader -> arm of each running
experiment they are in) and `allocate` (the slice of a layer an experiment takes when it starts).

Everything is a pure function of ids and the stored experiments: sha256, never Python's `hash()`
(salted per process), so a reader keeps their arm across restarts, processes and databases.
Three independent hashes, told apart by a namespace in the salt so no experiment key can equal a
layer name or the holdout's:
- `bucket("holdout", reader) < holdout`: a long-term holdout that enters no experiment;
- `bucket("layer/<layer>", reader)`: the reader's place in the layer; an experiment takes the
  readers in [range_start, range_start + traffic), and running ones own disjoint slices;
- `bucket("experiment/<key>", reader)` against the arms' cumulative weights: the arm.
A reader outside an experiment (not targeted, outside its slice, held out, or the experiment is
not running) gets no arm for it, so the service serves its default briefing, the control's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

from server.experiments.model import Arm, Experiment, ExperimentInvalid

HOLDOUT_SALT = "holdout"
_FIT = 1e-9  # float slack when slices are summed (0.1 + 0.2 fits in 0.3)


@dataclass(frozen=True)
class ReaderFacts:
    """What targeting needs to know of a reader: their language and whether they are new."""

    reader_id: str
    language: str
    new: bool


def bucket(salt: str, unit: str) -> float:
    """`unit`'s place in [0, 1) under `salt`: the first 8 bytes of sha256(salt 0x1f unit), big-endian,
    over 2**64. The separator keeps ("ab", "c") and ("a", "bc") apart."""
    digest = hashlib.sha256(f"{salt}\x1f{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def layer_salt(layer: str) -> str:
    return f"layer/{layer}"


def arm_salt(key: str) -> str:
    return f"experiment/{key}"


def held_out(reader_id: str, holdout: float) -> bool:
    """Whether the reader is in the long-term holdout (setting EXPERIMENT_HOLDOUT)."""
    return holdout > 0 and bucket(HOLDOUT_SALT, reader_id) < holdout


def targeted(e: Experiment, reader: ReaderFacts) -> bool:
    t = e.targeting
    if t.languages and reader.language not in t.languages:
        return False
    return t.readers == "all" or (t.readers == "new") == reader.new


def in_slice(e: Experiment, reader_id: str) -> bool:
    """Whether the reader's place in the experiment's layer falls in its slice."""
    if e.range_start is None:
        return False
    place = bucket(layer_salt(e.layer), reader_id)
    return e.range_start <= place < e.range_start + e.targeting.traffic


def pick_arm(e: Experiment, reader_id: str) -> Arm:
    """The arm whose share of cumulative weight holds the reader's experiment bucket."""
    place = bucket(arm_salt(e.key), reader_id)
    for arm, upper in zip(e.arms, accumulate(a.weight for a in e.arms), strict=True):
        if place < upper:
            return arm
    return e.arms[-1]  # weights summing to 1 - 1e-12 leave a sliver; it belongs to the last arm


def assign(experiments: Sequence[Experiment], reader: ReaderFacts, holdout: float = 0.0) -> dict[str, Arm]:
    """Experiment key -> the reader's arm, for each running experiment the reader is in: at most
    one per layer, none for a held-out reader."""
    if held_out(reader.reader_id, holdout):
        return {}
    arms: dict[str, Arm] = {}
    layers: set[str] = set()
    for e in sorted(experiments, key=lambda x: (x.layer, x.range_start or 0.0, x.key)):
        if e.status != "running" or e.layer in layers:
            continue
        if in_slice(e, reader.reader_id):
            layers.add(e.layer)  # the slice is the reader's in this layer, targeted or not
            if targeted(e, reader):
                arms[e.key] = pick_arm(e, reader.reader_id)
    return arms


def allocate(running_in_layer: Iterable[Experiment], traffic: float, *, layer: str | None = None) -> float:
    """The start of the first free slice of `traffic` in a layer, given the experiments running in
    it; `ExperimentInvalid` when no free slice is that wide. First fit keeps the free space in
    one piece at the top while experiments start and stop in order."""
    running = [e for e in running_in_layer if e.status == "running"]
    taken = sorted(
        (e.range_start, e.range_start + e.targeting.traffic) for e in running if e.range_start is not None
    )
    start, widest = 0.0, 0.0
    for low, high in [*taken, (1.0, 1.0)]:
        if low - start + _FIT >= traffic:
            return start
        widest = max(widest, low - start)
        start = max(start, high)
    name = layer or next((e.layer for e in running), "briefing")
    free = f"{_floor2(widest):.2f}"
    raise ExperimentInvalid(
        [f"layer {name!r} has only {free} of its traffic free in one slice; needs {traffic:.2f}"]
    )


def _floor2(share: float) -> float:
    """Rounded down, so "0.30 free" never promises room that is not there."""
    return math.floor(share * 100 + 1e-9) / 100
