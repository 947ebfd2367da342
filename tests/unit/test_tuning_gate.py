"""The evaluation gate (briefing/tuning/evaluate.py): known answers for the paired bootstrap, the
per-article metrics and the promote/refuse decision, and the serving path on two demo articles
with the real llama.cpp backend."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from briefing import (
    EmbeddingLexicalChecker,
    EvidenceRetriever,
    FileSummaryStore,
    GroundingConfig,
    Summarizer,
    split_sentences,
)
from briefing.llm import Generator, GeneratorConfig, UnknownAdapter, make_generator
from briefing.tuning import evaluate
from briefing.tuning.data import Example, as_chat, example
from briefing.tuning.evaluate import (
    Delta,
    GateRule,
    Outcome,
    decide,
    evaluate_summaries,
    metrics,
    paired_bootstrap,
    write_outputs,
)
from indexing import Article, Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder

NO_COSINE = GateRule(guardrails=("rouge_l", "support"))  # for the tests that load no embedding model
FIGURE = re.compile(r"[+-]\d\.\d{3} \(95% CI [+-]\d\.\d{3} to [+-]\d\.\d{3}\)")


# --- paired bootstrap -----------------------------------------------------------------------


def test_identical_inputs_differ_by_nothing() -> None:
    values = list(np.random.default_rng(1).random(50))
    assert paired_bootstrap(values, values) == Delta(0.0, 0.0, 0.0)


def test_a_constant_shift_is_measured_with_a_tight_interval() -> None:
    base = list(np.random.default_rng(2).random(80))
    delta = paired_bootstrap(base, [b + 0.1 for b in base])
    assert delta.mean == pytest.approx(0.1)
    assert delta.ci_low == pytest.approx(0.1) and delta.ci_high == pytest.approx(0.1)


def test_a_small_noisy_difference_is_not_significant() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(60)
    delta = paired_bootstrap(list(base), list(base + 0.01 + rng.normal(0, 0.3, 60)))
    assert delta.ci_low < 0 < delta.ci_high
    assert delta.ci_low < delta.mean < delta.ci_high


def test_a_clear_difference_is_significant_and_pairing_removes_article_variance() -> None:
    # Articles differ far more from each other (0..1) than the two models differ on one article
    # (+0.05 ± 0.02): the paired interval sees the gain, an unpaired one could not.
    rng = np.random.default_rng(4)
    base = rng.random(40)
    delta = paired_bootstrap(list(base), list(base + rng.normal(0.05, 0.02, 40)))
    assert 0.03 < delta.ci_low < delta.mean < delta.ci_high < 0.07


def test_the_bootstrap_is_seeded_and_the_level_sets_the_width() -> None:
    rng = np.random.default_rng(5)
    base, candidate = list(rng.random(30)), list(rng.random(30))
    assert paired_bootstrap(base, candidate, seed=7) == paired_bootstrap(base, candidate, seed=7)
    assert paired_bootstrap(base, candidate, seed=7) != paired_bootstrap(base, candidate, seed=8)
    wide, narrow = paired_bootstrap(base, candidate, level=0.99), paired_bootstrap(base, candidate, level=0.8)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_bounding_the_memory_does_not_change_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    base, candidate = list(rng.random(200)), list(rng.random(200))
    whole = paired_bootstrap(base, candidate, n=500)
    monkeypatch.setattr(evaluate, "_BOOTSTRAP_CELLS", 200 * 7)  # 7 resamples at a time
    assert paired_bootstrap(base, candidate, n=500) == whole


@pytest.mark.parametrize(
    ("base", "candidate"), [([1.0, 2.0], [1.0]), ([], []), ([1.0, float("nan")], [1.0, 2.0])]
)
def test_unpaired_empty_or_nan_figures_are_refused(base: list[float], candidate: list[float]) -> None:
    with pytest.raises(ValueError):
        paired_bootstrap(base, candidate)


# --- metrics ----------------------------------------------------------------------------------


def outcome(n: int, *, generated: bool = True, text: str = "", reference: str = "", **fields: Any) -> Outcome:
    values: dict[str, Any] = {
        "example_id": f"ex-{n:03d}",
        "article_id": f"a-{n:03d}",
        "language": "en",
        "task": "article-one-sentence@1",
        "generated": generated,
        "text": text,
        "dropped": (),
        "support": 0.8,
        "reference": reference,
        "source_text": "",
    }
    return Outcome(**{**values, **fields})


def test_rouge_keeps_bokmaal_letters_and_stems_only_english() -> None:
    bokmaal = outcome(
        1, text="Bøndene får mer støtte.", reference="Bøndene får mer støtte i år.", language="nb"
    )
    english = outcome(2, text="Ships sailed.", reference="The ship sails.")
    as_bokmaal = replace(english, language="nb")
    figures = metrics([bokmaal, english, as_bokmaal], None)
    assert figures["rouge1"][0] == pytest.approx(0.8)  # 4 of 4 shown words in a 6-word reference
    assert figures["rouge1"][1] == pytest.approx(0.8)  # ship and sail match once stemmed: P 1, R 2/3
    assert figures["rouge1"][2] == 0.0  # no stemming outside English
    assert figures["rouge2"][1] == pytest.approx(2 / 3)  # "ship sail" is one of the reference's two pairs
    assert figures["rouge_l"][0] == pytest.approx(0.8)


def test_metrics_are_per_article_and_known() -> None:
    source = "The council approved the ferry terminal on Wednesday by 27 votes to 22."
    copied = outcome(1, generated=False, text=source, reference=source, source_text=source, support=1.0)
    novel = outcome(2, text="Havnby gets its new quay.", reference="A new quay.", source_text=source)
    figures = metrics([copied, novel], None)
    assert figures["generated"] == [0.0, 1.0]
    assert figures["novel_bigrams"] == [0.0, 1.0]
    assert figures["support"] == [1.0, 0.8]
    assert figures["rouge_l"][0] == pytest.approx(1.0) and 0 < figures["rouge_l"][1] < 1
    assert "cosine" not in figures  # no embedder: not measured, rather than made up
    assert list(figures) == ["generated", "rouge1", "rouge2", "rouge_l", "novel_bigrams", "support"]


@pytest.mark.slow
def test_cosine_compares_the_shown_text_with_its_reference(embedder: SentenceTransformerEmbedder) -> None:
    same = outcome(
        1, text="The council approved the ferry terminal.", reference="Council approves ferry terminal."
    )
    other = outcome(
        2, text="The striker scored twice in the cup final.", reference="Council approves ferry terminal."
    )
    cosine = metrics([same, other], embedder)["cosine"]
    assert cosine[0] > 0.8 and cosine[1] < 0.3


# --- the decision -----------------------------------------------------------------------------

ARTICLES = 40


@pytest.fixture(scope="module")
def english(demo_articles: list[Article]) -> list[Article]:
    return [a for a in demo_articles if a.language == "en" and a.lead][:ARTICLES]


def outcomes(articles: Sequence[Article], generated: Sequence[int], shift: int = 0) -> list[Outcome]:
    """Article i shows the lead of article i + `shift` (0: its own), generated where i is in
    `generated`, against its title as the reference."""
    n = len(articles)
    return [
        outcome(
            i,
            generated=i in generated,
            text=articles[(i + shift) % n].lead,
            reference=a.title,
            source_text=a.body,
            support=0.7 + 0.01 * (i % 10),
        )
        for i, a in enumerate(articles)
    ]


def test_a_clearly_better_primary_with_flat_guardrails_is_promoted(english: list[Article]) -> None:
    base = outcomes(english, generated=range(6))
    better = outcomes(english, generated=range(30))
    report = decide(base, better, None, NO_COSINE)
    assert report.promote and report.n == ARTICLES
    assert report.base["generated"] == pytest.approx(0.15) and report.candidate["generated"] == pytest.approx(
        0.75
    )
    assert report.deltas["generated"].ci_low > 0.4
    assert report.deltas["rouge_l"] == Delta(0.0, 0.0, 0.0)
    assert report.reasons[0].startswith("Promote: on 40 articles")
    assert all(FIGURE.search(r) for r in report.reasons[1:]) and len(report.reasons) == 4
    assert "from 0.150 to 0.750: +0.600" in report.reasons[1]
    # pairs by example id, not by position
    assert decide(base, better[::-1], None, NO_COSINE) == report


def test_a_gain_within_the_noise_is_refused(english: list[Article]) -> None:
    base = outcomes(english, generated=range(0, 40, 2))  # 20 articles, alternate ones
    luckier = outcomes(english, generated=[*range(1, 40, 2), 0, 2])  # 22 articles, mostly others
    report = decide(base, luckier, None, NO_COSINE)
    assert not report.promote
    assert report.deltas["generated"].mean == pytest.approx(0.05)
    assert report.deltas["generated"].ci_low < 0
    assert "did not improve beyond its CI" in report.reasons[0]
    assert "the interval includes zero" in report.reasons[1]


def test_held_out_articles_without_a_reference_count_for_the_primary_only(english: list[Article]) -> None:
    """Where nothing passed for most held-out articles, they still measure the generated share;
    ROUGE is measured on the referenced ones, and without two of those it says so."""
    base = outcomes(english, generated=range(6))
    better = outcomes(english, generated=range(30))
    bare = {o.example_id for o in base[4:]}  # 36 of 40 held-out articles have no reference

    def unreferenced(side: list[Outcome]) -> list[Outcome]:
        return [replace(o, reference="") if o.example_id in bare else o for o in side]

    report = decide(unreferenced(base), unreferenced(better), None, NO_COSINE)
    assert report.promote and report.n == ARTICLES
    assert report.candidate["generated"] == pytest.approx(0.75)  # over all 40
    assert report.deltas["rouge_l"] == Delta(0.0, 0.0, 0.0)  # over the 4 referenced
    none = [replace(o, reference="") for o in base], [replace(o, reference="") for o in better]
    report = decide(*none, None, NO_COSINE)
    assert report.promote and "rouge_l" not in report.deltas
    assert any("ROUGE-L F1 was not measured" in r for r in report.reasons)


def test_the_gate_needs_an_article() -> None:
    with pytest.raises(ValueError, match="no outcomes"):
        decide([], [], None, NO_COSINE)


@pytest.mark.slow
def test_a_model_that_writes_about_other_articles_is_refused(
    english: list[Article], embedder: SentenceTransformerEmbedder
) -> None:
    # As if trained on shuffled targets: it generates for most articles, but the text belongs to
    # another article. The primary figure improves; the guardrails catch it.
    base = outcomes(english, generated=range(6))
    shuffled = outcomes(english, generated=range(30), shift=1)
    report = decide(base, shuffled, embedder)
    assert not report.promote
    assert report.deltas["generated"].ci_low > 0
    assert report.deltas["cosine"].ci_high < 0 and report.deltas["rouge_l"].ci_high < 0
    assert "cosine to the reference got significantly worse" in report.reasons[0]
    cosine = next(r for r in report.reasons if r.startswith("The MiniLM cosine"))
    assert FIGURE.search(cosine) and cosine.endswith("significantly worse.")
    assert json.loads(json.dumps(report.to_json()))["deltas"]["cosine"]["ci_high"] < 0


def test_different_example_sets_are_an_error_naming_the_ids(english: list[Article]) -> None:
    base = outcomes(english, generated=range(6))
    candidate = [*outcomes(english, generated=range(6))[2:], outcome(99)]
    with pytest.raises(
        ValueError, match=r"missing from the candidate 2 \(ex-000, ex-001\).*base 1 \(ex-099\)"
    ):
        decide(base, candidate, None, NO_COSINE)
    with pytest.raises(ValueError, match="twice"):
        decide([*base, base[0]], [*base, base[0]], None, NO_COSINE)


def test_a_rule_that_needs_cosine_needs_an_embedder(english: list[Article]) -> None:
    base = outcomes(english, generated=range(6))
    with pytest.raises(ValueError, match="cosine needs an embedder"):
        decide(base, base, None)


def test_outputs_put_base_and_candidate_side_by_side(english: list[Article], tmp_path: Path) -> None:
    base = [replace(o, dropped=("Næringa får 3 milliarder.",)) for o in outcomes(english, generated=range(6))]
    candidate = outcomes(english, generated=range(30))
    path = write_outputs(tmp_path / "gate" / "ad-1.jsonl", base, candidate[::-1])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r["example_id"] for r in rows] == [o.example_id for o in base]
    assert rows[10]["base"]["generated"] is False and rows[10]["candidate"]["generated"] is True
    assert rows[0]["base"]["dropped"] == ["Næringa får 3 milliarder."]
    assert rows[0]["reference"] == english[0].title and rows[0]["candidate"]["text"] == english[0].lead
    assert "Næringa" in path.read_text(encoding="utf-8")  # readable, not \u-escaped
    with pytest.raises(ValueError):
        write_outputs(tmp_path / "bad.jsonl", base, candidate[1:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gate"]  # nothing half-written


# --- the serving path, for real ---------------------------------------------------------------

SERVED = ("pol-0011", "nob-0001")  # one English, one Bokmål article


@pytest.fixture(scope="module")
def two(
    demo_articles: list[Article], embedder: SentenceTransformerEmbedder, chunker: Chunker
) -> Iterator[Indexer]:
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    indexer = Indexer(index, embedder, chunker)
    indexer.ingest([a for a in demo_articles if a.id in SERVED])
    yield indexer
    index.close()


@pytest.fixture(scope="module")
def generator() -> Generator:
    """llama.cpp on one thread with a generous time limit: on a shared 2-core machine two threads
    ran 7x slower than one (147 s against 20 s for 128 tokens at load 9), and a generation cut
    by the limit would make the outputs depend on the machine's load."""
    return make_generator(GeneratorConfig(backend="llamacpp", threads=1, timeout_s=600))


@pytest.fixture(scope="module")
def summarizer(two: Indexer, generator: Generator, tmp_path_factory: pytest.TempPathFactory) -> Summarizer:
    # the checker without its likelihood signal: the gate takes whatever check the service runs
    return Summarizer(
        generator,
        EvidenceRetriever(two.index, two.embedder),
        EmbeddingLexicalChecker(two.embedder),
        FileSummaryStore(tmp_path_factory.mktemp("summaries")),
    )


def references(summarizer: Summarizer) -> tuple[list[Any], list[Example]]:
    requests = summarizer.article_requests(list(SERVED))
    examples = [
        example(
            "reference",
            r.template.id,
            r.record.article.language,
            [r.record.article.id],
            as_chat(summarizer.chat(r)),
            r.record.article.title,
            {},
        )
        for r in requests
    ]
    return requests, examples


@pytest.mark.slow
def test_the_gate_sees_what_a_reader_would_be_shown(summarizer: Summarizer) -> None:
    requests, examples = references(summarizer)
    got = evaluate_summaries(summarizer, requests, examples, None)
    assert [(o.example_id, o.article_id, o.language) for o in got] == [
        (e.id, e.article_id, e.language) for e in examples
    ]
    assert [o.task for o in got] == ["article@1", "article-nb@1"]
    for result, request in zip(got, requests, strict=True):
        # the service writing the same article (greedy, so the same text)
        [shown] = summarizer.summarize([result.article_id], refresh=True)
        assert result.text == shown.text and result.generated == (not shown.extractive)
        assert result.dropped == tuple(s.text for s in shown.dropped)
        assert 0.0 <= result.support <= 1.0
        if result.generated and not result.dropped:
            assert result.support >= GroundingConfig().threshold
        assert split_sentences(request.record.article.lead)[0] in result.source_text
    # the same outcomes on both sides: every figure measured (cosine too), every difference zero
    report = decide(got, got, summarizer.retriever.embedder)
    assert not report.promote and all(d == Delta(0.0, 0.0, 0.0) for d in report.deltas.values())
    assert set(report.deltas) == {
        "generated",
        "rouge1",
        "rouge2",
        "rouge_l",
        "cosine",
        "novel_bigrams",
        "support",
    }


@pytest.mark.slow
def test_an_adapter_the_backend_does_not_serve_is_an_error(summarizer: Summarizer) -> None:
    requests, examples = references(summarizer)
    with pytest.raises(UnknownAdapter):
        evaluate_summaries(summarizer, requests[:1], examples[:1], "ad-missing")
    with pytest.raises(ValueError, match="its request is for"):
        evaluate_summaries(summarizer, requests, examples[::-1], None)


@pytest.mark.slow
def test_a_generation_that_times_out_counts_as_the_fallback(summarizer: Summarizer) -> None:
    requests, examples = references(summarizer)
    slow = make_generator(GeneratorConfig(backend="llamacpp", threads=1, timeout_s=0.001))
    timed_out = Summarizer(slow, summarizer.retriever, summarizer.checker, summarizer.store)
    [result] = evaluate_summaries(timed_out, requests[:1], examples[:1], None)
    assert not result.generated and result.support == 0.0
    assert result.text == split_sentences(requests[0].record.article.lead)[0]  # the article's lead
