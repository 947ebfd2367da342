"""The `briefing` command line. Every command builds its parts through `server.container`."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from briefing import PROMPTS, VARIANTS, Briefing, GenerationError, PartlyWritten, Summarizer, Summary
from briefing.wording import Audience, zone
from indexing import Hit, Indexer, IndexUnavailable, SearchFilter, open_source, pairwise_scores
from indexing import reindex as run_reindex
from recsys import RANKERS, Item
from server.backup_commands import backup, restore
from server.container import (
    build_chunker,
    build_composer,
    build_embedder,
    build_engine,
    build_event_store,
    build_indexer,
    build_recommender,
    build_summarizer,
    build_summary_store,
    open_index,
)
from server.experiments.commands import experiments
from server.serve import serve, token
from server.settings import Settings
from server.tuning_commands import tune
from server.worker import worker

if TYPE_CHECKING:  # the service pulls in SQLAlchemy and litestar's types: not for every command
    from sqlalchemy import Engine

    from server.service import Service

T = TypeVar("T")

PARTIAL = 3  # exit code of an ingest that rejected some records
DEMO_NOW = datetime.fromisoformat("2026-11-19T23:00:00+01:00")
DEMO_READERS = {
    "r01": "reads sport and local news",
    "r02": "read day 1 of the Nordkai ferry story",
    "r03": "new reader",
}
_ARTICLE_PROMPTS = sorted({r for t in PROMPTS.of_kind("article") for r in (t.name, t.id)})
DEMO_DIR = Path(__file__).resolve().parent.parent / "data" / "demo"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Personalized news briefings: index articles, follow stories, recommend, summarize, brief.

    Settings come from the environment (DATA_DIR, QDRANT_URL, EMBEDDING_MODEL, ...);
    see server/settings.py or the README.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@contextmanager
def _opened(build: Callable[[Settings], T], close: Callable[[T], None]) -> Iterator[T]:
    """A part built from the settings, an unusable store a one-line error, closed after use."""
    try:
        part = build(Settings.from_env())
    except (IndexUnavailable, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield part
    finally:
        close(part)


def _indexer() -> AbstractContextManager[Indexer]:
    return _opened(build_indexer, lambda indexer: indexer.index.close())


def _service() -> AbstractContextManager[Service]:
    """The service's parts on this machine's DATA_DIR (the same stores `briefing serve` uses)."""
    from server.container import build_service

    def close(service: Service) -> None:
        service.close()
        service.indexer.index.close()

    return _opened(build_service, close)


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
        except Exception as exc:  # embedded Qdrant's SQLite says "database or disk is full"
            if (clear := _outage(exc)) is None:
                raise
            raise clear from exc
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
            click.echo(f"    {_zoned(a.published_at)}  {a.id:<10} [{a.section}] {a.title}")
    click.echo(f"{shown} stories with at least {min_size} articles; {len(grouped)} stories in all")
    if threads:
        _print_thread_scores(grouped, threads)


@main.command()
@click.argument("article_ids", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why (kept in the audit log, which editors read).")
def retract(article_ids: tuple[str, ...], reason: str) -> None:
    """Retract articles, as the admin API does: out of the index, their summaries retired for
    good (never shown, never decided again), briefings citing them dropped; the reason is
    recorded with each retraction."""
    from server.service import Actor, NotFound

    reason = " ".join(reason.split())
    if not reason:
        raise click.BadParameter("say why the articles are retracted", param_hint="--reason")
    with _service() as service:
        for article_id in article_ids:
            try:
                done = service.retract(Actor(_operator(), "admin"), article_id, reason=reason)
            except NotFound as exc:
                click.echo(f"{article_id}: {exc}", err=True)
                continue
            click.echo(f"retracted {article_id}: {done['summaries']} summaries retired")


def _outage(exc: Exception) -> click.ClickException | None:
    """A one-line error for an outage (a full disk, the database away); None for anything else."""
    from server.outages import outage

    down = outage(exc)
    return None if down is None else click.ClickException(f"{down.detail} ({exc})")


def _operator() -> str:
    return os.environ.get("USER") or "cli"


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


def _parse_optional_time(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    return None if value is None else _parse_time(ctx, param, value)


@main.command()
@click.argument("reader")
@click.option("-k", default=8, show_default=True, help="Stories to recommend.")
@click.option("--ranker", type=click.Choice(list(RANKERS)), help="Ranker (default: RECSYS_RANKER).")
@click.option("--explain", is_flag=True, help="Show why each story was picked.")
@click.option("--now", callback=_parse_time, help="Recommend as of this ISO time (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (reader, now, items) instead.")
def recommend(reader: str, k: int, ranker: str | None, explain: bool, now: datetime, as_json: bool) -> None:
    """Stories for READER since their last visit (the last 24 hours on a first visit), one per
    story, diversified; stories they read come back only with something new."""
    settings = Settings.from_env()
    with _indexer() as indexer:
        recommender = build_recommender(settings, indexer, build_event_store(settings), now)
    items = recommender.recommend(reader, now, k=k, ranker=ranker)
    if as_json:
        ranker = ranker or settings.recsys.ranker
        body = {"reader": reader, "now": now.isoformat(), "ranker": ranker, "items": _items_json(items)}
        click.echo(json.dumps(body, ensure_ascii=False, indent=1))
    else:
        _print_items(items, explain)


def _items_json(items: list[Item]) -> list[dict[str, Any]]:
    keys = ("story_id", "article_id", "title", "section", "url", "reason", "update")
    return [
        {"rank": n, **{key: getattr(item, key) for key in keys}, "score": round(float(item.score), 6)}
        for n, item in enumerate(items, 1)
    ]


def _print_items(items: list[Item], explain: bool) -> None:
    if not items:
        click.echo("  nothing new since the last visit")
    for n, item in enumerate(items, 1):
        flag = "update" if item.update else "new"
        click.echo(f"  {n:>2}. [{item.section}] {item.title}  ({item.article_id}, {flag})")
        if explain:
            click.echo(f"      {item.reason}; score {item.score:.3f}")


@main.command()
@click.argument("article_ids", nargs=-1, required=True)
@click.option(
    "--prompt",
    type=click.Choice(_ARTICLE_PROMPTS),
    default="article",
    show_default=True,
    help="Prompt template (name for its newest version, or name@version).",
)
@click.option("--refresh", is_flag=True, help="Write a new draft even if one exists for this version.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored summaries as JSON lines.")
def summarize(article_ids: tuple[str, ...], prompt: str, refresh: bool, as_json: bool) -> None:
    """Write grounded draft summaries of ARTICLE_IDS with the configured LLM (LLM_BACKEND) and
    store them for review; every sentence shows its support score and cited chunks. Each summary
    is stored as soon as it is written: one that fails (an LLM timeout, say) loses only itself."""
    settings = Settings.from_env()
    failed: dict[str, Exception] = {}
    with _indexer() as indexer:
        try:
            summaries = build_summarizer(settings, indexer).summarize(
                list(article_ids), prompt=prompt, refresh=refresh
            )
        except PartlyWritten as partial:
            summaries, failed = partial.done, dict(partial.failed)
        except GenerationError as exc:
            raise click.ClickException(f"LLM: {exc}") from exc
    missing = set(article_ids) - {s.article_id for s in summaries} - set(failed)
    for summary in summaries:
        click.echo(json.dumps(summary.to_json(), ensure_ascii=False) if as_json else _summary_text(summary))
    problems = [f"{a}: LLM: {e}" for a, e in failed.items()]
    problems += [f"not in the index: {', '.join(sorted(missing))}"] if missing else []
    if problems:
        raise click.ClickException("; ".join(problems))


@main.command()
@click.argument("reader")
@click.option(
    "--since", callback=_parse_optional_time, help="Stories since this ISO time (default: last visit)."
)
@click.option(
    "--variant",
    type=click.Choice(sorted(VARIANTS)),
    default="control",
    show_default=True,
    help="Experiment arm: which prompts write the text.",
)
@click.option("--now", callback=_parse_time, help="Compose as of this ISO time (default: now).")
@click.option(
    "--write",
    is_flag=True,
    help="First write the missing drafts and story updates with the LLM, as the service's jobs do "
    "(without it: what the service would show now, from stored texts).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the briefing as JSON.")
def brief(
    reader: str, since: datetime | None, variant: str, now: datetime, write: bool, as_json: bool
) -> None:
    """READER's briefing: the stories picked for them since their last visit, each with a grounded
    summary (or, for a story they follow, what is new), citations and links. It reads the same
    stores as the service (DATABASE_URL), so editors' decisions show here too."""
    settings = Settings.from_env()
    with _indexer() as indexer, _llm_errors():
        engine = build_engine(settings)  # one database connection pool (and migration) per command
        recommender = build_recommender(settings, indexer, build_event_store(settings, engine), now)
        summarizer = build_summarizer(settings, indexer, store=build_summary_store(settings, engine))
        composer = build_composer(settings, recommender, summarizer)
        audience = _reader_audience(settings, engine, reader)
        briefing = composer.compose(reader, now, since=since, variant=variant, write=write, audience=audience)
    click.echo(
        json.dumps(briefing.to_json(), ensure_ascii=False, indent=1) if as_json else _briefing_text(briefing)
    )


@main.command()
@click.option("--query", default="Nordvik Laks takeover price", show_default=True)
@click.option("--reader", default="r02", show_default=True, help="Whose briefing to print at the end.")
def demo(query: str, reader: str) -> None:
    """Ingest the demo newsroom (data/demo) into the embedded store, then show a search, the
    story threads with their score against the documented threads, what three demo readers are
    recommended at the end of the demo's fourth day, draft summaries of the developing stories,
    and one reader's briefing with citations."""
    settings = Settings.from_env()
    with _indexer() as indexer, _llm_errors():
        report = indexer.ingest(open_source(str(DEMO_DIR / "articles")), progress=True)
        click.echo(f"demo newsroom: {report.summary()}")
        for error in report.failed:
            click.echo(f"rejected {error}", err=True)
        click.echo(f'\nsearch: "{query}"')
        for hit in _best_per_article(indexer.search(query, 15))[:5]:
            click.echo(_hit_line(hit))
        grouped = indexer.stories()
        _print_demo_stories(grouped)
        engine = build_engine(settings)  # one database connection pool (and migration) per command
        events = build_event_store(settings, engine)
        _import_demo_readers(engine)
        recommender = build_recommender(settings, indexer, events, DEMO_NOW)
        for who, about in DEMO_READERS.items():
            click.echo(f"\nrecommended for {who} ({about}) at {_zoned(DEMO_NOW)}:")
            _print_items(recommender.recommend(who, DEMO_NOW, k=5), explain=True)
        summarizer = build_summarizer(settings, indexer, store=build_summary_store(settings, engine))
        _demo_summaries(summarizer, grouped)
        audience = _reader_audience(settings, engine, reader)
        composer = build_composer(settings, recommender, summarizer)
        briefing = composer.compose(reader, DEMO_NOW, write=True, audience=audience)
    click.echo(f"\n{_briefing_text(briefing)}")


def _import_demo_readers(engine: Engine) -> None:
    """The demo readers with their events, last visits and languages (as `readers import` does)."""
    from server.readers import parse_readers
    from server.stores import Readers

    path = DEMO_DIR / "readers.jsonl"
    Readers(engine).load(parse_readers(path.read_text(encoding="utf-8"), str(path)), datetime.now(UTC))


def _print_demo_stories(grouped: dict[str, list[Any]]) -> None:
    click.echo("\nstory threads (2+ articles):")
    for story_id, articles in grouped.items():
        if len(articles) > 1:
            titles = " | ".join(f"{a.published_at:%d %b} {a.title[:50]}" for a in articles)
            click.echo(f"  {story_id}: {titles}")
    _print_thread_scores(grouped, DEMO_DIR / "threads")


def _demo_summaries(summarizer: Summarizer, grouped: dict[str, list[Any]]) -> None:
    """Draft summaries of the newest article of every developing story (reused on a rerun)."""
    newest = [articles[-1].id for articles in grouped.values() if len(articles) > 1]
    click.echo(
        f"\nsummarizing the newest article of {len(newest)} developing stories "
        f"with {summarizer.generator.model}"
    )
    with click.progressbar(newest, label="summaries") as bar:
        summaries = [s for a in bar for s in summarizer.summarize([a])]
    kept = sum(len(s.sentences) for s in summaries if not s.extractive)
    dropped = sum(len(s.dropped) for s in summaries)
    extractive = sum(s.extractive for s in summaries)
    click.echo(
        f"{len(summaries)} drafts: {kept} generated sentences kept, {dropped} dropped by the grounding "
        f"check, {extractive} summaries fell back to the article's own first sentence"
    )
    if summaries:
        click.echo(_summary_text(summaries[0]))


@contextmanager
def _llm_errors() -> Iterator[None]:
    try:
        yield
    except GenerationError as exc:
        raise click.ClickException(f"LLM: {exc}") from exc


def _summary_text(summary: Summary) -> str:
    made = f"{summary.prompt} by {summary.model} ({summary.seconds:.1f} s)"
    head = f"{summary.article_id}  [{summary.status}] {made}"
    lines = [head, *(_sentence_line(s) for s in summary.sentences)]
    lines += [
        f"    dropped ({s.score:.2f}{', missing ' + ', '.join(s.missing) if s.missing else ''}): {s.text}"
        for s in summary.dropped
    ]
    return "\n".join(lines)


def _sentence_line(sentence: Any) -> str:
    mark = " (from the article)" if sentence.extractive else ""
    cites = ", ".join(c.split("@")[0] + "#" + c.rsplit("#", 1)[-1] for c in sentence.citations)
    return f"  - {sentence.text}  [{cites}; support {sentence.score:.2f}]{mark}"


def _briefing_text(briefing: Briefing) -> str:
    since = f"since {_zoned(briefing.since)}" if briefing.since else "first visit"
    policy = "checked drafts may show" if briefing.policy.any_drafts else "reviewed text only"
    lines = [
        f"Since you were last here: briefing for {briefing.reader_id} ({since}; variant {briefing.variant}; "
        f"policy {briefing.policy.name}: {policy})",
        f"  {briefing.greeting}",
    ]
    for n, item in enumerate(briefing.items, 1):
        kind = "update" if item.update else "new"
        lines.append(f"\n {n}. [{item.section}] {item.title}  ({kind}; text: {item.source}; {item.reason})")
        lines.append(f"    {item.url}")
        lines.extend(f"  {_sentence_line(s)}" for s in item.sentences)
    models = ", ".join(briefing.models) or "none (extractive only)"
    lines.append(
        f"\nAI-generated text ({models}), checked against the cited articles; editors review drafts."
    )
    return "\n".join(lines)


main.add_command(serve)
main.add_command(token)
main.add_command(experiments)
main.add_command(tune)
main.add_command(backup)
main.add_command(restore)
main.add_command(worker)


@main.group()
def readers() -> None:
    """Readers and their settings (language, time zone) in the service's database (DATABASE_URL)."""


@readers.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_readers(file: Path) -> None:
    """Load readers from FILE, JSON Lines, one reader per line:

    \b
      {"reader_id": "r04", "name": "Vebjørn", "language": "nb",
       "timezone": "Europe/Oslo", "last_visit": "2026-11-18T20:00:00+01:00",
       "events": [{"event_id": "e1", "type": "read", "article_id": "pol-0001",
                   "at": "2026-11-16T08:10:18+01:00", "dwell_s": 84}]}

    Only reader_id is required. language is en or nb and timezone an IANA name; left out, the
    reader follows the publication's (PUBLICATION_LANGUAGE, PUBLICATION_TZ). events are as
    POST /v1/events takes them. The demo's data/demo/readers.jsonl is such a file (its
    `languages` list gives the language). Every line is checked first: one bad line (bad JSON,
    an unknown language or time zone, an invalid event) stores nothing, and each problem is
    printed with its line and field. Importing a file again changes nothing.
    """
    from server.readers import ReadersRejected, parse_readers
    from server.stores import Readers

    try:
        records = parse_readers(file.read_text(encoding="utf-8"), str(file))
    except UnicodeDecodeError as exc:
        raise click.ClickException(f"{file} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except ReadersRejected as exc:
        for error in exc.errors:
            click.echo(f"rejected {error}", err=True)
        raise click.ClickException(f"{len(exc.errors)} problem(s) in {file}; no reader was stored") from exc
    engine = build_engine(Settings.from_env())
    try:
        added = Readers(engine).load(records, datetime.now(UTC))
    finally:
        engine.dispose()
    click.echo(f"imported {len(records)} readers from {file} ({added} new events)")


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
    when = _zoned(datetime.fromtimestamp(hit.published_at, UTC))
    return f"  {hit.score:.3f}  {when}  {hit.article_id:<10} [{hit.section}] {hit.title}"


def _hit_json(hit: Hit) -> dict[str, Any]:
    keys = ("chunk_id", "article_id", "score", "title", "url", "section", "story_id", "text")
    return {key: getattr(hit, key) for key in keys}


def _reader_audience(settings: Settings, engine: Engine, reader: str) -> Audience:
    """The reader's language and zone as the service has them (else the publication's)."""
    from server.i18n import audience
    from server.stores import Readers

    own = Readers(engine).settings(reader)
    return audience(
        own.language or settings.publication_language, own.timezone or settings.publication_timezone
    )


def _zoned(moment: datetime) -> str:
    """A time in the publication's zone (PUBLICATION_TZ), with the zone: 2026-11-16 20:00 CET."""
    return f"{moment.astimezone(zone(_publication_zone())):%Y-%m-%d %H:%M %Z}"


@cache
def _publication_zone() -> str:
    return Settings.from_env().publication_timezone


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment
