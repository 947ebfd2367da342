"""Serving the registry's promoted adapter without a restart (a joint adapter, or a set with a part
per language that routes each article to its language's part), and one tune at a time per DATA_DIR."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from briefing import (
    Chat,
    Completion,
    EmbeddingLexicalChecker,
    EvidenceRetriever,
    GenerationError,
    GenerationParams,
    InMemorySummaryStore,
    Summarizer,
)
from briefing.tuning.registry import AdapterRecord, AdapterState, InMemoryAdapterRegistry, new_adapter_id
from indexing import Article, Indexer
from server.tuning import AdapterServing, TuningBusy, tuning_lock


class Loading:
    """A generator that records the adapters it was asked to load (the load itself is the backends'
    contract, tested in test_gguf_lora); `broken` names adapters whose files fail to load."""

    model = "recording"

    def __init__(self, broken: Sequence[str] = ()) -> None:
        self.loaded: dict[str, Path] = {}
        self.broken = set(broken)
        self.asked: list[str | None] = []  # the adapter name of each generate call

    def add_adapter(self, name: str, path: Path) -> None:
        if name in self.broken:
            raise OSError(f"cannot read {path}")
        self.loaded[name] = path

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        self.asked.append(adapter)
        if adapter is not None and adapter not in self.loaded:
            raise GenerationError(f"adapter {adapter} is not loaded")
        model = f"{self.model}+{adapter}" if adapter else self.model  # as the local backends name it
        return [Completion(f"written by {adapter}", model, 1, 1, 0.0, "stop") for _ in chats]

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        yield f"written by {adapter}"

    def ready(self) -> bool:
        return True


def _record(snapshot: str = "ds-000000000000") -> AdapterRecord:
    return AdapterRecord(
        id=new_adapter_id(),
        base_model="packaged:SmolLM2-135M-Instruct",
        base_hash="0" * 16,
        snapshot_id=snapshot,
        hyper={},
        report=None,
        state=AdapterState.CANDIDATE,
        created_at=datetime.now(UTC),
        promoted_at=None,
        path="x",
        previous=None,
    )


@pytest.fixture
def summarizer(memory_indexer: Indexer) -> Summarizer:
    embedder = memory_indexer.embedder
    retriever = EvidenceRetriever(memory_indexer.index, embedder)
    return Summarizer(Loading(), retriever, EmbeddingLexicalChecker(embedder), InMemorySummaryStore())


def _serving(
    summarizer: Summarizer,
    registry: InMemoryAdapterRegistry,
    backend: str = "llamacpp",
    pinned: str | None = None,
) -> AdapterServing:
    return AdapterServing(registry, summarizer, backend, Path("/adapters"), pinned)


def test_a_promotion_elsewhere_is_served_at_the_next_sync_without_a_restart(summarizer: Summarizer) -> None:
    registry = InMemoryAdapterRegistry()
    serving = _serving(summarizer, registry)
    assert serving.sync() is None and summarizer.adapter is None  # nothing promoted: the base model
    first = registry.add(_record())
    registry.promote(first.id, "editor-in-chief")
    assert serving.sync() == first.id
    generator = summarizer.generator
    assert isinstance(generator, Loading)
    assert generator.loaded[first.id] == Path("/adapters/x/adapter.gguf")  # llama.cpp loads the GGUF LoRA
    second = registry.add(_record())
    registry.promote(second.id, "job", role="job")
    assert serving.sync() == second.id and summarizer.adapter == second.id
    registry.rollback("editor-in-chief")
    assert serving.sync() == first.id and summarizer.adapter == first.id


def test_transformers_and_vllm_load_the_peft_folder(summarizer: Summarizer) -> None:
    registry = InMemoryAdapterRegistry()
    record = registry.add(_record())
    registry.promote(record.id, "admin")
    _serving(summarizer, registry, backend="openai").sync()
    assert summarizer.generator.loaded[record.id] == Path("/adapters/x/adapter")  # type: ignore[attr-defined]


def test_an_adapter_that_cannot_load_leaves_the_base_model_drafting(summarizer: Summarizer) -> None:
    registry = InMemoryAdapterRegistry()
    record = registry.add(_record())
    registry.promote(record.id, "admin")
    summarizer.generator = Loading(broken=[record.id])
    assert _serving(summarizer, registry).sync() is None
    assert summarizer.adapter is None


def test_llm_adapter_pins_an_adapter_and_the_registry_is_not_asked(summarizer: Summarizer) -> None:
    registry = InMemoryAdapterRegistry()
    record = registry.add(_record())
    registry.promote(record.id, "admin")
    assert _serving(summarizer, registry, pinned="house-style").sync() == "house-style"
    assert summarizer.generator.loaded == {}  # type: ignore[attr-defined]


def test_new_drafts_name_the_adapter_that_wrote_them_and_old_ones_keep_theirs(summarizer: Summarizer) -> None:
    from indexing import Article, ArticleRecord

    article = Article.model_validate(
        {
            "id": "a1",
            "url": "https://example.com/a1",
            "title": "Ferry cancelled",
            "body": "The ferry to Storøy was cancelled on Monday because of the storm.",
            "section": "local",
            "language": "en",
            "publication": "Havnby Posten",
            "published_at": datetime(2026, 11, 19, tzinfo=UTC),
        }
    )
    from briefing.summarize import Request

    record = ArticleRecord(article, article.content_hash(), "s1", 1, np.zeros(384, dtype=np.float32))
    request = Request(record, [], summarizer.article_template("article", record))
    before = summarizer.summary_id(request)
    summarizer.use_adapter("ad-20261202000000-abcdef")
    assert summarizer.summary_id(request) != before  # a new adapter's draft is a new summary
    assert summarizer.summary_id(request, None) == before  # the base model's is still found by its id


def test_one_tune_at_a_time_and_a_killed_holder_releases_the_lock(tmp_path: Path) -> None:
    with (
        tuning_lock(tmp_path, "nightly job"),
        pytest.raises(TuningBusy, match="nightly job"),
        tuning_lock(tmp_path, "cli"),
    ):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from server.tuning import tuning_lock\n"
            "with tuning_lock(Path(sys.argv[1]), 'child'):\n    print('held', flush=True); time.sleep(60)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(TuningBusy, match="child"), tuning_lock(tmp_path, "cli"):
        pass
    holder.kill()  # SIGKILL: no cleanup runs
    holder.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with tuning_lock(tmp_path, "cli"):
                break
        except TuningBusy:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def _set(*languages: str) -> AdapterRecord:
    return replace(_record(), hyper={"layout": "per-language", "languages": list(languages)})


@pytest.fixture
def two_languages(memory_indexer: Indexer, demo_articles: list[Article]) -> tuple[str, str]:
    """An English and a Bokmål demo article in the index: (en id, nb id)."""
    chosen = {a.id: a for a in demo_articles if a.id in ("loc-0001", "nob-0001")}
    assert [chosen[a].language for a in sorted(chosen)] == ["en", "nb"]
    assert memory_indexer.ingest(list(chosen.values())).ok
    return "loc-0001", "nob-0001"


def test_a_set_is_loaded_part_by_part_and_each_article_drafted_by_its_languages_part(
    summarizer: Summarizer, two_languages: tuple[str, str]
) -> None:
    """Known answer: a set with an English part only. The English article is generated by the
    part and its summary names the set; the Bokmål one is generated by the base model and its
    summary names no adapter (the show gate judges text by who wrote it)."""
    en, nb = two_languages
    registry = InMemoryAdapterRegistry()
    english = registry.add(_set("en"))
    registry.promote(english.id, "admin")
    assert _serving(summarizer, registry).sync() == english.id
    generator = summarizer.generator
    assert isinstance(generator, Loading)
    assert generator.loaded == {f"{english.id}@en": Path("/adapters/x/en/adapter.gguf")}
    by_id = {s.article_id: s for s in summarizer.summarize([en, nb])}
    assert generator.asked == [f"{english.id}@en", None]
    assert by_id[en].adapter == english.id and by_id[en].model == f"recording+{english.id}"
    assert by_id[nb].adapter is None and by_id[nb].model == "recording"
    (nb_request,) = summarizer.article_requests([nb])
    assert by_id[nb].id == summarizer.summary_id(nb_request, None)  # the base model's draft, found again
    summarizer.summarize([en, nb])
    assert len(generator.asked) == 2  # both found stored: nothing regenerated
    # an experiment arm naming the set writes the same way
    summarizer.summarize([nb], adapter=english.id, refresh=True)
    assert generator.asked[-1] is None


def test_two_parts_each_write_their_own_language(
    summarizer: Summarizer, two_languages: tuple[str, str]
) -> None:
    en, nb = two_languages
    registry = InMemoryAdapterRegistry()
    both = registry.add(_set("en", "nb"))
    serving = _serving(summarizer, registry, backend="transformers")
    serving.ensure([both.id])  # an experiment arm's adapter: loaded, parts made known
    assert summarizer.generator.loaded == {  # type: ignore[attr-defined]
        f"{both.id}@en": Path("/adapters/x/en/adapter"),
        f"{both.id}@nb": Path("/adapters/x/nb/adapter"),
    }
    written = summarizer.summarize([nb, en], adapter=both.id)
    assert summarizer.generator.asked == [f"{both.id}@nb", f"{both.id}@en"]  # type: ignore[attr-defined]
    assert [s.adapter for s in written] == [both.id, both.id]


def test_rollback_from_a_set_to_a_joint_adapter_and_back(
    summarizer: Summarizer, two_languages: tuple[str, str]
) -> None:
    en, nb = two_languages
    registry = InMemoryAdapterRegistry()
    serving = _serving(summarizer, registry)
    joint = registry.add(_record())  # an old record: no layout, one adapter for every language
    english = registry.add(_set("en"))
    registry.promote(joint.id, "admin")
    registry.promote(english.id, "job", role="job")
    assert serving.sync() == english.id
    assert [s.adapter for s in summarizer.summarize([en, nb], refresh=True)] == [english.id, None]
    registry.rollback("admin")
    assert serving.sync() == joint.id
    assert [s.adapter for s in summarizer.summarize([en, nb], refresh=True)] == [joint.id, joint.id]
    assert summarizer.generator.asked[-2:] == [joint.id, joint.id]  # type: ignore[attr-defined]
    registry.promote(english.id, "admin")  # and forward again
    assert serving.sync() == english.id
    summarizer.summarize([en, nb], refresh=True)
    assert summarizer.generator.asked[-2:] == [f"{english.id}@en", None]  # type: ignore[attr-defined]
