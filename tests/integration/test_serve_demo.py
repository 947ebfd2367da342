"""`briefing serve --demo` as `make run` starts it, in a subprocess on a fresh DATA_DIR: it answers
right after the ingest while summarize-new drafts in the background (progress in the log and on
/ready), the first reader page comes from the articles' own words, and SIGINT (Ctrl-C) stops the
drafting at its next article, saying which one it waits for.

No bound here depends on the machine's speed except through the LLM's own time limit: the
shutdown must take less than one item (LLM_TIMEOUT_S, plus the grounding check and the server's
own stop), while the run it interrupts had dozens of items left."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.auth import issue_token
from tests.chats import free_port

pytestmark = pytest.mark.slow
KEY = "test-secret-not-for-production-0123456789"
PER_RUN = 60  # far more drafts than the test lasts: the run is always mid-way when it stops
LLM_TIMEOUT_S = 30.0
START_S = 900.0  # loading models and ingesting the demo on a busy 2-core machine: a stuck-test bound
DRAFTING = re.compile(r"drafting (\d+)/(\d+): (\S+) \((\d+\.\d) s\)")


@dataclass
class Served:
    process: subprocess.Popen[str]
    base: str
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((m for line in list(self.lines) if (m := pattern.search(line))), None)
            if found:
                return found
            assert self.process.poll() is None, f"serve exited:\n{self.log()[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(
            f"no line matching {pattern.pattern!r} in {timeout:.0f} s:\n{self.log()[-3000:]}"
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data_dir = tmp_path_factory.mktemp("serve") / "data"
    port = free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "JWT_SECRET": KEY,
        "HF_HUB_OFFLINE": "1",
        "SUMMARIZE_PER_RUN": str(PER_RUN),
        "JOB_BUDGET_S": "3600",
        "LLM_TIMEOUT_S": str(LLM_TIMEOUT_S),
    }
    env.pop("CLOCK_START", None)
    briefing = str(Path(sys.executable).with_name("briefing"))
    process = subprocess.Popen(
        [briefing, "serve", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Served(process, f"http://127.0.0.1:{port}", data_dir)
    reader = threading.Thread(
        target=lambda: running.lines.extend(line.rstrip() for line in process.stdout or ())
    )
    reader.start()
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        reader.join(10)


def _health(base: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "serve exited before answering"
        try:
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"/health did not answer within {START_S:.0f} s")


def test_answers_while_drafting_and_shows_own_words_first(served: Served) -> None:
    _health(served.base, served.process)
    ready = httpx.get(f"{served.base}/ready", timeout=30).json()
    assert "demo newsroom:" in served.log()  # the ingest is done before it answers ...
    drafts = ready["drafts"]  # ... and the drafting is not
    assert drafts is None or drafts["done"] < PER_RUN, ready
    headers = {"Authorization": f"Bearer {issue_token(KEY, 'r02', 'reader')}"}
    page = httpx.get(f"{served.base}/", headers=headers, timeout=300)
    assert page.status_code == 200, page.text
    items = httpx.get(f"{served.base}/v1/briefing", headers=headers, timeout=300).json()["items"]
    assert items and {i["source"] for i in items} <= {"extractive", "draft"}
    served.wait_for_line(DRAFTING, START_S)  # progress in the log
    progress = httpx.get(f"{served.base}/ready", timeout=30).json()["drafts"]
    assert progress["done"] >= 1 and progress["waiting"] > 0


def test_ctrl_c_stops_the_drafting_at_its_next_article(served: Served) -> None:
    first = served.wait_for_line(DRAFTING, START_S)
    assert first.group(2) == str(PER_RUN)
    sent = time.monotonic()
    served.process.send_signal(signal.SIGINT)
    code = served.process.wait(timeout=LLM_TIMEOUT_S * 4 + 60)  # a stuck-test bound; the real one is below
    took = time.monotonic() - sent
    assert code == 0, served.log()[-3000:]  # Ctrl-C is an orderly stop, not "Aborted!"
    waiting = served.wait_for_line(re.compile(r"waiting for summarize-new to finish (\S+)"), 10)
    done = [m for line in served.lines if (m := DRAFTING.search(line))]
    assert waiting.group(1) not in {m.group(3) for m in done[:-1]}  # the article in hand, not one done
    assert len(done) < PER_RUN  # it stopped mid-run ...
    slowest = max(float(m.group(4)) for m in done)
    assert took < max(LLM_TIMEOUT_S, slowest) + 30, served.log()[-3000:]  # ... within about one item
    (run, *_) = _runs(served.data_dir, "summarize-new")  # and its record says so
    assert run["outcome"] == "ok" and run["detail"]["stopped"] is True
    assert run["detail"]["summarized"] < PER_RUN and run["detail"]["waiting"] > 0


def _runs(data_dir: Path, job: str) -> list[dict[str, Any]]:
    from server.container import build_engine
    from server.settings import Settings
    from server.stores import JobRuns

    engine = build_engine(Settings.from_env({"DATA_DIR": str(data_dir)}))
    try:
        return JobRuns(engine).runs(job)
    finally:
        engine.dispose()
