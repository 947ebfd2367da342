"""Readers' own language and time zone: the import file format and its errors, storage on SQLite
and PostgreSQL, and who may change them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from briefing import Audience
from server.cli import main
from server.db import EventRow, ReaderRow, connect, migrate
from server.readers import ReadersRejected, parse_readers
from server.service import Actor, BriefingCache, Forbidden, Service
from server.stores import AuditLog, Readers, ReaderSettings

DEMO_READERS = Path(__file__).resolve().parents[2] / "data" / "demo" / "readers.jsonl"
NOW = datetime(2026, 11, 19, 22, 0, tzinfo=UTC)
GOOD = {
    "reader_id": "r90",
    "name": "Kari",
    "language": "nb",
    "timezone": "Europe/Oslo",
    "last_visit": "2026-11-18T20:00:00+01:00",
    "events": [
        {
            "event_id": "e1",
            "type": "read",
            "article_id": "pol-0001",
            "at": "2026-11-16T08:10:18+01:00",
            "dwell_s": 84,
        }
    ],
}


def _lines(*records: Any) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n"


def test_the_demo_readers_file_is_a_valid_import_with_their_languages() -> None:
    readers = {r.reader_id: r for r in parse_readers(DEMO_READERS.read_text(encoding="utf-8"))}
    assert len(readers) == 30
    assert {r for r, v in readers.items() if v.language == "nb"} == {"r04", "r12", "r25"}
    assert readers["r24"].language == "en"  # reads both; the first listed is the page's
    assert readers["r02"].last_visit == datetime.fromisoformat("2026-11-16T20:00:00+01:00")
    assert len(readers["r02"].events) == 23 and all(e.reader_id == "r02" for e in readers["r02"].events)


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ('{"reader_id": "r1", "language": "nb",', "<line>", "invalid JSON"),
        ("[1, 2]", "<line>", "expected a JSON object"),
        ({"reader_id": "r1", "timezone": "Europe/Olso"}, "timezone", "unknown time zone"),
        ({"reader_id": "r1", "timezone": "../../etc/passwd"}, "timezone", "unknown time zone"),
        ({"reader_id": "r1", "language": "de"}, "language", "unknown language"),
        ({"reader_id": "r1", "languages": ["sv"]}, "languages", "unknown language"),
        ({"reader_id": "r1", "timzone": "UTC"}, "timzone", "unknown field"),
        ({"name": "no id"}, "reader_id", "required field is missing"),
        ({"reader_id": "r 1"}, "reader_id", "String should match"),
        ({"reader_id": "r1", "last_visit": "2026-11-18T20:00:00"}, "last_visit", "timezone"),
        (
            {"reader_id": "r1", "events": [{**GOOD["events"][0], "reader_id": "r2"}]},
            "events",
            "of reader 'r2'",
        ),
        (
            {"reader_id": "r1", "events": [{**GOOD["events"][0], "type": "like"}]},
            "events.0.type",
            "Input should be",
        ),
    ],
)
def test_a_bad_line_is_reported_with_its_line_and_field(line: Any, field: str, reason: str) -> None:
    with pytest.raises(ReadersRejected) as rejected:
        parse_readers(_lines(GOOD, "", line), "readers.jsonl")
    [error] = rejected.value.errors
    assert (error.source, error.line, error.field) == ("readers.jsonl", 3, field)
    assert reason in error.reason


def test_a_reader_twice_in_one_file_is_an_error() -> None:
    with pytest.raises(ReadersRejected, match=r"readers\.jsonl:2: reader_id: 'r90' is on line 1 too"):
        parse_readers(_lines(GOOD, {"reader_id": "r90"}), "readers.jsonl")


def test_readers_load_with_settings_and_events_and_a_second_load_changes_nothing(engine: Any) -> None:
    readers = Readers(engine)
    records = parse_readers(_lines(GOOD, {"reader_id": "r91"}))
    assert readers.load(records, NOW) == 1
    assert readers.load(records, NOW) == 0  # idempotent: events are keyed by (reader, event id)
    assert readers.settings("r90") == ReaderSettings("Kari", "nb", "Europe/Oslo")
    assert readers.settings("r91") == ReaderSettings()  # follows the publication
    assert readers.state("r90")[1] == datetime(2026, 11, 18, 19, 0, tzinfo=UTC)
    readers.configure("r90", NOW, ReaderSettings(language="en", timezone=None))
    assert readers.settings("r90") == ReaderSettings("Kari", "en", None)


def test_import_from_the_cli_stores_all_readers_or_none(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'briefing.db'}"
    env = {"DATA_DIR": str(tmp_path), "DATABASE_URL": url}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_lines(GOOD, {"reader_id": "r91", "timezone": "Mars/Olympus"}, "{oops"), encoding="utf-8")
    result = CliRunner().invoke(main, ["readers", "import", str(bad)], env=env)
    assert result.exit_code == 1
    assert f"{bad}:2: timezone: unknown time zone 'Mars/Olympus'" in result.output
    assert f"{bad}:3: <line>: invalid JSON" in result.output
    assert "2 problem(s)" in result.output and "no reader was stored" in result.output
    assert _count(url, ReaderRow) == 0 and _count(url, EventRow) == 0

    result = CliRunner().invoke(main, ["readers", "import", str(DEMO_READERS)], env=env)
    assert result.exit_code == 0, result.output
    assert "imported 30 readers" in result.output
    assert _count(url, ReaderRow) == 30 and _count(url, EventRow) > 2500


def test_the_import_format_is_documented_in_help() -> None:
    result = CliRunner().invoke(main, ["readers", "import", "--help"])
    assert result.exit_code == 0
    for field in ("reader_id", "language", "timezone", "events", "PUBLICATION_TZ", "stores nothing"):
        assert field in result.output


def _count(url: str, row: Any) -> int:
    engine = connect(url)
    migrate(engine)  # a rejected file never opened the database
    try:
        with engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(row)).scalar_one())
    finally:
        engine.dispose()


def test_a_reader_changes_only_their_own_settings(engine: Any) -> None:
    """On the real stores; the service is built with only the parts its settings methods use
    (the whole service, with HTTP, is in tests/integration/test_reader_language.py)."""
    service = Service.__new__(Service)
    service.readers, service.cache, service.audit = Readers(engine), BriefingCache(), AuditLog(engine)
    service.publication, service.clock = Audience("en", "Europe/Oslo"), lambda: NOW
    service._assigned = {}  # experiment arms last served (none here)
    with pytest.raises(Forbidden):
        service.configure_reader(Actor("r01", "reader"), "r02", ReaderSettings(language="nb"))
    assert service.audience("r02").language == "en"
    assert (
        service.configure_reader(Actor("r02", "reader"), "r02", ReaderSettings(language="nb")).language
        == "nb"
    )
    assert (service.audience("r02").language, service.audience("r02").timezone) == ("nb", "Europe/Oslo")
    assert (
        service.configure_reader(Actor("ada", "admin"), "r01", ReaderSettings(timezone="UTC")).timezone
        == "UTC"
    )
