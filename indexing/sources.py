"""Where articles come from: our JSONL, RSS/Atom feeds, and MIND `news.tsv` (benchmarks).

Every reader yields `Article` or `RecordError` in input order, so one bad record is reported
with its file, line (or feed entry), field and reason, and the rest still go in. `open_source`
picks the reader from the path or URL.
"""

from __future__ import annotations

import calendar
import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax import SAXException

from indexing.articles import Article, RecordError, validate_record
from indexing.text import html_to_text

Record = Article | RecordError
MAX_FEED_BYTES = 20 * 1024 * 1024


def read_jsonl(path: Path) -> Iterator[Record]:
    """One article per line; blank lines are skipped."""
    source = str(path)
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                yield RecordError(
                    source, number, "<record>", f"invalid JSON: {exc.msg} at column {exc.colno}"
                )
                continue
            yield from _validated(raw, source, number)


def read_mind_news(path: Path, *, published_at: datetime | None = None) -> Iterator[Record]:
    """MIND `news.tsv`: id, category, subcategory, title, abstract, url, entities (no body, no time).

    The abstract serves as lead and body (the title when there is none); MIND has no publication
    times, so every item gets `published_at` (default: the dataset's week, 2019-11-15).
    """
    when = (published_at or datetime(2019, 11, 15, tzinfo=UTC)).isoformat()
    source = str(path)
    with path.open(encoding="utf-8", newline="") as rows:
        for number, row in enumerate(csv.reader(rows, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            if len(row) < 6:
                yield RecordError(
                    source, number, "<record>", f"expected 8 tab-separated columns, got {len(row)}"
                )
                continue
            news_id, category, subcategory, title, abstract, url = row[:6]
            raw = {
                "id": news_id,
                "url": url or f"https://mind.example/{news_id}",
                "title": title,
                "lead": abstract,
                "body": abstract or title,
                "section": category,
                "tags": [subcategory] if subcategory else [],
                "language": "en",
                "publication": "MIND",
                "published_at": when,
            }
            yield from _validated(raw, source, number)


def read_feed(location: str, *, section: str = "news", timeout_s: float = 20.0) -> Iterator[Record]:
    """An RSS or Atom feed from a URL or a file, parsed by feedparser; HTML reduced to text."""
    import feedparser

    content = _fetch(location, timeout_s) if _is_url(location) else Path(location).read_bytes()
    feed = feedparser.parse(content)
    # Broken XML rejects the whole feed: feedparser's loose fallback would guess at entries.
    # Benign complaints (a wrong declared encoding, say) do not.
    problem = feed.get("bozo_exception")
    if isinstance(problem, SAXException) or not (feed.entries or feed.feed):
        yield RecordError(location, 0, "<feed>", f"unreadable feed: {problem or 'no entries'}")
        return
    publication = feed.feed.get("title") or location
    language = (feed.feed.get("language") or "en").split("-")[0]
    for number, entry in enumerate(feed.entries, start=1):
        yield from _validated(_feed_entry(entry, section, publication, language), location, number)


def _feed_entry(entry: Any, section: str, publication: str, language: str) -> dict[str, Any]:
    guid = entry.get("id") or entry.get("link") or entry.get("title", "")
    content = entry.get("content") or []
    body_html = content[0].get("value", "") if content else entry.get("summary", "")
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    updated = dict.get(entry, "updated_parsed")  # plain lookup: skips feedparser's deprecated alias
    tags = [t.get("term", "") for t in entry.get("tags", []) if t.get("term")]
    return {
        "id": "feed-" + hashlib.sha256(guid.encode()).hexdigest()[:20],
        "url": entry.get("link"),
        "title": html_to_text(entry.get("title", "")),
        "lead": html_to_text(entry.get("summary", "")) if content else "",
        "body": html_to_text(body_html),
        "section": section,
        "tags": tags[:50],
        "language": language,
        "publication": publication,
        "published_at": _from_struct(stamp),
        "updated_at": _from_struct(updated) if updated and stamp else None,
    }


def _from_struct(stamp: Any) -> str | None:
    # feedparser normalizes feed dates to UTC struct_time.
    return datetime.fromtimestamp(calendar.timegm(stamp), tz=UTC).isoformat() if stamp else None


class SourceUnavailable(OSError):
    """A feed could not be fetched: the message says which and why."""


def _fetch(url: str, timeout_s: float) -> bytes:
    import httpx

    data = bytearray()
    try:
        with httpx.stream("GET", url, timeout=timeout_s, follow_redirects=True) as response:
            response.raise_for_status()
            for part in response.iter_bytes():
                data.extend(part)
                if len(data) > MAX_FEED_BYTES:
                    raise SourceUnavailable(f"{url}: feed larger than {MAX_FEED_BYTES} bytes")
    except httpx.HTTPStatusError as exc:
        raise SourceUnavailable(f"{url}: HTTP {exc.response.status_code}") from exc
    except httpx.HTTPError as exc:
        raise SourceUnavailable(f"{url}: {type(exc).__name__}: {exc}") from exc
    return bytes(data)


def _validated(raw: Any, source: str, line: int) -> Iterator[Record]:
    result = validate_record(raw, source, line)
    if isinstance(result, Article):
        yield result
    else:
        yield from result


def _is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


Reader = Callable[[Path], Iterator[Record]]
# Chosen by file name; a directory is read file by file in name order.
READERS: dict[str, Reader] = {
    ".jsonl": read_jsonl,
    "news.tsv": read_mind_news,
    ".xml": lambda p: read_feed(str(p)),
    ".rss": lambda p: read_feed(str(p)),
    ".atom": lambda p: read_feed(str(p)),
}


def open_source(location: str) -> Iterator[Record]:
    """Records from a URL (a feed), a file, or every readable file of a directory."""
    if _is_url(location):
        return read_feed(location)
    path = Path(location)
    if not path.exists():
        raise FileNotFoundError(f"no such file or directory: {location}")
    files = sorted(p for p in path.iterdir() if _reader(p)) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{location}: no .jsonl, news.tsv or feed files found")
    return (record for file in files for record in _reader_or_fail(file)(file))


def _reader(path: Path) -> Reader | None:
    return READERS.get(path.name) or READERS.get(path.suffix)


def _reader_or_fail(path: Path) -> Reader:
    reader = _reader(path)
    if reader is None:
        known = ", ".join(READERS)
        raise ValueError(f"{path}: unknown source type (known: {known})")
    return reader
