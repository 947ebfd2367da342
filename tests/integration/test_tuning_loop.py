"""The tune loop on the demo newsroom, with the real engines (peft on transformers, llama.cpp
serving the GGUF LoRA, SQL registry): a tiny adapter trained for a few steps changes what the
model writes and is recorded on the drafts it writes; a promotion reaches drafting without a
restart and a rollback brings the base model's text back; a failure between training and
promotion leaves the promoted adapter serving; editor decisions reach the next snapshot and a
retracted article's rows do not."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from briefing import GenerationParams, Status, Summarizer
from briefing.tuning.data import Snapshot, build_snapshot, split_of
from briefing.tuning.estimate import StageClock
from briefing.tuning.pipeline import Tuner
from briefing.tuning.registry import AdapterRecord, AdapterState
from briefing.tuning.train import TrainResult, train_sft
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.review import Review
from server.service import Actor, Service
from server.settings import Settings
from server.tuning import build_tuner, newsroom_snapshot, tuning_articles
from tests.service import TINY_LORA as TINY
from tests.service import demo_service, title_examples

pytestmark = pytest.mark.slow
PROMPT = "article-one-sentence"
GREEDY = GenerationParams(max_tokens=48)


@dataclass
class Tuned:
    settings: Settings
    service: Service
    tuner: Tuner
    snapshot: Snapshot
    trained: TrainResult
    record: AdapterRecord
    english: list[str]


@pytest.fixture(scope="module")
def tuned(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    model_cache: Path,
) -> Iterator[Tuned]:
    """Six English demo articles in a service on SQLite, and an adapter trained on four of them to
    answer with the article's title (a target the base model never writes)."""
    from briefing import GeneratorConfig, make_generator

    data_dir = tmp_path_factory.mktemp("tune")
    articles = [a for a in demo_articles if a.language == "en"][:6]
    generator = make_generator(GeneratorConfig(backend="llamacpp", threads=2, timeout_s=600))
    url = f"sqlite:///{data_dir / 'briefing.db'}"
    env = {"TUNE_CANDIDATES": "1", "TUNE_ARTICLES": "1", "TUNE_EVAL_ARTICLES": "1"}
    with demo_service(data_dir, url, embedder, chunker, articles, generator, **env) as (settings, service):
        settings = replace(settings, llm=replace(settings.llm, cache_dir=model_cache))
        summarizer = service.summarizer
        requests = summarizer.article_requests([a.id for a in articles[:4]], PROMPT)
        rows = title_examples(summarizer, requests)
        snapshot = build_snapshot(rows, [], {"test": "title targets"}, eval_share=0.0)
        tuner = replace(
            build_tuner(service, settings, settings.tune), config=replace(settings.tune, train=TINY)
        )
        trained = train_sft(snapshot.train, tuner.base, data_dir / "run", TINY)
        record = tuner.register(snapshot, trained)
        yield Tuned(settings, service, tuner, snapshot, trained, record, [a.id for a in articles])


def _written(summarizer: Summarizer, article_id: str, adapter: str | None) -> str:
    (request,) = summarizer.article_requests([article_id], PROMPT)
    (completion,) = summarizer.generator.generate([summarizer.chat(request)], GREEDY, adapter)
    return completion.text


def test_a_tiny_adapter_changes_what_the_model_writes_and_is_recorded_on_its_drafts(tuned: Tuned) -> None:
    summarizer = tuned.service.summarizer
    assert tuned.record.state is AdapterState.CANDIDATE and tuned.record.snapshot_id == tuned.snapshot.id
    assert tuned.trained.steps > 0 and tuned.trained.tokens > 0
    tuned.tuner.outcomes(tuned.record, [])  # serves it (llama.cpp loads the GGUF LoRA)
    article = tuned.english[0]
    base, adapted = _written(summarizer, article, None), _written(summarizer, article, tuned.record.id)
    assert adapted != base
    (draft,) = summarizer.summarize([article], prompt=PROMPT, adapter=tuned.record.id, refresh=True)
    assert draft.adapter == tuned.record.id
    assert tuned.record.id in tuned.service.summaries.get(draft.id).adapter  # type: ignore[union-attr,operator]


def test_promotion_reaches_drafting_without_a_restart_and_rollback_restores_the_base_text(
    tuned: Tuned,
) -> None:
    service, registry = tuned.service, tuned.tuner.registry
    assert service.adapters is not None
    article = tuned.english[1]
    before = _written(service.summarizer, article, None)
    registry.promote(tuned.record.id, "editor-in-chief")
    assert service.adapters.sync() == tuned.record.id  # what the drafting jobs call first
    (draft,) = service.summarizer.summarize([article], prompt=PROMPT, refresh=True)
    assert draft.adapter == tuned.record.id
    registry.rollback("editor-in-chief")
    assert service.adapters.sync() is None
    (restored,) = service.summarizer.summarize([article], prompt=PROMPT, refresh=True)
    assert restored.adapter is None
    assert _written(service.summarizer, article, None) == before


def test_a_failure_between_training_and_promotion_leaves_the_promoted_adapter_serving(
    tuned: Tuned, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = tuned.tuner.registry
    registry.promote(tuned.record.id, "editor-in-chief")
    tuned.service.adapters.sync()  # type: ignore[union-attr]

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(Tuner, "outcomes", crash)  # after the candidate is trained and registered
    snapshot = replace(tuned.snapshot, eval=tuned.snapshot.train[:1])
    tuner = replace(tuned.tuner, config=replace(tuned.tuner.config, min_examples=1, preference=False))
    with pytest.raises(RuntimeError, match="went away"):
        tuner.run(snapshot)
    promoted = registry.promoted()
    assert promoted is not None and promoted.id == tuned.record.id
    assert tuned.service.adapters.sync() == tuned.record.id  # type: ignore[union-attr]
    newest = registry.all()[0]
    assert newest.id != tuned.record.id and newest.state is AdapterState.CANDIDATE  # kept, never promoted
    registry.rollback("editor-in-chief")


def test_a_run_reports_each_stages_measured_rate_in_its_report_and_the_registry(tuned: Tuned) -> None:
    registry = tuned.tuner.registry
    snapshot = replace(tuned.snapshot, eval=tuned.snapshot.train[:1])
    tuner = replace(tuned.tuner, config=replace(tuned.tuner.config, min_examples=1, preference=False))
    clock = StageClock(articles=2)
    clock.add("sample", 8.0, 4)  # what `server.tuning.tune` measured before: 4 samples in 8 s
    report = tuner.run(snapshot, clock=clock)
    assert report.candidate is not None
    assert report.stages["gate"]["units"] == 2  # one eval article, drafted by each side
    assert report.stages["train"]["units"] == len(snapshot.train) * TINY.epochs
    assert report.rates["sample_s"] == 2.0
    assert report.rates["train_examples_per_article"] == len(snapshot.train) / 2
    assert report.rates["train_example_s"] > 0 and report.rates["gate_article_s"] > 0
    record = registry.get(report.candidate)
    assert record is not None and record.report is not None and record.report["rates"] == report.rates
    if report.promoted:
        registry.rollback("editor-in-chief")


def test_editor_decisions_reach_the_next_snapshot_and_a_retracted_articles_rows_do_not(tuned: Tuned) -> None:
    service = tuned.service
    kept, retracted = tuned.english[4], tuned.english[5]
    review, editor = Review(service), Actor("ed", "editor")
    for article in (kept, retracted):
        (draft,) = service.summarizer.summarize([article], prompt=PROMPT, refresh=True)
        review.edit(editor, draft.id, f"Editors wrote this about {article}.")
    service.retract(Actor("admin", "admin"), retracted, "test")
    snapshot = newsroom_snapshot(service, tuned.settings, tuned.settings.tune)
    editor_rows = [r for r in (*snapshot.train, *snapshot.eval) if r.source == "editor"]
    assert any(r.article_id == kept and "Editors wrote this" in r.target for r in editor_rows)
    assert all(retracted not in r.article_ids for r in (*snapshot.train, *snapshot.eval, *snapshot.pairs))
    assert service.summaries.by_status(Status.EDITED)  # the decision itself is untouched
    # every held-out article is gated, with a reference or without one (a probe), never trained on
    indexed = {r.article.id for r in service.indexer.index.scroll()}
    held_out = {a for a in indexed if split_of(a, tuned.settings.tune.eval_share) == "eval"} - {retracted}
    assert held_out <= {r.article_id for r in snapshot.eval}
    assert all(r.target == "" for r in snapshot.eval if r.source == "heldout")
    assert not [r for r in snapshot.train if r.source == "heldout" or r.article_id in held_out]
    # held-out articles are probed, never sampled (their samples could not be trained on), and a
    # capped run samples training articles only, in a stable order
    assert not [r for r in (*snapshot.eval, *snapshot.pairs) if r.source == "self"]
    capped = replace(tuned.settings.tune, articles=3)
    train, held = tuning_articles(service, capped)
    assert len(train) == 3 and not set(train) & set(held) and held_out <= set(held)
    assert tuning_articles(service, capped) == (train, held)
