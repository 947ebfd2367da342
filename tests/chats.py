"""Chats with known answers for the `Generator` contract, shared by every backend's tests."""

from __future__ import annotations

import socket

CAPITAL = [
    {"role": "system", "content": "You answer with one word."},
    {"role": "user", "content": "What is the capital of France?"},
]
COUNT = [{"role": "user", "content": "Write the numbers from one to twenty in words, one per line."}]
HARBOUR = [{"role": "user", "content": "Write one sentence about a harbour town."}]


def free_port() -> int:
    """A loopback port nothing listens on (for a server to start on, or to be refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
