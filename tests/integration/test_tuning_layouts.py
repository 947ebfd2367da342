"""An adapter per language, with the real engines (peft on transformers, llama.cpp serving the GGUF
LoRA parts, SQL registry): the per-language layout trains a part for the language with enough
rows and none for the one without; the part changes what the model writes in its language and the
drafts name the set; an article in a language without a part gets the base model's text and no
adapter; a rollback from the set to a joint adapter (an old record among them) and back works."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from briefing import GenerationParams, Summarizer
from briefing.tuning.data import Snapshot, build_snapshot
from briefing.tuning.layouts import Trained
from briefing.tuning.pipeline import Tuner
from briefing.tuning.registry import AdapterRecord, new_adapter_id
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.service import Service
from server.tuning import build_tuner
from tests.service import TINY_LORA as TINY
from tests.service import demo_service, title_examples

pytestmark = pytest.mark.slow
PROMPT = "article-one-sentence"
GREEDY = GenerationParams(max_tokens=48)


@dataclass
class Tuned:
    service: Service
    tuner: Tuner
    snapshot: Snapshot
    trained: Trained
    record: AdapterRecord
    english: list[str]
    bokmal: list[str]


@pytest.fixture(scope="module")
def tuned(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    model_cache: Path,
) -> Iterator[Tuned]:
    """Five English and two Bokmål demo articles; title targets for four English ones and one
    Bokmål one, so that with two examples needed only English gets a part."""
    from briefing import GeneratorConfig, make_generator

    data_dir = tmp_path_factory.mktemp("layouts")
    english = [a for a in demo_articles if a.language == "en"][:5]
    bokmal = [a for a in demo_articles if a.language == "nb"][:2]
    generator = make_generator(GeneratorConfig(backend="llamacpp", threads=2, timeout_s=600))
    url = f"sqlite:///{data_dir / 'briefing.db'}"
    articles = [*english, *bokmal]
    with demo_service(data_dir, url, embedder, chunker, articles, generator) as (settings, service):
        settings = replace(settings, llm=replace(settings.llm, cache_dir=model_cache))
        summarizer = service.summarizer
        requests = summarizer.article_requests([a.id for a in [*english[:4], bokmal[0]]], PROMPT)
        rows = title_examples(summarizer, requests)
        snapshot = build_snapshot(rows, [], {"test": "title targets, two languages"}, eval_share=0.0)
        config = replace(settings.tune, train=TINY, min_examples=2, preference=False)
        assert config.layout == "per-language"  # the default
        tuner = replace(build_tuner(service, settings, config), config=config)
        record, trained = tuner.train(snapshot)
        yield Tuned(
            service, tuner, snapshot, trained, record, [a.id for a in english], [a.id for a in bokmal]
        )


def _written(summarizer: Summarizer, article_id: str, adapter: str | None) -> str:
    """What the generator writes for the article as `adapter` would (a set: its language's part)."""
    (request,) = summarizer.article_requests([article_id], PROMPT)
    name = summarizer.generator_adapter(request, adapter)
    (completion,) = summarizer.generator.generate([summarizer.chat(request)], GREEDY, name)
    return completion.text


def test_a_part_is_trained_for_the_language_with_enough_rows_and_none_for_the_other(tuned: Tuned) -> None:
    record, trained = tuned.record, tuned.trained
    assert trained.languages == ("en",) and trained.parts["en"].examples == 4
    assert record.hyper["layout"] == "per-language" and record.hyper["languages"] == ["en"]
    folder = tuned.tuner.workspace.adapters / record.path
    assert sorted(p.name for p in folder.iterdir()) == ["en"]  # no Bokmål part
    assert (folder / "en" / "adapter.gguf").is_file() and (
        folder / "en" / "adapter" / "adapter_config.json"
    ).is_file()
    assert trained.parts["en"].adapter_dir.parent.name.endswith("-sft-en")  # its own run folder


def test_the_part_writes_its_language_and_the_base_model_writes_the_other(tuned: Tuned) -> None:
    summarizer, record = tuned.service.summarizer, tuned.record
    tuned.tuner.outcomes(record, [])  # serves it: llama.cpp loads the English part
    assert summarizer.writer("en", record.id) == record.id and summarizer.writer("nb", record.id) is None
    english, bokmal = tuned.english[0], tuned.bokmal[1]
    assert _written(summarizer, english, record.id) != _written(summarizer, english, None)
    (draft,) = summarizer.summarize([english], prompt=PROMPT, adapter=record.id, refresh=True)
    assert draft.adapter == record.id and draft.model.endswith(f"+{record.id}")
    (base,) = summarizer.summarize([bokmal], prompt=PROMPT, adapter=None, refresh=True)
    (routed,) = summarizer.summarize([bokmal], prompt=PROMPT, adapter=record.id, refresh=True)
    assert routed.adapter is None and routed.model == base.model and "+" not in routed.model
    assert routed.text == base.text and routed.id == base.id
    stored = tuned.service.summaries.get(draft.id)
    assert stored is not None and stored.adapter == record.id


def test_rollback_from_the_set_to_a_joint_adapter_and_back_and_an_old_joint_record_serves(
    tuned: Tuned,
) -> None:
    service, registry, record = tuned.service, tuned.tuner.registry, tuned.record
    assert service.adapters is not None
    # the same English weights as one joint adapter, recorded as before adapter sets (no layout)
    joint = tuned.tuner.register(tuned.snapshot, tuned.trained.parts["en"])
    old_hyper = {k: v for k, v in joint.hyper.items() if k not in ("layout", "languages")}
    old = registry.add(replace(joint, id=new_adapter_id(), hyper=old_hyper))
    english, bokmal = tuned.english[1], tuned.bokmal[1]
    registry.promote(old.id, "editor-in-chief")
    assert service.adapters.sync() == old.id
    by_old = {
        s.article_id: s for s in service.summarizer.summarize([english, bokmal], prompt=PROMPT, refresh=True)
    }
    assert by_old[english].adapter == old.id and by_old[bokmal].adapter == old.id  # joint: every language
    registry.promote(record.id, "job", role="job")
    assert service.adapters.sync() == record.id
    by_set = {
        s.article_id: s for s in service.summarizer.summarize([english, bokmal], prompt=PROMPT, refresh=True)
    }
    assert by_set[english].adapter == record.id and by_set[bokmal].adapter is None
    # known answer: the set's English part and the joint adapter are the same weights
    assert _written(service.summarizer, english, record.id) == _written(service.summarizer, english, old.id)
    restored = registry.rollback("editor-in-chief")
    assert restored is not None and restored.id == old.id and service.adapters.sync() == old.id
    (again,) = service.summarizer.summarize([bokmal], prompt=PROMPT, refresh=True)
    assert again.adapter == old.id
    registry.promote(record.id, "editor-in-chief")
    assert service.adapters.sync() == record.id
    (back,) = service.summarizer.summarize([bokmal], prompt=PROMPT, refresh=True)
    assert back.adapter is None
    registry.rollback("editor-in-chief")
    registry.rollback("editor-in-chief")
