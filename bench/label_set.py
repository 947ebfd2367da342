"""The project's labelled sentences: generate candidates from the demo newsroom, then score a
checker's show policy on the labels (issue 17; DESIGN §5).

    python bench/label_set.py generate --out data/labels/candidates.jsonl
    python bench/label_set.py generate --out data/labels/candidates.other.jsonl \
        --template-offset 1 --updates-per-story 0                 # (and --pass later|earlier,
                                                                   #  --articles: data/labels/README.md)
    python bench/label_set.py score --gate data/labels/gate.json \
        --out bench/results/labels_embedding-lexical.json
    python bench/label_set.py generate --adapter var/adapters/ad-20261201120000-abc123 \
        --out data/labels/candidates.ad-20261201120000-abc123.jsonl  # an adapter's sentences;
    python bench/label_set.py score --adapter ad-20261201120000-abc123 \
        --gate data/labels/gate.json                               # once labelled: its gate entry

`generate` runs the production path on the demo newsroom (data/demo: ingest into embedded
Qdrant, llama-index retrieval, the packaged SmolLM2 GGUF through llama.cpp, the grounding check)
and writes every sentence the model wrote that reached the check, kept or dropped, with its
support score, missing facts and citations: article summaries (each article gets one of the
article templates, chosen by its id's hash, in its own language where a template for it exists)
and story updates (each developing story, for a reader who read its first k articles). It is our
own text (the demo newsroom is ours), so it is committed with its labels.

`score` joins the candidates with data/labels/labels.jsonl (one row per sentence id: `label` is
supported, unsupported or garbled; `error` names an unsupported sentence's error type) and
reports, per language and split, what the shipped policy shows and how much of it is right:
precision of the shown sentences (supported / shown), the share of supported sentences shown,
and the threshold that the selection half would need for precision >= 0.95. The split is by
story (every article of one story in one half), stricter than by article: follow-ups repeat
their story's facts, so an article-level split would leak them.

Each candidate row names its writer (`model`, and `adapter`: None, or absent in rows from before
adapters, for the model alone): labels measure one writer's errors, so `score` measures one
writer at a time (`--adapter`, default the model alone) and `--gate` writes that writer's entry
into the gate file, keeping the other writers' entries measured for the same checker and
threshold (briefing/gate.py). A fine-tuned adapter's drafts show unreviewed only once its own
sentences are labelled and pass there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, write_results
from briefing.gate import TARGET_PRECISION, Writer, writer_entries

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo"
LABELS = ROOT / "data" / "labels"
ARTICLE_TEMPLATES = ("article", "article-one-sentence")
EMBEDDING_LEXICAL = "embedding-lexical"  # EmbeddingLexicalChecker.name: the checker `generate` records


def split_of(story_key: str) -> str:
    """'select' (choosing thresholds) or 'report' (the figures), fixed by the story's key."""
    return "select" if int(hashlib.sha256(story_key.encode()).hexdigest(), 16) % 2 == 0 else "report"


# -- generate ---------------------------------------------------------------------------------


def generate(
    out: Path,
    limit: int | None,
    updates_per_story: int,
    template_offset: int = 0,
    mode: str = "first",
    articles: Path = DEMO / "articles",
    adapter: str | None = None,
) -> None:
    from briefing import GenerationError
    from indexing import open_source
    from server.container import build_indexer, build_summarizer, build_summary_store
    from server.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        chosen = adapter_env(adapter, Settings.from_env(os.environ).llm.backend)
        settings = Settings.from_env({**os.environ, "DATA_DIR": tmp, **chosen})
        indexer = build_indexer(settings)
        indexer.ingest(open_source(str(articles)))
        summarizer = build_summarizer(settings, indexer, store=build_summary_store(settings))
        summarizer.checker = recorder = Recording(summarizer.checker)
        stories = indexer.stories()
        story_of = {a.id: story_id for story_id, articles in stories.items() for a in articles}
        start = time.monotonic()
        jobs = list(_jobs(stories, updates_per_story, mode))[:limit]
        when = {a.id: a.last_modified for articles in stories.values() for a in articles}
        out.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        chunks: dict[str, str] = {}
        with out.open("w") as sink:  # row by row: an interrupted run keeps what it wrote
            for n, (kind, article_id, read) in enumerate(jobs, 1):
                language = next(a.language for s in stories.values() for a in s if a.id == article_id)
                try:
                    now = when[article_id] if mode == "earlier" else None
                    summaries = _write(summarizer, (kind, article_id, read, now), template_offset)
                except GenerationError as exc:  # a timeout: this one is left out, the run goes on
                    print(f"{n}/{len(jobs)} {kind} {article_id} failed: {exc}", flush=True)
                    continue
                everything = [a.id for a in stories[story_of[article_id]]]
                story = everything[: everything.index(article_id) + 1]  # as of that briefing
                split = split_of(story[0])
                rows = (r for s in summaries for r in _rows(s, (language, split, story), recorder, chunks))
                for row in rows:
                    sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                    written += 1
                sink.flush()
                print(f"{n}/{len(jobs)} {kind} {article_id} ({time.monotonic() - start:.0f} s)", flush=True)
                _write_evidence(out, chunks)
        print(f"wrote {written} sentences to {out} and their evidence to {evidence_path(out)}")


def adapter_env(spec: str | None, backend: str) -> dict[str, str]:
    """The LLM_ADAPTERS and LLM_ADAPTER that make `generate` write with `--adapter`: NAME=PATH
    (a GGUF LoRA for llama.cpp, a peft folder for transformers), or an installed adapter's folder
    (`<adapters root>/<id>/`, briefing.tuning.registry), served under its folder's name, the
    id the service records with its drafts (the gate must name the same writer)."""
    from briefing.tuning.registry import GGUF_FILE, PEFT_DIR
    from briefing.tuning.serving import adapter_path

    if spec is None:
        return {}
    name, sep, path = spec.partition("=")
    if not sep:
        folder = Path(spec)
        name, path = folder.name, str(adapter_path(backend, folder / PEFT_DIR, folder / GGUF_FILE))
    if not name.strip() or not Path(path).exists():
        raise SystemExit(
            f"--adapter {spec!r}: give NAME=PATH or an installed adapter's folder ({path} missing)"
        )
    return {"LLM_ADAPTERS": f"{name}={path}", "LLM_ADAPTER": name}


class Recording:
    """The summarizer's checker, remembering each sentence's full support and the evidence it was
    checked against: a candidate row keeps every signal (text score, likelihood, fluency) and
    its evidence, so a new checker or policy can be scored on the labels without the LLM."""

    def __init__(self, checker: Any) -> None:
        self.checker = checker
        self.seen: dict[str, tuple[Any, list[Any]]] = {}

    def check(self, sentences: Any, evidence: Any) -> Any:
        supports = self.checker.check(sentences, evidence)
        for support in supports:
            self.seen[support.sentence] = (support, list(evidence))
        return supports


def evidence_path(candidates: Path) -> Path:
    return candidates.with_name(candidates.stem + ".evidence.jsonl")


def _write_evidence(candidates: Path, chunks: dict[str, str]) -> None:
    lines = (json.dumps({"chunk_id": k, "text": v}, ensure_ascii=False) for k, v in sorted(chunks.items()))
    evidence_path(candidates).write_text("\n".join(lines) + "\n")


def _write(summarizer: Any, job: tuple[str, str, list[str], Any], offset: int) -> list[Any]:
    from briefing.summarize import Followed

    kind, article_id, read, now = job
    if kind == "article":
        name = ARTICLE_TEMPLATES[(int(hashlib.sha256(article_id.encode()).hexdigest(), 16) + offset) % 2]
        return list(summarizer.summarize([article_id], prompt=name, refresh=True))
    update = summarizer.update(article_id, Followed(tuple(read), now=now), refresh=True)
    return [update] if update is not None else []


def _jobs(
    stories: dict[str, list[Any]], per_story: int, mode: str = "first"
) -> Iterator[tuple[str, str, list[str]]]:
    """Story by story: each article's summary, then updates of its newest article for readers
    who read the first k articles (a run cut short still holds both kinds). Further passes write
    only updates: `later`, for readers who came in later (read only day j, j > 1) or read up to
    the day before the newest; `earlier`, for briefings while the story was still developing
    (article j the newest then, for readers who read the first i < j)."""
    for articles in stories.values():
        ids = [a.id for a in articles]
        if mode == "earlier":
            yield from (("update", ids[j], ids[:i]) for j in range(1, len(ids) - 1) for i in range(1, j + 1))
            continue
        if mode == "later":
            bases = [ids[j : j + 1] for j in range(1, len(ids) - 1)]
            bases += [ids[:k] for k in range(per_story + 1, len(ids))]
            yield from (("update", ids[-1], basis) for basis in bases)
            continue
        for article_id in ids:
            yield "article", article_id, []
        for k in range(1, min(len(ids), per_story + 1)):
            yield "update", ids[-1], ids[:k]


def _rows(
    summary: Any, where: tuple[str, str, list[str]], recorder: Recording, chunks: dict[str, str]
) -> Iterator[dict[str, Any]]:
    language, split, story = where
    generated = [(s, True) for s in summary.sentences if not s.extractive] + [
        (s, False) for s in summary.dropped
    ]
    for sentence, kept in generated:
        key = f"{summary.id}|{sentence.text}"
        support, evidence = recorder.seen.get(sentence.text, (None, []))
        chunks.update({e.chunk_id: e.text for e in evidence})
        yield {
            "id": hashlib.sha256(key.encode()).hexdigest()[:12],
            "split": split,
            "language": language,
            "kind": summary.kind,
            "prompt": summary.prompt,
            "article_id": summary.article_id,
            "basis": list(summary.basis),
            "story": story,
            "cited_articles": list(sentence.articles),
            "sentence": sentence.text,
            "score": sentence.score,
            "missing": list(sentence.missing),
            "kept": kept,
            "model": summary.model,
            "adapter": summary.adapter,
            "text_score": getattr(support, "text_score", None),
            "likelihood": getattr(support, "likelihood", None),
            "fluency": getattr(support, "fluency", None),
            "evidence": [e.chunk_id for e in evidence],
        }


# -- score ------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def candidate_files(first: Path) -> list[Path]:
    """The candidates file and its further passes (`candidates.other.jsonl`: the other article
    template; `candidates.later.jsonl`, `candidates.earlier.jsonl`: more story updates;
    `candidates.elvestad.jsonl`: the first pass on data/eval/stories, a second newsroom of our
    own), where they exist, then any other `candidates.<name>.jsonl` by name (an adapter's
    sentences: `generate --adapter ... --out candidates.<adapter id>.jsonl`)."""
    names = ("other", "later", "earlier", "elvestad")
    known = [first.with_name(f"{first.stem}.{name}.jsonl") for name in names]
    others = sorted(
        p
        for p in first.parent.glob(f"{first.stem}.*.jsonl")
        if p not in known and not p.name.endswith(".evidence.jsonl")
    )
    return [first, *(p for p in known if p.exists()), *others]


def row_writer(row: dict[str, Any]) -> Writer:
    """Who wrote a candidate: rows from before adapters carry no `adapter` (the model alone)."""
    return Writer.of(row["model"], row.get("adapter"))


def writer_rows(rows: list[dict[str, Any]], adapter: str | None) -> tuple[Writer, list[dict[str, Any]]]:
    """The rows written with `adapter` (None: the model alone) and their writer; rows of one
    adapter written by two models are two writers, to be scored apart."""
    mine = [r for r in rows if row_writer(r).adapter == adapter]
    writers = {row_writer(r) for r in mine}
    if len(writers) != 1:
        named = sorted(f"{w.model}+{w.adapter}" if w.adapter else w.model for w in writers)
        raise SystemExit(
            f"labelled candidates with adapter {adapter!r} come from {len(writers)} writers: {named}"
        )
    return writers.pop(), mine


def joined(candidates: Path, labels: Path) -> list[dict[str, Any]]:
    """Candidates that carry a label (unlabelled ones are left out and counted), each as the
    code checks it today (`as_checked_today`)."""
    rows_all = [row for path in candidate_files(candidates) for row in read_jsonl(path)]
    by_id = {row["id"]: row for row in read_jsonl(labels)}
    unknown = set(by_id) - {c["id"] for c in rows_all}
    if unknown:
        raise SystemExit(f"labels name {len(unknown)} unknown sentence ids, e.g. {sorted(unknown)[:3]}")
    bad = [i for i, r in by_id.items() if r["label"] not in ("supported", "unsupported", "garbled")]
    if bad:
        raise SystemExit(f"labels must be supported, unsupported or garbled: {bad[:5]}")
    chunks = {
        c["chunk_id"]: c["text"]
        for path in candidate_files(candidates)
        for c in read_jsonl(evidence_path(path))
    }
    rows = [{**c, **by_id[c["id"]]} for c in as_checked_today(rows_all, chunks) if c["id"] in by_id]
    print(f"{len(rows)} of {len(rows_all)} candidate sentences are labelled")
    return rows


def as_checked_today(rows: list[dict[str, Any]], chunks: dict[str, str]) -> list[dict[str, Any]]:
    """Each candidate under today's rules, which may be newer than the run that wrote it: the
    facts missing from its recorded evidence (`missing_facts`; a recorded negation flip or
    superseded number stays),
    and whether it still reaches the check at all (prompt read-back, fragments and repeats within
    a summary are dropped before it: `_not_news`, `_unique`). The LLM's signals are as recorded."""
    from briefing.grounding import missing_facts
    from briefing.summarize import _not_news, _unique

    out = []
    for summary in _summaries(rows).values():
        # (the title-echo rule needs the item's title, not recorded: prompt read-back is caught)
        reaching = set(_unique([r["sentence"] for r in summary if not _not_news(r["sentence"], "")]))
        for row in summary:
            evidence = " ".join(chunks.get(c, "") for c in row.get("evidence", []))
            # reasons the facts rule does not give: a negation flip, a number a later article changed
            kept = tuple(m for m in row["missing"] if m == "negation" or m.startswith(_LATER_FACTS))
            missing = (missing_facts(row["sentence"], evidence) + kept) if evidence else tuple(row["missing"])
            out.append({**row, "missing": list(missing), "reaches_check": row["sentence"] in reaching})
    return out


_LATER_FACTS = ("corrected in ", "replaced in ", "superseded in ")  # briefing.developments.superseded


def _summaries(rows: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (row["article_id"], row["kind"], row["prompt"], tuple(row["basis"]), row_writer(row))
        groups.setdefault(key, []).append(row)
    return groups


def kept_today(row: dict[str, Any], threshold: float) -> bool:
    """What today's check keeps in a draft (for editors): support, no missing fact."""
    return bool(row["reaches_check"]) and row["score"] >= threshold and not row["missing"]


def shown_by(row: dict[str, Any], rule: Any, threshold: float) -> bool:
    """Whether a reader would see the sentence unreviewed under `rule` (briefing.gate.ShowRule)."""
    from briefing.summaries import SummarySentence

    sentence = SummarySentence(
        row["sentence"], row["score"], (), missing=tuple(row["missing"]), fluency=row.get("fluency")
    )
    return kept_today(row, threshold) and rule.allows(row["prompt"]) and rule.shows(sentence)


def figures(rows: list[dict[str, Any]], shown: list[dict[str, Any]], share: float | None) -> dict[str, Any]:
    """Precision of what is shown (supported / shown) with its Wilson lower bound and a bootstrap
    interval, the share of supported sentences shown, and the share of summaries readers would
    see as generated text (the cost of a strict rule)."""
    right = sum(r["label"] == "supported" for r in shown)
    supported = sum(r["label"] == "supported" for r in rows)
    return {
        "sentences": len(rows),
        "labels": dict(Counter(r["label"] for r in rows)),
        "shown": len(shown),
        "shown_right": right,
        "shown_wrong": sum(r["label"] == "unsupported" for r in shown),
        "shown_garbled": sum(r["label"] == "garbled" for r in shown),
        "precision": right / len(shown) if shown else None,
        "precision_ci_low": wilson_low(right, len(shown)),
        "precision_ci95": _bootstrap([r["label"] == "supported" for r in shown]),
        "supported_shown": right / supported if supported else None,
        "generated_share": share,
    }


def at_rule(rows: list[dict[str, Any]], rule: Any, threshold: float) -> dict[str, Any]:
    shown = [r for r in rows if shown_by(r, rule, threshold)]
    return figures(rows, shown, generated_share(rows, rule, threshold))


def generated_share(rows: list[dict[str, Any]], rule: Any, threshold: float) -> float | None:
    """Of the summaries these rows come from, the share a reader would see as generated text:
    at least one sentence kept and every kept one shown (otherwise the lead stands in). Only
    summaries with a candidate sentence are counted, so this is an upper bound."""
    groups = list(_summaries(rows).values())
    generated = 0
    for summary in groups:
        kept = [r for r in summary if kept_today(r, threshold)]
        generated += bool(kept) and all(shown_by(r, rule, threshold) for r in kept)
    return generated / len(groups) if groups else None


def wilson_low(successes: int, n: int, z: float = 1.959964) -> float | None:
    """The Wilson score interval's lower bound (95%): unlike the plain one it stays inside [0, 1]
    and is honest for small n and precision near 1."""
    if n == 0:
        return None
    p = successes / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt((p * (1 - p) + z * z / (4 * n)) / n)
    return (centre - spread) / (1 + z * z / n)


def _bootstrap(outcomes: list[bool], rounds: int = 2000) -> list[float] | None:
    import numpy as np

    if not outcomes:
        return None
    values = np.asarray(outcomes, dtype=np.float64)
    draws = np.random.default_rng(17).choice(values, size=(rounds, len(values)), replace=True).mean(axis=1)
    return [float(np.quantile(draws, 0.025)), float(np.quantile(draws, 0.975))]


def choose_rule(rows: list[dict[str, Any]], threshold: float, target: float) -> Any:
    """On the selection half: the rule (support threshold at or above the checker's, fluency
    floor or none) that shows the most sentences at `target` precision, at least 10 of them;
    None if no rule does."""
    import numpy as np

    from briefing.gate import ShowRule

    kept = [r for r in rows if kept_today(r, threshold)]
    thresholds = sorted({threshold, *(r["score"] for r in kept)})
    fluencies = [r["fluency"] for r in kept if r.get("fluency") is not None]
    floors: list[float | None] = [None]
    if fluencies:
        floors += sorted({round(float(q), 3) for q in np.quantile(fluencies, np.linspace(0.05, 0.6, 12))})
    best: tuple[int, Any] | None = None
    for t in thresholds:
        for floor in floors:
            rule = ShowRule(float(t), floor)
            shown = [r for r in kept if shown_by(r, rule, threshold)]
            right = sum(r["label"] == "supported" for r in shown)
            if len(shown) >= 10 and right / len(shown) >= target and (best is None or len(shown) > best[0]):
                best = (len(shown), rule)
    return best[1] if best else None


def write_gate(path: Path, checker: str, threshold: float, results: dict[str, Any], writer: Writer) -> None:
    """The figures the service's show gate reads (briefing.gate): the report half under the rule
    chosen on the selection half, as `writer`'s entry; the other writers' entries stay when they
    were measured for the same checker and threshold."""
    languages = {}
    for language, f in results.items():
        if not isinstance(f, dict) or "rule" not in f:
            continue
        # no rule reached the target on the select half: nothing shown, whatever the report half
        report = f["report_as_served"] or {
            "precision": None,
            "shown": 0,
            "sentences": f["drafts_forced_on"]["report"]["sentences"],
        }
        keys = ("precision", "precision_ci_low", "shown", "sentences", "generated_share")
        languages[language] = {
            "rule": f["rule"],
            **{k: report.get(k) for k in keys},
            # each template on its own: only those that pass show (briefing.gate.ShowRule.templates)
            "templates": {
                p: {k: t.get(k) for k in keys} for p, t in (f["by_prompt_report_under_rule"] or {}).items()
            },
        }
    entries = [
        *_other_writers(path, checker, threshold, writer),
        {**writer.to_json(), "languages": languages},
    ]
    gate = {
        "checker": checker,
        "threshold": threshold,
        "target_precision": TARGET_PRECISION,
        "writers": sorted(entries, key=lambda e: (e["model"], e["adapter"] or "")),
    }
    path.write_text(json.dumps(gate, indent=2) + "\n")
    print(f"wrote the show gate {path} for {writer.to_json()}")


def _other_writers(path: Path, checker: str, threshold: float, writer: Writer) -> list[dict[str, Any]]:
    """The entries of writers other than `writer` in the gate file at `path` (a file from before
    writers counts as the base model's), if it was measured for this checker and threshold."""
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        print(f"the show gate {path} was unreadable ({exc}): only {writer.to_json()} is written")
        return []
    entries = writer_entries(old, path) if isinstance(old, dict) else []
    kept = [{**w.to_json(), "languages": languages} for w, languages in entries if w != writer]
    if kept and (old.get("checker"), old.get("threshold")) != (checker, threshold):
        print(
            f"dropping {len(kept)} writers' entries: measured for {old.get('checker')}"
            f" at {old.get('threshold')}"
        )
        return []
    return kept


def score(
    candidates: Path, labels: Path, out: Path, checker: str, args: Any, gate: Path | None = None
) -> dict[str, Any]:
    from dataclasses import asdict

    from briefing.gate import ShowRule
    from server.settings import Settings

    threshold = Settings.from_env({}).grounding.threshold
    writer, rows = writer_rows(joined(candidates, labels), getattr(args, "adapter", None))
    results: dict[str, Any] = {
        "checker": checker,
        "threshold": threshold,
        "target_precision": TARGET_PRECISION,
        "writer": writer.to_json(),
    }
    for language in sorted({r["language"] for r in rows}):
        mine = [r for r in rows if r["language"] == language]
        halves = {s: [r for r in mine if r["split"] == s] for s in ("select", "report")}
        rule = choose_rule(halves["select"], threshold, TARGET_PRECISION)
        results[language] = {
            "drafts_forced_on": {s: at_rule(p, ShowRule(threshold), threshold) for s, p in halves.items()},
            "rule": {k: v for k, v in asdict(rule).items() if k not in ("templates", "writer")}
            if rule
            else None,
            "select_under_rule": at_rule(halves["select"], rule, threshold) if rule else None,
            "report_under_rule": at_rule(halves["report"], rule, threshold) if rule else None,
            "by_prompt_report_under_rule": {
                prompt: at_rule([r for r in halves["report"] if r["prompt"] == prompt], rule, threshold)
                for prompt in sorted({r["prompt"] for r in mine})
            }
            if rule
            else None,
            "report_as_served": _as_served(halves["report"], rule, threshold) if rule else None,
            "by_kind_report_under_rule": {
                kind: at_rule([r for r in halves["report"] if r["kind"] == kind], rule, threshold)
                for kind in sorted({r["kind"] for r in mine})
            }
            if rule
            else None,
            "errors": dict(Counter(r.get("error") or "-" for r in mine if r["label"] == "unsupported")),
        }
    _table(results)
    if gate is not None:
        write_gate(gate, checker, threshold, results, writer)
    files = [str(p) for p in candidate_files(candidates)]
    write_results(
        {"machine": machine(), "data": {"candidates": files, "labels": str(labels)}, **results}, out, args
    )
    return results


def _as_served(rows: list[dict[str, Any]], rule: Any, threshold: float) -> dict[str, Any]:
    """The report half as readers get it: only drafts of templates whose own precision passes
    under the rule may show (briefing.gate.ShowRule.templates); the rest wait for editors. The
    generated share counts every summary of the language, so it is the cost of the gate."""
    from dataclasses import replace

    from briefing.gate import passes

    prompts = sorted({r["prompt"] for r in rows})
    served = [p for p in prompts if passes(at_rule([r for r in rows if r["prompt"] == p], rule, threshold))]
    return {**at_rule(rows, replace(rule, templates=frozenset(served)), threshold), "templates": served}


def _table(results: dict[str, Any]) -> None:
    print(
        f"checker {results['checker']}, drafting threshold {results['threshold']}, writer {results['writer']}"
    )
    head = f"{'lang':<5}{'policy':<24}{'split':<8}{'sentences':>10}{'shown':>7}{'right':>7}{'wrong':>7}"
    print(head + f"{'garbled':>8}{'precision':>11}{'Wilson lo':>10}{'gen. share':>11}")
    for language, per in results.items():
        if not isinstance(per, dict) or "rule" not in per:
            continue
        lines = [("drafts on", s, f) for s, f in per["drafts_forced_on"].items()]
        lines += [("show rule", s, per[f"{s}_under_rule"]) for s in ("select", "report") if per["rule"]]
        if per["rule"]:
            lines += [(f" {p}", "report", f) for p, f in per["by_prompt_report_under_rule"].items()]
            lines += [("as served", "report", per["report_as_served"])]
        for policy, split, f in lines:
            precision = "-" if f["precision"] is None else f"{f['precision']:.3f}"
            low = "-" if f["precision_ci_low"] is None else f"{f['precision_ci_low']:.3f}"
            share = "-" if f["generated_share"] is None else f"{f['generated_share']:.2f}"
            print(
                f"{language:<5}{policy:<24}{split:<8}{f['sentences']:>10}{f['shown']:>7}{f['shown_right']:>7}"
                f"{f['shown_wrong']:>7}{f['shown_garbled']:>8}{precision:>11}{low:>10}{share:>11}"
            )
        print(f"      show rule chosen on select for precision >= {TARGET_PRECISION}: {per['rule']}")


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("generate", help="write candidate sentences from the demo newsroom")
    make.add_argument("--out", type=Path, default=LABELS / "candidates.jsonl")
    make.add_argument("--limit", type=int, default=None, help="at most this many summaries (a quick look)")
    make.add_argument("--updates-per-story", type=int, default=2)
    make.add_argument(
        "--articles",
        type=Path,
        default=DEMO / "articles",
        help="the newsroom (default the demo's; data/eval/stories/articles.jsonl is a second one of ours)",
    )
    make.add_argument(
        "--template-offset",
        type=int,
        default=0,
        help="1: each article gets the other article template (a second pass: more sentences)",
    )
    make.add_argument(
        "--pass",
        dest="mode",
        choices=("first", "later", "earlier"),
        default="first",
        help="later: only story updates for readers who read a later day alone, or all but the newest;"
        " earlier: only story updates as of an earlier day of each story",
    )
    make.add_argument(
        "--adapter",
        default=None,
        help="write with this LoRA adapter: NAME=PATH, or an installed adapter's folder (its name the id)",
    )
    judge = commands.add_parser("score", help="precision of the shown sentences on the labels")
    judge.add_argument("--candidates", type=Path, default=LABELS / "candidates.jsonl")
    judge.add_argument("--labels", type=Path, default=LABELS / "labels.jsonl")
    judge.add_argument(
        "--gate", type=Path, default=None, help="also write the show gate here (data/labels/gate.json)"
    )
    judge.add_argument(
        "--adapter",
        default=None,
        help="score the sentences written with this adapter id (default: the model alone); --gate"
        " then writes its entry, keeping the other writers'",
    )
    judge.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "labels_embedding-lexical.json"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.command == "generate":
        generate(
            args.out,
            args.limit,
            args.updates_per_story,
            args.template_offset,
            args.mode,
            args.articles,
            args.adapter,
        )
    else:
        # the scores are those the generating run's checker recorded: the service's default
        score(args.candidates, args.labels, args.out, EMBEDDING_LEXICAL, args, args.gate)


if __name__ == "__main__":
    main()
