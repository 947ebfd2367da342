"""What every benchmark does the same way: describe the machine, write the JSON results.

Every result file records the commit it ran on (and whether the tree had uncommitted changes),
when, and the settings that shape the figures (`args`: the command line; each benchmark adds
the service settings it fixes), so a regression can be traced to a commit."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def provenance() -> dict[str, Any]:
    """The commit, a dirty flag and the time: what a figure is to be compared against."""
    import subprocess
    from datetime import UTC, datetime

    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        # BENCH_COMMIT: the commit a copy of the tree on another machine was made from (its own
        # git history, if any, may be older than the code it runs)
        "commit": os.environ.get("BENCH_COMMIT") or git("rev-parse", "HEAD") or "unknown",
        # results written by an earlier benchmark of the same run do not make the code dirty
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")),
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_results(results: dict[str, Any], out: Path, args: Any = None) -> None:
    """Write `results` with the run's provenance and, when given, its command-line arguments.
    The commit is the one the run started on (its code was imported then): a long benchmark may
    end after later commits, which are named as `commit_at_end`."""
    ended = provenance()
    started = {**STARTED, "finished_at": ended["ran_at"]}
    if ended["commit"] != STARTED["commit"]:
        started["commit_at_end"] = ended["commit"]
    results = {"provenance": started, **results}
    if args is not None:
        results.setdefault("args", {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


STARTED = provenance()  # when the benchmark imported this module, before any figure was measured


# Decoding speed is measured the same way everywhere: a fixed prompt, end-of-text suppressed so
# every side decodes the same number of tokens, the best of a few rounds after a warm-up.
SPEED_PROMPT = (
    "<|im_start|>user\nWrite about the harbour of a small Norwegian town: its boats, its people and "
    "its history.<|im_end|>\n<|im_start|>assistant\n"
)


def decode_rate(llama: Any, rounds: int, tokens: int = 96) -> float:
    """Best tokens/s of a llama-cpp-python `Llama` decoding `tokens` forced tokens of SPEED_PROMPT."""
    import time

    never = {llama.token_eos(): -1e9}
    llama(SPEED_PROMPT, max_tokens=8, temperature=0.0)  # warm up outside the clock
    best = 0.0
    for _ in range(rounds):
        began = time.perf_counter()
        done: Any = llama(SPEED_PROMPT, max_tokens=tokens, temperature=0.0, logit_bias=never)
        best = max(best, done["usage"]["completion_tokens"] / (time.perf_counter() - began))
    return best
