"""The in-process implementations of `server.shared_state`'s protocols (the embedded default):
one process serves readers, so a dict under a lock is the truth. They are what the service used
before Redis was an option, unchanged in behaviour and speed."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from briefing import Briefing
from server.shared_state import Entry, State


def shown_or_cited(briefing: Briefing) -> set[str]:
    """The articles a briefing shows or cites (a story update cites the story's earlier ones)."""
    cited = {a for i in briefing.items for s in i.sentences for a in s.articles}
    return {i.article_id for i in briefing.items} | cited


class MemoryVisitStates:
    def __init__(self) -> None:
        self._state: dict[str, State] = {}
        self._erased: dict[str, datetime] = {}  # reader -> when they were erased
        self._lock = threading.Lock()

    def get(self, reader_id: str) -> State | None:
        return self._state.get(reader_id)

    def load(self, reader_id: str, state: State) -> State:
        with self._lock:
            return self._state.setdefault(reader_id, state)

    def record(self, reader_id: str, state: State, composed_at: datetime) -> bool:
        with self._lock:
            erased = self._erased.get(reader_id)
            if erased is not None and composed_at <= erased:
                return False
            self._state[reader_id] = state
            return True

    def forget(self, reader_id: str, at: datetime) -> None:
        with self._lock:
            self._erased[reader_id] = at
            self._state.pop(reader_id, None)

    def erased(self, reader_ids: Sequence[str]) -> dict[str, datetime]:
        return {r: self._erased[r] for r in reader_ids if r in self._erased}


class MemoryBriefings:
    """Composed briefings by (reader, variant, since), least recently used out first."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._items: OrderedDict[tuple[Any, ...], Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0

    def epoch(self) -> int:
        return self._epoch

    def get(self, key: tuple[Any, ...]) -> Entry | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], briefing: Briefing, epoch: Any) -> dict[str, Any]:
        body = briefing.to_json()
        with self._lock:
            if epoch == self._epoch:
                self._items[key] = (briefing, body)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return body

    def drop(self, keep: Callable[[Briefing], bool]) -> int:
        with self._lock:
            self._epoch += 1
            stale = [k for k, (b, _) in self._items.items() if not keep(b)]
            for key in stale:
                del self._items[key]
            return len(stale)

    def drop_reader(self, reader_id: str) -> int:
        return self.drop(lambda b: b.reader_id != reader_id)

    def drop_article(self, article_id: str) -> int:
        return self.drop(lambda b: article_id not in shown_or_cited(b))

    def __len__(self) -> int:
        return len(self._items)
