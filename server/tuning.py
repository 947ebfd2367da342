"""Fine-tuning in the service: serving the promoted adapter without a restart, the newsroom's
training snapshot, and the tune job (snapshot → train → gate → promote or keep).

The registry (SQL, `server.adapters`) is the one truth about which adapter serves. Every process
that drafts text calls `AdapterServing.sync` before its LLM work: one cheap version read, and when
an adapter was promoted or rolled back elsewhere, the new one is loaded and used for new drafts.
Drafts written by the old adapter stay as they are, with its id (DESIGN §5). LLM_ADAPTER, when set,
pins an adapter and the registry is not consulted. An adapter set (one part per language) is loaded
part by part and the summarizer learns its languages (`serve_summarizer`), so each article is
drafted by its language's part, or by the base model where its language has none.

Tuning runs one at a time per DATA_DIR (a file lock): the nightly job and `briefing tune` never
train at once, and a second caller is told who holds it rather than waiting for an hour.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from briefing import Status, Summarizer
from briefing.tuning.registry import AdapterRegistry, sweep_adapters
from briefing.tuning.serving import serve_summarizer

if TYPE_CHECKING:  # training pulls in torch and peft: imported where a tune runs
    from briefing.summarize import Request
    from briefing.tuning.config import TuneConfig
    from briefing.tuning.data import Example, Snapshot
    from briefing.tuning.estimate import StageClock
    from briefing.tuning.pipeline import Tuner
    from server.service import Service
    from server.settings import Settings

log = logging.getLogger(__name__)

ARTICLE_TASKS = ("article", "article-one-sentence")  # localized per article (article-nb, ...)


class TuningBusy(RuntimeError):
    """Another process is tuning on this DATA_DIR."""


class AdapterServing:
    """Keeps the summarizer on the registry's promoted adapter (see the module docstring)."""

    def __init__(
        self, registry: AdapterRegistry, summarizer: Summarizer, backend: str, root: Path, pinned: str | None
    ) -> None:
        self.registry, self.summarizer = registry, summarizer
        self.backend, self.root, self.pinned = backend, root, pinned
        self._version: int | None = None
        self._served: set[str] = set()  # adapters the generator has loaded
        self._lock = threading.Lock()

    def ensure(self, names: Iterable[str]) -> None:
        """Load the registry adapters experiment arms name, so their drafts can be written; an
        unknown or unloadable one is logged and its arm's drafts are not written."""
        with self._lock:
            for name in sorted(set(names) - self._served):
                record = self.registry.get(name)
                try:
                    if record is None:
                        raise LookupError("not in the registry")
                    serve_summarizer(self.summarizer, self.backend, self.root, record)
                    self._served.add(name)
                except Exception as exc:  # any load failure: the other arms go on
                    log.error("an experiment arm's adapter %s cannot be served: %s", name, exc)

    def sync(self) -> str | None:
        """The adapter new drafts use, after loading a newly promoted one (None: the base model).
        A promoted adapter that cannot be loaded is logged and the base model drafts: a broken
        adapter must not stop the newsroom's drafting."""
        if self.pinned:
            return self.pinned
        with self._lock:
            version = self.registry.version()
            if version == self._version:
                return self.summarizer.adapter
            record = self.registry.promoted()
            chosen = None
            if record is not None:
                try:
                    serve_summarizer(self.summarizer, self.backend, self.root, record)
                    self._served.add(record.id)
                    chosen = record.id
                except Exception as exc:  # any load failure: draft with the base model
                    log.error(
                        "promoted adapter %s cannot be served (%s): drafting with the base model",
                        record.id,
                        exc,
                    )
            self.summarizer.use_adapter(chosen)
            self._version = version
            log.info("drafting with %s (registry version %d)", chosen or "the base model", version)
            return chosen


@contextmanager
def tuning_lock(data_dir: Path, holder: str) -> Iterator[None]:
    """One tune at a time per DATA_DIR; TuningBusy (saying who holds it) instead of waiting.
    The kernel drops the lock when its process dies, so a killed run never blocks the next."""
    path = data_dir / "tuning" / "tune.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[str] = path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise TuningBusy(
                f"another tune is running on {data_dir}: {handle.read().strip() or 'unknown'}"
            ) from None
        handle.truncate(0)
        handle.write(f"{holder} (pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        yield
    finally:
        handle.close()


def newsroom_snapshot(
    service: Service,
    settings: Settings,
    config: TuneConfig,
    *,
    progress: bool = False,
    deadline_s: float | None = None,
) -> Snapshot:
    """The training snapshot from the service's editor decisions and self-training on its articles,
    written under DATA_DIR/tuning (content-addressed: the same rows give the same id)."""
    from briefing.tuning.data import build_snapshot
    from briefing.tuning.pipeline import Workspace
    from briefing.tuning.self_training import self_training
    from briefing.tuning.snapshots import write_snapshot
    from briefing.tuning.sources import editor_rows

    summarizer = service.summarizer
    reviewed = [
        s
        for status in (Status.APPROVED, Status.EDITED, Status.REJECTED)
        for s in service.summaries.by_status(status)
    ]
    examples, pairs, editor_stats = editor_rows(reviewed, summarizer)
    train_ids, held_ids = tuning_articles(service, config)
    requests = article_requests(summarizer, train_ids)
    threshold = settings.grounding.threshold
    sampled, sampled_pairs, self_stats = self_training(
        summarizer,
        requests,
        candidates=config.candidates,
        temperature=config.temperature,
        margin=config.margin,
        min_novel=config.min_novel,
        threshold=threshold,
        adapter=summarizer.adapter,
        progress=progress,
        deadline_s=deadline_s,
    )
    retracted = {s.article_id for s in service.summaries.by_status(Status.RETRACTED)}
    filters = {
        "checker": getattr(summarizer.checker, "name", type(summarizer.checker).__name__),
        "threshold": threshold,
        "margin": config.margin,
        "min_novel": config.min_novel,
        "candidates": config.candidates,
        "temperature": config.temperature,
        "sampled_by": summarizer.adapter or summarizer.generator.model,
        "editor": editor_stats,
        "self_training": {k: v for k, v in self_stats.items() if k != "seconds"},
        "retracted_articles": len(retracted),
    }
    held_out = article_requests(summarizer, held_ids)
    probes = held_out_probes(summarizer, held_out, [*examples, *sampled], config.eval_share)
    filters["held_out_without_reference"] = len(probes)
    snapshot = build_snapshot(
        [*examples, *sampled, *probes],
        [*pairs, *sampled_pairs],
        filters,
        excluded_articles=retracted,
        eval_share=config.eval_share,
    )
    write_snapshot(snapshot, Workspace(settings.data_dir).tuning)
    return snapshot


def tuning_articles(service: Service, config: TuneConfig) -> tuple[list[str], list[str]]:
    """The indexed articles a run samples (up to TUNE_ARTICLES of the training split) and every
    held-out one. Samples of a held-out article could never be trained on, so none is drawn; the
    gate probes all held-out articles instead. The training articles are taken in a stable hashed
    order, not by id, so a capped run still spreads over sections, days and languages."""
    from briefing.tuning.data import split_of

    ids = sorted(r.article.id for r in service.indexer.index.scroll())
    held = [i for i in ids if split_of(i, config.eval_share) == "eval"]
    train = sorted((i for i in ids if split_of(i, config.eval_share) == "train"), key=_spread)
    return train[: config.articles or None], held


def _spread(article_id: str) -> str:
    return hashlib.sha256(f"tune-sample\x1f{article_id}".encode()).hexdigest()


def article_requests(summarizer: Summarizer, ids: Sequence[str]) -> list[Request]:
    """Both article templates of each article, article by article: a run its budget stops has
    still sampled whole articles."""
    order = {article_id: n for n, article_id in enumerate(ids)}
    return sorted(
        (r for task in ARTICLE_TASKS for r in summarizer.article_requests(list(ids), task)),
        key=lambda r: order[r.record.article.id],
    )


def held_out_probes(
    summarizer: Summarizer, requests: Iterable[Request], rows: Iterable[Example], eval_share: float
) -> list[Example]:
    """An eval row without a reference for each held-out (article, template) nothing else covers.
    The gate's primary figure (does a reader get generated text that passed the check?) and its
    support need no reference, so every held-out article counts there, not only the few whose
    samples passed; ROUGE and cosine are measured on those that have a reference."""
    from briefing.tuning.data import as_chat, example, split_of

    covered = {(row.article_id, row.task) for row in rows}
    probes = []
    for request in requests:
        article, task = request.record.article, request.template.id
        if split_of(article.id, eval_share) != "eval" or (article.id, task) in covered:
            continue
        chat = as_chat(summarizer.chat(request))
        meta = {"content_hash": request.record.content_hash}
        probes.append(example("heldout", task, article.language, (article.id,), chat, "", meta))
    return probes


def build_tuner(
    service: Service,
    settings: Settings,
    config: TuneConfig,
    *,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
) -> Tuner:
    """The tune loop over the service's summarizer, registry and serving backend."""
    from briefing.llm.hf import dequantized
    from briefing.llm.models import gguf_path
    from briefing.tuning.pipeline import Tuner, Workspace

    if service.adapters is None:
        raise RuntimeError("the service has no adapter registry")
    gguf = gguf_path(settings.llm.model)
    if gguf is None:
        raise RuntimeError(
            f"LLM_MODEL {settings.llm.model!r} is not a GGUF model: tuning trains on the GGUF's "
            "dequantized weights and converts the adapter for llama.cpp"
        )
    return Tuner(
        summarizer=service.summarizer,
        registry=service.adapters.registry,
        workspace=Workspace(settings.data_dir),
        base=dequantized(settings.llm.model, settings.llm.cache_dir),
        base_gguf=gguf,
        base_model=settings.llm.model,
        backend=settings.llm.backend,
        embedder=service.indexer.embedder,
        # training takes the cores the service gives its jobs (LLM_THREADS; half of them in `serve`)
        config=replace(
            config, train=replace(config.train, threads=config.train.threads or settings.llm.threads)
        ),
        progress=progress,
        stop=stop,
    )


def tune(
    service: Service,
    settings: Settings,
    *,
    actor: str = "job",
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One whole tune: snapshot → train → gate → promote or keep; the promoted adapter serves at
    once. Sampling and training share TUNE_BUDGET_S; training stopped by it resumes next run.
    The report, with each stage's measured rate, is appended to DATA_DIR/tuning/reports.jsonl:
    the next `briefing tune run` estimates its time from it."""
    from briefing.tuning.estimate import record_run
    from briefing.tuning.pipeline import Workspace

    config = settings.tune
    workspace = Workspace(settings.data_dir)
    with tuning_lock(settings.data_dir, actor):
        start = time.monotonic()
        if service.adapters is not None:
            swept = sweep_adapters(workspace.adapters, service.adapters.registry)
            if swept:
                log.warning("tune: removed %d adapter folders a crash left: %s", len(swept), ", ".join(swept))
            service.adapters.sync()  # sample from (and gate against) what serves now
        sampling = time.monotonic()
        snapshot = newsroom_snapshot(service, settings, config, progress=progress, deadline_s=config.budget_s)
        clock = _sampling_clock(snapshot, time.monotonic() - sampling)
        left = max(60.0, config.budget_s - (time.monotonic() - start))
        tuner = build_tuner(service, settings, config, progress=progress, stop=stop)
        report = tuner.run(snapshot, actor=actor, deadline_s=left, clock=clock).to_json()
        if service.adapters is not None:
            service.adapters.sync()
        log.info("tune: %s in %.0f s", "promoted" if report["promoted"] else "kept", time.monotonic() - start)
        record_run(workspace.tuning, report)
        return report


def _sampling_clock(snapshot: Snapshot, seconds: float) -> StageClock:
    """The sampling stage as the snapshot's self-training stats counted it (requests are the
    article templates of each article), over the wall time that built the snapshot."""
    from briefing.tuning.estimate import StageClock

    stats = snapshot.filters.get("self_training") or {}
    clock = StageClock(articles=int(stats.get("requests", 0)) / len(ARTICLE_TASKS))
    clock.add("sample", seconds, int(stats.get("sampled", 0)))
    return clock
