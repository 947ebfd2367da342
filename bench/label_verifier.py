"""The relation verifier on our own labelled sentences (data/labels): does it tell right from wrong
in what SmolLM2 writes for the demo newsroom, and what would a show rule on it cost?

    python bench/label_verifier.py --verifier DATA_DIR/models/verifier-bench --out FILE.json

Each labelled sentence is checked against the evidence it was written from (the recorded chunks)
by `RelationChecker.features`: the verifier's best logit over its 3 closest windows, calibrated as
the verifier folder says. Per language and half: ROC AUC of supported against unsupported or
garbled for the recorded score (the shipped embedding-lexical checker with its LLM signal), the
verifier's logit and its calibrated probability. Then the show policy of DESIGN.md §5 on top of
what today's check keeps: the lowest verifier probability at which the select half reaches 0.95
precision with at least 10 sentences shown, reported on the other half with its Wilson lower
bound, next to today's rule (data/labels/gate.json). The labels are our own text; the verifier
may be trained on research-licensed data (make verifier-bench), so say which one ran.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, write_results
from label_set import LABELS, candidate_files, evidence_path, joined, kept_today, read_jsonl, wilson_low

from briefing.gate import TARGET_PRECISION
from briefing.grounding import Evidence, GroundingConfig
from briefing.verifier import CrossEncoderVerifier, RelationChecker
from indexing import SentenceTransformerEmbedder

MIN_SHOWN = 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--verifier", type=Path, required=True, help="a trained verifier folder")
    parser.add_argument("--labels", type=Path, default=LABELS / "labels.jsonl")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    candidates = args.labels.with_name("candidates.jsonl")
    rows = joined(candidates, args.labels)
    chunks = {
        c["chunk_id"]: c["text"] for p in candidate_files(candidates) for c in read_jsonl(evidence_path(p))
    }
    checker = RelationChecker(SentenceTransformerEmbedder(), CrossEncoderVerifier(args.verifier))
    for row in rows:
        evidence = [Evidence(c, chunks[c]) for c in row.get("evidence", []) if c in chunks]
        feature = checker.features([row["sentence"]], evidence)[0]
        row["logit"] = feature.logit
        row["verified"] = checker.calibration(feature.logit, feature.base.text_score)
    threshold = GroundingConfig().threshold
    results: dict[str, Any] = {
        "verifier": str(args.verifier),
        "calibration": checker.calibration.__dict__,
        "threshold": threshold,
        "target_precision": TARGET_PRECISION,
        "machine": machine(),
    }
    for language in sorted({r["language"] for r in rows}):
        mine = [r for r in rows if r["language"] == language]
        halves = {s: [r for r in mine if r["split"] == s] for s in ("select", "report")}
        kept = {s: [r for r in h if kept_today(r, threshold)] for s, h in halves.items()}
        cut = _lowest_passing(kept["select"])
        results[language] = {
            "auc": {s: _aucs(h) for s, h in halves.items()},
            "kept_by_todays_check": {s: _precision(k) for s, k in kept.items()},
            "verifier_rule": {"min_probability": cut},
            "report_under_verifier_rule": _precision([r for r in kept["report"] if _passes(r, cut)]),
            "select_under_verifier_rule": _precision([r for r in kept["select"] if _passes(r, cut)]),
        }
    _table(results)
    write_results(results, args.out, args)


def _right(row: dict[str, Any]) -> int:
    return int(row["label"] == "supported")


def _aucs(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    from sklearn.metrics import roc_auc_score

    labels = [_right(r) for r in rows]
    if len(set(labels)) < 2:
        return {"recorded_score": None, "verifier_logit": None, "verified": None}
    return {
        name: round(float(roc_auc_score(labels, [r[key] for r in rows])), 3)
        for name, key in (("recorded_score", "score"), ("verifier_logit", "logit"), ("verified", "verified"))
    }


def _precision(rows: list[dict[str, Any]]) -> dict[str, Any]:
    right = sum(_right(r) for r in rows)
    low = wilson_low(right, len(rows))
    return {
        "shown": len(rows),
        "right": right,
        "wrong": sum(r["label"] == "unsupported" for r in rows),
        "garbled": sum(r["label"] == "garbled" for r in rows),
        "precision": round(right / len(rows), 3) if rows else None,
        "wilson_low": round(low, 3) if low is not None else None,
    }


def _passes(row: dict[str, Any], cut: float | None) -> bool:
    return cut is not None and row["verified"] >= cut


def _lowest_passing(rows: list[dict[str, Any]]) -> float | None:
    """The lowest probability cut at which the shown rows reach the target precision, at least
    MIN_SHOWN of them; None if none does."""
    for cut in sorted({r["verified"] for r in rows}):
        shown = [r for r in rows if r["verified"] >= cut]
        if len(shown) < MIN_SHOWN:
            return None
        if sum(_right(r) for r in shown) / len(shown) >= TARGET_PRECISION:
            return round(cut, 4)
    return None


def _table(results: dict[str, Any]) -> None:
    print(f"\nverifier {results['verifier']}, calibration {results['calibration']['fitted_on']}")
    print(f"{'lang':<5}{'half':<8}{'AUC recorded':>13}{'AUC logit':>11}{'AUC verified':>13}")
    for language in ("en", "nb"):
        if language not in results:
            continue
        for half, auc in results[language]["auc"].items():
            print(
                f"{language:<5}{half:<8}{_f(auc['recorded_score']):>13}{_f(auc['verifier_logit']):>11}"
                f"{_f(auc['verified']):>13}"
            )
    head = f"{'shown':>6}{'right':>6}{'wrong':>6}{'garbled':>8}{'prec':>7}{'low':>7}"
    print(f"\n{'lang':<5}{'what is shown':<44}{head}")
    for language in ("en", "nb"):
        if language not in results:
            continue
        r = results[language]
        lines = [
            ("today's check keeps (report half)", r["kept_by_todays_check"]["report"]),
            (
                f"... and verified >= {r['verifier_rule']['min_probability']} (report)",
                r["report_under_verifier_rule"],
            ),
        ]
        for name, p in lines:
            print(
                f"{language:<5}{name:<44}{p['shown']:>6}{p['right']:>6}{p['wrong']:>6}{p['garbled']:>8}"
                f"{_f(p['precision']):>7}{_f(p['wilson_low']):>7}"
            )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
