"""Shutdown stops jobs at their next item and says what it waits for; a job named in `at_start`
runs when its process starts leading, not one interval later (the real jobs, the LLM and the
service: tests/integration/test_background_drafts.py and test_serve_demo.py).

`Jobs` gets the run records only (as in test_scheduler_leader); the job here is a loop over
items shaped like summarize-new's: report the item in hand, check the stop event between items.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from server.jobs import JobControl, Jobs, JobSpec
from server.service import Service
from tests.unit.test_scheduler_leader import WAIT_S, eventually, quick, records

ITEMS = [f"pol-{n:04d}" for n in range(1, 11)]


def looping(control: JobControl, item_started: threading.Event, release: threading.Event) -> Any:
    """A job over ITEMS; each item waits for `release` (the test decides when an item ends)."""

    def run(service: Service) -> dict[str, Any]:
        done = 0
        for item in ITEMS:
            if control.stopping():
                break
            control.report("loop", current=item, done=done)
            item_started.set()
            assert release.wait(WAIT_S), "the test never released the item"
            release.clear()
            done += 1
            control.report("loop", current=None, done=done)
        return {"done": done, "stopped": control.stopping()}

    return run


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[Engine]:
    from tests.conftest import migrated

    yield from migrated("sqlite", tmp_path)


def test_halt_ends_a_running_job_at_its_next_item_and_logs_the_item_in_hand(
    sqlite: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    control, started, release = JobControl(), threading.Event(), threading.Event()
    jobs = Jobs(
        records(sqlite),
        [JobSpec("loop", 0, "", looping(control, started, release))],
        lock_dir=tmp_path,
        control=control,
    )
    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(jobs.run_now("loop")))
    worker.start()
    assert started.wait(WAIT_S)
    started.clear()
    release.set()  # pol-0001 ends; pol-0002 starts
    assert started.wait(WAIT_S)
    with caplog.at_level(logging.INFO, logger="server.jobs"):
        jobs.halt()
        release.set()  # pol-0002, the item in hand, ends; nothing after it starts
        worker.join(WAIT_S)
    assert not worker.is_alive()
    assert "waiting for loop to finish pol-0002" in caplog.text
    assert (result["outcome"], result["detail"]) == ("ok", {"done": 2, "stopped": True})
    assert control.in_hand() == {}
    jobs.halt()  # a second Ctrl-C: nothing in hand, nothing to wait for, no error


def test_halt_with_nothing_running_logs_no_wait(
    sqlite: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = Jobs(records(sqlite), [JobSpec("tick", 0, "", quick)], lock_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="server.jobs"):
        jobs.stop()
    assert "waiting for" not in caplog.text and jobs.control.stopping()


def test_a_job_named_at_start_runs_when_the_process_leads(sqlite: Engine, tmp_path: Path) -> None:
    hour = 3600.0
    specs = [JobSpec("first", hour, "", quick), JobSpec("later", hour, "", quick)]
    jobs = Jobs(records(sqlite), specs, lock_dir=tmp_path, at_start=("first",), leader_check_s=0.1)
    try:
        assert jobs.start()
        eventually(lambda: bool(jobs.runs("first")), "the job named at start runs")
        assert jobs.runs("later") == []  # the others keep their interval
        assert jobs.runs("first")[0]["trigger"] == "schedule"
    finally:
        jobs.stop()
