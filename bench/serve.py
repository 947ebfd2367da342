"""Service load benchmark: the real `briefing serve --demo` over HTTP on loopback.

    python bench/serve.py --out bench/results/serve.json
    python bench/serve.py --out bench/results/serve_pg.json --database postgresql

Starts the service as a subprocess (fresh DATA_DIR; SQLite under it, or a fresh schema in the
PostgreSQL `test` database, dropped at the end), waits for `/ready`, then drives it with a closed
loop of C asyncio workers (a minimal HTTP/1.1 keep-alive client, a connection each) over a fixed
request list,
for each concurrency level C:
- events: POST /v1/events in batches; then 5% of the batches are sent again unchanged (a client's
  retry) and must come back as duplicates; the `events` table is counted directly before and
  after, so events lost between "200 OK" and the database show up as `lost`;
- briefing_uncached: GET /v1/briefing for readers the service has never served (first visit;
  they sent the level's events), each expected to answer `X-Briefing-Cache: miss`;
- briefing_cached: the same readers again within the visit (`--cached-rounds` passes), expected `hit`.
The policy measured is the shipped default (checked drafts may show; the LLM greeting is on, but
only jobs run the LLM): `briefing serve --demo` drafts summaries of the newest articles before it
answers /ready, and its scheduler runs as deployed during the run. No request calls the LLM: a
briefing composes from stored drafts, reviewed text or the article's own words. The load
generator shares the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from uuid import uuid4

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import write_results

from server.auth import issue_token

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo"
PG_URL = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
JWT_SECRET = "bench-serve-" + "k" * 40  # fixed and >= 32 bytes: the bench signs reader tokens too
POLICY = {
    "allow_drafts": False,
    "llm_greeting": True,
    "jobs": True,
    "text": "shipped defaults: drafts only where the show gate passes, LLM only in jobs, scheduler on",
}
READY_TIMEOUT_S = 300.0
VISIT_S = float(os.environ.get("SESSION_MINUTES", "30")) * 60  # the server inherits SESSION_MINUTES
RETRY_SHARE = 0.05
EVENT_TYPES = ("impression", "click", "read")
EVENT_WINDOW = (datetime.fromisoformat("2026-11-16T06:00:00+01:00"), 4 * 24 * 3600 - 2 * 3600)
LOW_LEVEL_READERS = (100, 300)  # readers at C=1 and at the other levels below the highest


# Requests and what came back ---------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    token: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    latency_ms: float
    status: int  # 0: no answer (an exception)
    error: str | None
    cache: str | None
    answer: Any


@dataclass
class Phase:
    name: str
    concurrency: int
    outcomes: list[Outcome | None]
    wall_s: float
    timed_out: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> list[Outcome]:
        return [o for o in self.outcomes if o is not None]

    @property
    def errors(self) -> int:
        return sum(o.error is not None for o in self.done) + (len(self.outcomes) - len(self.done))


# Entry point -------------------------------------------------------------------------------------


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    levels = sorted(set(args.concurrency))
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    with database(args.database, work) as url, server(url, work, args.port) as (base, startup_s):
        print(f"service ready at {base} after {startup_s:.1f} s (log: {work / 'server.log'})")
        engine = create_engine(url)
        try:
            phases = asyncio.run(run_levels(base, engine, levels, args))
        finally:
            engine.dispose()
    results = summarize(phases, levels, args, startup_s)
    results["server_log"] = str(work / "server.log")
    print_table(phases, results)
    write_results(results, args.out, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--readers", type=int, default=1000, help="first-visit readers at the highest level")
    parser.add_argument("--concurrency", type=_levels, default=[1, 16, 64], help="levels, e.g. 1,16,64")
    parser.add_argument("--events-per-level", type=int, default=20_000, help="distinct events per level")
    parser.add_argument("--batch", type=int, default=50, help="events per POST /v1/events")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    parser.add_argument("--phase-timeout", type=float, default=1800.0, help="seconds per phase at most")
    parser.add_argument("--request-timeout", type=float, default=600.0, help="seconds per request at most")
    parser.add_argument("--cached-rounds", type=int, default=5, help="passes over the readers, cached")
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


def _levels(value: str) -> list[int]:
    levels = [int(v) for v in value.split(",") if v.strip()]
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels are positive integers, e.g. 1,16,64")
    return levels


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so the server is stopped and the schema dropped on SIGTERM too


# The database and the server ---------------------------------------------------------------------


@contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    """SQLite under the run's DATA_DIR, or a fresh PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'data' / 'briefing.db'}"
        return
    schema = f"bench_{uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as connection:
            connection.execute(text(f"create schema {schema}"))
    except SQLAlchemyError as exc:
        admin.dispose()
        sys.exit(f"PostgreSQL is not reachable at {PG_URL}: {str(exc).splitlines()[0]}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()


def server_env(url: str, work: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATA_DIR=str(work / "data"),
        DATABASE_URL=url,
        PORT=str(port),
        JWT_SECRET=JWT_SECRET,
        RATE_LIMIT_PER_MINUTE="0",  # one client address (and a token per reader) makes the load
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra or {})  # bench/scale.py: JOBS, REDIS_URL, the rate limit
    return env


def server_command(port: int) -> list[str]:
    script = Path(sys.executable).with_name("briefing")
    args = ["serve", "--demo", "--port", str(port)]
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from server.cli import main; main()", *args]


@contextmanager
def server(
    url: str, work: Path, port: int, extra_env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, float]]:
    """`briefing serve --demo` on loopback; yields its base URL and seconds to /ready."""
    port = port or free_port()
    started = time.perf_counter()
    with (work / "server.log").open("wb") as log:
        process = subprocess.Popen(
            server_command(port),
            env=server_env(url, work, port, extra_env),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the bench, which stops the server itself
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, process, work / "server.log")
            yield base, time.perf_counter() - started
        finally:
            stop(process)
            cleanup(work)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=base, timeout=10) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(f"the service exited ({process.returncode}) before ready:\n{tail(log)}")
            with suppress(httpx.HTTPError):
                if client.get("/ready").status_code == 200:
                    return
            time.sleep(1.0)
    raise SystemExit(f"the service was not ready after {READY_TIMEOUT_S:.0f} s:\n{tail(log)}")


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def cleanup(work: Path) -> None:
    """Remove the run's data (index, SQLite file, caches); keep the server log."""
    shutil.rmtree(work / "data", ignore_errors=True)


# The load generator ------------------------------------------------------------------------------


async def run_phase(
    base: str | Sequence[str], name: str, calls: Sequence[Call], concurrency: int, timeout_s: float
) -> Phase:
    """A closed loop: C workers, each on its own keep-alive connection, take the next request
    until the list is done (or time is up). Several base URLs (API workers, bench/scale.py): the
    connections are spread over them round-robin, as a proxy without affinity would."""
    bases = [base] if isinstance(base, str) else list(base)
    outcomes: list[Outcome | None] = [None] * len(calls)
    todo = iter(range(len(calls)))

    async def worker(connection: Http) -> None:
        try:
            for i in todo:
                outcomes[i] = await send(connection, calls[i])
        finally:
            connection.close()

    # Connections are opened (and used once, on /health) before the clock starts: the phase
    # measures steady keep-alive traffic, not 64 simultaneous TCP handshakes.
    connections = [Http(bases[i % len(bases)]) for i in range(min(concurrency, len(calls)) or 1)]
    await asyncio.gather(*(c.request("GET", "/health", "", None) for c in connections))
    gc.collect()
    gc.disable()  # the load generator's own collector pauses would show up as server latency
    started = time.perf_counter()
    tasks = [asyncio.create_task(worker(c)) for c in connections]
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - started
    gc.enable()
    return Phase(name, concurrency, outcomes, wall, bool(pending))


class Http:
    """A minimal HTTP/1.1 keep-alive client on one connection. httpx's pool cost more CPU than the
    server's cached path at 64 clients, and client and server share the same 2 cores here."""

    def __init__(self, base: str) -> None:
        host, port = base.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def request(
        self, method: str, path: str, token: str, body: bytes | None
    ) -> tuple[int, dict[str, str], bytes]:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {token}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
        content = await reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.close()
        return int(status_line.split()[1]), headers, content

    def close(self) -> None:
        if self.streams is not None:
            self.streams[1].close()
            self.streams = None


async def send(connection: Http, call: Call) -> Outcome:
    body = None if call.body is None else json.dumps(call.body).encode()
    started = time.perf_counter()
    try:
        status, headers, content = await connection.request(call.method, call.path, call.token, body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        connection.close()
        return Outcome(_ms(started), 0, f"{type(exc).__name__}: {exc}"[:200], None, None)
    latency = _ms(started)
    error = None if 200 <= status < 300 else f"HTTP {status}: {content[:200]!r}"
    return Outcome(latency, status, error, headers.get("x-briefing-cache"), _json(content))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# The phases --------------------------------------------------------------------------------------


async def run_levels(base: str, engine: Any, levels: list[int], args: argparse.Namespace) -> list[Phase]:
    rng = random.Random(args.seed)
    articles = demo_article_ids()
    phases: list[Phase] = []
    for level in levels:
        readers = [f"bench-c{level}-{n:04d}" for n in range(1, readers_at(level, levels, args.readers) + 1)]
        tokens = {r: issue_token(JWT_SECRET, r, "reader", timedelta(hours=2)) for r in readers}
        phases += await events_phases(base, engine, level, tokens, articles, rng, args)
        briefings = [Call("GET", "/v1/briefing", tokens[r]) for r in readers]
        for name, expect, calls in (
            ("briefing_uncached", "miss", briefings),
            ("briefing_cached", "hit", briefings * args.cached_rounds),
        ):
            phase = await run_phase(base, name, calls, level, args.phase_timeout)
            phase.extra = cache_check(phase, expect) | visit_check(phase)
            phases.append(phase)
            print(row(phase))
    return phases


def readers_at(level: int, levels: list[int], readers: int) -> int:
    if level == max(levels):
        return readers
    return min(readers, LOW_LEVEL_READERS[0] if level == 1 else LOW_LEVEL_READERS[1])


def demo_article_ids() -> list[str]:
    files = sorted((DEMO / "articles").glob("*.jsonl"))
    return [json.loads(line)["id"] for f in files for line in f.open() if line.strip()]


async def events_phases(
    base: str | Sequence[str],
    engine: Any,
    level: int,
    tokens: dict[str, str],
    articles: list[str],
    rng: random.Random,
    args: argparse.Namespace,
) -> list[Phase]:
    """The batches once, then 5% of them again (a retry); the events table counted around both."""
    calls = event_calls(level, tokens, articles, rng, args.events_per_level, args.batch)
    retries = rng.sample(calls, max(1, round(len(calls) * RETRY_SHARE)))
    before = count_events(engine)
    sent_phase = await run_phase(base, "events", calls, level, args.phase_timeout)
    retry_phase = await run_phase(base, "events_retry", retries, level, args.phase_timeout)
    stored = count_events(engine) - before
    sent = sum(len(c.body["events"]) for c in calls if c.body)
    sent_phase.extra = {
        "events_sent": sent,
        "events_stored": stored,
        "events_lost": sent - stored,
        "events_per_s": round(sent / sent_phase.wall_s, 1),
        "reported_stored": sum(o.answer.get("stored", 0) for o in sent_phase.done if _is_dict(o.answer)),
    }
    retry_phase.extra = duplicate_check(retry_phase, retries)
    print(row(sent_phase))
    print(row(retry_phase))
    return [sent_phase, retry_phase]


def event_calls(
    level: int, tokens: dict[str, str], articles: list[str], rng: random.Random, total: int, batch: int
) -> list[Call]:
    readers = sorted(tokens)
    calls = []
    for b in range(math.ceil(total / batch)):
        reader = rng.choice(readers)
        size = min(batch, total - b * batch)
        events = [event(f"bench-c{level}-b{b:05d}-e{e:03d}", reader, articles, rng) for e in range(size)]
        calls.append(Call("POST", "/v1/events", tokens[reader], {"events": events}))
    return calls


def event(event_id: str, reader: str, articles: list[str], rng: random.Random) -> dict[str, Any]:
    start, span_s = EVENT_WINDOW
    kind = rng.choice(EVENT_TYPES)
    out: dict[str, Any] = {
        "event_id": event_id,
        "reader_id": reader,
        "type": kind,
        "article_id": rng.choice(articles),
        "at": (start + timedelta(seconds=rng.randrange(span_s))).isoformat(),
    }
    if kind == "read":
        out["dwell_s"] = rng.randint(5, 300)
    return out


def count_events(engine: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("select count(*) from events")).scalar_one())


def duplicate_check(phase: Phase, retries: Sequence[Call]) -> dict[str, Any]:
    """Every retried batch must answer stored 0, duplicates = its size."""
    ok = sum(
        _is_dict(o.answer)
        and o.answer.get("stored") == 0
        and o.answer.get("duplicates") == len(c.body["events"] if c.body else [])
        for o, c in zip(phase.outcomes, retries, strict=True)
        if o is not None
    )
    return {"batches": len(retries), "duplicates_ok_batches": ok, "duplicates_ok": ok == len(retries)}


def cache_check(phase: Phase, expect: str) -> dict[str, Any]:
    answered = [o for o in phase.done if o.error is None]
    hits = sum(o.cache == "hit" for o in answered)
    return {
        "expected_cache": expect,
        "unexpected_cache": sum(o.cache != expect for o in answered),
        "hit_ratio": round(hits / len(answered), 4) if answered else None,
    }


def visit_check(phase: Phase) -> dict[str, Any]:
    """An uncached phase longer than a visit: its first readers come back in a new visit (a miss)."""
    if phase.name != "briefing_uncached" or phase.wall_s <= VISIT_S:
        return {}
    warning = f"the uncached phase ran {phase.wall_s:.0f} s, longer than a visit ({VISIT_S:.0f} s)"
    print(f"WARNING: {warning}; early readers' repeat requests start a new visit")
    return {"warning": warning}


def _is_dict(value: Any) -> bool:
    return isinstance(value, dict)


# Results -----------------------------------------------------------------------------------------


def stats(phase: Phase) -> dict[str, Any]:
    ok = sorted(o.latency_ms for o in phase.done if o.error is None)
    return {
        "requests": len(phase.outcomes),
        "completed": len(phase.done),
        "errors": phase.errors,
        "timed_out": phase.timed_out,
        "wall_s": round(phase.wall_s, 3),
        "rps": round(len(phase.done) / phase.wall_s, 1) if phase.wall_s else None,
        "p50_ms": percentile(ok, 50),
        "p90_ms": percentile(ok, 90),
        "p99_ms": percentile(ok, 99),
        "max_ms": round(ok[-1], 2) if ok else None,
        "error_samples": sorted({o.error for o in phase.done if o.error})[:5],
        **phase.extra,
    }


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest rank over latencies sorted ascending."""
    if not ordered:
        return None
    return round(ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 2)


def by_level(phases: list[Phase], name: str) -> dict[str, dict[str, Any]]:
    return {str(p.concurrency): stats(p) for p in phases if p.name == name}


def pivot(levels: dict[str, dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """{"64": {"p99_ms": x}} -> {"p99_ms": {"64": x}}."""
    return {k: {c: s.get(k) for c, s in levels.items()} for k in keys}


BRIEFING_KEYS = ("requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms", "hit_ratio")


def summarize(
    phases: list[Phase], levels: list[int], args: argparse.Namespace, startup_s: float
) -> dict[str, Any]:
    events, retries = by_level(phases, "events"), by_level(phases, "events_retry")
    top = str(max(levels))
    results: dict[str, Any] = {
        "database": args.database,
        "policy": POLICY,
        "machine": machine(),
        "startup_s": round(startup_s, 1),
        "settings": settings(levels, args),
        "events": events_summary(events, retries, top),
    }
    for name in ("briefing_uncached", "briefing_cached"):
        levels_stats = by_level(phases, name)
        results[name] = {**pivot(levels_stats, BRIEFING_KEYS), "by_level": levels_stats}
    results["targets"] = targets(results, top)
    results["notes"] = NOTES
    return results


def events_summary(
    events: dict[str, dict[str, Any]], retries: dict[str, dict[str, Any]], top: str
) -> dict[str, Any]:
    return {
        "per_s": events[top]["events_per_s"],
        "per_s_by_level": {c: s["events_per_s"] for c, s in events.items()},
        "sent": sum(s["events_sent"] for s in events.values()),
        "stored": sum(s["events_stored"] for s in events.values()),
        "lost": sum(s["events_lost"] for s in events.values()),
        "duplicates_ok": all(s["duplicates_ok"] for s in retries.values()),
        **pivot(events, ("requests", "errors", "rps", "p50_ms", "p90_ms", "p99_ms", "max_ms")),
        "by_level": events,
        "retry_by_level": retries,
    }


def targets(results: dict[str, Any], top: str) -> dict[str, Any]:
    cached = results["briefing_cached"]
    p99 = cached["p99_ms"].get(top)
    ev = results["events"]
    clean = cached["errors"].get(top) == 0 and cached["hit_ratio"].get(top) == 1.0
    first = results["briefing_uncached"]["p50_ms"].get("1")
    return {
        "at_concurrency": int(top),
        "cached_p99_ms_lt_50": {"value": p99, "met": p99 is not None and p99 < 50 and clean},
        "uncached_p50_ms_lt_200_at_1": {"value": first, "met": first is not None and first < 200},
        "events_per_s_ge_1000_lost_0": {
            "value": ev["per_s"],
            "lost": ev["lost"],
            "met": ev["per_s"] >= 1000 and ev["lost"] == 0 and ev["duplicates_ok"],
        },
    }


NOTES = [
    "the load generator (one asyncio process) shares the machine's CPU cores with the server",
    "latency percentiles are nearest-rank over successful requests; rps counts completed requests",
    "events/s: distinct events over the wall time of the first pass (the retry pass excluded)",
    "events lost: sent minus rows added to the events table (counted directly in the database)",
    "each level uses its own first-visit readers (bench-c<C>-NNNN); they send the level's events "
    "first, so the uncached briefing composes for a reader with a history",
    "cached targets count only if the level had no errors and a hit ratio of 1",
]


def settings(levels: list[int], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "concurrency": levels,
        "readers_by_level": {str(c): readers_at(c, levels, args.readers) for c in levels},
        "events_per_level": args.events_per_level,
        "batch": args.batch,
        "retry_share": RETRY_SHARE,
        "phase_timeout_s": args.phase_timeout,
        "request_timeout_s": args.request_timeout,
        "http": "HTTP/1.1 keep-alive, one connection per worker (a minimal asyncio client)",
        "cached_rounds": args.cached_rounds,
        "server": "briefing serve --demo (uvicorn), RATE_LIMIT_PER_MINUTE=0, JOBS on",
    }


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "httpx": httpx.__version__,
    }


def cpu_model() -> str | None:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or None


def row(phase: Phase) -> str:
    s = stats(phase)
    extra = phase.extra
    if "events_per_s" in extra:
        note = f"{extra['events_per_s']} events/s, lost {extra['events_lost']}"
    elif "duplicates_ok" in extra:
        note = f"duplicates ok {extra['duplicates_ok_batches']}/{extra['batches']}"
    else:
        note = f"hit ratio {extra.get('hit_ratio')} (expect {extra.get('expected_cache')})"
    cells = [s[k] if s[k] is not None else "-" for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")]
    timed_out = "  TIMED OUT" if phase.timed_out else ""
    return (
        f"{phase.name:<18}{phase.concurrency:>5}{s['requests']:>9}{s['errors']:>7}{s['rps']:>9}"
        + "".join(f"{c:>10}" for c in cells)
        + f"  {note}{timed_out}"
    )


def print_table(phases: list[Phase], results: dict[str, Any]) -> None:
    head = ("phase", "C", "requests", "errors", "rps", "p50 ms", "p90 ms", "p99 ms", "max ms")
    print(f"\n{results['database']} database; policy: {POLICY['text']}")
    print(f"startup (to /ready) {results['startup_s']} s; load generator shares the cores with the server")
    widths = (-18, 5, 9, 7, 9, 10, 10, 10, 10)
    print("".join(f"{h:<{-w}}" if w < 0 else f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for phase in phases:
        print(row(phase))
    t = results["targets"]
    cached, ev = t["cached_p99_ms_lt_50"], t["events_per_s_ge_1000_lost_0"]
    first = t["uncached_p50_ms_lt_200_at_1"]
    print(
        f"targets at C={t['at_concurrency']}: cached p99 {cached['value']} ms < 50: {cached['met']}; "
        f"events {ev['value']}/s >= 1000 with lost {ev['lost']}: {ev['met']}; "
        f"uncached p50 at C=1 {first['value']} ms < 200: {first['met']}"
    )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: the service was stopped (and a PostgreSQL schema dropped)")
