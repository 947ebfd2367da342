"""Scale-out benchmark: one API worker vs two on PostgreSQL and Redis, then a locust load test.

    python bench/scale.py --out bench/results/scale.json --load-out bench/results/load.json

Starts two `briefing serve --demo` API workers on loopback (bench/serve.py's startup and
readiness wait), each with its own DATA_DIR (the embedded Qdrant store is one process's: each
worker ingests the identical demo newsroom into its own), both on one fresh PostgreSQL schema
(dropped at the end) and one Redis under a unique REDIS_PREFIX (its keys deleted at the end),
JOBS=false (no scheduler: `briefing worker` refuses the embedded store), the rate limit on
(--rate-limit per reader and minute, counted atomically in Redis). Worker 1 starts, then worker 2
(both ingest the demo into the shared database; the second finds it there).

Then, in one run and with the same load, for 1 worker and for 2 (own first-visit readers each):
events at C clients (bench/serve.py's events phase: the events table counted before and after,
5% of the batches resent and answered as duplicates), first-visit briefings, then cached
briefings (--cached-rounds passes). With 2 workers there is no proxy here: the load client opens
its C keep-alive connections round-robin over the two ports. CPU seconds of every process
(psutil) are taken around each phase. Last (unless --no-load), locust (bench/locustfile.py,
headless, its own process) at each --load-users level against both workers.
The load generators share the machine's cores with the workers, PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import psutil
import serve
from sqlalchemy import create_engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import write_results

from server.auth import issue_token

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WINDOW_S = 65.0  # the rate limit's window is a minute from a caller's first hit; a little more


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, serve._interrupt)  # so workers stop and the schema is dropped
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    prefix = f"bench-scale-{uuid4().hex[:10]}"
    with ExitStack() as stack:
        url = stack.enter_context(serve.database("postgresql", work))
        stack.enter_context(redis_keys(prefix))
        env = worker_env(prefix, args.rate_limit)
        workers = [stack.enter_context(api_worker(url, work / f"w{n}", env)) for n in (1, 2)]
        bases = [base for base, _ in workers]
        for n, (base, startup) in enumerate(workers, 1):
            print(f"API worker {n} ready at {base} after {startup:.1f} s")
        engine = create_engine(url)
        try:
            modes = {n: measure(bases[:n], engine, n, args) for n in (1, 2)}
        finally:
            engine.dispose()
        load = run_load(bases, args) if not args.no_load else None
    results = summarize(modes, workers, args)
    print_table(results)
    write_results(results, args.out, args)
    if load is not None:
        print_load(load)
        write_results(load, args.load_out, args)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON results of 1 vs 2 workers")
    parser.add_argument("--load-out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    parser.add_argument("--clients", type=int, default=64, help="concurrent connections")
    parser.add_argument("--readers", type=int, default=1000, help="first-visit readers per worker count")
    parser.add_argument(
        "--events-per-level", type=int, default=20_000, help="distinct events per worker count"
    )
    parser.add_argument("--batch", type=int, default=50, help="events per POST /v1/events")
    parser.add_argument("--cached-rounds", type=int, default=10, help="passes over the readers, cached")
    parser.add_argument(
        "--rate-limit",
        type=int,
        default=12,
        help="requests per reader and minute: above a reader's 1 + rounds briefings, so only "
        "readers who also sent 2 or more event batches meet it",
    )
    parser.add_argument(
        "--load-users", type=serve._levels, default=[64, 256], help="locust users, e.g. 64,256"
    )
    parser.add_argument("--load-seconds", type=int, default=15, help="seconds per locust level")
    parser.add_argument("--no-load", action="store_true", help="skip the locust load test")
    parser.add_argument("--phase-timeout", type=float, default=600.0)
    parser.add_argument("--request-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


# The workers, Redis and the processes' CPU ------------------------------------------------------


def worker_env(prefix: str, rate_limit: int) -> dict[str, str]:
    return {
        "JOBS": "false",
        "REDIS_URL": REDIS_URL,
        "REDIS_PREFIX": prefix,
        "RATE_LIMIT_PER_MINUTE": str(rate_limit),
        "LLM_THREADS": "1",  # nothing serves from the LLM; its threads would take the cores
    }


@contextmanager
def api_worker(url: str, work: Path, env: dict[str, str]) -> Iterator[tuple[str, float]]:
    work.mkdir(parents=True)
    with serve.server(url, work, 0, env) as (base, startup_s):
        yield base, startup_s


@contextmanager
def redis_keys(prefix: str) -> Iterator[None]:
    """The run's keys (all under its own prefix) are deleted afterwards; nothing else is touched."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        sys.exit(f"Redis is not reachable at {REDIS_URL}: {exc}")
    try:
        yield
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


def processes() -> dict[str, list[psutil.Process]]:
    """The API workers (this script's children), this script (the asyncio load client), and the
    PostgreSQL and Redis servers (their CPU includes whatever else uses them meanwhile)."""
    found: dict[str, list[psutil.Process]] = {
        "load_client": [psutil.Process()],
        "postgresql": [],
        "redis": [],
    }
    for n, child in enumerate(sorted(psutil.Process().children(), key=lambda p: p.create_time()), 1):
        found[f"api_worker_{n}"] = [child]
    for process in psutil.process_iter(["name"]):
        name = process.info["name"] or ""
        if name.startswith("postgres"):
            found["postgresql"].append(process)
        elif name.startswith("redis-server"):
            found["redis"].append(process)
    return found


CpuTimes = dict[str, dict[int, float]]


def cpu_seconds(found: dict[str, list[psutil.Process]]) -> CpuTimes:
    """user+system seconds per group and process; "machine_busy" is the whole machine's (pid 0)."""
    times: CpuTimes = {}
    for name, group in found.items():
        times[name] = {}
        for process in group:
            try:
                t = process.cpu_times()
            except psutil.Error:  # a PostgreSQL backend that ended meanwhile
                continue
            times[name][process.pid] = t.user + t.system
    busy = psutil.cpu_times()
    times["machine_busy"] = {0: busy.user + busy.system + busy.nice + busy.irq + busy.softirq}
    return times


def used(before: CpuTimes, after: CpuTimes) -> dict[str, float]:
    """Per group, the CPU its processes used in between (those alive at both ends: a PostgreSQL
    backend that came or went meanwhile is left out)."""
    return {
        name: round(sum(t - before[name][pid] for pid, t in now.items() if pid in before.get(name, {})), 2)
        for name, now in after.items()
    }


# One worker count: events, first-visit and cached briefings --------------------------------------


def measure(bases: Sequence[str], engine: Any, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    print(f"\n{workers} API worker(s): {', '.join(bases)}")
    found = processes()
    before = cpu_seconds(found)
    started = time.perf_counter()
    phases = asyncio.run(run_phases(bases, engine, workers, args))
    wall = time.perf_counter() - started
    cpu = used(before, cpu_seconds(found))
    mode: dict[str, Any] = {"bases": list(bases), "wall_s": round(wall, 1), "cpu_s": cpu}
    for phase in phases:
        mode[phase.name] = phase_stats(phase)
    mode["cpu_share_of_wall"] = {k: round(v / wall, 2) for k, v in cpu.items()}
    return mode


async def run_phases(
    bases: Sequence[str], engine: Any, workers: int, args: argparse.Namespace
) -> list[serve.Phase]:
    rng = random.Random(args.seed + workers)
    readers = [f"scale-w{workers}-{n:04d}" for n in range(args.readers)]
    tokens = {r: issue_token(serve.JWT_SECRET, r, "reader", timedelta(hours=2)) for r in readers}
    found = processes()
    before = cpu_seconds(found)
    phases = await serve.events_phases(
        bases, engine, args.clients, tokens, serve.demo_article_ids(), rng, args
    )
    phases[0].extra |= phase_cpu(phases[0], used(before, cpu_seconds(found)))  # with the retry pass
    briefings = [serve.Call("GET", "/v1/briefing", tokens[r]) for r in readers]
    for name, expect, calls in (
        ("briefing_uncached", "miss", briefings),
        ("briefing_cached", "hit", briefings * args.cached_rounds),
    ):
        before = cpu_seconds(found)
        phase = await serve.run_phase(bases, name, calls, args.clients, args.phase_timeout)
        phase.extra = serve.cache_check(phase, expect) | phase_cpu(phase, used(before, cpu_seconds(found)))
        phases.append(phase)
        print(serve.row(phase) + f"  API workers used {phase.extra['api_cores_used']} cores")
    phases.append(await rate_limit_probe(bases, workers, args))
    return phases


def phase_cpu(phase: serve.Phase, cpu: dict[str, float]) -> dict[str, Any]:
    """The CPU a phase took, and what it says apart from the machine's other load: how many cores
    the API workers got, and 2xx answers per API-worker CPU second (the same for 1 and 2 workers
    when scaling out costs nothing per request)."""
    api = sum(v for k, v in cpu.items() if k.startswith("api_worker"))
    ok = sum(o.error is None for o in phase.done)
    return {
        "cpu_s": cpu,
        "api_cores_used": round(api / phase.wall_s, 2) if phase.wall_s else None,
        "ok_per_api_cpu_s": round(ok / api, 1) if api else None,
    }


PROBE_READERS, PROBE_EXCESS = 20, 4


async def rate_limit_probe(bases: Sequence[str], workers: int, args: argparse.Namespace) -> serve.Phase:
    """Readers who each send the limit plus PROBE_EXCESS briefing requests at once, spread over
    the workers: exactly PROBE_EXCESS of each reader's must be 429 if the count is shared and
    atomic (litestar's per-process counter would let each worker grant the whole limit)."""
    each = args.rate_limit + PROBE_EXCESS
    readers = [f"scale-rl-w{workers}-{n:02d}" for n in range(PROBE_READERS)]
    tokens = [issue_token(serve.JWT_SECRET, r, "reader", timedelta(hours=2)) for r in readers]
    calls = [serve.Call("GET", "/v1/briefing", t) for t in tokens for _ in range(each)]
    phase = await serve.run_phase(bases, "rate_limit_probe", calls, args.clients, args.phase_timeout)
    limited = sum(o.status == 429 for o in phase.done)
    ok = sum(o.error is None for o in phase.done)
    expected = PROBE_READERS * PROBE_EXCESS
    phase.extra = {
        "readers": PROBE_READERS,
        "requests_each": each,
        "expected_429": expected,
        "expected_ok": PROBE_READERS * args.rate_limit,
        "got_ok": ok,
        "limit_holds": limited == expected and ok == PROBE_READERS * args.rate_limit,
    }
    print(f"rate-limit probe: {ok} answered, {limited} limited (expected {expected}), {len(bases)} worker(s)")
    return phase


def phase_stats(phase: serve.Phase) -> dict[str, Any]:
    """bench/serve.py's figures, with 429s counted apart: `rps` counts 2xx answers only (a 429
    is cheap and would inflate it), `rps_all` every answer."""
    base = serve.stats(phase)
    limited = sum(o.status == 429 for o in phase.done)
    ok = sum(o.error is None for o in phase.done)
    return {
        **base,
        "rps_all": base["rps"],
        "rps": round(ok / phase.wall_s, 1) if phase.wall_s else None,
        "rate_limited_429": limited,
        "errors": base["errors"] - limited,
    }


# Locust ------------------------------------------------------------------------------------------


def run_load(bases: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    """Locust at each level against both workers. Each level draws its readers from a pool that
    already has a history and a cached briefing; a pool is used again only after its readers'
    rate-limit windows have passed, so each level starts from a fresh minute."""
    pools = [f"scale-w1-0000:{args.readers}", f"scale-w2-0000:{args.readers}"]
    last_used = {pools[0]: 0.0, pools[1]: time.monotonic()}  # worker count 2 just ran
    levels: dict[str, Any] = {}
    for i, users in enumerate(args.load_users):
        pool = pools[i % len(pools)]
        wait = last_used[pool] + WINDOW_S - time.monotonic()
        if wait > 0:
            print(f"waiting {wait:.0f} s for the readers' rate-limit windows to pass")
            time.sleep(wait)
        last_used[pool] = time.monotonic()
        levels[str(users)] = locust(bases, users, pool, args)
        print(load_row(users, levels[str(users)]))
    return {
        "tool": f"locust {_locust_version()} (FastHttpUser, headless, one process)",
        "workers": len(bases),
        "bases": list(bases),
        "distribution": "users round-robin over the workers' ports (no proxy here)",
        "rate_limit_per_minute_per_reader": args.rate_limit,
        "seconds_per_level": args.load_seconds,
        "mix": "per request, a random reader: 10% a batch of 10 events, else GET /v1/briefing",
        "levels": levels,
        "machine": serve.machine(),
        "notes": LOAD_NOTES,
    }


def locust(bases: Sequence[str], users: int, pool: str, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(tempfile.mkstemp(prefix="locust-", suffix=".json")[1])
    env = dict(os.environ) | {
        "LOAD_HOSTS": ",".join(bases),
        "LOAD_JWT_SECRET": serve.JWT_SECRET,
        "LOAD_READERS": pool,
        "LOAD_OUT": str(out),
    }
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless"]
    command += ["-u", str(users), "-r", str(users), "-t", f"{args.load_seconds}s", "--only-summary"]
    command += ["--loglevel", "WARNING", "--exit-code-on-error", "0"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers are still running: only locust ends
    found = processes()
    workers_before = cpu_seconds(found)
    done = subprocess.run(
        command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=args.load_seconds + 300
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if not out.stat().st_size:
        sys.exit(f"locust wrote no results (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    cpu = used(workers_before, cpu_seconds(found))
    cpu.pop("load_client")  # this script idles meanwhile
    cpu["locust"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
    result["cpu_s"] = cpu
    result["cpu_share_of_wall"] = {k: round(v / result["wall_s"], 2) for k, v in cpu.items()}
    result["users"], result["reader_pool"] = users, pool
    result["locust_cpu_ms_per_request"] = round(1000 * cpu["locust"] / max(1, result["requests"]), 3)
    return result


def _locust_version() -> str:
    import locust as tool

    return str(tool.__version__)


LOAD_NOTES = [
    "latency percentiles are nearest-rank over 2xx answers only; 429 (rate limited) and other "
    "non-2xx answers are counted apart",
    "locust shares the machine's cores with the two workers, PostgreSQL and Redis: its own CPU is "
    "in cpu_s.locust; compare with scale.json's asyncio client (cpu_s.load_client) at 64 clients",
]


# Results -----------------------------------------------------------------------------------------


def summarize(
    modes: dict[int, dict[str, Any]], workers: list[tuple[str, float]], args: argparse.Namespace
) -> dict[str, Any]:
    one, two = modes[1]["briefing_cached"]["rps"], modes[2]["briefing_cached"]["rps"]
    events = {n: events_summary(m) for n, m in modes.items()}
    return {
        "machine": serve.machine() | {"load_average_1_5_15": list(os.getloadavg())},
        "load_tool": "bench/serve.py's asyncio HTTP/1.1 client, a keep-alive connection per client",
        "clients": args.clients,
        "distribution": "with 2 workers the connections alternate between the two ports (no proxy here)",
        "servers": {
            "command": "briefing serve --demo: own DATA_DIR (embedded Qdrant), one PostgreSQL schema, Redis",
            "env": worker_env("<unique per run>", args.rate_limit),
            "startup_s": [round(s, 1) for _, s in workers],
        },
        "workers": {
            str(n): {
                "briefing_cached": m["briefing_cached"],
                "briefing_uncached": m["briefing_uncached"],
                "events": events[n],
                "cpu_s": m["cpu_s"],
                "cpu_share_of_wall": m["cpu_share_of_wall"],
                "wall_s": m["wall_s"],
            }
            for n, m in modes.items()
        },
        "scaling_ratio": round(two / one, 2) if one and two else None,
        # What the ratio cannot say on a busy 2-core machine: the cores the workers got, and the
        # cached answers per worker CPU second (per-request cost, apart from contention).
        "cached_api_cores_used": {str(n): m["briefing_cached"]["api_cores_used"] for n, m in modes.items()},
        "cached_ok_per_api_cpu_s": {
            str(n): m["briefing_cached"]["ok_per_api_cpu_s"] for n, m in modes.items()
        },
        "rate_limited_429": {str(n): sum(m[p]["rate_limited_429"] for p in PHASES) for n, m in modes.items()},
        "rate_limit_probe": {str(n): m["rate_limit_probe"] for n, m in modes.items()},
        "client_cpu_ms_per_request": {
            str(n): round(1000 * m["cpu_s"]["load_client"] / requests(m), 3) for n, m in modes.items()
        },
        "notes": NOTES,
    }


PHASES = ("events", "events_retry", "briefing_uncached", "briefing_cached")


def requests(mode: dict[str, Any]) -> int:
    return sum(mode[p]["requests"] for p in (*PHASES, "rate_limit_probe"))


def events_summary(mode: dict[str, Any]) -> dict[str, Any]:
    sent, retry = mode["events"], mode["events_retry"]
    keys = (
        "events_sent",
        "events_stored",
        "events_per_s",
        "rps",
        "p50_ms",
        "p99_ms",
        "errors",
        "rate_limited_429",
        "api_cores_used",
        "cpu_s",
    )
    api = sum(v for k, v in sent["cpu_s"].items() if k.startswith("api_worker"))
    return {
        "lost": sent["events_lost"],
        "duplicates_ok": retry["duplicates_ok"],
        **{k: sent[k] for k in keys},
        "events_per_api_cpu_s": round(sent["events_sent"] / api, 1) if api else None,
    }


NOTES = [
    "one run: worker count 1 uses worker 1 only (worker 2 is up and idle), then both; each count "
    "has its own first-visit readers (scale-w<N>-NNNN)",
    "rps counts 2xx answers over the phase's wall time; rps_all every answer (429s included)",
    "events lost: sent minus rows added to the events table, counted in PostgreSQL directly",
    "rate_limit_probe: 20 new readers each send the limit + 4 briefing requests at once over the "
    "workers; the limit holds across workers when exactly 4 of each reader's are 429",
    "cpu_s: user+system seconds over the whole worker count's run (events, first-visit and cached "
    "briefings); postgresql and redis sum their server processes and include anything else "
    "using them meanwhile; machine_busy is the whole machine's",
    "on 2 cores two workers cannot double the throughput: the workers, the load client, "
    "PostgreSQL and Redis share the cores; with a core per worker (and the client elsewhere) "
    "cached briefings should scale close to the worker count until Redis or the proxy binds",
]


def print_table(results: dict[str, Any]) -> None:
    head = ("workers", "phase", "requests", "errors", "429s", "rps", "p50 ms", "p99 ms")
    print("\n" + _cells(head))
    for n, mode in results["workers"].items():
        for name in ("briefing_uncached", "briefing_cached"):
            s = mode[name]
            keys = ("requests", "errors", "rate_limited_429", "rps", "p50_ms", "p99_ms")
            print(_cells((n, name, *(s[k] for k in keys))))
        e = mode["events"]
        keys = ("events_sent", "errors", "rate_limited_429", "events_per_s", "p50_ms", "p99_ms")
        print(_cells((n, "events (per s)", *(e[k] for k in keys))) + f"  lost {e['lost']}")
    print(f"scaling ratio (cached briefing rps, 2 workers over 1): {results['scaling_ratio']}")
    cores, per_cpu = results["cached_api_cores_used"], results["cached_ok_per_api_cpu_s"]
    print(f"cached phase: cores the API workers got {cores}; answers per worker CPU second {per_cpu}")
    for n, mode in results["workers"].items():
        cpu = ", ".join(f"{k} {v}" for k, v in mode["cpu_s"].items())
        print(f"CPU seconds with {n} worker(s) over {mode['wall_s']} s: {cpu}")


def _cells(values: Sequence[Any]) -> str:
    first, second, *rest = ("-" if v is None else v for v in values)
    return f"{first!s:<8}{second!s:<19}" + "".join(f"{v!s:>9}" for v in rest)


def load_row(users: int, level: dict[str, Any]) -> str:
    briefing = level["by_request"].get("/v1/briefing", {})
    return (
        f"locust {users:>4} users: {level['requests']:>7} requests, {level['rps']:>7} rps, "
        f"429s {level['rate_limited_429']}, errors {level['errors']}, "
        f"briefing p50 {briefing.get('p50_ms')} ms p99 {briefing.get('p99_ms')} ms"
    )


def print_load(load: dict[str, Any]) -> None:
    print(f"\nload test: {load['tool']} against {load['workers']} workers")
    for users, level in load["levels"].items():
        print(load_row(int(users), level) + f"; CPU s {level['cpu_s']}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: the workers were stopped, the schema dropped and the Redis keys deleted")
