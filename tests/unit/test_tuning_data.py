"""Fine-tuning data: fixed splits, content-addressed snapshots written atomically, and the rows
drawn from editor decisions, grounded self-training and checked references (known answers on a
few demo articles, the real embedding model and grounding checker, Qdrant in memory)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from briefing import EmbeddingLexicalChecker, EvidenceRetriever, GroundingConfig, Summarizer
from briefing.llm import Chat, Completion, GenerationParams, Generator
from briefing.summaries import InMemorySummaryStore, Status, Summary, SummarySentence
from briefing.summarize import Request
from briefing.tuning import snapshots as snapshot_module
from briefing.tuning.data import Example, PreferencePair, build_snapshot, example, pair, split_of
from briefing.tuning.self_training import self_training
from briefing.tuning.snapshots import SnapshotError, list_snapshots, load_snapshot, write_snapshot
from briefing.tuning.sources import editor_rows, novel_bigrams, reference_rows
from indexing import Article, Indexer
from tests.factories import make_article

THRESHOLD = GroundingConfig().threshold
CHAT = (("system", "You summarize."), ("user", "Summarize it."))


# --- splits -----------------------------------------------------------------------------------


def test_split_of_has_known_buckets_and_is_stable_across_processes() -> None:
    # sha256("tuning-v1␟a-1") starts in bucket 0.0396, "a-2" 0.1033, "pol-0001" 0.9785
    assert [split_of(a) for a in ("a-1", "a-2", "pol-0001")] == ["eval", "eval", "train"]
    assert split_of("a-2", eval_share=0.05) == "train" and split_of("a-1", eval_share=0.05) == "eval"
    # another salt, other buckets: 0.5673 and 0.0797
    assert (split_of("a-1", salt="another"), split_of("pol-0001", salt="another")) == ("train", "eval")
    code = "from briefing.tuning.data import split_of; print([split_of(f'x-{n}') for n in range(200)])"
    env = {"PYTHONHASHSEED": "123", "PATH": ""}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert other.stdout.strip() == str([split_of(f"x-{n}") for n in range(200)])


def test_split_of_gives_about_the_eval_share() -> None:
    ids = [f"article-{n}" for n in range(10_000)]
    for share in (0.2, 0.5):
        measured = sum(split_of(a, share) == "eval" for a in ids) / len(ids)
        assert abs(measured - share) < 0.015, (share, measured)


# --- snapshots --------------------------------------------------------------------------------


def row(
    article: str, target: str = "A target.", *, also: Sequence[str] = (), source: str = "editor"
) -> Example:
    return example(
        source, "article@1", "en", (article, *also), CHAT, target, {"content_hash": f"h-{article}"}
    )


def preference(article: str, *, also: Sequence[str] = ()) -> PreferencePair:
    return pair("editor", "article@1", "en", (article, *also), CHAT, "Good.", "Bad.", {"content_hash": "h"})


TRAIN_IDS = [a for a in (f"t-{n}" for n in range(60)) if split_of(a) == "train"][:6]
EVAL_IDS = [a for a in (f"t-{n}" for n in range(60)) if split_of(a) == "eval"][:3]


def rows() -> tuple[list[Example], list[PreferencePair]]:
    examples = [row(a) for a in TRAIN_IDS + EVAL_IDS] + [row(TRAIN_IDS[0], "Another target.", source="self")]
    pairs = [preference(a) for a in TRAIN_IDS[:2] + EVAL_IDS[:1]]
    return examples, pairs


def test_a_snapshot_is_named_by_its_rows_and_filters_not_their_order() -> None:
    examples, pairs = rows()
    first = build_snapshot(examples, pairs, {"threshold": 0.6})
    again = build_snapshot(list(reversed(examples)) + examples[:2], list(reversed(pairs)), {"threshold": 0.6})
    assert first.id == again.id and first.id.startswith("ds-") and len(first.id) == 15
    assert (first.train, first.eval, first.pairs) == (again.train, again.eval, again.pairs)
    assert build_snapshot(examples, pairs, {"threshold": 0.65}).id != first.id
    assert build_snapshot(examples[:-1], pairs, {"threshold": 0.6}).id != first.id
    assert first.sources == {"editor": len(TRAIN_IDS + EVAL_IDS) + len(pairs), "self": 1}
    assert first.counts["train"] == len(TRAIN_IDS) + 1 and first.counts["eval"] == len(EVAL_IDS)
    assert first.counts["by_task"] == {"article@1": {"train": 7, "eval": 3, "pairs": 2}}


def test_the_eval_split_is_never_trained_on() -> None:
    examples, pairs = rows()
    # an update written from a train article and an eval article is an eval row
    mixed = row(TRAIN_IDS[1], "Covers both.", also=(EVAL_IDS[0],))
    snapshot = build_snapshot([*examples, mixed], [*pairs, preference(TRAIN_IDS[2], also=(EVAL_IDS[1],))], {})
    trained = {a for r in snapshot.rows() if r not in snapshot.eval for a in r.article_ids}
    held = {a for r in snapshot.eval for a in r.article_ids}
    assert mixed in snapshot.eval and mixed not in snapshot.train
    assert trained.isdisjoint(EVAL_IDS) and set(EVAL_IDS) <= held
    assert {p.article_id for p in snapshot.pairs} == set(TRAIN_IDS[:2])
    assert snapshot.filters["eval_pairs_dropped"] == 2


def test_excluded_articles_never_appear_even_through_article_ids() -> None:
    examples, pairs = rows()
    retracted, erased = TRAIN_IDS[0], EVAL_IDS[0]
    update = row(TRAIN_IDS[3], "An update citing the retracted one.", also=(retracted,))
    cited = preference(TRAIN_IDS[4], also=(retracted,))
    snapshot = build_snapshot([*examples, update], [*pairs, cited], {}, excluded_articles={retracted, erased})
    everything = {a for r in snapshot.rows() for a in (r.article_id, *r.article_ids)}
    assert retracted not in everything and erased not in everything
    assert update not in snapshot.train and cited not in snapshot.pairs
    # examples: TRAIN_IDS[0]'s two, the update, EVAL_IDS[0]'s; pairs: theirs and the citing one
    assert snapshot.filters["excluded"] == {"examples": 4, "pairs": 3}


def test_a_snapshot_round_trips_and_writing_it_again_changes_nothing(tmp_path: Path) -> None:
    examples, pairs = rows()
    snapshot = build_snapshot(examples, pairs, {"checker": "embedding-lexical", "margins": [0.05, 0.2]})
    folder = write_snapshot(snapshot, tmp_path)
    assert folder == tmp_path / "snapshots" / snapshot.id
    assert sorted(p.name for p in folder.iterdir()) == [
        "eval.jsonl",
        "manifest.json",
        "pairs.jsonl",
        "train.jsonl",
    ]
    loaded = load_snapshot(tmp_path, snapshot.id)
    assert loaded == snapshot
    assert loaded.train[0].messages() == [{"role": r, "content": c} for r, c in CHAT]
    stamp = (folder / "train.jsonl").stat().st_mtime_ns
    assert write_snapshot(build_snapshot(examples, pairs, snapshot.filters), tmp_path) == folder
    assert (folder / "train.jsonl").stat().st_mtime_ns == stamp
    assert [m["id"] for m in list_snapshots(tmp_path)] == [snapshot.id]


def test_snapshots_are_listed_newest_first(tmp_path: Path) -> None:
    examples, pairs = rows()
    old = replace(build_snapshot(examples, pairs, {"n": 1}), created_at="2026-01-01T00:00:00+00:00")
    new = replace(build_snapshot(examples, pairs, {"n": 2}), created_at="2026-02-01T00:00:00+00:00")
    write_snapshot(old, tmp_path)
    write_snapshot(new, tmp_path)
    assert [m["id"] for m in list_snapshots(tmp_path)] == [new.id, old.id]
    assert list_snapshots(tmp_path / "nothing") == []


def test_a_crash_mid_write_leaves_no_snapshot_under_its_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = build_snapshot(*rows(), {})
    real = snapshot_module._write_jsonl
    written: list[Path] = []

    def crash_after_one(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
        if written:
            raise OSError("disk full")
        written.append(path)
        return real(path, rows)

    monkeypatch.setattr(snapshot_module, "_write_jsonl", crash_after_one)
    with pytest.raises(OSError, match="disk full"):
        write_snapshot(snapshot, tmp_path)
    assert written and not written[0].exists()  # the staging folder went with it
    assert list((tmp_path / "snapshots").iterdir()) == [] and list_snapshots(tmp_path) == []
    with pytest.raises(SnapshotError, match=f"no dataset snapshot '{snapshot.id}'"):
        load_snapshot(tmp_path, snapshot.id)
    monkeypatch.setattr(snapshot_module, "_write_jsonl", real)
    assert load_snapshot(tmp_path, write_snapshot(snapshot, tmp_path).name) == snapshot  # a retry succeeds


def test_a_tampered_snapshot_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    snapshot = build_snapshot(*rows(), {"threshold": 0.6})
    folder = write_snapshot(snapshot, tmp_path)
    train = folder / "train.jsonl"
    original = train.read_text(encoding="utf-8")
    train.write_text(original.replace("A target.", "An invented target.", 1), encoding="utf-8")
    with pytest.raises(SnapshotError, match=r"train.jsonl was changed after it was written"):
        load_snapshot(tmp_path, snapshot.id)
    train.write_text(original, encoding="utf-8")
    # the manifest's filters edited: the rows and filters no longer give the id
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["filters"]["threshold"] = 0.1
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(SnapshotError, match=rf"snapshot {snapshot.id} .* does not match its id"):
        load_snapshot(tmp_path, snapshot.id)


def test_novel_bigrams_known_answers() -> None:
    source = "The council approved the new ferry terminal on Wednesday."
    assert novel_bigrams("The council approved the new ferry terminal.", source) == 0.0
    assert novel_bigrams("THE COUNCIL approved it", source) == pytest.approx(1 / 3)  # "approved it"
    assert novel_bigrams("Councillors backed a terminal.", source) == 1.0
    assert novel_bigrams("the council the council", source) == pytest.approx(1 / 3)  # "council the"
    assert novel_bigrams("Approved.", source) == 0.0 and novel_bigrams("", source) == 0.0
    assert novel_bigrams("Kaia på Nordkaia stengt", "Nordkaia stengt") == pytest.approx(2 / 3)


# --- rows from the summarizer (real embedder, checker and index) ------------------------------


class Scripted:
    """A test double for the `Generator` protocol that answers `texts[seed]`: it tests the
    filter logic on known texts (the real backend runs in the last test)."""

    model = "scripted"

    def __init__(self, texts: Mapping[int, str] | None = None) -> None:
        self.texts = dict(texts or {})
        self.calls: list[tuple[int, float, str | None]] = []

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        self.calls.append((params.seed, params.temperature, adapter))
        return [Completion(self.texts[params.seed], self.model, 10, 10, 0.0, "stop") for _ in chats]

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        yield from self.generate([chat], params, adapter)[0].text

    def ready(self) -> bool:
        return True


def pick(articles: list[Article], *ids: str) -> list[Article]:
    return [a for a in articles if a.id in ids]


@pytest.fixture
def newsroom(memory_indexer: Indexer, demo_articles: list[Article]) -> Indexer:
    """Two demo articles (an English and a Bokmål one) in an in-memory index."""
    assert memory_indexer.ingest(pick(demo_articles, "loc-0001", "nob-0001")).ok
    return memory_indexer


def summarizer_on(indexer: Indexer, generator: Generator) -> Summarizer:
    return Summarizer(
        generator,
        EvidenceRetriever(indexer.index, indexer.embedder),
        EmbeddingLexicalChecker(indexer.embedder),  # the shipped checker, without its LLM signal
        InMemorySummaryStore(),
    )


FIRE_GOOD = (
    "- Fire crews fought through the night to stop the blaze at a warehouse on Nordkaia from spreading.\n"
    "- The warehouse of seafood exporter Brekke Sjømat was destroyed, but no one was injured."
)
FIRE_LEAD = (
    "- Firefighters worked through the night to stop a fire at a seafood company's warehouse on Nordkaia "
    "from spreading.\n- No one was injured."
)
FIRE_INVENTED = "- Mayor Kari Olsen said 300 people were evacuated from Havnby on Tuesday."
AT = datetime(2026, 11, 20, tzinfo=UTC)


def drafted(summarizer: Summarizer, request: Request, text: str) -> Summary:
    return summarizer.draft(request, Completion(text, "scripted", 10, 10, 0.0, "stop"))


@pytest.mark.slow
def test_editor_decisions_become_targets_pairs_and_negatives(newsroom: Indexer) -> None:
    summarizer = summarizer_on(newsroom, Scripted())
    [fire] = summarizer.article_requests(["loc-0001"])
    [road] = summarizer.article_requests(["nob-0001"])
    approved = drafted(summarizer, fire, FIRE_GOOD).with_status(Status.APPROVED, "ed", AT)
    rejected = replace(drafted(summarizer, fire, FIRE_GOOD.split("\n")[1]), id="other").with_status(
        Status.REJECTED, "ed", AT, reason="thin"
    )
    road_draft = drafted(
        summarizer, road, "- Fylkesvei 512 ved Skarvneset er stengt på grunn av fare for steinsprang."
    )
    edit = "Fylkesvei 512 er stengt etter at en geolog fant nye sprekker i fjellsiden."
    edited = road_draft.edited((SummarySentence(edit, 0.9, ()),), "ed", AT)
    unpaired = road_draft.with_status(Status.REJECTED, "ed", AT)  # no reviewed text of its prompt
    lone = replace(unpaired, id="lone", prompt="article-one-sentence-nb@1")
    draft = replace(approved, id="draft", status=Status.DRAFT)
    examples, pairs, stats = editor_rows([approved, rejected, edited, lone, draft], summarizer)

    assert {(e.article_id, e.task, e.language, e.target) for e in examples} == {
        ("loc-0001", "article@1", "en", FIRE_GOOD),
        ("nob-0001", "article-nb@1", "nb", f"- {edit}"),
    }
    fire_row = next(e for e in examples if e.article_id == "loc-0001")
    assert fire_row.chat == tuple((m["role"], m["content"]) for m in summarizer.chat(fire))
    assert fire_row.meta["reviewer"] == "ed" and fire_row.meta["content_hash"] == fire.record.content_hash
    assert {(p.article_id, p.chosen, p.rejected) for p in pairs} == {
        (
            "nob-0001",
            f"- {edit}",
            "- Fylkesvei 512 ved Skarvneset er stengt på grunn av fare for steinsprang.",
        ),
        ("loc-0001", FIRE_GOOD, "- " + FIRE_GOOD.split("\n- ")[1]),
    }
    assert stats["approved"] == 1 and stats["edited"] == 1 and stats["rejected"] == 2
    assert stats["rejected_unpaired"] == 1 and stats["undecided"] == 1 and stats["stale_version"] == 0

    # the fire article is updated in place: its decisions are of a version no longer served
    fire_article = newsroom.index.get(["loc-0001"])["loc-0001"].article
    changed = fire_article.model_copy(
        update={"body": fire_article.body + "\n\nThe cause was an electrical fault."}
    )
    assert newsroom.ingest([changed]).ok
    examples, pairs, stats = editor_rows([approved, rejected, edited], summarizer)
    assert {e.article_id for e in examples} == {"nob-0001"} and stats["stale_version"] == 2


@pytest.mark.slow
def test_an_approved_story_update_is_rebuilt_from_its_basis(memory_indexer: Indexer) -> None:
    day = (
        "Kvalsund Verft will cut {} jobs, the chief executive told the union on {}. The yard builds ferries."
    )
    articles = [
        make_article(
            f"k-{n}",
            title=f"Kvalsund Verft job cuts, day {n}",
            lead="",
            body=day.format(j, d),
            published_at=h,
        )
        for n, h, j, d in ((1, 0, 200, "Monday"), (2, 24, 140, "Tuesday"), (3, 72, 60, "Thursday"))
    ]
    assert memory_indexer.ingest(articles).ok
    summarizer = summarizer_on(memory_indexer, Scripted())
    request = summarizer.update_request("k-3", ["k-1"])
    assert request is not None
    request = summarizer.with_evidence(request)
    update = drafted(
        summarizer, request, "- Kvalsund Verft will now cut 60 jobs, the chief executive told the union."
    )
    assert update.kind == "update" and update.basis == ("k-1", "k-2")
    examples, _, stats = editor_rows([update.with_status(Status.APPROVED, "ed", AT)], summarizer)
    [rebuilt] = examples
    assert rebuilt.task == "update@2" and rebuilt.article_ids == ("k-3", "k-2", "k-1")
    assert rebuilt.chat == tuple((m["role"], m["content"]) for m in summarizer.chat(request))
    assert (
        rebuilt.target.startswith("- Kvalsund Verft will now cut 60 jobs")
        and stats["update_not_rebuilt"] == 0
    )


@pytest.mark.slow
def test_self_training_keeps_grounded_novel_candidates_and_pairs_best_with_worst(newsroom: Indexer) -> None:
    mixed = FIRE_GOOD.split("\n")[0] + "\n" + FIRE_INVENTED
    texts = {1: FIRE_LEAD, 2: FIRE_GOOD, 3: mixed, 4: FIRE_INVENTED}
    generator = Scripted(texts)
    summarizer = summarizer_on(newsroom, generator)
    requests = summarizer.article_requests(["loc-0001"])
    examples, pairs, stats = self_training(summarizer, requests, threshold=THRESHOLD, adapter="ad-1")

    assert generator.calls == [(seed, 0.8, "ad-1") for seed in (1, 2, 3, 4)]
    [kept] = examples
    assert kept.source == "self" and kept.target == FIRE_GOOD and kept.meta["seed"] == 2
    assert kept.meta["novel_bigrams"] >= 0.2 and kept.meta["support"] >= THRESHOLD + 0.05
    assert stats["rejected"] == {"copy": 1, "dropped": 1, "extractive": 1}
    assert (stats["sampled"], stats["kept"], stats["kept_share"], stats["pairs"]) == (4, 1, 0.25, 1)
    [best_worst] = pairs
    assert best_worst.chosen == FIRE_GOOD and best_worst.rejected == FIRE_INVENTED  # nothing of it passed
    assert best_worst.meta["rejected"]["reason"] == "extractive"
    # a candidate that copies the lead passes with a lower novelty bar only
    copied, _, copy_stats = self_training(
        summarizer_on(newsroom, Scripted({1: FIRE_LEAD})),
        requests,
        candidates=1,
        threshold=THRESHOLD,
        min_novel=0.0,
    )
    assert [e.target for e in copied] == [FIRE_LEAD] and copy_stats["novel_bigrams"] < 0.2
    # the deadline stops sampling before the first request
    _, _, late = self_training(summarizer, requests, threshold=THRESHOLD, deadline_s=-1.0)
    assert late["stopped_at_deadline"] and late["sampled"] == 0


@pytest.mark.slow
def test_reference_rows_keep_supported_sentences_and_drop_invented_ones(newsroom: Indexer) -> None:
    summarizer = summarizer_on(newsroom, Scripted())
    requests = summarizer.article_requests(["loc-0001"], "article-one-sentence")
    supported = "A fire destroyed a warehouse belonging to Brekke Sjømat on Nordkaia in Havnby overnight."
    invented = "The fire was started deliberately by two teenagers from Bergen."
    examples, stats = reference_rows(
        [(requests[0], f"{supported} {invented}"), (requests[0], invented)], summarizer, threshold=THRESHOLD
    )
    [kept] = examples
    assert kept.target == supported and kept.task == "article-one-sentence@1" and kept.source == "reference"
    assert kept.meta["dropped_sentences"] == [invented]
    assert stats == {"rows": 2, "kept": 1, "dropped": 1, "sentences": 3, "kept_sentences": 1}


@pytest.fixture(scope="module")
def patient_llamacpp() -> Generator:
    """The packaged LLM without the 60 s default limit: on a busy 2-core machine the clock would
    otherwise cut candidates, and the test would judge half answers."""
    from briefing import GeneratorConfig, make_generator

    return make_generator(GeneratorConfig(backend="llamacpp", threads=2, timeout_s=600))


@pytest.mark.slow
def test_self_training_runs_on_the_real_llamacpp_backend(
    memory_indexer: Indexer, patient_llamacpp: Generator
) -> None:
    # a short article: the prompt, not the answer, is most of a CPU generation's time
    body = (
        "A fire destroyed a warehouse of the seafood exporter Brekke Sjømat on Nordkaia in Havnby "
        "overnight. No one was injured. Around 40 firefighters from three stations fought the fire, "
        "which was under control at 05:30. Police said it was too early to say what caused it."
    )
    fire = make_article("fire-1", title="Fire destroys warehouse on Nordkaia", lead="", body=body)
    assert memory_indexer.ingest([fire]).ok
    summarizer = summarizer_on(memory_indexer, patient_llamacpp)
    requests = summarizer.article_requests(["fire-1"])
    first = self_training(summarizer, requests, candidates=2, threshold=THRESHOLD, margin=0.0, min_novel=0.0)
    examples, pairs, stats = first
    assert stats["sampled"] == 2 and stats["errors"] == 0
    assert stats["kept"] + sum(stats["rejected"].values()) == 2
    # seen here (llama-cpp-python 0.3.x): seed 1 writes three grounded bullets, mostly copied
    # sentences (kept only because min_novel is 0 here); seed 2 echoes the prompt (extractive)
    assert stats["kept"] >= 1 and all(line.startswith("- ") for line in examples[0].target.splitlines())
    for kept in examples:
        assert kept.meta["model"] == patient_llamacpp.model and kept.meta["seed"] in (1, 2) and kept.target
        assert kept.meta["support"] >= THRESHOLD
    assert all(p.chosen in {e.target for e in examples} and p.rejected != p.chosen for p in pairs)
