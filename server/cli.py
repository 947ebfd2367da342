"""The `briefing` command line. Every command builds its parts through `server.container`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from indexing import Hit, Indexer, IndexUnavailable, SearchFilter, open_source, pairwise_scores
from indexing import reindex as run_reindex
from recsys import RANKERS, Item, load_readers
from server.container import (
    build_chunker,
    build_embedder,
    build_event_store,
    build_indexer,
    build_recommender,
    open_index,
)
from server.settings import Settings

PARTIAL = 3  # exit code of an ingest that rejected some records
DEMO_NOW = datetime.fromisoformat("2026-11-19T23:00:00+01:00")
DEMO_READERS = {
    "r01": "reads sport and local news",
    "r02": "read day 1 of the Nordkai ferry story",
    "r03": "new reader",
}
DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Personalized news briefings: index articles, follow stories, search.

    Settings come from the environment (DATA_DIR, QDRANT_URL, EMBEDDING_MODEL, ...);
    see server/settings.py or the README.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def _indexer() -> Iterator[Indexer]:
    try:
        indexer = build_indexer(Settings.from_env())
    except (IndexUnavailable, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield indexer
    finally:
        indexer.index.close()


@main.command()
@click.argument("location")
@click.option("--batch-size", default=1024, show_default=True, help="Articles embedded per batch.")
@click.option("--max-errors", default=50, show_default=True, help="Rejected records to list.")
def ingest(location: str, batch_size: int, max_errors: int) -> None:
    """Ingest articles from LOCATION: a .jsonl file, a MIND news.tsv, an RSS/Atom file or URL,
    or a directory of such files.

    Unchanged articles are skipped, changed ones replace their previous version. Malformed
    records are listed with file, line, field and reason and skipped. Exit code: 0 all went
    in, 3 some records were rejected (the rest went in), 1 nothing could be done.
    """
    with _indexer() as indexer:
        try:
            report = indexer.ingest(open_source(location), batch_size=batch_size, progress=True)
        except (OSError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    for error in report.failed[:max_errors]:
        click.echo(f"rejected {error}", err=True)
    if len(report.failed) > max_errors:
        click.echo(f"... and {len(report.failed) - max_errors} more rejected", err=True)
    click.echo(report.summary())
    sys.exit(0 if report.ok else PARTIAL)


@main.command()
@click.argument("query")
@click.option("-k", default=5, show_default=True, help="Articles to show.")
@click.option("--section", multiple=True, help="Only these sections (repeatable).")
@click.option("--language", multiple=True, help="Only these languages, e.g. en, nb (repeatable).")
@click.option("--since", type=click.DateTime(), help="Only articles published at or after this time (UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
def search(
    query: str,
    k: int,
    section: tuple[str, ...],
    language: tuple[str, ...],
    since: datetime | None,
    as_json: bool,
) -> None:
    """Semantic search over article chunks; prints the best chunk of each matching article."""
    where = SearchFilter(
        sections=tuple(s.lower() for s in section),
        languages=language,
        since=_aware(since),
    )
    with _indexer() as indexer:
        hits = _best_per_article(indexer.search(query, k * 3, where))[:k]
    if not hits:
        click.echo("no matches")
    for hit in hits:
        click.echo(json.dumps(_hit_json(hit), ensure_ascii=False) if as_json else _hit_line(hit))


@main.command()
@click.option("--since", type=click.DateTime(), help="Only stories with articles since this time (UTC).")
@click.option("--min-size", default=2, show_default=True, help="Hide stories with fewer articles.")
@click.option(
    "--threads",
    type=click.Path(exists=True, path_type=Path),
    help="Score the clustering against documented threads (a JSONL file or a directory of them).",
)
def stories(since: datetime | None, min_size: int, threads: Path | None) -> None:
    """List developing stories (articles grouped by story id), newest first."""
    with _indexer() as indexer:
        grouped = indexer.stories(_aware(since))
    shown = 0
    for story_id, articles in grouped.items():
        if len(articles) < min_size:
            continue
        shown += 1
        click.echo(f"{story_id}  ({len(articles)} articles)")
        for a in articles:
            click.echo(f"    {a.published_at:%Y-%m-%d %H:%M}  {a.id:<10} [{a.section}] {a.title}")
    click.echo(f"{shown} stories with at least {min_size} articles; {len(grouped)} stories in all")
    if threads:
        _print_thread_scores(grouped, threads)


@main.command()
@click.argument("article_ids", nargs=-1, required=True)
def retract(article_ids: tuple[str, ...]) -> None:
    """Remove articles and all their chunks from the index (a retraction)."""
    with _indexer() as indexer:
        removed = indexer.retract(article_ids)
    click.echo(f"retracted {removed} of {len(article_ids)} articles")


@main.command()
def reindex() -> None:
    """Re-embed every article with the configured model into a new collection generation,
    then switch the aliases; until then the old generation keeps serving."""
    settings = Settings.from_env()
    embedder = build_embedder(settings)
    try:
        index = open_index(settings)
    except IndexUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        done = run_reindex(index, embedder, build_chunker(settings, embedder), progress=True)
    finally:
        index.close()
    click.echo(f"re-indexed {done} articles with {embedder.name} ({embedder.dim} dimensions)")


def _parse_time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-11-19T23:00+01:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@main.command()
@click.argument("reader")
@click.option("-k", default=8, show_default=True, help="Stories to recommend.")
@click.option("--ranker", type=click.Choice(list(RANKERS)), help="Ranker (default: RECSYS_RANKER).")
@click.option("--explain", is_flag=True, help="Show why each story was picked.")
@click.option("--now", callback=_parse_time, help="Recommend as of this ISO time (default: now).")
def recommend(reader: str, k: int, ranker: str | None, explain: bool, now: datetime) -> None:
    """Stories for READER since their last visit (the last 24 hours on a first visit), one per
    story, diversified; stories they read come back only with something new."""
    settings = Settings.from_env()
    with _indexer() as indexer:
        recommender = build_recommender(settings, indexer, build_event_store(settings), now)
    _print_items(recommender.recommend(reader, now, k=k, ranker=ranker), explain)


def _print_items(items: list[Item], explain: bool) -> None:
    if not items:
        click.echo("  nothing new since the last visit")
    for n, item in enumerate(items, 1):
        flag = "update" if item.update else "new"
        click.echo(f"  {n:>2}. [{item.section}] {item.title}  ({item.article_id}, {flag})")
        if explain:
            click.echo(f"      {item.reason}; score {item.score:.3f}")


@main.command()
@click.option("--query", default="Nordvik Laks takeover price", show_default=True)
def demo(query: str) -> None:
    """Ingest the demo newsroom (data/demo) into the embedded store, then show a search, the
    story threads with their score against the documented threads, and what three demo readers
    are recommended at the end of the demo's fourth day."""
    settings = Settings.from_env()
    with _indexer() as indexer:
        report = indexer.ingest(open_source(str(DEMO_DIR / "articles")), progress=True)
        click.echo(f"demo newsroom: {report.summary()}")
        for error in report.failed:
            click.echo(f"rejected {error}", err=True)
        click.echo(f'\nsearch: "{query}"')
        for hit in _best_per_article(indexer.search(query, 15))[:5]:
            click.echo(_hit_line(hit))
        grouped = indexer.stories()
        events = build_event_store(settings)
        load_readers(DEMO_DIR / "readers.jsonl", events)
        recommender = build_recommender(settings, indexer, events, DEMO_NOW)
    for reader, who in DEMO_READERS.items():
        click.echo(f"\nrecommended for {reader} ({who}) at {DEMO_NOW:%Y-%m-%d %H:%M}:")
        _print_items(recommender.recommend(reader, DEMO_NOW, k=5), explain=True)
    click.echo("\nstory threads (2+ articles):")
    for story_id, articles in grouped.items():
        if len(articles) > 1:
            titles = " | ".join(f"{a.published_at:%d %b} {a.title[:50]}" for a in articles)
            click.echo(f"  {story_id}: {titles}")
    _print_thread_scores(grouped, DEMO_DIR / "threads")


def _print_thread_scores(grouped: dict[str, list[Any]], threads: Path) -> None:
    files = sorted(threads.glob("*.jsonl")) if threads.is_dir() else [threads]
    documented = [json.loads(line)["article_ids"] for f in files for line in f.open() if line.strip()]
    predicted = {a.id: story for story, articles in grouped.items() for a in articles}
    scores = pairwise_scores(predicted, documented)
    click.echo(
        f"\nstory clustering vs {len(documented)} documented threads: pairwise precision "
        f"{scores.precision:.2f}, recall {scores.recall:.2f}, F1 {scores.f1:.2f}"
    )


def _best_per_article(hits: list[Hit]) -> list[Hit]:
    seen: dict[str, Hit] = {}
    for hit in hits:
        seen.setdefault(hit.article_id, hit)
    return list(seen.values())


def _hit_line(hit: Hit) -> str:
    when = datetime.fromtimestamp(hit.published_at).strftime("%Y-%m-%d %H:%M")
    return f"  {hit.score:.3f}  {when}  {hit.article_id:<10} [{hit.section}] {hit.title}"


def _hit_json(hit: Hit) -> dict[str, Any]:
    keys = ("chunk_id", "article_id", "score", "title", "url", "section", "story_id", "text")
    return {key: getattr(hit, key) for key in keys}


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment
