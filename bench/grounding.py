"""Grounding checker on FRANK: does its score separate faithful from unfaithful summaries?

    python bench/grounding.py --data ../shared/datasets/frank --out bench/results/grounding.json

FRANK (research-only articles, read in place) has system summaries of CNN/DM and XSum articles
with human factuality scores; a summary counts as unfaithful when its score is below 1. A
summary's checker score is a soft minimum of its sentences' scores against the whole article
(`soft_min`: the weakest sentence counts most, the others too); its verdict is "supported" when
every sentence is. ROC AUC and balanced accuracy are computed separately for the CNN/DM and the
XSum parts and then averaged (macro): pooled, the parts' different base rates make plain word
overlap look good. Baselines in the same run: bigram precision of the summary
against the article, and ROUGE-2 (F1) against the reference.

The checker is the shipped one (GroundingConfig defaults, likelihood signal on the packaged
SmolLM2 through llama.cpp); `checker_without_likelihood` is the same checker with no scorer. The
likelihood curve and weight were chosen on FRANK's validation split, so every figure is also
reported per split: the test split (350 of the 501 articles) is the held-out one.

`floor_sweep` rescores the checker's sentences for several values of `likelihood_floor` (the text
score under which the likelihood cannot lift a sentence) and reports macro AUC and balanced
accuracy per split: the shipped floor is the one chosen on the validation split.

`--logprob-cache FILE` keeps the LLM's per-token log-probabilities in a SQLite file, keyed by
model, context, tail and sentence: they depend on nothing else, so a rerun after a change to how
the checker combines them (curve, weights, λ, aggregation) skips the LLM, which is most of the
time. The seconds reported are those of the run itself, cached or not (`cached_logprobs` says).
Articles are taken in turn from each part and split (`interleaved`), so a run stopped early has
cached the first articles of every cell alike.

`--token-features` (with the cache) adds `token_features`: token-level PMI signals read from the
same cached log-probabilities and logistic regressions fitted on FRANK's validation split
(bench/frank_features.py; benchmark figures only, FRANK is research-licensed). `--threads N`
pins torch and llama.cpp, prompts included, to N threads: on a shared machine, llama.cpp's
default of one prompt thread per CPU made the pass ten times slower.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, write_results
from bench.frank_features import (
    TokenSignals,
    fitted_rows,
    interleaved,
    llama_pieces,
    pin_threads,
    print_rows,
    record,
    summary_features,
)
from briefing.grounding import (
    EmbeddingLexicalChecker,
    Evidence,
    GroundingConfig,
    Support,
    combined_score,
    split_sentences,
)
from briefing.llm.scoring import SCORERS, CachedScorer, make_scorer
from briefing.verifier import CrossEncoderVerifier, RelationChecker, RelationFeatures
from indexing import SentenceTransformerEmbedder

PARTS = ("cnndm", "xsum")
FLOORS = (0.0, 0.4, 0.45, 0.5, 0.55, 0.6)


def main() -> None:
    args = parse_args()
    if args.data is None:  # the labelled demo set alone
        write_results({"labelled": labelled(args), "machine": machine()}, args.out, args)
        return
    rows = interleaved(
        [json.loads(line) for line in (args.data / "frank_articles_refs_systems.jsonl").open()]
    )
    config = GroundingConfig(likelihood_backend=args.likelihood)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    embedder = SentenceTransformerEmbedder()
    scorer = raw = make_scorer(
        config.likelihood_backend, config.likelihood_model, cache_dir=args.model_cache, threads=args.threads
    )
    if args.threads and scorer is not None:
        pin_threads(scorer, args.threads)
    cache = tokens = None
    if scorer is not None and args.logprob_cache:
        key = f"{args.likelihood}:{config.likelihood_model}"
        scorer = cache = CachedScorer(scorer, args.logprob_cache, key=key)
        if args.token_features:  # read from the cache the checker has just filled
            tokens = TokenSignals(cache, llama_pieces(raw))
    checkers = {"checker": EmbeddingLexicalChecker(embedder, config, scorer)}
    if scorer is not None:
        checkers["checker_without_likelihood"] = EmbeddingLexicalChecker(embedder, config)
    if args.limit:  # the first N articles of each part and split, so every cell is scored
        rows = [
            r
            for part in PARTS
            for split in ("validation", "test")
            for r in [x for x in rows if x["source_dataset"] == part and x["frank_split"] == split][
                : args.limit
            ]
        ]
    results: dict[str, Any] = {"data": str(args.data), "likelihood": args.likelihood, "seconds": {}}
    scored: list[dict[str, Any]] = []
    if args.skip_checker:  # the relation pass still reports the embedding-lexical text score
        checkers = {}
    for name, checker in checkers.items():
        started = time.perf_counter()
        mine = [
            item
            for row in rows
            for item in score_article(checker, row, tokens if name == "checker" else None)
        ]
        results["seconds"][name] = round(time.perf_counter() - started, 1)
        results[name] = evaluate(mine, "score", verdict="supported")
        if name == "checker" and tokens is not None:
            results["token_features"] = fitted_rows([record(r) for r in mine])
            if args.dump:  # numbers only, for bench/frank_features.py to refit without the models
                args.dump.write_text(json.dumps([record(r) for r in mine]))
        scored = scored or mine
    if args.verifier:
        relation = RelationChecker(
            embedder, CrossEncoderVerifier(args.verifier), config, windows=args.windows
        )
        started = time.perf_counter()
        mine = [item for row in rows for item in score_relation(relation, row)]
        results["seconds"]["relation"] = round(time.perf_counter() - started, 1)
        results.update(relation_rows(mine, relation))
        scored = scored or mine
    if scorer is not None and not args.skip_checker:
        results["floor_sweep"] = floor_sweep(scored, config)
    results["summaries"] = len(scored)
    if cache is not None:
        results["cached_logprobs"] = {"hits": cache.hits, "misses": cache.misses}
    for name, key in (("baseline_bigram", "bigram"), ("baseline_rouge2", "rouge2")):
        results[name] = evaluate(scored, key, verdict=None)
    for name in ("checker", "checker_without_likelihood", "relation"):
        if isinstance(results.get(name), dict) and "by_split" in results[name]:
            results[name]["auc_macro_test"] = results[name]["by_split"]["test"]["auc_macro"]
    results["machine"] = machine()
    print_table(results)
    if "token_features" in results:
        print_rows(results["token_features"])
    if args.labels:
        results["labelled"] = labelled(args)
    write_results(results, args.out, args)


def labelled(args: argparse.Namespace) -> dict[str, Any]:
    """The labelled demo sentences (bench/label_set.py score): per language, what the show rule
    chosen on the select half shows on the report half, with the Wilson lower bound and the
    share of summaries readers see as generated text. The top-level figures are English's as
    served (only templates whose own precision passes show: briefing.gate.ShowRule.templates)."""
    from bench.label_set import EMBEDDING_LEXICAL, score

    out = args.out.with_name(args.out.stem + "_labels.json")
    per = score(args.labels.with_name("candidates.jsonl"), args.labels, out, EMBEDDING_LEXICAL, args)
    report = (per.get("en") or {}).get("report_as_served") or {}
    return {
        "precision": report.get("precision"),
        "precision_ci_low": report.get("precision_ci_low"),
        "generated_share": report.get("generated_share"),
        "by_language": per,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="FRANK directory (without it: only --labels)")
    parser.add_argument(
        "--labels", type=Path, help="the labelled demo sentences (data/labels/labels.jsonl): adds `labelled`"
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument(
        "--limit", type=int, default=0, help="only the first N articles of each part and split (0: all)"
    )
    parser.add_argument(
        "--likelihood",
        choices=SCORERS,
        default=GroundingConfig.likelihood_backend,
        help="the checker's likelihood signal (off: embeddings and words only)",
    )
    parser.add_argument(
        "--verifier",
        type=Path,
        help="a trained verifier (DATA_DIR/models/verifier-bench): adds the verifier and relation rows",
    )
    parser.add_argument(
        "--windows", type=int, default=3, help="evidence windows the verifier reads per sentence"
    )
    parser.add_argument(
        "--skip-checker",
        action="store_true",
        help="only the relation pass (its text score is the no-LLM checker)",
    )
    parser.add_argument(
        "--logprob-cache", type=Path, help="SQLite file that keeps the LLM's log-probabilities between runs"
    )
    parser.add_argument(
        "--token-features",
        action="store_true",
        help="adds token-level PMI signals and validation-fitted combinations (bench/frank_features.py);"
        " needs --logprob-cache",
    )
    parser.add_argument("--dump", type=Path, help="with --token-features: the scored summaries' numbers")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and llama.cpp (default: theirs)")
    parser.add_argument(
        "--model-cache", type=Path, default=Path("var/models"), help="dequantized models (transformers)"
    )
    return parser.parse_args()


def score_article(
    checker: EmbeddingLexicalChecker, row: dict[str, Any], tokens: TokenSignals | None = None
) -> list[dict[str, Any]]:
    """Every rated summary of one article; all their sentences checked in one call (with
    `tokens`, each summary also gets its token-level features, bench/frank_features.py)."""
    summaries = [s for s in row["system_summaries"] if s["frank_factuality"] is not None]
    sentences = [split_sentences(s["summary"]) or [s["summary"]] for s in summaries]
    flat = [x for group in sentences for x in group]
    supports = iter(checker.check(flat, [Evidence("article", row["article"])]))
    per_token = iter(tokens.sentences(row["article"], flat)) if tokens else None
    out = []
    for summary, group in zip(summaries, sentences, strict=True):
        mine = [next(supports) for _ in group]
        extra = summary_features([next(per_token) for _ in group]) if per_token else {}
        out.append(
            {
                "article": row["id"],
                "part": row["source_dataset"],
                "split": row["frank_split"],
                "faithful": summary["frank_factuality"] >= 1.0,
                "score": soft_min([s.score for s in mine]),
                "supported": all(s.supported for s in mine),
                "sentences": mine,
                "bigram": bigram_precision(summary["summary"], row["article"]),
                "rouge2": rouge2(summary["summary"], row["reference"]),
                **extra,
            }
        )
    return out


def score_relation(checker: RelationChecker, row: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rated summary of one article through the relation checker, keeping its parts: the
    verifier's probability alone, the embedding-lexical text score (no LLM), and the calibrated
    relation score with the missing-facts veto."""
    summaries = [s for s in row["system_summaries"] if s["frank_factuality"] is not None]
    sentences = [split_sentences(s["summary"]) or [s["summary"]] for s in summaries]
    flat = [x for group in sentences for x in group]
    features = iter(checker.features(flat, [Evidence("article", row["article"])]))
    calibrate, threshold = checker.calibration, checker.config.threshold
    out = []
    for summary, group in zip(summaries, sentences, strict=True):
        mine: list[RelationFeatures] = [next(features) for _ in group]
        probability = [1.0 / (1.0 + np.exp(-f.logit)) for f in mine]
        relation = [calibrate(f.logit, f.base.text_score) for f in mine]
        out.append(
            {
                "part": row["source_dataset"],
                "split": row["frank_split"],
                "faithful": summary["frank_factuality"] >= 1.0,
                "verifier": soft_min(probability),
                "text": soft_min([f.base.text_score for f in mine]),
                "text_supported": all(f.base.supported for f in mine),
                "relation": soft_min(relation),
                "relation_supported": all(
                    x >= threshold and not f.base.missing for x, f in zip(relation, mine, strict=True)
                ),
                "vetoed": any(f.base.missing for f in mine),
                "bigram": bigram_precision(summary["summary"], row["article"]),
                "rouge2": rouge2(summary["summary"], row["reference"]),
            }
        )
    return out


def relation_rows(scored: list[dict[str, Any]], checker: RelationChecker) -> dict[str, Any]:
    """The verifier alone, the relation checker (shipped calibration: held-out synthetic demo
    pairs), the no-LLM embedding-lexical score from the same pass, and a logistic regression on
    (verifier, text score, veto) fitted on FRANK's validation summaries, scored on both splits
    (its validation figures are in-sample)."""
    from sklearn.linear_model import LogisticRegression

    def x(rows: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[r["verifier"], r["text"], float(r["vetoed"])] for r in rows])

    validation = [r for r in scored if r["split"] == "validation"]
    model = LogisticRegression(C=1e4).fit(x(validation), [r["faithful"] for r in validation])
    fitted = [
        {**r, "fitted": float(p)} for r, p in zip(scored, model.predict_proba(x(scored))[:, 1], strict=True)
    ]
    return {
        "verifier": evaluate(scored, "verifier", verdict=None),
        "relation": evaluate(scored, "relation", verdict="relation_supported"),
        "relation_text_only": evaluate(scored, "text", verdict="text_supported"),
        "relation_fitted_on_frank_validation": evaluate(fitted, "fitted", verdict=None),
        "relation_calibration": checker.calibration.__dict__,
        "relation_frank_fit": {"coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])},
        "relation_veto_share": round(float(np.mean([r["vetoed"] for r in scored])), 3),
    }


SOFT_MIN_TEMPERATURE = 0.1


def soft_min(scores: Sequence[float]) -> float:
    """-T·log(mean(exp(-score/T))): the minimum as T goes to 0, the mean as T grows. On FRANK's
    validation split (CNN/DM summaries have three sentences on average; XSum's one), macro AUC
    0.781 with the plain minimum, 0.789 with T = 0.1 and with the mean, 0.788 with T = 0.05;
    T = 0.1 keeps the weakest sentence decisive, as it is for a reader."""
    values = np.asarray(scores, np.float64)
    return float(-SOFT_MIN_TEMPERATURE * np.log(np.mean(np.exp(-values / SOFT_MIN_TEMPERATURE))))


def floor_sweep(scored: list[dict[str, Any]], config: GroundingConfig) -> dict[str, Any]:
    """Macro AUC and balanced accuracy per split with each floor in FLOORS, from the same
    sentences' text scores and likelihoods (`combined_score`, as the checker computes them)."""
    out: dict[str, Any] = {"shipped": config.likelihood_floor}
    for floor in FLOORS:
        variant = replace(config, likelihood_floor=floor)
        rows = [{**r, **_rescored(r["sentences"], variant)} for r in scored]
        metrics = evaluate(rows, "score", verdict="supported")
        out[f"{floor:g}"] = {
            split: {
                "auc_macro": round(metrics["by_split"][split]["auc_macro"], 4),
                "balanced_accuracy_macro": round(metrics["by_split"][split]["balanced_accuracy_macro"], 4),
            }
            for split in ("validation", "test")
        }
    return out


def _rescored(sentences: list[Support], config: GroundingConfig) -> dict[str, Any]:
    scores = [combined_score(s.text_score, s.likelihood, config) for s in sentences]
    supported = all(x >= config.threshold and not s.missing for x, s in zip(scores, sentences, strict=True))
    return {"score": soft_min(scores), "supported": supported}


def tokens(text: str) -> list[str]:
    return [t for t in "".join(c.lower() if c.isalnum() else " " for c in text).split()]


def bigrams(text: str) -> Counter[tuple[str, str]]:
    words = tokens(text)
    return Counter(itertools.pairwise(words))


def bigram_precision(summary: str, article: str) -> float:
    own, source = bigrams(summary), bigrams(article)
    return sum(1 for b in own.elements() if b in source) / max(1, sum(own.values()))


def rouge2(summary: str, reference: str) -> float:
    own, ref = bigrams(summary), bigrams(reference)
    overlap = sum((own & ref).values())
    if not overlap:
        return 0.0
    precision, recall = overlap / sum(own.values()), overlap / sum(ref.values())
    return 2 * precision * recall / (precision + recall)


def evaluate(scored: list[dict[str, Any]], key: str, verdict: str | None) -> dict[str, Any]:
    out = _metrics(scored, key, verdict)
    out["by_split"] = {
        split: _metrics([r for r in scored if r["split"] == split], key, verdict)
        for split in ("validation", "test")
    }
    return out


def _metrics(scored: list[dict[str, Any]], key: str, verdict: str | None) -> dict[str, Any]:
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    out: dict[str, Any] = {"auc": {}, "balanced_accuracy": {}}
    for part in PARTS:
        rows = [r for r in scored if r["part"] == part]
        labels = np.array([r["faithful"] for r in rows])
        scores = np.array([r[key] for r in rows])
        out["auc"][part] = float(roc_auc_score(labels, scores))
        # Baselines have no verdict of their own: threshold them at the part's median.
        decided = np.array([r[verdict] for r in rows]) if verdict else scores >= np.median(scores)
        out["balanced_accuracy"][part] = float(balanced_accuracy_score(labels, decided))
    out["auc_macro"] = float(np.mean(list(out["auc"].values())))
    out["balanced_accuracy_macro"] = float(np.mean(list(out["balanced_accuracy"].values())))
    return out


def print_table(r: dict[str, Any]) -> None:
    seconds = ", ".join(f"{name} {s:.0f} s" for name, s in r["seconds"].items())
    print(f"\n{r['summaries']} summaries ({seconds})\n")
    print(
        f"{'method':<38}{'AUC cnndm':>11}{'AUC xsum':>10}{'AUC macro':>11}{'bal.acc macro':>15}"
        f"{'AUC macro, test split':>23}"
    )
    relation = ("verifier", "relation", "relation_text_only", "relation_fitted_on_frank_validation")
    methods = [m for m in ("checker", "checker_without_likelihood", *relation) if m in r]
    for name in (*methods, "baseline_bigram", "baseline_rouge2"):
        m = r[name]
        auc = m["auc"]
        print(
            f"{name:<38}{auc['cnndm']:>11.3f}{auc['xsum']:>10.3f}{m['auc_macro']:>11.3f}"
            f"{m['balanced_accuracy_macro']:>15.3f}{m['by_split']['test']['auc_macro']:>23.3f}"
        )
    if "floor_sweep" in r:
        sweep = r["floor_sweep"]
        print(f"\nlikelihood_floor (shipped {sweep['shipped']:g}): macro AUC and balanced accuracy per split")
        print(f"{'floor':<8}{'AUC val':>9}{'bal.acc val':>13}{'AUC test':>10}{'bal.acc test':>14}")
        for floor in FLOORS:
            v, t = sweep[f"{floor:g}"]["validation"], sweep[f"{floor:g}"]["test"]
            print(
                f"{floor:<8g}{v['auc_macro']:>9.3f}{v['balanced_accuracy_macro']:>13.3f}"
                f"{t['auc_macro']:>10.3f}{t['balanced_accuracy_macro']:>14.3f}"
            )


if __name__ == "__main__":
    main()
