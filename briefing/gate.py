"""The show gate: in which languages unreviewed generated text may reach readers (DESIGN §5).

Unreviewed text shows only while the active checker's measured precision on the project's
labelled sentences (data/labels, the report half) is at least `TARGET_PRECISION` at the threshold
in use, per language. `bench/label_set.py score` measures it and writes the gate file; the
service reads it at start. A gate measured for another checker or threshold, a language with too
few shown sentences to measure, or no gate file at all: no language passes, and readers get
reviewed or extractive text.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TARGET_PRECISION = 0.95
MIN_SHOWN = 30  # fewer shown sentences than this measure nothing (one error moves it by 3 points)
GATE_FILE = Path(__file__).resolve().parent.parent / "data" / "labels" / "gate.json"


def draft_languages(path: Path, checker: str, threshold: float) -> frozenset[str]:
    """The languages whose measured precision passes, for this checker at this threshold."""
    try:
        gate: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError) as exc:
        log.warning("show gate %s unreadable (%s): drafts show in no language", path, exc)
        return frozenset()
    if gate.get("checker") != checker or gate.get("threshold") != threshold:
        log.info(
            "show gate %s was measured for %s at %s, not %s at %s: drafts show in no language",
            path,
            gate.get("checker"),
            gate.get("threshold"),
            checker,
            threshold,
        )
        return frozenset()
    return frozenset(language for language, figures in gate.get("languages", {}).items() if passes(figures))


def passes(figures: dict[str, Any]) -> bool:
    precision = figures.get("precision")
    return precision is not None and precision >= TARGET_PRECISION and figures.get("shown", 0) >= MIN_SHOWN
