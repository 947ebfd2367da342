"""Readers from a file (`briefing readers import FILE`): the format, and its checks.

The file is JSON Lines (UTF-8), one reader per line:

    {"reader_id": "r04", "name": "Vebjørn", "language": "nb", "timezone": "Europe/Oslo",
     "last_visit": "2026-11-18T20:00:00+01:00",
     "events": [{"event_id": "r04-e1", "type": "read", "article_id": "pol-0001",
                 "at": "2026-11-16T08:10:18+01:00", "dwell_s": 84}]}

- reader_id (required): letters, digits and `_.:-`, at most 100 characters;
- name: at most 200 characters;
- language: `en` or `nb`; timezone: an IANA name such as Europe/Oslo. Either left out means the
  publication's (PUBLICATION_LANGUAGE, PUBLICATION_TZ), also after the publication changes it;
- languages: the demo file's list of what the reader reads; its first entry is the language when
  `language` is absent;
- last_visit: an ISO 8601 time with its offset ("since you were last here" starts there);
- events: as `POST /v1/events` takes them (event_id, type, article_id, at, dwell_s on reads);
  their reader_id may be left out and must otherwise be the line's;
- description, persona: notes for people, ignored. Any other field is an error (a typo such as
  "timzone" would otherwise be dropped without a word).

Every line is checked before anything is stored: a file with one bad line stores nothing and each
problem is reported with its line and field. Loading a file twice changes nothing the second time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from indexing import RecordError
from indexing.articles import record_errors
from recsys import Event
from recsys.events import Id
from server.i18n import check_language, check_timezone

NOTES = ("description", "persona")


@dataclass(frozen=True)
class ReaderRecord:
    reader_id: str
    name: str | None
    language: str | None
    timezone: str | None
    last_visit: datetime | None
    events: tuple[Event, ...]


class ReadersRejected(ValueError):
    """A readers file with problems; nothing of it was stored."""

    def __init__(self, errors: list[RecordError]) -> None:
        super().__init__("; ".join(map(str, errors)))
        self.errors = errors


class _Line(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reader_id: Id
    name: Annotated[str, Field(max_length=200)] | None = None
    language: str | None = None
    languages: list[str] = Field(default_factory=list, max_length=10)
    timezone: str | None = None
    last_visit: AwareDatetime | None = None
    events: list[Event] = Field(default_factory=list)
    description: str | None = None
    persona: str | None = None

    @field_validator("language")
    @classmethod
    def _known_language(cls, language: str | None) -> str | None:
        return None if language is None else check_language(language)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str | None) -> str | None:
        return None if zone is None else check_timezone(zone)

    @field_validator("events")
    @classmethod
    def _own_events(cls, events: list[Event], info: ValidationInfo) -> list[Event]:
        reader = info.data.get("reader_id")
        other = next((e.reader_id for e in events if e.reader_id != reader), None)
        if other is not None:
            raise ValueError(f"an event of reader {other!r}: a line may only add its own reader's events")
        return events

    def record(self) -> ReaderRecord:
        language = self.language or (check_language(self.languages[0]) if self.languages else None)
        return ReaderRecord(
            self.reader_id, self.name, language, self.timezone, self.last_visit, tuple(self.events)
        )


def parse_readers(text: str, source: str = "<readers>") -> list[ReaderRecord]:
    """Every reader of a JSON Lines text, or `ReadersRejected` with every problem found."""
    readers: list[ReaderRecord] = []
    errors: list[RecordError] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parsed = _parse_line(line, source, n)
        if isinstance(parsed, list):
            errors.extend(parsed)
        elif parsed.reader_id in seen:
            errors.append(
                RecordError(
                    source, n, "reader_id", f"{parsed.reader_id!r} is on line {seen[parsed.reader_id]} too"
                )
            )
        else:
            seen[parsed.reader_id] = n
            readers.append(parsed)
    if errors:
        raise ReadersRejected(errors)
    return readers


def _parse_line(line: str, source: str, n: int) -> ReaderRecord | list[RecordError]:
    try:
        raw: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        return [RecordError(source, n, "<line>", f"invalid JSON: {exc.msg} at column {exc.colno}")]
    if not isinstance(raw, dict):
        return [RecordError(source, n, "<line>", f"expected a JSON object, got {type(raw).__name__}")]
    events = raw.get("events")
    if isinstance(events, list) and isinstance(raw.get("reader_id"), str):  # events name their reader
        raw = {**raw, "events": [_owned(e, raw["reader_id"]) for e in events]}
    try:
        return _Line.model_validate(raw).record()
    except ValidationError as exc:
        return record_errors(exc, source, n)
    except ValueError as exc:  # an unknown first entry of `languages`
        return [RecordError(source, n, "languages", str(exc))]


def _owned(event: Any, reader_id: str) -> Any:
    """An event of this line's reader: its reader_id filled in when left out (a different one
    stays, and fails validation below: a file cannot add events to another reader)."""
    return {"reader_id": reader_id, **event} if isinstance(event, dict) else event
