"""The demo newsroom's readers (data/demo/readers.jsonl) as events and last visits."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from recsys.events import Event, EventRepository


def load_readers(path: Path, repository: EventRepository) -> int:
    """Store every demo reader's events (idempotent) and last visit; returns events added."""
    added = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        reader = json.loads(line)
        events = [Event.model_validate({**e, "reader_id": reader["reader_id"]}) for e in reader["events"]]
        added += repository.add(events)
        if reader["last_visit"]:
            repository.record_visit(reader["reader_id"], datetime.fromisoformat(reader["last_visit"]))
    return added
