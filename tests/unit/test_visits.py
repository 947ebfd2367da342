"""Visits: one "since" per visit, kept in memory and written behind, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from briefing import Briefing, BriefingPolicy
from server.stores import BriefingLog, Readers
from server.visits import Visits

T0 = datetime(2026, 11, 19, 20, tzinfo=UTC)


def briefing(reader: str, since: datetime | None) -> Briefing:
    return Briefing(reader, T0, since, "control", BriefingPolicy(), "Hello.", ())


def test_a_visit_keeps_its_since_until_the_reader_has_been_away(engine: Any) -> None:
    readers = Readers(engine, timedelta(minutes=30))
    visits = Visits(engine, readers, flush_s=0.01)
    try:
        first = visits.current("r1", T0)
        assert (first.since, first.new_session) == (None, True)
        visits.record(briefing("r1", None), T0, first.since, cached=False)
        reload = visits.current("r1", T0 + timedelta(minutes=20))
        assert (reload.since, reload.new_session) == (None, False)  # the same visit
        visits.record(briefing("r1", None), T0 + timedelta(minutes=20), reload.since, cached=True)
        later = visits.current("r1", T0 + timedelta(hours=3))
        assert (later.since, later.new_session) == (T0 + timedelta(minutes=20), True)
        visits.flush()
        assert readers.state("r1") == (T0 + timedelta(minutes=20), None)
        served = BriefingLog(engine).for_reader("r1")
        assert [s["cached"] for s in served] == [False, True]
    finally:
        visits.close()
    fresh = Visits(engine, readers)  # after a restart the state comes back from the database
    try:
        assert fresh.current("r1", T0 + timedelta(hours=3)).since == T0 + timedelta(minutes=20)
    finally:
        fresh.close()


def test_a_request_in_flight_during_an_erasure_does_not_bring_the_reader_back(engine: Any) -> None:
    readers = Readers(engine, timedelta(minutes=30))
    visits = Visits(engine, readers, flush_s=0.01)
    try:
        in_flight = briefing("r1", None)  # composed at T0, recorded after the erasure
        visits.forget("r1", T0 + timedelta(seconds=1))
        visits.record(in_flight, T0 + timedelta(seconds=2), None, cached=False)
        visits.flush()
        assert readers.state("r1") == (None, None) and BriefingLog(engine).for_reader("r1") == []
        later = Briefing("r1", T0 + timedelta(hours=1), None, "control", BriefingPolicy(), "Hi.", ())
        visits.record(later, T0 + timedelta(hours=1), None, cached=False)  # a new visit counts again
        visits.flush()
        assert len(BriefingLog(engine).for_reader("r1")) == 1
    finally:
        visits.close()
