"""Processes the fault tests start and kill: `briefing serve` and other `briefing` commands, on a
DATA_DIR and database of the test's, with no model a request would wait on (the LLM is an OpenAI
server nobody listens on; the grounding check reads no LLM), one CPU thread each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.chats import free_port
from tests.service import DEMO_CLOCK, SECRET

BRIEFING = str(Path(sys.executable).with_name("briefing"))
START_S = 300.0  # loading the embedder on a busy 2-core machine: a stuck-test bound, not a measure


def environment(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "JWT_SECRET": SECRET,
        "CLOCK_START": DEMO_CLOCK,
        "HF_HUB_OFFLINE": "1",
        "LLM_BACKEND": "openai",
        "LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "GROUNDING_LIKELIHOOD": "off",
        "BRIEFING_LLM_GREETING": "false",
        "RATE_LIMIT_PER_MINUTE": "0",
        "JOBS": "false",
        "LLM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        **extra,
    }
    env.pop("REDIS_URL", None)
    return env


class Served:
    """A `briefing serve` (or `briefing worker`, ...) process on a port of its own, its output kept
    for assertion messages."""

    def __init__(self, env: dict[str, str], command: str = "serve") -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [BRIEFING, command, "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        self.lines.extend(line.rstrip() for line in self.process.stdout or ())

    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    def get(self, path: str, **options: Any) -> httpx.Response:
        return httpx.get(f"{self.base}{path}", timeout=30, **options)

    def ready(self) -> dict[str, Any]:
        body: dict[str, Any] = self.get("/ready").json()
        return body

    def wait_healthy(self) -> None:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"it exited:\n{self.log()}"
            try:
                if httpx.get(f"{self.base}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"/health did not answer within {START_S:.0f} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGKILL) -> int:
        """The process's exit code after `sig` (SIGKILL: no handler, flush or shutdown runs)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        code = self.process.wait(START_S)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@contextmanager
def served(env: dict[str, str]) -> Iterator[Served]:
    running = Served(env)
    try:
        running.wait_healthy()
        yield running
    finally:
        running.kill()


def start(args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """`briefing ARGS` in the background, its output on a pipe."""
    return subprocess.Popen(
        [BRIEFING, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def run(
    args: Sequence[str], env: dict[str, str], timeout: float = START_S
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BRIEFING, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def kill_when(process: subprocess.Popen[str], marker: str, timeout: float = START_S) -> list[str]:
    """Read `process`'s output until a line contains `marker`, then SIGKILL it; its lines."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip())
        if marker in line:
            os.kill(process.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "\n".join(lines[-40:])
    process.wait(30)
    assert process.returncode == -signal.SIGKILL, f"it ended before {marker!r}:\n" + "\n".join(lines[-40:])
    return lines


def kill_after(process: subprocess.Popen[str], condition: Callable[[], bool], delay: float) -> None:
    """SIGKILL `process` `delay` seconds after `condition()` first holds (polled), while it runs."""
    deadline = time.monotonic() + START_S
    while not condition():
        assert process.poll() is None, f"it ended first:\n{process.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)
    time.sleep(delay)
    assert process.poll() is None, f"it ended first:\n{process.communicate()[0][-3000:]}"
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
