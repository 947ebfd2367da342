"""What a cached briefing's shared-state work costs: in this process vs in Redis (REDIS_URL).

    python bench/shared_state.py --out bench/results/shared_state.json

A cached briefing request (`Service.cached_briefing`) reads the reader's visit, reads the cached
briefing and records the visit; with a rate limit on it also counts the caller. This times
exactly those calls on `server.shared_state`'s two implementations, one thread, a demo-sized
briefing (5 items of 3 cited sentences), over loopback to the Redis at --redis. It measures
the added round trips, not a whole request (bench/serve.py measures those).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import write_results

from briefing import Briefing, BriefingItem, BriefingPolicy, SummarySentence, Variant
from recsys import Reason
from server.settings import Settings
from server.shared_state import SharedState, shared_state

NOW = datetime(2026, 11, 19, 22, tzinfo=UTC)


def demo_briefing(reader: str) -> Briefing:
    def item(n: int) -> BriefingItem:
        sentences = tuple(
            SummarySentence(f"Sentence {k} of article {n}, about as long as a summary sentence is.", 0.8,
                            (f"art-{n}@abcdef#{k}",))
            for k in range(3)
        )  # fmt: skip
        why = Reason("section", "news")
        return BriefingItem(f"s-{n}", f"art-{n}", f"Title {n}", f"https://x/{n}", "news", False,
                            "why", "draft", f"art-{n}--1", "smollm2", sentences, why)  # fmt: skip

    return Briefing(reader, NOW, NOW - timedelta(hours=5), "control", BriefingPolicy(), "Good evening.",
                    tuple(item(n) for n in range(5)), ("smollm2",))  # fmt: skip


def per_call_us(call: Callable[[], object], n: int) -> dict[str, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return {"p50_us": round(statistics.median(times), 1), "p99_us": round(times[int(n * 0.99)], 1)}


def measure(state: SharedState, n: int) -> dict[str, dict[str, float]]:
    readers = [f"bench-{i}" for i in range(200)]
    since = NOW - timedelta(hours=5)
    for r in readers:
        state.visits.load(r, (NOW, since))
        state.briefings.put((r, Variant("control"), since), demo_briefing(r), state.briefings.epoch())
    pick = itertools.cycle(readers).__next__
    briefing = demo_briefing("bench-0")
    calls: dict[str, Callable[[], object]] = {
        "visit_get": lambda: state.visits.get(pick()),
        "cache_get": lambda: state.briefings.get((pick(), Variant("control"), since)),
        "visit_record": lambda: state.visits.record("bench-0", (NOW, since), NOW),
    }
    if state.counter is not None:
        counter = state.counter
        calls["rate_limit_hit"] = lambda: counter.hit("bench-caller", 60)
    timed = {name: per_call_us(call, n) for name, call in calls.items()}
    timed["cached_path_total"] = per_call_us(
        lambda: (
            state.visits.get("bench-1"),
            state.briefings.get(("bench-1", Variant("control"), since)),
            state.visits.record("bench-1", (NOW, since), briefing.generated_at),
            state.counter.hit("bench-caller", 60) if state.counter else None,
        ),
        n,
    )
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    prefix = f"bench-shared-{uuid.uuid4().hex[:8]}"
    redis_state = shared_state(Settings(redis_url=args.redis, redis_prefix=prefix))
    results = {"memory": measure(shared_state(Settings()), args.calls)}
    try:
        results["redis"] = measure(redis_state, args.calls)
    finally:
        assert redis_state.client is not None
        for key in redis_state.client.scan_iter(match=f"{prefix}:*"):
            redis_state.client.delete(key)
    print(f"{'call':<20}{'memory p50 µs':>15}{'redis p50 µs':>15}{'redis p99 µs':>15}")
    for name, timed in results["redis"].items():
        memory = results["memory"].get(name, {}).get("p50_us", float("nan"))
        print(f"{name:<20}{memory:>15.1f}{timed['p50_us']:>15.1f}{timed['p99_us']:>15.1f}")
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    write_results({"calls": args.calls, "loadavg": load, **results}, args.out, args)


if __name__ == "__main__":
    main()
