"""The relation verifier: known answers for each synthetic error type in English and Bokmål
(no training needed), the atomic cache, and, when a trained verifier is cached under DATA_DIR,
the three wrong sentences of issue 17 rejected against their demo articles."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from briefing.synthetic import (
    article_pairs,
    article_sentences,
    flip_negation,
    join_subject_predicate,
    language_of,
    swap_date,
    swap_entity,
    swap_number,
    swap_roles,
    synthetic_pairs,
)
from briefing.verifier import Calibration, _write_atomically, is_trained, verifier_dir

ROOT = Path(__file__).resolve().parents[2]
EN = [
    "Mayor Ingrid Solheim said the terminal will cost 412 million kroner.",
    "The opposition, led by Eirik Vangen, wants a cheaper plan of 300 million kroner.",
    "The council votes on Wednesday 12th December.",
]
NB = [
    "Ordfører Ingrid Solheim sier terminalen vil koste 412 millioner kroner.",
    "Opposisjonen, ledet av Eirik Vangen, vil ha en billigere plan til 300 millioner kroner.",
    "Bystyret stemmer onsdag 12. desember.",
]


def rng() -> random.Random:
    return random.Random(3)


@pytest.mark.parametrize("sentences", [EN, NB], ids=["en", "nb"])
def test_swap_number_takes_another_number_of_the_article(sentences: list[str]) -> None:
    wrong = swap_number(sentences[0], sentences[1:], rng())
    assert wrong is not None and "412" not in wrong
    assert wrong.replace("300", "412") == sentences[0] or wrong != sentences[0]
    assert swap_number("Ingen tall her i det hele tatt.", sentences, rng()) is None


@pytest.mark.parametrize("sentences", [EN, NB], ids=["en", "nb"])
def test_swap_entity_takes_a_name_from_another_sentence(sentences: list[str]) -> None:
    wrong = swap_entity(sentences[0], sentences[1:], rng())
    assert wrong is not None and wrong != sentences[0]
    elsewhere = {"Eirik Vangen", "Opposisjonen", "The", "Bystyret", "The council", "December"}
    assert any(name in wrong and name not in sentences[0] for name in elsewhere), wrong
    assert len(wrong.split()) >= len(sentences[0].split()) - 2  # a name replaced, not a clause


def test_swap_date_changes_weekday_month_or_ordinal_in_both_languages() -> None:
    for sentence in (EN[2], NB[2]):
        seen = {swap_date(sentence, [], random.Random(seed)) for seed in range(20)}
        assert None not in seen and sentence not in seen
        assert len(seen) > 3  # weekday, month and day all change across seeds
    assert swap_date("He said so.", [], rng()) is None
    english = {swap_date("It opens on the 12th.", [], random.Random(s)) for s in range(10)}
    assert all(x is not None and x.endswith(("st.", "nd.", "rd.", "th.")) for x in english)
    assert "It opens on the 12th." not in english


def test_swap_date_keeps_the_ordinal_suffix_right() -> None:
    for seed in range(30):
        wrong = swap_date("The fire on the 20th was electrical.", [], random.Random(seed))
        assert wrong is not None
        day = wrong.split("the ")[1].split(" ")[0]
        number, suffix = int(day[:-2]), day[-2:]
        expected = "th" if 10 <= number <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
        assert suffix == expected, wrong


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        (
            "Vestkyst Hospital Trust proposed the merger, and Havnby residents marched against it.",
            "Havnby proposed the merger, and Vestkyst Hospital Trust residents marched against it.",
        ),
        (
            "Vestkyst helseforetak foreslo sammenslåingen, og Havnby-beboere demonstrerte mot den.",
            "Havnby-beboere helseforetak foreslo sammenslåingen, og Vestkyst demonstrerte mot den.",
        ),
    ],
    ids=["en", "nb"],
)
def test_swap_roles_exchanges_the_first_two_names(sentence: str, expected: str) -> None:
    assert swap_roles(sentence, [], rng()) == expected
    assert swap_roles("The trust proposed it.", [], rng()) is None  # one name or none: no roles


@pytest.mark.parametrize("sentences", [EN, NB], ids=["en", "nb"])
def test_join_subject_predicate(sentences: list[str]) -> None:
    wrong = join_subject_predicate(sentences[0], sentences[1:2], rng())
    assert wrong is not None
    subject = sentences[0].split(" said")[0].split(" sier")[0]
    assert wrong.startswith(subject)
    assert wrong.endswith("300 millioner kroner." if sentences is NB else "300 million kroner.")
    assert join_subject_predicate(sentences[0], [], rng()) is None


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("The council has approved the plan.", "The council has not approved the plan."),
        ("The council has not approved the plan.", "The council has approved the plan."),
        ("The mayor isn't resigning.", "The mayor is resigning."),
        ("Bystyret har vedtatt planen.", "Bystyret har ikke vedtatt planen."),
        ("Bystyret har ikke vedtatt planen.", "Bystyret har vedtatt planen."),
    ],
)
def test_flip_negation(sentence: str, expected: str) -> None:
    assert flip_negation(sentence, [], rng()) == expected


def test_language_of() -> None:
    assert [language_of(s) for s in EN] == ["en"] * 3
    assert [language_of(s) for s in NB] == ["nb"] * 3


def test_article_pairs_are_deterministic_and_label_every_error_unsupported() -> None:
    first = article_pairs(EN + NB, random.Random(5), errors_per_sentence=2)
    assert first == article_pairs(EN + NB, random.Random(5), errors_per_sentence=2)
    assert {p.kind for p in first if p.label == 1} == {"supported"}
    for p in first:
        if p.label == 0 and p.kind != "unrelated":
            assert p.sentence not in p.evidence  # the error is not itself in the evidence
        if p.label == 1:
            assert p.sentence in p.evidence


def test_demo_pairs_cover_every_error_type_in_both_languages() -> None:
    articles = []
    for path in sorted((ROOT / "data" / "demo" / "articles").glob("*.jsonl")):
        articles += [article_sentences(json.loads(line)) for line in path.open(encoding="utf-8")]
    pairs = synthetic_pairs(articles[:60] + articles[-30:], seed=17)
    kinds = {(p.kind, p.language) for p in pairs}
    for kind in ("supported", "number", "entity", "date", "roles", "subject_predicate", "negation"):
        assert {(kind, "en"), (kind, "nb")} <= kinds, kind


def test_calibration_is_monotone_in_the_logit() -> None:
    c = Calibration(w_logit=1.2, w_text=2.0, bias=-1.5)
    assert c(-3.0, 0.8) < c(0.0, 0.8) < c(3.0, 0.8)
    assert 0.0 <= c(-1e6, 0.0) < 1e-10 and c(1e6, 1.0) == pytest.approx(1.0)


def test_calibration_never_weighs_support_against_a_sentence() -> None:
    from briefing.verifier import fit_calibration

    rng = random.Random(3)
    labels = [i % 2 for i in range(400)]
    logits = [(2.0 if y else -2.0) + rng.gauss(0, 1.0) for y in labels]
    # errors that keep the article's words: a higher text score among the wrong sentences
    texts = [0.7 + rng.gauss(0, 0.05) - 0.1 * y + 0.02 * x for y, x in zip(labels, logits, strict=True)]
    fitted = fit_calibration(logits, texts, labels, "known answer")
    assert fitted.w_text == 0.0 and fitted.w_logit > 0
    helpful = [0.5 + 0.2 * y + rng.gauss(0, 0.15) for y in labels]
    both = fit_calibration(logits, helpful, labels, "both help")
    assert both.w_text > 0 and both.w_logit > 0


def test_training_device_is_checked_where_it_is_configured() -> None:
    from briefing.verifier import TrainConfig

    assert TrainConfig().device == "cpu" and TrainConfig(device="cuda:0").device == "cuda:0"
    with pytest.raises(ValueError, match="verifier training device must be auto, cpu, cuda or cuda:N"):
        TrainConfig(device="gpu")


def test_cache_write_is_atomic(tmp_path: Path) -> None:
    out = tmp_path / "models" / "verifier"

    def good(folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        (folder / "training.json").write_text("{}")

    def crash(folder: Path) -> None:
        (folder / "config.json").write_text("half")
        raise RuntimeError("killed mid-write")

    _write_atomically(out, good)
    assert is_trained(out)
    with pytest.raises(RuntimeError):
        _write_atomically(out, crash)
    assert (out / "config.json").read_text() == "{}"  # the previous good one is kept
    assert [p.name for p in out.parent.iterdir()] == ["verifier"]  # no staging folder left


ISSUE_SENTENCES = [
    ("pol-0011", "Opposition leader Eirik Vangen: 126 million kroner reduction to 126 million"),
    ("pol-0016", "Vestkyst Hospital Trust is preparing for a march against maternity ward merger."),
    (
        "loc-0013",  # the date is invented; "12" is in the article (12 employees laid off)
        "The fire that destroyed Brekke Sjømat's warehouse on Nordkaia on December 12th was most "
        "likely caused by an electrical fault.",
    ),
]


def _cached_verifier() -> Path:
    """The service's verifier (`make verifier`), else the benchmark's (`make verifier-bench`)."""
    folder = verifier_dir(Path(os.environ.get("DATA_DIR", ROOT / "var")))
    for candidate in (folder, folder.with_name("verifier-bench")):
        if is_trained(candidate):
            return candidate
    pytest.skip(f"no trained verifier cached in {folder}: run `make verifier` (about 15 minutes)")


def _demo_article(article_id: str) -> str:
    for path in sorted((ROOT / "data" / "demo" / "articles").glob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            if row["id"] == article_id:
                return "\n\n".join(row[k] for k in ("title", "lead", "body"))
    raise LookupError(article_id)


@pytest.mark.parametrize(("article_id", "sentence"), ISSUE_SENTENCES, ids=[a for a, _ in ISSUE_SENTENCES])
def test_issue_sentences_are_rejected_by_the_relation_checker(article_id: str, sentence: str) -> None:
    from briefing.grounding import Evidence
    from briefing.verifier import CrossEncoderVerifier, RelationChecker
    from indexing import SentenceTransformerEmbedder

    checker = RelationChecker(SentenceTransformerEmbedder(), CrossEncoderVerifier(_cached_verifier()))
    article = _demo_article(article_id)
    true = article.split("\n\n")[1]  # the lead, which the article supports
    wrong, right = checker.check([sentence, true], [Evidence(article_id, article)])
    assert not wrong.supported, (wrong.score, wrong.missing)
    assert right.supported and right.score > wrong.score


def test_checker_name_is_validated_and_relation_falls_back_without_a_verifier(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from briefing.grounding import EmbeddingLexicalChecker
    from indexing import SentenceTransformerEmbedder
    from server.container import build_checker
    from server.settings import Settings

    env = {"DATA_DIR": str(tmp_path), "GROUNDING_LIKELIHOOD": "off"}
    assert Settings.from_env(env).grounding_checker == "embedding-lexical"
    with pytest.raises(ValueError, match="GROUNDING_CHECKER"):
        Settings.from_env({**env, "GROUNDING_CHECKER": "alignscore"})
    settings = Settings.from_env({**env, "GROUNDING_CHECKER": "relation"})
    with caplog.at_level("WARNING"):
        checker = build_checker(settings, SentenceTransformerEmbedder())
    assert isinstance(checker, EmbeddingLexicalChecker)
    assert "no trained verifier" in caplog.text


@pytest.fixture(scope="module")
def untrained_verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packaged MiniLM with a fresh one-logit head, saved as `train` saves: the checker's
    code path end to end, with no training (its scores mean nothing)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from briefing.verifier import TrainConfig, _save, base_model_path

    folder = verifier_dir(tmp_path_factory.mktemp("data"))
    folder.mkdir(parents=True)
    import torch

    source = str(base_model_path())
    torch.manual_seed(0)  # the fresh head's weights: not whatever earlier tests left the RNG at
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
    _save(model, AutoTokenizer.from_pretrained(source), folder, TrainConfig(), 0, None)
    return folder


def test_relation_checker_contract_and_missing_facts_veto(untrained_verifier: Path) -> None:
    from briefing.grounding import Evidence
    from briefing.verifier import Calibration, CrossEncoderVerifier, RelationChecker
    from indexing import SentenceTransformerEmbedder

    # A calibration that always says "supported" leaves the veto as the only way to fail.
    always = Calibration(w_logit=0.0, w_text=0.0, bias=10.0, fitted_on="test")
    checker = RelationChecker(
        SentenceTransformerEmbedder(), CrossEncoderVerifier(untrained_verifier), calibration=always
    )
    evidence = [Evidence("c1", EN[0]), Evidence("c2", " ".join(EN[1:]))]
    sentences = [
        EN[0],
        EN[0].replace("412", "512"),
        "Mayor Kari Nordmann said the terminal will cost 412 million kroner.",
    ]
    right, number, name = checker.check(sentences, evidence)
    # an untrained head's scores mean nothing, so which chunk it cites is not asserted
    assert right.supported and len(right.citations) == 1 and right.citations[0] in {"c1", "c2"}
    assert not number.supported and number.missing == ("512",)
    assert not name.supported and {"Kari", "Nordmann"} <= set(name.missing)
    assert checker.check([], evidence) == []
    nothing = checker.check([EN[0]], [])
    assert len(nothing) == 1 and not nothing[0].supported and nothing[0].score == 0.0


def test_relation_checker_is_built_when_a_verifier_is_cached(untrained_verifier: Path) -> None:
    from briefing.verifier import RelationChecker
    from indexing import SentenceTransformerEmbedder
    from server.container import build_checker
    from server.settings import Settings

    data_dir = untrained_verifier.parent.parent
    env = {"DATA_DIR": str(data_dir), "GROUNDING_LIKELIHOOD": "off", "GROUNDING_CHECKER": "relation"}
    assert isinstance(build_checker(Settings.from_env(env), SentenceTransformerEmbedder()), RelationChecker)
