"""Fine-tuning datasets: rows, fixed splits and content-addressed snapshots.

A row is an `Example` (a prompt and the text to learn or to evaluate against) or a
`PreferencePair` (a prompt, a preferred and a dispreferred text). Rows are named by a hash of what
they teach (`row_id`), so the same decision or the same sampled text is the same row in every
snapshot, and a snapshot is named by its row ids and its filters: the same data gives the same id,
whatever order it came in, and a changed filter gives another.

Splits are fixed per article (`split_of`): a row belongs to the evaluation split when any article
it was written from does, and the evaluation split is never trained on (no pairs from it either).
A snapshot is written to and loaded from disk by `briefing.tuning.snapshots`.
This module simplifies: rows' `meta` must be JSON (it is normalized through JSON when a row is made).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

Split = Literal["train", "eval"]
Chat = tuple[tuple[str, str], ...]
SNAPSHOT_FORMAT = 1
_SEP = "\x1f"  # the unit separator: no id or text part can forge a boundary with it


def split_of(article_id: str, eval_share: float = 0.2, salt: str = "tuning-v1") -> Split:
    """The article's fixed split: a bucket in [0, 1) from sha256(salt␟article_id), "eval" below
    `eval_share`. Stable across processes and machines (no Python `hash`)."""
    digest = hashlib.sha256(f"{salt}{_SEP}{article_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if bucket < eval_share else "train"


def row_id(*parts: str | Sequence[str]) -> str:
    """A stable hash of a row's parts (strings, or sequences of strings), 16 hex characters."""
    flat = [p if isinstance(p, str) else _SEP.join(p) for p in parts]
    return hashlib.sha256("\x1e".join(flat).encode()).hexdigest()[:16]


def json_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """`meta` as it reads back from JSON (tuples become lists), so a row survives a round trip
    equal to itself; anything not JSON fails here, where the row is made."""
    normalized: dict[str, Any] = json.loads(json.dumps(dict(meta), sort_keys=True, allow_nan=False))
    return normalized


@dataclass(frozen=True)
class Example:
    """One prompt → target to learn (SFT) or to evaluate against. Build it with `example`, which
    names it by its content; `messages()` is the chat a trainer or generator takes."""

    id: str  # stable content hash (source, article version, prompt, target): `row_id`
    source: str  # "editor" | "self" | "reference"
    task: str  # prompt template id, e.g. "article@1"
    language: str  # "en" | "nb"
    article_id: str
    article_ids: tuple[str, ...]  # every article it was written from (updates: all developments)
    chat: Chat  # ((role, content), ...) exactly as Summarizer.chat renders it
    target: str
    meta: Mapping[str, Any]  # content_hash, model, adapter, reviewer/status, support, novel_bigrams, ...

    def messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.chat]


@dataclass(frozen=True)
class PreferencePair:
    """One prompt with a preferred (`chosen`) and a dispreferred (`rejected`) answer; build it
    with `pair`."""

    id: str
    source: str
    task: str
    language: str
    article_id: str
    article_ids: tuple[str, ...]
    chat: Chat
    chosen: str
    rejected: str
    meta: Mapping[str, Any]

    def messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.chat]


Row = Example | PreferencePair
R = TypeVar("R", Example, PreferencePair)


def as_chat(messages: Iterable[Mapping[str, str]]) -> Chat:
    """A rendered chat (`Summarizer.chat`) as the rows keep it."""
    return tuple((m["role"], m["content"]) for m in messages)


def example(
    source: str,
    task: str,
    language: str,
    article_ids: Sequence[str],
    chat: Chat,
    target: str,
    meta: Mapping[str, Any],
) -> Example:
    """An `Example` named by its content; `article_ids[0]` is the article it summarizes."""
    kept = json_meta(meta)
    ident = _content_id(source, task, language, article_ids, chat, kept, target)
    return Example(ident, source, task, language, article_ids[0], tuple(article_ids), chat, target, kept)


def pair(
    source: str,
    task: str,
    language: str,
    article_ids: Sequence[str],
    chat: Chat,
    chosen: str,
    rejected: str,
    meta: Mapping[str, Any],
) -> PreferencePair:
    """A `PreferencePair` named by its content; `article_ids[0]` is the article it summarizes."""
    kept = json_meta(meta)
    ident = _content_id(source, task, language, article_ids, chat, kept, chosen, rejected)
    ids = tuple(article_ids)
    return PreferencePair(ident, source, task, language, ids[0], ids, chat, chosen, rejected, kept)


def _content_id(
    source: str,
    task: str,
    language: str,
    article_ids: Sequence[str],
    chat: Chat,
    meta: Mapping[str, Any],
    *texts: str,
) -> str:
    # What the row teaches and which article version it is from; provenance (reviewer, scores)
    # is covered by the snapshot's file digests, not the id, so a re-scored row is the same row.
    turns = [f"{role}{_SEP}{content}" for role, content in chat]
    version = str(meta.get("content_hash", ""))
    return row_id(source, task, language, article_ids, version, turns, texts)


def expected_id(row: Row) -> str:
    """The id `example`/`pair` would give this row's content (loading checks it)."""
    texts = (row.target,) if isinstance(row, Example) else (row.chosen, row.rejected)
    return _content_id(row.source, row.task, row.language, row.article_ids, row.chat, row.meta, *texts)


@dataclass(frozen=True)
class Snapshot:
    id: str  # "ds-" + 12 hex of sha256 over the sorted row ids and the filters
    created_at: str  # ISO time (not part of the id)
    sources: Mapping[str, int]  # rows (examples and pairs) per source, after exclusion, before splitting
    counts: Mapping[str, Any]  # {"train", "eval", "pairs", "by_task": {...}, "by_language": {...}}
    filters: Mapping[str, Any]  # what was dropped and why: excluded articles, checker, margins...
    train: tuple[Example, ...]
    eval: tuple[Example, ...]
    pairs: tuple[PreferencePair, ...]  # train split only

    def rows(self) -> list[Row]:
        """Every row: train, eval, then pairs."""
        return [*self.train, *self.eval, *self.pairs]

    def manifest(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "id": self.id,
            "created_at": self.created_at,
            "sources": dict(self.sources),
            "counts": dict(self.counts),
            "filters": dict(self.filters),
        }


def snapshot_id(row_ids: Iterable[str], filters: Mapping[str, Any]) -> str:
    """ "ds-" + 12 hex of sha256 over the sorted row ids and the filters (as canonical JSON)."""
    body = "\n".join(sorted(row_ids)) + "\n" + json.dumps(filters, sort_keys=True, separators=(",", ":"))
    return "ds-" + hashlib.sha256(body.encode()).hexdigest()[:12]


def build_snapshot(
    examples: Iterable[Example],
    pairs: Iterable[PreferencePair],
    filters: Mapping[str, Any],
    *,
    excluded_articles: Collection[str] = (),
    eval_share: float = 0.2,
) -> Snapshot:
    """The snapshot of these rows: duplicates (same id) once, rows written from an excluded
    article (retracted, or cited by an erased reader's rows; any of `article_ids`) left out, the
    rest split by `split_of` (a row is "eval" when any of its articles is), pairs of the eval
    split left out. What was left out is counted under `filters`; the id covers the filters."""
    excluded = frozenset(excluded_articles)
    kept_examples, dropped_examples = _without(_unique(examples), excluded)
    kept_pairs, dropped_pairs = _without(_unique(pairs), excluded)
    train = [e for e in kept_examples if _row_split(e, eval_share) == "train"]
    held = [e for e in kept_examples if _row_split(e, eval_share) == "eval"]
    trainable = [p for p in kept_pairs if _row_split(p, eval_share) == "train"]
    recorded = {
        **json_meta(filters),
        "eval_share": eval_share,
        "split_salt": "tuning-v1",
        "excluded": {"examples": dropped_examples, "pairs": dropped_pairs},
        "eval_pairs_dropped": len(kept_pairs) - len(trainable),
    }
    rows: list[Row] = [*train, *held, *trainable]
    ids = [r.id for r in rows]
    return Snapshot(
        id=snapshot_id(ids, recorded),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        sources=dict(
            sorted(Counter([*(e.source for e in kept_examples), *(p.source for p in kept_pairs)]).items())
        ),
        counts=_counts(train, held, trainable),
        filters=recorded,
        train=tuple(train),
        eval=tuple(held),
        pairs=tuple(trainable),
    )


def _unique(rows: Iterable[R]) -> list[R]:
    """Each id once, ordered by id: a snapshot's content does not depend on input order."""
    return sorted({r.id: r for r in rows}.values(), key=lambda r: r.id)


def _without(rows: list[R], excluded: frozenset[str]) -> tuple[list[R], int]:
    kept = [row for row in rows if not _cites(row, excluded)]
    return kept, len(rows) - len(kept)


def _cites(row: Row, articles: frozenset[str]) -> bool:
    return not articles.isdisjoint((row.article_id, *row.article_ids))


def _row_split(row: Row, eval_share: float) -> Split:
    # An update written from an evaluation article would leak it into training.
    articles = (row.article_id, *row.article_ids)
    return "eval" if any(split_of(a, eval_share) == "eval" for a in articles) else "train"


def _counts(train: list[Example], held: list[Example], pairs: list[PreferencePair]) -> dict[str, Any]:
    def by(key: Callable[[Row], str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for part, rows in (("train", train), ("eval", held), ("pairs", pairs)):
            for row in rows:
                counts = out.setdefault(key(row), {"train": 0, "eval": 0, "pairs": 0})
                counts[part] += 1
        return dict(sorted(out.items()))

    return {
        "train": len(train),
        "eval": len(held),
        "pairs": len(pairs),
        "by_task": by(lambda r: r.task),
        "by_language": by(lambda r: r.language),
    }


def snapshot_id_of(snapshot: Snapshot) -> str:
    """The id the snapshot's rows and filters give."""
    return snapshot_id((r.id for r in snapshot.rows()), snapshot.filters)
