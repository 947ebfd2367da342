"""Locust load on running API workers: readers fetching their briefing, some sending events.

    LOAD_HOSTS=http://127.0.0.1:8001,http://127.0.0.1:8002 LOAD_JWT_SECRET=... \\
    LOAD_READERS=scale-w2-0000:1000 LOAD_OUT=load.json \\
        locust -f bench/locustfile.py --headless -u 64 -r 64 -t 15s

bench/scale.py runs it this way against the workers it started (the readers already have a
history and a cached briefing there). Users are spread round-robin over LOAD_HOSTS (there is no
proxy here); every request is sent as a reader drawn at random from the pool (LOAD_READERS:
`first_id:count`, the ids numbered as bench/scale.py numbers them), so the per-caller rate limit
applies per reader as in production. No think time: each user is a closed loop, like
bench/serve.py's clients. LOAD_EVENTS_SHARE (default 0.1) of the requests post a batch of 10
events. At the end LOAD_OUT gets latency percentiles of the 2xx answers, the count of every
status (429: rate limited) and of answers with no status (connection errors), and the cache hits.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from locust import FastHttpUser, constant, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve import demo_article_ids, event, percentile

from server.auth import issue_token

HOSTS = [h for h in os.environ.get("LOAD_HOSTS", "").split(",") if h]
EVENTS_SHARE = float(os.environ.get("LOAD_EVENTS_SHARE", "0.1"))
EVENTS_PER_BATCH = 10


def reader_pool(spec: str) -> list[str]:
    """`scale-w2-0000:1000` -> scale-w2-0000 ... scale-w2-0999."""
    first, count = spec.rsplit(":", 1)
    stem, number = first.rsplit("-", 1)
    start = int(number)
    return [f"{stem}-{n:0{len(number)}d}" for n in range(start, start + int(count))]


READERS = reader_pool(os.environ.get("LOAD_READERS", "load-0000:100"))
SECRET = os.environ.get("LOAD_JWT_SECRET", "")
TOKENS = {
    r: {"Authorization": f"Bearer {issue_token(SECRET, r, 'reader', timedelta(hours=2))}"} for r in READERS
}
ARTICLES = demo_article_ids()
_host_turn = itertools.count()


class Reader(FastHttpUser):
    wait_time = constant(0)

    def __init__(self, environment: Any) -> None:
        self.host = HOSTS[next(_host_turn) % len(HOSTS)]  # before the client is made for it
        super().__init__(environment)

    @task
    def visit(self) -> None:
        reader = random.choice(READERS)
        if random.random() < EVENTS_SHARE:
            self._events(reader)
        else:
            self._briefing(reader)

    def _briefing(self, reader: str) -> None:
        with self.client.get("/v1/briefing", headers=TOKENS[reader], catch_response=True) as answer:
            _judge(answer)

    def _events(self, reader: str) -> None:
        rng = random.Random()
        batch = [event(f"load-{uuid4().hex}", reader, ARTICLES, rng) for _ in range(EVENTS_PER_BATCH)]
        with self.client.post(
            "/v1/events", json={"events": batch}, headers=TOKENS[reader], catch_response=True
        ) as answer:
            _judge(answer)


def _judge(answer: Any) -> None:
    if answer.status_code == 429:
        answer.failure("429 rate limited")
    elif not 200 <= answer.status_code < 300:
        answer.failure(f"HTTP {answer.status_code}")


# What LOAD_OUT gets: recorded here rather than parsed from locust's CSV, so that percentiles
# are over 2xx answers only (a 429 answers in a fraction of the time of a briefing).
LATENCIES: defaultdict[str, list[float]] = defaultdict(list)
STATUSES: defaultdict[str, Counter[int]] = defaultdict(Counter)
CACHE: Counter[str] = Counter()
CLOCK: dict[str, float] = {}


@events.request.add_listener
def _record(name: str, response_time: float, response: Any = None, **_: Any) -> None:
    status = int(getattr(response, "status_code", 0) or 0)
    STATUSES[name][status] += 1
    if 200 <= status < 300:
        LATENCIES[name].append(response_time)
        if name == "/v1/briefing":
            CACHE[(response.headers or {}).get("x-briefing-cache", "none")] += 1


@events.test_start.add_listener
def _started(**_: Any) -> None:
    CLOCK["start"] = time.perf_counter()


@events.quitting.add_listener
def _write(environment: Any, **_: Any) -> None:
    out = os.environ.get("LOAD_OUT")
    if out:
        Path(out).write_text(json.dumps(summary(time.perf_counter() - CLOCK.get("start", 0.0))) + "\n")


def summary(wall_s: float) -> dict[str, Any]:
    by_name = {name: _stats(name, wall_s) for name in sorted(STATUSES)}
    every = Counter[int]()
    for counts in STATUSES.values():
        every.update(counts)
    return {
        "wall_s": round(wall_s, 2),
        "requests": sum(every.values()),
        "rps": round(sum(every.values()) / wall_s, 1) if wall_s else None,
        "ok": sum(n for s, n in every.items() if 200 <= s < 300),
        "rate_limited_429": every.get(429, 0),
        "errors": sum(n for s, n in every.items() if not 200 <= s < 300 and s != 429),
        "statuses": {str(s): n for s, n in sorted(every.items())},
        "briefing_cache": dict(CACHE),
        "by_request": by_name,
    }


def _stats(name: str, wall_s: float) -> dict[str, Any]:
    ok = sorted(LATENCIES[name])
    counts = STATUSES[name]
    return {
        "requests": sum(counts.values()),
        "ok_rps": round(len(ok) / wall_s, 1) if wall_s else None,
        "p50_ms": percentile(ok, 50),
        "p99_ms": percentile(ok, 99),
        "max_ms": round(ok[-1], 2) if ok else None,
        "statuses": {str(s): n for s, n in sorted(counts.items())},
    }


def _fresh_loop_clock() -> None:
    """The imports above (litestar for the tokens) take seconds after gevent's loop read its
    clock; without this, `--run-time` timers counted from that stale time end the run at once."""
    import gevent

    gevent.get_hub().loop.update_now()


_fresh_loop_clock()
