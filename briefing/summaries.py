"""Generated summaries, their review status and provenance, and where they are kept.

`SummaryRepository` contract (tests/unit/test_summary_store.py runs it on every store):
- `put(summary)` stores a new draft, or replaces a stored *draft* of the same id (its version goes
  up by one), atomically (a crash leaves the old copy); a summary with a decision is never
  replaced by a draft: the stored one is kept and returned. `put` returns what is stored;
- `decide(summary, expected_version)` stores an editor's decision only if the stored summary is
  still at `expected_version` and not final (rejected or retracted); it returns the stored summary
  (version + 1), or None when the state changed meanwhile (a conflict: the editor saw another state);
- `get(id)` returns it or None; `find(article_id)` every summary of exactly that article, newest first;
- `by_status(status)` the summaries in a review state, oldest first (the editors' queue).
A decision is final: rejected and retracted summaries are never shown to readers nor decided again.
`FileSummaryStore` keeps one JSON file per summary (benchmarks without a database);
`server.stores.SqlSummaryStore` is the service's and the CLI's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote


class Status(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    EDITED = "edited"
    REJECTED = "rejected"
    RETRACTED = "retracted"  # its article was retracted or replaced: never shown again


FINAL = frozenset({Status.REJECTED, Status.RETRACTED})  # no decision changes these
REVIEWED = frozenset({Status.APPROVED, Status.EDITED})  # an editor vouched for the text


@dataclass(frozen=True)
class SummarySentence:
    text: str
    score: float  # grounding support in [0, 1]
    citations: tuple[str, ...]  # chunk ids, `article@hash#n`
    extractive: bool = False  # copied from the article because nothing generated passed the check
    missing: tuple[str, ...] = ()  # for dropped sentences: facts absent from the evidence
    fluency: float | None = None  # the LLM's likelihood of it on its own (Support.fluency)

    @property
    def articles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.split("@", 1)[0] for c in self.citations))


@dataclass(frozen=True)
class Summary:
    id: str
    kind: str  # "article" or "update"
    article_id: str  # the article summarized (for an update: the newest one)
    content_hash: str
    prompt: str  # template id, e.g. article@1
    model: str  # the model that wrote it (after any fallback)
    adapter: str | None
    sentences: tuple[SummarySentence, ...]
    dropped: tuple[SummarySentence, ...]  # generated, failed the check: shown to editors only
    created_at: datetime
    seconds: float
    status: Status = Status.DRAFT
    basis: tuple[str, ...] = ()  # for an update: the articles the reader had already read
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    original_text: str | None = None  # the generated text, once an editor has changed it
    reason: str | None = None  # why an editor rejected it
    version: int = 0  # goes up with every change; a decision names the version the editor saw

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    @property
    def extractive(self) -> bool:
        return all(s.extractive for s in self.sentences)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def with_status(
        self, status: Status, by: str | None = None, at: datetime | None = None, reason: str | None = None
    ) -> Summary:
        return replace(self, status=status, reviewed_by=by, reviewed_at=at, reason=reason)

    def edited(self, sentences: tuple[SummarySentence, ...], by: str, at: datetime) -> Summary:
        """An editor's rewrite; the first generated text is kept as `original_text`."""
        original = self.original_text if self.original_text is not None else self.text
        return replace(
            self,
            sentences=sentences,
            status=Status.EDITED,
            reviewed_by=by,
            reviewed_at=at,
            original_text=original,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["reviewed_at"] = self.reviewed_at.isoformat() if self.reviewed_at else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        return cls(
            **{
                **data,
                "sentences": tuple(_sentence(s) for s in data["sentences"]),
                "dropped": tuple(_sentence(s) for s in data["dropped"]),
                "created_at": datetime.fromisoformat(data["created_at"]),
                "basis": tuple(data.get("basis", ())),
                "status": Status(data["status"]),
                "reviewed_at": _time(data.get("reviewed_at")),
            }
        )


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _sentence(data: dict[str, Any]) -> SummarySentence:
    return SummarySentence(
        text=data["text"],
        score=float(data["score"]),
        citations=tuple(data["citations"]),
        extractive=bool(data.get("extractive", False)),
        missing=tuple(data.get("missing", ())),
        fluency=None if data.get("fluency") is None else float(data["fluency"]),
    )


def summary_id(
    article_id: str,
    content_hash: str,
    prompt: str,
    model: str,
    adapter: str | None,
    basis: tuple[str, ...] = (),
) -> str:
    """Stable per (article version, prompt, model, adapter, basis): the same request reuses it."""
    key = "|".join([content_hash, prompt, model, adapter or "", *basis])
    return f"{article_id}--{hashlib.sha1(key.encode()).hexdigest()[:12]}"


class SummaryRepository(Protocol):
    def put(self, summary: Summary) -> Summary: ...
    def decide(self, summary: Summary, expected_version: int) -> Summary | None: ...
    def get(self, summary_id: str) -> Summary | None: ...
    def find(self, article_id: str) -> list[Summary]: ...
    def by_status(self, status: Status) -> list[Summary]: ...


def merged_draft(stored: Summary | None, draft: Summary) -> Summary:
    """What `put` keeps: the new draft (one version up), or the stored summary if it has a decision."""
    if stored is None:
        return replace(draft, version=0)
    if stored.status is not Status.DRAFT:
        return stored
    return replace(draft, version=stored.version + 1)


def decided(stored: Summary | None, summary: Summary, expected_version: int) -> Summary | None:
    """What `decide` keeps, or None on a conflict."""
    if stored is None or stored.final or stored.version != expected_version:
        return None
    return replace(summary, version=expected_version + 1)


@dataclass
class InMemorySummaryStore:
    items: dict[str, Summary] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def put(self, summary: Summary) -> Summary:
        with self._lock:
            kept = self.items[summary.id] = merged_draft(self.items.get(summary.id), summary)
            return kept

    def decide(self, summary: Summary, expected_version: int) -> Summary | None:
        with self._lock:
            kept = decided(self.items.get(summary.id), summary, expected_version)
            if kept is not None:
                self.items[summary.id] = kept
            return kept

    def get(self, summary_id: str) -> Summary | None:
        return self.items.get(summary_id)

    def find(self, article_id: str) -> list[Summary]:
        found = [s for s in self.items.values() if s.article_id == article_id]
        return sorted(found, key=lambda s: s.created_at, reverse=True)

    def by_status(self, status: Status) -> list[Summary]:
        return sorted((s for s in self.items.values() if s.status == status), key=lambda s: s.created_at)


class FileSummaryStore:
    """One JSON file per summary under `root/<article id>/`; writes go through an fsynced
    temporary file and a rename, under a lock (one process: benchmarks, not the service)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def put(self, summary: Summary) -> Summary:
        with self._lock:
            kept = merged_draft(self.get(summary.id), summary)
            self._write(kept)
            return kept

    def decide(self, summary: Summary, expected_version: int) -> Summary | None:
        with self._lock:
            kept = decided(self.get(summary.id), summary, expected_version)
            if kept is not None:
                self._write(kept)
            return kept

    def _write(self, summary: Summary) -> None:
        folder = self.root / _safe(summary.article_id)
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(summary.to_json(), out, ensure_ascii=False, indent=1)
            out.flush()
            os.fsync(out.fileno())  # the rename must not reach the disk before the data
        os.replace(tmp, folder / f"{_safe(summary.id)}.json")

    def get(self, summary_id: str) -> Summary | None:
        article_id = summary_id.rsplit("--", 1)[0]
        path = self.root / _safe(article_id) / f"{_safe(summary_id)}.json"
        found = _load(path) if path.is_file() else None
        return found if found is not None and found.id == summary_id else None

    def find(self, article_id: str) -> list[Summary]:
        found = [
            s
            for p in (self.root / _safe(article_id)).glob("*.json")
            if (s := _load(p)).article_id == article_id
        ]
        return sorted(found, key=lambda s: s.created_at, reverse=True)

    def by_status(self, status: Status) -> list[Summary]:
        return sorted((s for s in self._all() if s.status == status), key=lambda s: s.created_at)

    def _all(self) -> Iterator[Summary]:
        return (_load(p) for p in self.root.glob("*/*.json"))


def _load(path: Path) -> Summary:
    return Summary.from_json(json.loads(path.read_text(encoding="utf-8")))


def _safe(name: str) -> str:
    """A file name for an id, one to one ("x:1" and "x_1" stay apart; no "..")."""
    return quote(name, safe="-_")
