"""Click logs for offline evaluation: MIND (tsv/jsonl) and EB-NeRD (parquet), one shape.

`load_logs(directory)` finds the files by name anywhere under the directory:
- MIND: `news.tsv` with `impressions.jsonl` ({impression_id, variant, history, candidates,
  labels}) or `behaviors.tsv` (impression id, user, time, history, "N1-1 N2-0 ...");
- EB-NeRD: `articles.parquet`, `behaviors.parquet` (article_ids_inview / article_ids_clicked)
  and `history.parquet` (article_id_fixed / impression_time_fixed per user).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from indexing import Article, read_mind_news, validate_record


@dataclass(frozen=True)
class LoggedImpression:
    impression_id: int
    variant: str
    history: tuple[tuple[str, datetime | None], ...]  # clicked before, with when (if known)
    candidates: tuple[str, ...]
    labels: tuple[int, ...]
    at: datetime | None  # when it was shown (MIND-small has no times)


@dataclass(frozen=True)
class Logs:
    articles: list[Article]
    impressions: list[LoggedImpression]
    source: str


def load_logs(directory: Path) -> Logs:
    if _find(directory, "articles.parquet"):
        return load_ebnerd(directory)
    if _find(directory, "news.tsv"):
        return load_mind(directory)
    raise FileNotFoundError(f"{directory}: neither MIND (news.tsv) nor EB-NeRD (articles.parquet) files")


def load_mind(directory: Path) -> Logs:
    news = _find(directory, "news.tsv")
    assert news is not None
    articles = [r for r in read_mind_news(news) if isinstance(r, Article)]
    jsonl, tsv = _find(directory, "impressions.jsonl"), _find(directory, "behaviors.tsv")
    if jsonl:
        impressions = [_mind_json(json.loads(line)) for line in jsonl.read_text().splitlines() if line]
    elif tsv:
        impressions = [_mind_tsv(line) for line in tsv.read_text().splitlines() if line]
    else:
        raise FileNotFoundError(f"{directory}: no impressions.jsonl or behaviors.tsv next to news.tsv")
    return Logs(articles, impressions, "mind")


def _mind_json(row: dict[str, Any]) -> LoggedImpression:
    return LoggedImpression(
        impression_id=int(row["impression_id"]),
        variant=row.get("variant", ""),
        history=tuple((h, None) for h in row["history"]),
        candidates=tuple(row["candidates"]),
        labels=tuple(int(y) for y in row["labels"]),
        at=None,
    )


def _mind_tsv(line: str) -> LoggedImpression:
    impression_id, _, when, history, shown = line.split("\t")
    pairs = [item.rsplit("-", 1) for item in shown.split()]
    at = datetime.strptime(when, "%m/%d/%Y %I:%M:%S %p").replace(tzinfo=UTC) if when else None
    return LoggedImpression(
        impression_id=int(impression_id),
        variant="",
        history=tuple((h, None) for h in history.split()),
        candidates=tuple(p[0] for p in pairs),
        labels=tuple(int(p[1]) for p in pairs),
        at=at,
    )


def load_ebnerd(directory: Path) -> Logs:
    """EB-NeRD (Ekstra Bladet) parquet files; needs pyarrow (`pip install pyarrow`)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError("reading EB-NeRD parquet files needs pyarrow: pip install pyarrow") from None

    def rows(name: str) -> list[dict[str, Any]]:
        return [r for path in sorted(directory.rglob(name)) for r in pq.read_table(path).to_pylist()]

    articles = [a for a in (_ebnerd_article(r) for r in rows("articles.parquet")) if a is not None]
    histories = {r["user_id"]: r for r in rows("history.parquet")}
    impressions = [_ebnerd_impression(r, histories.get(r["user_id"])) for r in rows("behaviors.parquet")]
    return Logs(articles, impressions, "ebnerd")


def _ebnerd_article(row: dict[str, Any]) -> Article | None:
    article_id = str(row["article_id"])
    result = validate_record(
        {
            "id": article_id,
            "url": row.get("url") or f"https://ebnerd.example/{article_id}",
            "title": row.get("title") or article_id,
            "lead": row.get("subtitle") or "",
            "body": row.get("body") or row.get("subtitle") or row.get("title") or article_id,
            "section": _slug(row.get("category_str") or "news"),
            "tags": [_slug(t) for t in (row.get("topics") or [])][:10],
            "language": "da",
            "publication": "Ekstra Bladet",
            "published_at": _utc(row["published_time"]).isoformat(),
        },
        "articles.parquet",
        0,
    )
    return result if isinstance(result, Article) else None


def _ebnerd_impression(row: dict[str, Any], history: dict[str, Any] | None) -> LoggedImpression:
    clicked = set(row.get("article_ids_clicked") or [])
    shown = list(row.get("article_ids_inview") or [])
    past = zip(history["article_id_fixed"], history["impression_time_fixed"], strict=False) if history else ()
    return LoggedImpression(
        impression_id=int(row["impression_id"]),
        variant="",
        history=tuple((str(a), _utc(t)) for a, t in past),
        candidates=tuple(str(a) for a in shown),
        labels=tuple(int(a in clicked) for a in shown),
        at=_utc(row["impression_time"]),
    )


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _slug(text: str) -> str:
    text = text.lower().replace("æ", "ae").replace("ø", "oe").replace("å", "aa")
    return re.sub(r"[^a-z0-9_-]+", "-", text).strip("-")[:40] or "news"


def _find(directory: Path, name: str) -> Path | None:
    return next(iter(sorted(directory.rglob(name))), None)
