"""The index's fence across processes: writers hold it shared, re-index's switch exclusively.

On a Qdrant server several processes write the index, and the in-process lock of one cannot stop
another's write from landing between re-index's last catch-up and its switch (lost from the new
generation). The fence is a PostgreSQL advisory lock or, without PostgreSQL, a file lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from server.db import index_fence
from tests.conftest import DATABASES, _database

Fence = Callable[[bool], AbstractContextManager[Any]]


@pytest.fixture(params=DATABASES)
def fence(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fence]:
    for url in _database(request.param, tmp_path):
        yield index_fence(url, tmp_path)


def holds_while(fence: Fence, exclusive: bool, entered: threading.Event, release: threading.Event) -> None:
    with fence(exclusive):
        entered.set()
        release.wait(10)


def start_holder(fence: Fence, exclusive: bool) -> tuple[threading.Thread, threading.Event]:
    entered, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=holds_while, args=(fence, exclusive, entered, release))
    thread.start()
    assert entered.wait(10)
    return thread, release


def test_writers_share_the_fence(fence: Fence) -> None:
    thread, release = start_holder(fence, exclusive=False)
    second, release_second = start_holder(fence, exclusive=False)  # does not wait for the first
    release.set()
    release_second.set()
    thread.join()
    second.join()


def test_the_switch_waits_for_a_write_in_flight_and_writes_wait_for_the_switch(fence: Fence) -> None:
    order: list[str] = []
    writer, release_writer = start_holder(fence, exclusive=False)

    def switch() -> None:
        with fence(True):
            order.append("switch")
            time.sleep(0.2)
            order.append("switched")

    switching = threading.Thread(target=switch)
    switching.start()
    time.sleep(0.3)
    assert order == []  # still waiting for the write
    order.append("write done")
    release_writer.set()
    writer.join()
    switching.join(10)
    assert order == ["write done", "switch", "switched"]


def test_a_killed_holder_releases_the_file_fence(tmp_path: Path) -> None:
    """kill -9 of the process holding the switch must not leave every writer blocked."""
    code = (
        "import sys, time; from pathlib import Path; from server.db import index_fence\n"
        "with index_fence('sqlite://', Path(sys.argv[1]))(True):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        acquired = threading.Event()

        def write() -> None:
            with index_fence("sqlite://", tmp_path)(False):
                acquired.set()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        assert not acquired.wait(0.3)
        os.kill(holder.pid, signal.SIGKILL)
        assert acquired.wait(10)
        writer.join(10)
    finally:
        holder.kill()
        holder.wait()
