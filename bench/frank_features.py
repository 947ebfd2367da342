"""Token-level likelihood signals and a combination fitted on FRANK's validation split (bench only).

    python bench/frank_features.py collect ../shared/datasets/frank var/frank_logprobs.sqlite \
        var/frank_scored.jsonl 1           # the checker and the features, resumable, by article
    python bench/frank_features.py --scored var/frank_scored.jsonl --out bench/results/grounding_features.json

(`refeature DATA CACHE SCORED OUT` recomputes the features of collected articles from the cache
alone; bench/grounding.py --token-features --dump FILE runs the same in its full pass.)

The shipped checker's likelihood signal is a sentence's mean over tokens of
log p(token | article) - λ·log p(token | nothing). An XSum summary that invents one entity
("... said coach John Smith") keeps most of its tokens explained by the article, and the mean
dilutes the one that is not. This module reads the same two passes' per-token log-probabilities
(from bench/grounding.py's `--logprob-cache`, so no LLM runs again), groups tokens into words,
and keeps per content word (not a stopword) its pointwise mutual information, the sum of
log p(token | article) - log p(token | nothing) over its tokens:

- `pmi_min`: the lowest content word's PMI; `pmi_low3`: the mean of the lowest three;
- `pmi_neg_share`: the share of content words with PMI below 0 (the article makes them less
  likely than no article does);
- `given_min`: the lowest content word's log p(word | article);
- `pmi_mean`: the mean token PMI over all tokens (λ = 1, as the shipped signal with λ = 0.6);
- `gain_min`, `gain_low3`: as `pmi_min` and `pmi_low3` with the shipped λ = 0.6, and
  `gain_content`: the shipped signal's mean over content words' tokens only.

A summary's value is its weakest sentence's (the minimum; the maximum for the share).

`fitted_rows` then fits logistic regressions on FRANK's validation summaries (the shipped score,
its text score and likelihood, the missing-facts veto and the token features) and scores both
splits: the test split (350 of 501 articles) is held out. Validation figures of a fit are
5-fold cross-validated by article, not in-sample. FRANK is research-licensed: these fits are
benchmark figures, never weights the service uses.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from briefing.grounding import EVIDENCE_HEAD, EVIDENCE_TAIL, PRIOR_PROMPT
from briefing.llm.scoring import MAX_CONTINUATION_TOKENS, LikelihoodScorer
from indexing import STOPWORDS

# Bytes of a word: letters, digits and any non-ASCII byte (a UTF-8 letter's), with an apostrophe
# inside ("don't", "Locke's").
_WORD = re.compile(rb"[A-Za-z0-9\x80-\xff]+(?:'[A-Za-z]+)?")
LOW_K = 3
PARTS = ("cnndm", "xsum")
SPLITS = ("validation", "test")
TOKEN_FEATURES = (
    *("pmi_min", "pmi_low3", "pmi_neg_share", "given_min", "pmi_mean"),
    *("gain_min", "gain_low3", "gain_content"),
)
LAMBDA = 0.6  # the shipped signal's prior weight (GroundingConfig.likelihood_prior_weight)
# Per summary: the weakest sentence's value; for a share of bad words, the highest.
_WORST = {"pmi_neg_share": max}
Pieces = Callable[[str], list[bytes]]


def llama_pieces(scorer: Any) -> Pieces:
    """The byte pieces of a text's tokens, as the llama.cpp scorer tokenizes a continuation
    (LlamaCppScorer keeps its model private; a benchmark may read it)."""
    llama = scorer._llama

    def pieces(text: str) -> list[bytes]:
        ids = llama.tokenize(text.encode(), add_bos=False, special=False)[:MAX_CONTINUATION_TOKENS]
        return [bytes(llama.detokenize([t])) for t in ids]

    return pieces


def pin_threads(scorer: Any, threads: int) -> None:
    """Make the llama.cpp scorer use `threads` for prompts too. LlamaCppScorer sets only the
    generation threads; llama-cpp-python gives batches (every eval of more than one token, all
    the scorer does) one thread per CPU, and on a shared machine those threads wait on each
    other: a 2-core box with load 8 scored 0.1 sentences a second, against 3.6 when idle."""
    if hasattr(scorer, "_llama"):
        import llama_cpp

        llama_cpp.llama_set_n_threads(scorer._llama._ctx.ctx, threads, threads)


def interleaved(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The articles taken in turn from each part and split (then any without a split): every
    prefix of the run covers each cell alike, so a run stopped early has filled the log-prob
    cache for a `--limit` rerun."""
    cells = [
        [r for r in rows if (r["source_dataset"], r["frank_split"]) == (p, s)] for p in PARTS for s in SPLITS
    ]
    rest = [r for r in rows if r["frank_split"] not in SPLITS]
    turns = itertools.zip_longest(*cells)
    return [r for turn in turns for r in turn if r is not None] + rest


class TokenSignals:
    """Per-sentence token features from the checker's two passes (see the module docstring)."""

    def __init__(self, scorer: LikelihoodScorer, pieces: Pieces) -> None:
        self.scorer, self.pieces = scorer, pieces

    def sentences(self, article: str, sentences: Sequence[str]) -> list[dict[str, float]]:
        given = self.scorer.logprobs(EVIDENCE_HEAD + article, sentences, tail=EVIDENCE_TAIL)
        prior = self.scorer.logprobs(PRIOR_PROMPT, sentences)
        return [
            sentence_features(self.pieces(s), g, p) for s, g, p in zip(sentences, given, prior, strict=True)
        ]


def sentence_features(pieces: list[bytes], given: np.ndarray, prior: np.ndarray) -> dict[str, float]:
    """The token features of one sentence from its token pieces and both passes' log-probs."""
    n = min(len(pieces), len(given), len(prior))
    pmi = np.asarray(given[:n] - prior[:n], np.float64)
    words = content_words(pieces[:n])
    word_pmi = np.array([pmi[idx].sum() for idx in words]) if words else np.zeros(0)
    word_given = np.array([given[idx].sum() for idx in words]) if words else np.zeros(0)
    gain = np.asarray(given[:n] - LAMBDA * prior[:n], np.float64)
    word_gain = np.array([gain[idx].sum() for idx in words]) if words else np.zeros(0)
    content = sorted({i for idx in words for i in idx})
    if not word_pmi.size:  # no content word (or no token): nothing unexplained to find
        word_pmi = word_given = word_gain = np.zeros(1)
    return {
        "gain_min": float(word_gain.min()),
        "gain_low3": float(np.sort(word_gain)[:LOW_K].mean()),
        "gain_content": float(gain[content].mean()) if content else 0.0,
        "pmi_min": float(word_pmi.min()),
        "pmi_low3": float(np.sort(word_pmi)[:LOW_K].mean()),
        "pmi_neg_share": float(np.mean(word_pmi < 0)),
        "given_min": float(word_given.min()),
        "pmi_mean": float(pmi.mean()) if n else 0.0,
    }


def content_words(pieces: list[bytes]) -> list[list[int]]:
    """The token positions of each content word: tokens whose bytes overlap the word's."""
    text = b"".join(pieces)
    ends = np.cumsum([len(p) for p in pieces])
    starts = ends - np.array([len(p) for p in pieces], np.int64)
    out = []
    for match in _WORD.finditer(text):
        word = match.group().decode("utf-8", errors="ignore").lower()
        if word in STOPWORDS or not any(c.isalnum() for c in word):
            continue
        idx = [i for i in range(len(pieces)) if starts[i] < match.end() and ends[i] > match.start()]
        if idx:
            out.append(idx)
    return out


def summary_features(sentences: list[dict[str, float]]) -> dict[str, float]:
    """A summary's token features: its weakest sentence's."""
    return {k: float(_WORST.get(k, min)(s[k] for s in sentences)) for k in TOKEN_FEATURES}


def record(row: dict[str, Any]) -> dict[str, Any]:
    """A scored summary (bench/grounding.py `score_article`) as numbers only, for `--scored`:
    no FRANK text leaves the run."""
    sentences = row["sentences"]
    likely = [s.likelihood for s in sentences if s.likelihood is not None]
    keep = ("article", "part", "split", "faithful", "score", "supported", "bigram", "rouge2", *TOKEN_FEATURES)
    return {
        **{k: row[k] for k in keep if k in row},
        "text": min(s.text_score for s in sentences),
        "likelihood": min(likely) if likely else None,
        "vetoed": any(s.missing for s in sentences),
        "missing": sum(len(s.missing) for s in sentences),
        "sentence_count": len(sentences),
    }


# The fits: which features each reads. "shipped" is the checker's own score with its parts.
FITS: dict[str, tuple[str, ...]] = {
    "fit_shipped_parts": ("score", "text", "likelihood", "vetoed"),
    "fit_tokens": TOKEN_FEATURES,
    # the checker with one token signal: two weights, little room to overfit 26 faithful XSum
    "fit_checker_pmi_min": ("score", "pmi_min"),
    "fit_checker_gain_content": ("score", "gain_content"),
    "fit_all": ("score", "text", "likelihood", "vetoed", "missing", *TOKEN_FEATURES),
}
C = 0.3  # L2 strength on standardized features; XSum's validation half has only 26 faithful


def fitted_rows(scored: list[dict[str, Any]], rounds: int = 1000) -> dict[str, Any]:
    """Each single signal and each fit in FITS (pooled, and one model per source), as
    bench/grounding.py `evaluate` reports them; a fit's validation figures are cross-validated."""
    from bench.grounding import evaluate

    rows = [r for r in scored if r["split"] in ("validation", "test") and r.get("likelihood") is not None]
    out: dict[str, Any] = {}
    for key in ("score", *TOKEN_FEATURES, "text", "likelihood"):
        sign = -1.0 if key in _WORST else 1.0  # a high share of unexplained words is the bad end
        out[f"signal_{key}"] = evaluate(
            [{**r, "signal": sign * r[key]} for r in rows], "signal", verdict=None
        )
    for name, features in FITS.items():
        for per_part in (False, True):
            scores = _fit_scores(rows, features, per_part)
            label = f"{name}_per_source" if per_part else name
            out[label] = evaluate(
                [{**r, "fitted": s} for r, s in zip(rows, scores, strict=True)], "fitted", None
            )
            out[label]["features"] = list(features)
            out[label]["test_gain_over_checker"] = paired_gain(rows, scores, rounds)
    return out


def paired_gain(rows: list[dict[str, Any]], fitted: Sequence[float], rounds: int = 1000) -> dict[str, float]:
    """The fit's test macro AUC minus the shipped checker's on the same summaries, with a 95%
    interval from resampling test articles (within each part) with replacement."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(17)
    cells = []
    for part in PARTS:
        mine = [
            (r, f) for r, f in zip(rows, fitted, strict=True) if r["split"] == "test" and r["part"] == part
        ]
        articles: dict[Any, list[int]] = {}
        for n, (r, _) in enumerate(mine):
            articles.setdefault(r.get("article", n), []).append(n)
        y = np.array([r["faithful"] for r, _ in mine])
        a, b = np.array([f for _, f in mine]), np.array([r["score"] for r, _ in mine])
        cells.append((list(articles.values()), y, a, b))

    def gain(picks: list[np.ndarray]) -> float:
        out = []
        for (groups, y, a, b), pick in zip(cells, picks, strict=True):
            idx = np.concatenate([groups[i] for i in pick])
            if y[idx].all() or not y[idx].any():
                return float("nan")
            out.append(roc_auc_score(y[idx], a[idx]) - roc_auc_score(y[idx], b[idx]))
        return float(np.mean(out))

    point = gain([np.arange(len(c[0])) for c in cells])
    draws = [gain([rng.integers(0, len(c[0]), len(c[0])) for c in cells]) for _ in range(rounds)]
    low, high = np.nanpercentile(draws, [2.5, 97.5])
    return {"gain": round(point, 4), "ci_low": round(float(low), 4), "ci_high": round(float(high), 4)}


def _fit_scores(rows: list[dict[str, Any]], features: Sequence[str], per_part: bool) -> list[float]:
    """Fitted probabilities: out-of-fold for validation rows, from the whole-validation fit for
    test rows."""
    scores = [0.0] * len(rows)
    groups = [("cnndm", "xsum")] if not per_part else [("cnndm",), ("xsum",)]
    for parts in groups:
        mine = [i for i, r in enumerate(rows) if r["part"] in parts]
        val = [i for i in mine if rows[i]["split"] == "validation"]
        test = [i for i in mine if rows[i]["split"] == "test"]
        for i, s in zip(val, _out_of_fold([rows[i] for i in val], features), strict=True):
            scores[i] = s
        labels = [rows[i]["faithful"] for i in val]
        if len(set(labels)) < 2:  # a --limit run: nothing to fit
            continue
        model = _model().fit(_x([rows[i] for i in val], features, parts), labels)
        for i, s in zip(
            test, model.predict_proba(_x([rows[i] for i in test], features, parts))[:, 1], strict=True
        ):
            scores[i] = float(s)
    return scores


def _out_of_fold(rows: list[dict[str, Any]], features: Sequence[str], folds: int = 5) -> list[float]:
    from sklearn.model_selection import StratifiedGroupKFold

    parts = tuple(sorted({r["part"] for r in rows}))
    x, y = _x(rows, features, parts), np.array([r["faithful"] for r in rows])
    out = np.full(len(rows), 0.5)
    groups = [r.get("article", n) for n, r in enumerate(rows)]  # an article's summaries stay together
    folds = min(folds, int(y.sum()), int((~y).sum()), len(set(groups)))  # a --limit run is small
    if folds < 2:
        return out.tolist()
    for train, held in StratifiedGroupKFold(folds, shuffle=True, random_state=17).split(x, y, groups):
        if len(set(y[train])) == 2:
            out[held] = _model().fit(x[train], y[train]).predict_proba(x[held])[:, 1]
    return out.tolist()


def _model() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))


def _x(rows: list[dict[str, Any]], features: Sequence[str], parts: Sequence[str]) -> np.ndarray:
    # A pooled fit knows the source (its base rate differs); per-part AUC cannot use it.
    cols = [
        [float(r[f]) for f in features] + ([float(r["part"] == "xsum")] if len(parts) > 1 else [])
        for r in rows
    ]
    return np.array(cols, np.float64)


def print_rows(results: dict[str, Any]) -> None:
    print(
        f"\n{'signal or fit':<34}{'val cnndm':>10}{'val xsum':>10}{'val macro':>11}"
        f"{'test cnndm':>11}{'test xsum':>10}{'test macro':>12}"
    )
    for name, m in results.items():
        if not (isinstance(m, dict) and "by_split" in m):
            continue
        v, t = m["by_split"]["validation"], m["by_split"]["test"]
        print(
            f"{name:<34}{v['auc']['cnndm']:>10.3f}{v['auc']['xsum']:>10.3f}{v['auc_macro']:>11.3f}"
            f"{t['auc']['cnndm']:>11.3f}{t['auc']['xsum']:>10.3f}{t['auc_macro']:>12.3f}"
        )


def collect(data: Path, cache_path: Path, out: Path, threads: int) -> None:
    """The shipped checker (bench/grounding.py `score_article`, log-probs through the cache) and
    the token features, article by article in bench/grounding.py's interleaved order, each
    article's summaries appended to `out` as `record`s. On a shared machine the full pass may
    not finish by a deadline: a rerun resumes after the articles already in `out`, and any
    prefix covers every part and split alike."""
    import time

    import torch

    from bench.grounding import score_article
    from briefing.grounding import EmbeddingLexicalChecker, GroundingConfig
    from briefing.llm.scoring import CachedScorer, make_scorer
    from indexing import SentenceTransformerEmbedder

    torch.set_num_threads(threads)
    config = GroundingConfig()
    raw = make_scorer("llamacpp", config.likelihood_model, cache_dir=Path("var/models"), threads=threads)
    pin_threads(raw, threads)
    assert raw is not None
    cache = CachedScorer(raw, cache_path, key=f"llamacpp:{config.likelihood_model}")
    checker = EmbeddingLexicalChecker(SentenceTransformerEmbedder(), config, cache)
    tokens = TokenSignals(cache, llama_pieces(raw))
    done = {json.loads(line)["article"] for line in out.open()} if out.exists() else set()
    rows = interleaved([json.loads(line) for line in (data / "frank_articles_refs_systems.jsonl").open()])
    started = time.perf_counter()
    for n, row in enumerate(rows, 1):
        if row["id"] in done:
            continue
        lines = [json.dumps(record(r)) + "\n" for r in score_article(checker, row, tokens)]
        with out.open("a") as f:
            f.writelines(lines)
        elapsed = time.perf_counter() - started
        print(
            f"{n}/{len(rows)} articles, {elapsed:.0f} s, cache {cache.hits} hits {cache.misses} misses",
            flush=True,
        )


def refeature(data: Path, cache_path: Path, scored: Path, out: Path) -> None:
    """`scored`'s records with their token features computed again from the cache alone (the
    LLM is loaded for its tokenizer, nothing is evaluated): for new features after `collect`."""
    from briefing.grounding import GroundingConfig, split_sentences
    from briefing.llm.scoring import CachedScorer, make_scorer

    model = GroundingConfig().likelihood_model
    raw = make_scorer("llamacpp", model, cache_dir=Path("var/models"), threads=1)
    assert raw is not None
    tokens = TokenSignals(CachedScorer(raw, cache_path, key=f"llamacpp:{model}"), llama_pieces(raw))
    articles = {r["id"]: r for r in map(json.loads, (data / "frank_articles_refs_systems.jsonl").open())}
    records = [json.loads(line) for line in scored.open()]
    lines = []
    for article_id in dict.fromkeys(r["article"] for r in records):
        row = articles[article_id]
        rated = [s["summary"] for s in row["system_summaries"] if s["frank_factuality"] is not None]
        groups = [split_sentences(s) or [s] for s in rated]
        features = iter(tokens.sentences(row["article"], [x for g in groups for x in g]))
        mine = [r for r in records if r["article"] == article_id]
        for rec, group in zip(mine, groups, strict=True):
            lines.append(json.dumps({**rec, **summary_features([next(features) for _ in group])}) + "\n")
    out.write_text("".join(lines))


def main() -> None:
    from bench._common import machine, write_results

    if sys.argv[1:2] == ["collect"]:  # collect DATA CACHE OUT THREADS
        collect(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
        return
    if sys.argv[1:2] == ["refeature"]:  # refeature DATA CACHE SCORED OUT
        refeature(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
        return

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scored", type=Path, required=True, help="bench/grounding.py --dump output")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    parser.add_argument("--rounds", type=int, default=1000, help="bootstrap rounds of the paired gain")
    parser.add_argument("--collect-log", type=Path, help="collect's output: its last line goes into the JSON")
    args = parser.parse_args()
    text = args.scored.read_text()
    scored = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
    cells: dict[str, set[str]] = {}
    for r in scored:
        cells.setdefault(f"{r['part']}/{r['split']}", set()).add(r.get("article", ""))
    results: dict[str, Any] = {
        "scored_from": str(args.scored),
        "summaries": len(scored),
        "articles": {cell: len(ids) for cell, ids in sorted(cells.items())},
        "collect": args.collect_log.read_text().splitlines()[-1] if args.collect_log else None,
        **fitted_rows(scored, args.rounds),
    }
    results["machine"] = machine()
    print_rows(results)
    write_results(results, args.out, args)


if __name__ == "__main__":
    main()
