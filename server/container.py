"""Composition root: builds the pipeline parts from `Settings`; handlers and jobs never build clients."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from briefing import (
    Composer,
    EmbeddingLexicalChecker,
    EvidenceRetriever,
    Generator,
    Summarizer,
    SummarizerConfig,
    SummaryRepository,
    make_generator,
    make_scorer,
)
from briefing.gate import show_rules
from briefing.verifier import RelationChecker, load_relation_checker, verifier_dir
from indexing import Chunker, Embedder, Indexer, QdrantIndex, SentenceTransformerEmbedder
from recsys import CandidateMatrix, EventRepository, Recommender
from server.parts import RememberingEmbedder, Stoppable, StoppableScorer
from server.settings import Settings

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the service pulls in SQLAlchemy; CLI commands that do not need it stay light
    from sqlalchemy import Engine

    from server.jobs import Jobs
    from server.service import Service
    from server.tuning import AdapterServing
    from server.versions import VersionWatch


def build_embedder(settings: Settings) -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(settings.embedding_model)


def build_chunker(settings: Settings, embedder: SentenceTransformerEmbedder) -> Chunker:
    return Chunker(
        embedder.token_counter(),
        chunk_tokens=min(settings.chunk_tokens, embedder.max_tokens - 16),
        overlap_tokens=settings.chunk_overlap,
    )


def open_index(settings: Settings) -> QdrantIndex:
    """The index as it is, whatever model built it (re-index reads it with a new model). On a
    Qdrant server, other processes write too: writes and re-index's switch hold a fence."""
    index = QdrantIndex(settings.qdrant.connect(), settings.qdrant.prefix, layout=settings.qdrant.layout())
    if not index.is_local:
        from server.db import index_fence

        index.fence = index_fence(settings.database_url, settings.data_dir)
    return index


def build_indexer(settings: Settings, embedder: SentenceTransformerEmbedder | None = None) -> Indexer:
    embedder = embedder or build_embedder(settings)
    index = open_index(settings)
    index.ensure(embedder.dim)
    return Indexer(index, embedder, build_chunker(settings, embedder), settings.stories)


def build_recommender(
    settings: Settings, indexer: Indexer, events: EventRepository, now: datetime
) -> Recommender:
    """A recommender over the articles modified in the recent window, popularity as of `now`,
    with the configured ranker fitted (a fit that fails is logged and a fallback serves)."""
    matrix = candidates(settings, indexer, now)
    recommender = Recommender(matrix, events, settings.recsys)
    recommender.refresh(matrix, now, fit=[settings.recsys.ranker])
    recommender.ranker(settings.recsys.ranker)  # the fallback, if that fit failed
    return recommender


def candidates(settings: Settings, indexer: Indexer, now: datetime) -> CandidateMatrix:
    since = now - timedelta(days=settings.recsys_window_days)
    return CandidateMatrix.from_index(indexer.index, indexer.embedder.dim, since)


def refresh_recommender(
    settings: Settings, indexer: Indexer, recommender: Recommender, now: datetime
) -> None:
    """A new candidate matrix with the configured ranker fitted on it, swapped in whole."""
    recommender.refresh(candidates(settings, indexer, now), now, fit=[settings.recsys.ranker])


def build_generator(settings: Settings) -> Generator:
    return make_generator(settings.llm)


def build_summarizer(
    settings: Settings,
    indexer: Indexer,
    generator: Generator | None = None,
    store: SummaryRepository | None = None,
    *,
    stop: threading.Event | None = None,
) -> Summarizer:
    """With `stop`, the LLM and the checker's likelihood pass start nothing once it is set. Both
    checkers keep the vectors of the sentences they embedded (`RememberingEmbedder`)."""
    generator = generator or build_generator(settings)
    checking = RememberingEmbedder(indexer.embedder)
    checker = build_checker(settings, checking, stop=stop)
    # The relation checker has no LLM pass: editors' sentences get the same verdict as drafts.
    quick = (
        checker
        if isinstance(checker, RelationChecker)
        else EmbeddingLexicalChecker(checking, settings.grounding)
    )
    return Summarizer(
        Stoppable(generator, stop) if stop is not None else generator,
        EvidenceRetriever(indexer.index, indexer.embedder),
        checker,
        store or build_summary_store(settings),
        config=SummarizerConfig(adapter=settings.llm_adapter),
        request_checker=quick,
    )


def build_checker(
    settings: Settings, embedder: Embedder, *, stop: threading.Event | None = None
) -> EmbeddingLexicalChecker | RelationChecker:
    """GROUNDING_CHECKER's checker: "relation" when a trained verifier is cached under
    DATA_DIR/models/verifier, else (and by default) the embedding-lexical check, logged."""
    grounding = settings.grounding
    if settings.grounding_checker == "relation":
        relation = load_relation_checker(embedder, settings.data_dir, grounding)
        if relation is not None:
            log.info("grounding checker: relation (verifier %s)", relation.verifier.folder)
            return relation
        log.warning(
            "GROUNDING_CHECKER=relation but no trained verifier in %s (make verifier): "
            "using the embedding-lexical checker",
            verifier_dir(settings.data_dir),
        )
    scorer = make_scorer(
        grounding.likelihood_backend,
        grounding.likelihood_model,
        cache_dir=settings.llm.cache_dir,
        threads=settings.llm.threads,
    )
    if scorer is not None and stop is not None:
        scorer = StoppableScorer(scorer, stop)
    return EmbeddingLexicalChecker(embedder, grounding, scorer)


def build_engine(settings: Settings) -> Engine:
    """The SQL database (DATABASE_URL, SQLite under DATA_DIR by default), migrated to the newest
    schema: the service and the CLI read and write the same stores."""
    from server.db import connect, migrate

    engine = connect(settings.database_url)
    migrate(engine)
    return engine


def build_event_store(settings: Settings, engine: Engine | None = None) -> EventRepository:
    from server.stores import SqlEventStore

    return SqlEventStore(engine or build_engine(settings))


def build_summary_store(settings: Settings, engine: Engine | None = None) -> SummaryRepository:
    from server.stores import SqlSummaryStore

    return SqlSummaryStore(engine or build_engine(settings))


def build_composer(settings: Settings, recommender: Recommender, summarizer: Summarizer) -> Composer:
    """The composer under the briefing policy, with the languages the show gate lets drafts
    show in and their rules (measured for this checker at this threshold, each for the writer,
    model and adapter, whose drafts it lets show; none without a gate)."""
    name = getattr(summarizer.checker, "name", "")
    policy = replace(
        settings.briefing, show_rules=show_rules(settings.show_gate, name, settings.grounding.threshold)
    )
    return Composer(recommender, summarizer, policy=policy)


def build_clock(settings: Settings) -> Callable[[], datetime]:
    """The wall clock, or one that starts at CLOCK_START and runs on from there (demos, tests)."""
    start = settings.service.clock_start
    if start is None:
        return lambda: datetime.now(UTC)
    offset = start - datetime.now(UTC)
    return lambda: datetime.now(UTC) + offset


def build_service(
    settings: Settings,
    *,
    indexer: Indexer | None = None,
    generator: Generator | None = None,
    stop: threading.Event | None = None,
) -> Service:
    """Everything the service runs on: SQL storage (migrated to the newest schema), the index,
    the recommender over the recent window, the summarizer and the composer. With `stop`, the
    LLM starts no call once it is set (`Stoppable`; `briefing serve` sets it on Ctrl-C)."""
    from server.experiments.serving import Arms
    from server.experiments.store import Experiments
    from server.i18n import publication
    from server.service import Service
    from server.shared_state import shared_state
    from server.stores import Readers, SqlEventStore, SqlSummaryStore
    from server.versions import ModelVersions, VersionWatch

    settings = leave_cores_for_requests(settings)
    engine = build_engine(settings)
    # read before the models are built: whatever another process changes from now on is reloaded
    versions = VersionWatch(ModelVersions(engine), settings.version_poll_s)
    indexer = indexer or build_indexer(settings)
    clock = build_clock(settings)
    events, summaries = SqlEventStore(engine), SqlSummaryStore(engine)
    recommender = build_recommender(settings, indexer, events, clock())
    summarizer = build_summarizer(settings, indexer, generator, summaries, stop=stop)

    def refresh(now: datetime) -> None:
        with versions.announcing("matrix"):  # other processes reload it too
            refresh_recommender(settings, indexer, recommender, now)

    # an arm may name only the backend this deployment drafts with: another would be a silent no-op
    experiments = Experiments(engine, known_backends={settings.llm.backend})
    adapters = build_adapter_serving(settings, engine, summarizer)
    service = Service(
        engine=engine,
        indexer=indexer,
        summarizer=summarizer,
        recommender=recommender,
        composer=build_composer(settings, recommender, summarizer),
        events=events,
        summaries=summaries,
        clock=clock,
        readers=Readers(engine, timedelta(minutes=settings.service.session_minutes)),
        refresh_matrix=refresh,
        publication=publication(settings),
        experiments=experiments,
        arms=Arms(experiments.running, settings.service.experiment_holdout),
        adapters=adapters,
        versions=versions,
        shared=shared_state(settings),  # visits and cached briefings: here, or Redis (REDIS_URL)
    )
    reload_models(settings, service, versions)
    return service


def reload_models(settings: Settings, service: Service, versions: VersionWatch) -> None:
    """How this process reloads what another one changed (`VersionWatch.check`): the matrix (its
    ranker fitted on it, the cached briefings dropped, as the refresh-candidates job does), the
    ranker (refitted here: a deterministic fit on the same events) and the promoted adapter."""

    def matrix() -> None:
        refresh_recommender(settings, service.indexer, service.recommender, service.clock())
        service.cache.drop(lambda b: False)  # they may show what the new matrix dropped

    def adapter() -> None:
        if service.adapters is not None:
            service.adapters.sync()

    def ranker() -> None:
        refit(service.recommender)

    versions.on("matrix", matrix)
    versions.on("ranker", ranker)
    versions.on("adapter", adapter)


def refit(recommender: Recommender) -> str:
    """The configured ranker fitted beside the serving one on its matrix, then swapped in; a fit
    that fails raises and leaves the serving ranker in place. Returns its name."""
    name = recommender.config.ranker
    recommender.use_ranker(name, recommender.fit(name, recommender.matrix))
    return name


def build_adapter_serving(settings: Settings, engine: Engine, summarizer: Summarizer) -> AdapterServing:
    """The registry's promoted adapter for new drafts (LLM_ADAPTER pins one instead), loaded now."""
    from server.adapters import SqlAdapterRegistry
    from server.tuning import AdapterServing

    serving = AdapterServing(
        SqlAdapterRegistry(engine),
        summarizer,
        settings.llm.backend,
        settings.data_dir / "adapters",
        settings.llm_adapter,
    )
    serving.sync()
    return serving


def leave_cores_for_requests(settings: Settings) -> Settings:
    """In the service, jobs (llama.cpp, the embedder) use half the cores unless LLM_THREADS says
    otherwise: llama.cpp's threads spin on every core they are given, and the event loop
    answering readers needs one."""
    import os

    import torch

    threads = settings.llm.threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    return replace(settings, llm=replace(settings.llm, threads=threads))


def build_jobs(
    settings: Settings,
    service: Service,
    *,
    stop: threading.Event | None = None,
    at_start: tuple[str, ...] = (),
) -> Jobs:
    """The scheduled jobs; `stop` is the event `build_service` gave the generator, `at_start`
    the jobs whose first run is at once (`briefing serve` drafts then, not 10 minutes later)."""
    from server import jobs as j

    control = j.JobControl(stop)
    config = settings.service
    hour = 3600.0
    specs = [
        j.JobSpec(
            "ingest-feeds", 15 * 60 if config.feeds else 0, "ingest FEEDS", j.ingest_feeds(config.feeds)
        ),
        j.JobSpec(
            "refresh-candidates", hour, "rebuild the recent window's candidate matrix", j.refresh_candidates
        ),
        j.JobSpec("refit-ranker", 6 * hour, "refit the learned ranker on recent impressions", j.refit_ranker),
        j.JobSpec(
            "summarize-new",
            10 * 60,
            "draft summaries of new articles",
            j.summarize_new(config.summarize_per_run, config.job_budget_s, control),
        ),
        j.JobSpec(
            "precompute-briefings",
            hour,
            "write active readers' missing texts and compose their next briefing",
            j.precompute(config.job_budget_s, control),
        ),
        j.JobSpec(
            "collect-garbage", 600, "a full garbage collection off the request path", j.collect_garbage
        ),
        j.JobSpec(
            "tune-adapter",
            settings.tune.every_s,
            "snapshot, train and gate a LoRA adapter; promote it if it beats the serving one",
            j.tune_adapter(settings, control),
        ),
        j.JobSpec(
            "retention",
            24 * hour,
            "delete old events and served briefings",
            j.retention(config.retention_days, config.retention_days),
        ),
    ]
    return j.Jobs(
        service,
        specs,
        retries=config.job_retries,
        backoff_s=config.job_backoff_s,
        lock_dir=settings.data_dir,
        control=control,
        at_start=at_start,
    )
