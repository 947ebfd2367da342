"""Time to the first reader page of `briefing serve --demo` (what `make run` starts) on a fresh
DATA_DIR, then the time to the first drafted summary and to Ctrl-C's exit.

It starts the service as a subprocess, polls `/health` every 0.2 s, then asks for the front page
as the demo reader r02 (the same Bearer token `briefing token r02 --role reader` prints), reads
the briefing's item sources from `/v1/briefing` and the drafting progress from `/ready`, and
optionally waits for the first draft. Last it sends SIGINT, as Ctrl-C does, and times the exit.
Every time is in seconds from the start of the process; the machine's load is recorded with them
(on a shared machine the figures move with it).

    .venv/bin/python bench/first_page.py                       # this checkout
    .venv/bin/python bench/first_page.py --tree /tmp/old-clone  # another checkout's code, same venv
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import machine, write_results
from tests.chats import free_port

READER = "r02"
POLL_S = 0.2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, help="Run this checkout's code (default: this one).")
    parser.add_argument("--data-dir", type=Path, help="DATA_DIR (default: a fresh temporary folder).")
    parser.add_argument("--timeout", type=float, default=1800.0, help="Give up after this long (s).")
    parser.add_argument("--wait-draft", action="store_true", help="Also time the first drafted summary.")
    parser.add_argument("--out", type=Path, default=Path("bench/results/first_page.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="first-page-") as tmp:
        data_dir = args.data_dir or Path(tmp) / "data"
        figures = measure(args.tree, data_dir, Path(tmp) / "serve.log", args.timeout, args.wait_draft)
    print_table(figures)
    write_results({"machine": machine(), "figures": figures}, args.out, args)


def measure(tree: Path | None, data_dir: Path, log: Path, timeout: float, wait_draft: bool) -> dict[str, Any]:
    port, key = free_port(), secrets.token_hex(32)
    env = {**os.environ, "DATA_DIR": str(data_dir), "JWT_SECRET": key, "HF_HUB_OFFLINE": "1"}
    env["TRANSFORMERS_OFFLINE"] = "1"
    if tree is not None:
        env["PYTHONPATH"] = str(tree.resolve())
    command = [str(Path(sys.executable).with_name("briefing")), "serve", "--demo", "--port", str(port)]
    figures: dict[str, Any] = {"command": " ".join(command[-4:]), "load_before": os.getloadavg()[0]}
    start = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tree)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=timeout) as client:
            figures.update(_serve_times(client, process, start, timeout, key, wait_draft))
        figures.update(_stop(process, start, log))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    figures["load_after"] = os.getloadavg()[0]
    # the sign-in links' tokens are for a service that is gone, but they are still no log material
    figures["log_tail"] = [
        re.sub(r"token=\S+", "token=...", line) for line in log.read_text().splitlines()[-12:]
    ]
    return figures


def _serve_times(
    client: httpx.Client, process: subprocess.Popen[bytes], start: float, timeout: float, key: str, wait: bool
) -> dict[str, Any]:
    from server.auth import issue_token

    found: dict[str, Any] = {}
    found["health_s"] = _until(lambda: _ok(client, "/health"), process, start, timeout)
    headers = {"Authorization": f"Bearer {issue_token(key, READER, 'reader', timedelta(hours=1))}"}
    page = client.get("/", headers=headers)
    found["first_page_s"] = round(time.monotonic() - start, 1)
    found["first_page_status"] = page.status_code
    found["drafts_at_first_page"] = client.get("/ready").json().get("drafts")
    items = client.get("/v1/briefing", headers=headers).json().get("items", [])
    found["item_sources_at_first_page"] = [i["source"] for i in items]
    if wait:
        found["first_draft_s"] = _until(lambda: _drafted(client), process, start, timeout)
        found.update(_edit(client, key))
    return found


def _edit(client: httpx.Client, key: str) -> dict[str, Any]:
    """An editor saves an edit of the first draft while the drafting goes on: how long the
    request takes (the sentence check runs in it)."""
    from server.auth import issue_token

    editor = {"Authorization": f"Bearer {issue_token(key, 'edith', 'editor', timedelta(hours=1))}"}
    draft = client.get("/v1/review/queue", headers=editor).json()[0]
    text = " ".join(s["text"] for s in draft["sentences"]) + " Editors checked this summary."
    sent = time.monotonic()
    saved = client.post(
        f"/v1/review/summaries/{draft['id']}/edit",
        params={"version": draft["version"]},
        json={"text": text},
        headers=editor,
    )
    return {"edit_s": round(time.monotonic() - sent, 2), "edit_status": saved.status_code}


def _stop(process: subprocess.Popen[bytes], start: float, log: Path) -> dict[str, Any]:
    """SIGINT, as Ctrl-C sends; how long the exit took and what the log said meanwhile."""
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=3600)
    text = log.read_text()
    waiting = re.findall(r"waiting for .*", text)
    return {
        "sigint_at_s": round(sent - start, 1),
        "exit_after_sigint_s": round(time.monotonic() - sent, 1),
        "exit_code": code,
        "waiting_lines": waiting[:5],
        "drafting_lines": re.findall(r"drafting \d+/\d+: .*", text)[:10],
    }


def _until(probe: Any, process: subprocess.Popen[bytes], start: float, timeout: float) -> float:
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with {process.returncode}; see its log")
        if probe():
            return round(time.monotonic() - start, 1)
        time.sleep(POLL_S)
    raise SystemExit(f"nothing within {timeout:.0f} s")


def _ok(client: httpx.Client, path: str) -> bool:
    try:
        return client.get(path, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _drafted(client: httpx.Client) -> bool:
    drafts = client.get("/ready").json().get("drafts") or {}
    return bool(drafts.get("done"))


def print_table(figures: dict[str, Any]) -> None:
    rows = [
        ("command", figures["command"]),
        ("load average before / after", f"{figures['load_before']:.1f} / {figures['load_after']:.1f}"),
        ("/health answers (s)", figures["health_s"]),
        ("first reader page (s)", f"{figures['first_page_s']} (HTTP {figures['first_page_status']})"),
        ("item sources then", ", ".join(figures["item_sources_at_first_page"]) or "none"),
        ("drafts then (/ready)", figures["drafts_at_first_page"]),
        ("first draft (s)", figures.get("first_draft_s", "not waited for")),
        (
            "an editor's edit saved in (s)",
            f"{figures.get('edit_s', '-')} (HTTP {figures.get('edit_status', '-')})",
        ),
        ("exit after SIGINT (s)", f"{figures['exit_after_sigint_s']} (exit code {figures['exit_code']})"),
        ("log while stopping", "; ".join(figures["waiting_lines"]) or "nothing"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
