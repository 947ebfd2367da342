"""Checks for one field of a JSON definition each, collecting problems instead of raising.

Owns `Problems` (the reasons found so far, each "field: message") and the generic checkers the
experiment definition uses (server/experiments/model.py): unknown fields, slugs, flags, numbers,
times, and a stored experiment's lifecycle fields (status, start, stop, decision, layer range).
Each returns a usable placeholder when the value is bad, so parsing goes on and every problem of
a definition is reported at once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


class Problems:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.reasons.append(f"{where}: {message}")


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unknown_fields(
    data: Mapping[Any, Any], allowed: tuple[str, ...], where: str, p: Problems, shown: tuple[str, ...] = ()
) -> None:
    unknown = [k for k in data if k not in allowed]
    for name in unknown[:5]:  # a few name the typo; hundreds would bury it
        p.add(where, f"unknown field {show(name)}; fields are {', '.join(shown or allowed)}")
    if len(unknown) > 5:
        p.add(where, f"{len(unknown) - 5} more unknown fields")


def slug(
    data: Mapping[str, Any],
    name: str,
    pattern: re.Pattern[str],
    rule: str,
    p: Problems,
    *,
    where: str = "",
    default: str | None = None,
) -> str | None:
    value = data.get(name, default)
    field_name = f"{where}.{name}" if where else name
    if value is None:
        p.add(field_name, "required")
        return None
    if not isinstance(value, str) or not pattern.fullmatch(value):
        p.add(field_name, f"{show(value)} must be {rule}")
        return None
    return value


def flag(data: Mapping[str, Any], name: str, default: bool, p: Problems) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        p.add(name, f"expected true or false, got {show(value)}")
        return default
    return value


def finite(value: object) -> float | None:
    """A finite JSON number (a bool is not one), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def when(value: object, where: str, p: Problems) -> datetime | None:
    """A time, ISO 8601; one without a zone is UTC (SQLite stores none)."""
    if value is None or isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            moment = None
        if moment is None:
            p.add(where, f"expected an ISO 8601 time, got {show(value)}")
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


@dataclass(frozen=True)
class State:
    """The lifecycle fields of a stored experiment (`status` is a model.Status)."""

    status: str = "draft"
    start: datetime | None = None
    stop: datetime | None = None
    decision: str | None = None
    range_start: float | None = None


def stored_state(
    data: Mapping[str, Any], statuses: tuple[str, ...], arms: Collection[str], traffic: float, p: Problems
) -> State:
    """The lifecycle fields of a stored experiment, and that they agree with its status."""
    status = data.get("status", "draft")
    if status not in statuses:
        p.add("status", f"expected one of {', '.join(statuses)}, got {show(status)}")
        status = "draft"
    start, stop = when(data.get("start"), "start", p), when(data.get("stop"), "stop", p)
    state = State(status, start, stop, data.get("decision"), _range(data.get("range_start"), traffic, p))
    _agree(state, arms, p)
    return state


def _range(value: object, traffic: float, p: Problems) -> float | None:
    if value is None:
        return None
    number = finite(value)
    if number is None or number < 0.0 or number + traffic > 1.0 + 1e-9:
        p.add("range_start", f"must leave room for the traffic share in [0, 1), got {show(value)}")
        return None
    return number


def _agree(s: State, arms: Collection[str], p: Problems) -> None:
    if s.status != "draft" and (s.start is None or s.range_start is None):
        p.add("status", f"a {s.status} experiment has a start time and a range of its layer")
    if s.status in ("stopped", "decided") and s.stop is None:
        p.add("stop", f"a {s.status} experiment has a stop time")
    if s.start is not None and s.stop is not None and s.stop < s.start:
        p.add("stop", "is before start")
    if (s.decision is not None) != (s.status == "decided"):
        p.add("decision", "is set exactly when the experiment is decided")
    if s.decision is not None and s.decision not in arms:
        p.add("decision", f"{show(s.decision)} is not one of the arms")
