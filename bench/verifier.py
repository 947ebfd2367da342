"""Train the relation verifier and cache it under DATA_DIR/models/verifier (`make verifier`).

    python bench/verifier.py --data-dir var [--shared ../shared/datasets] [--pairs 3000]

Training pairs are synthetic errors (briefing/synthetic.py) from the demo newsroom's articles
(data/demo/articles: our own text), and with `--shared`, for the benchmark model, also from XSum
articles (../shared/datasets/xsum, none that FRANK rates) and from FRANK's validation half: its
articles' sentences and its rated summaries (a faithful summary's sentences against their
closest article window: supported; a one-sentence unfaithful summary: not). FRANK's test half is
never read here. XSum, CNN/DM and FRANK articles are research-only: weights trained on them stay
under DATA_DIR and are never committed.

A fifth of the demo articles (by id) is held out: their synthetic pairs, each sentence checked
against its whole article by `RelationChecker.features`, fit the calibration (logistic regression
of the label on the verifier's logit and the embedding-lexical text score) and give the held-out
AUCs reported in bench/results/verifier.json.

On a GPU machine without ../shared: `--export DIR` writes the sampled training pairs and a
selection set (held-out demo pairs and a fifth of FRANK's rated validation pairs, by evidence
hash, left out of training) as JSONL; there `--pairs-file DIR/train.jsonl --select-file
DIR/select.jsonl --device cuda --no-calibrate` trains from them and reports the verifier's AUC on
the selection set; back here `--calibrate-only FOLDER` fits the calibration.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, write_results

from briefing.grounding import Evidence, split_sentences
from briefing.synthetic import Pair, article_sentences, synthetic_pairs
from briefing.verifier import (
    CrossEncoderVerifier,
    RelationChecker,
    TrainConfig,
    fit_calibration,
    save_calibration,
    train,
    verifier_dir,
)
from indexing import SentenceTransformerEmbedder

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "data" / "demo" / "articles"
# measured: bench/results/verifier.json (1,198 pairs of 96 tokens, one epoch, 800 s on 2 cores) and
# bench/results/verifier_gpu.json (21,967 pairs of 256 tokens, 3 epochs, 78.6 s on an NVIDIA H200)
CPU_SECONDS_PER_PAIR = 0.67
GPU_PAIRS_PER_S = 838.0


def main() -> None:
    args = parse_args()
    demo = demo_articles()
    train_ids = {a for a in demo if not held_out(a)}
    if args.calibrate_only:  # refit the calibration of a trained verifier in place
        held = {a: demo[a] for a in demo if a not in train_ids}
        print(
            json.dumps(calibrate_on(args.calibrate_only, held, args.seed, args.calibration_pairs), indent=2)
        )
        return
    if args.pairs_file:
        pairs = read_pairs(args.pairs_file)
        sources = json.loads((args.pairs_file.parent / "sources.json").read_text())
    else:
        pairs, sources, held_rated = training_pairs(args, demo, train_ids)
    if args.export:
        export(args.export, pairs, sources, demo, train_ids, held_rated, args.seed)
        return
    config = TrainConfig(
        seed=args.seed,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(
        f"training the verifier on {len(pairs)} pairs ({sources} before sampling), {config.epochs} "
        f"epoch(s): {expected_time(len(pairs) * config.epochs, config.device)}, then a minute to calibrate",
        flush=True,
    )
    held = {a: demo[a] for a in demo if a not in train_ids}
    report: dict[str, Any] = {"sources": sources, "pairs": len(pairs), "config": config.__dict__}
    started = time.perf_counter()

    def calibrate(folder: Path) -> None:
        report["train_seconds"] = round(time.perf_counter() - started, 1)
        if args.select_file:
            report["selection"] = selection_auc(folder, read_pairs(args.select_file))
        if not args.no_calibrate:
            report["calibration"] = calibrate_on(folder, held, args.seed, args.calibration_pairs)
        report["seconds"] = round(time.perf_counter() - started, 1)

    notes = {"sources": sources, "shared": set(sources) != {"demo"}}  # also from an exported file
    folder = verifier_dir(args.data_dir)
    default = folder.with_name("verifier-bench") if args.shared else folder
    out = train(pairs, args.out or default, config, base=args.base, notes=notes, finish=calibrate)
    report["cached_at"] = str(out)
    report["machine"] = machine()
    print(json.dumps({k: report.get(k) for k in ("selection", "calibration", "train_seconds")}, indent=2))
    if args.results:
        write_results(report, args.results, args)


def expected_time(pair_epochs: int, device: str) -> str:
    from briefing.devices import torch_device

    if torch_device(device).type == "cuda":
        return f"expect about {pair_epochs / GPU_PAIRS_PER_S / 60:.1f} minutes on a GPU like an H200"
    hours = pair_epochs * CPU_SECONDS_PER_PAIR / 3600
    return f"expect about {hours:.1f} hours on 2 CPU cores (longer for pairs above 96 tokens)"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", "var")))
    parser.add_argument(
        "--out",
        type=Path,
        help="model folder (default DATA_DIR/models/verifier, verifier-bench with --shared)",
    )
    parser.add_argument("--shared", type=Path, help="../shared/datasets: add XSum and FRANK validation pairs")
    parser.add_argument("--pairs", type=int, default=3000, help="training pairs (sampled)")
    parser.add_argument("--max-length", type=int, default=TrainConfig.max_length)
    parser.add_argument(
        "--calibration-pairs", type=int, default=400, help="held-out pairs the calibration is fitted on"
    )
    parser.add_argument(
        "--calibrate-only", type=Path, help="a trained verifier folder: refit its calibration"
    )
    parser.add_argument("--learning-rate", type=float, default=TrainConfig.learning_rate)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--results", type=Path, help="JSON report (bench/results/verifier.json)")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--device", default=TrainConfig.device, help="cpu, auto, cuda or cuda:N")
    parser.add_argument("--base", type=Path, help="the model to fine-tune (default: the packaged MiniLM)")
    parser.add_argument("--export", type=Path, help="write the training and selection pairs here and stop")
    parser.add_argument("--pairs-file", type=Path, help="train on exported pairs (DIR/train.jsonl)")
    parser.add_argument("--select-file", type=Path, help="report the verifier's AUC on these pairs")
    parser.add_argument("--no-calibrate", action="store_true", help="calibrate later (--calibrate-only)")
    return parser.parse_args()


def training_pairs(
    args: argparse.Namespace, demo: dict[str, list[str]], train_ids: set[str]
) -> tuple[list[Pair], dict[str, int], list[Pair]]:
    """The sampled training pairs, each source's size before sampling, and the fifth of FRANK's
    rated validation pairs held out of training for choosing between runs."""
    pairs = synthetic_pairs([demo[a] for a in sorted(train_ids)], seed=args.seed)
    sources = {"demo": len(pairs)}
    by_source = {"demo": pairs}
    held: list[Pair] = []
    if args.shared:
        by_source.update(shared_pairs(args.shared, args.seed))
        sources.update({k: len(v) for k, v in by_source.items()})
        rated = by_source["frank_validation_rated"]
        by_source["frank_validation_rated"] = [p for p in rated if not _selection(p)]
        held = [p for p in rated if _selection(p)]
    return sample(by_source, args.pairs, random.Random(args.seed)), sources, held


def _selection(pair: Pair) -> bool:
    """A fifth of FRANK's rated validation pairs, by evidence: held out for choosing a run."""
    return int(hashlib.sha256(pair.evidence.encode()).hexdigest(), 16) % 5 == 0


def export(
    folder: Path,
    pairs: list[Pair],
    sources: dict[str, int],
    demo: dict[str, list[str]],
    train_ids: set[str],
    held_rated: list[Pair],
    seed: int,
) -> None:
    """Training pairs, and selection pairs none of them shares an article with: every pair of the
    held-out demo articles and the held-out fifth of FRANK's rated validation pairs."""
    held = [p for a in sorted(set(demo) - train_ids) for p in synthetic_pairs([demo[a]], seed=seed)]
    held += held_rated
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", pairs), ("select", held)):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(dataclasses.asdict(p), ensure_ascii=False) + "\n" for p in rows)
    (folder / "sources.json").write_text(json.dumps(sources))
    print(f"wrote {len(pairs)} training and {len(held)} selection pairs to {folder}")


def read_pairs(path: Path) -> list[Pair]:
    return [Pair(**json.loads(line)) for line in path.open(encoding="utf-8")]


def selection_auc(folder: Path, pairs: list[Pair]) -> dict[str, Any]:
    """The verifier's logit AUC on held-out pairs, per source kind (synthetic demo, FRANK rated)."""
    from sklearn.metrics import roc_auc_score

    logits = CrossEncoderVerifier(folder).logits([(p.sentence, p.evidence) for p in pairs])
    report: dict[str, Any] = {"pairs": len(pairs)}
    for name, keep in (("all", lambda p: True), ("frank", lambda p: p.kind == "frank")):
        rows = [(p.label, float(x)) for p, x in zip(pairs, logits, strict=True) if keep(p)]
        if len({label for label, _ in rows}) == 2:
            report[f"auc_{name}"] = round(float(roc_auc_score(*zip(*rows, strict=True))), 4)
    return report


def sample(by_source: dict[str, list[Pair]], size: int, rng: random.Random) -> list[Pair]:
    """FRANK's rated pairs all (up to a third of `size`: the only abstractive sentences), the
    rest in equal shares from each synthetic source, shuffled."""
    rated = by_source.get("frank_validation_rated", [])[: size // 3]
    synthetic = [v for k, v in by_source.items() if k != "frank_validation_rated"]
    share = (size - len(rated)) // max(1, len(synthetic))
    pairs = list(rated)
    for source in synthetic:
        pairs += rng.sample(source, min(share, len(source)))
    rng.shuffle(pairs)
    return pairs


def demo_articles() -> dict[str, list[str]]:
    articles = {}
    for path in sorted(DEMO.glob("*.jsonl")):
        for line in path.open(encoding="utf-8"):
            row = json.loads(line)
            articles[row["id"]] = article_sentences(row)
    return articles


def held_out(article_id: str) -> bool:
    """A fifth of the demo articles, fixed by id: calibration and held-out figures."""
    return int(hashlib.sha256(article_id.encode()).hexdigest(), 16) % 5 == 0


def calibrate_on(folder: Path, held: dict[str, list[str]], seed: int, size: int) -> dict[str, Any]:
    """Fit the calibration on held-out demo pairs (a sample of `size`, spread over the
    articles) checked against their whole article."""
    from sklearn.metrics import roc_auc_score

    checker = RelationChecker(SentenceTransformerEmbedder(), CrossEncoderVerifier(folder))
    logits, texts, labels, kinds = [], [], [], []
    rng = random.Random(seed)
    per_article = max(2, size // max(1, len(held)))
    for article_id, sentences in sorted(held.items()):
        pairs = [p for p in synthetic_pairs([sentences], seed=seed) if p.kind != "unrelated"]
        pairs = rng.sample(pairs, min(per_article, len(pairs)))
        evidence = [Evidence(article_id, " ".join(sentences))]
        for p, f in zip(pairs, checker.features([p.sentence for p in pairs], evidence), strict=True):
            logits.append(f.logit)
            texts.append(f.base.text_score)
            labels.append(p.label)
            kinds.append(p.kind)
    calibration = fit_calibration(
        logits, texts, labels, f"held-out synthetic pairs of {len(held)} demo articles"
    )
    save_calibration(folder, calibration)
    combined = [calibration(x, t) for x, t in zip(logits, texts, strict=True)]
    by_kind = {}
    for kind in sorted(set(kinds) - {"supported"}):
        keep = [i for i, k in enumerate(kinds) if k in (kind, "supported")]
        by_kind[kind] = round(float(roc_auc_score([labels[i] for i in keep], [combined[i] for i in keep])), 3)
    return {
        "fitted": calibration.__dict__,
        "pairs": len(labels),
        "auc_verifier": round(float(roc_auc_score(labels, logits)), 3),
        "auc_text_score": round(float(roc_auc_score(labels, texts)), 3),
        "auc_combined": round(float(roc_auc_score(labels, combined)), 3),
        "auc_combined_by_error": by_kind,
    }


def shared_pairs(datasets: Path, seed: int) -> dict[str, list[Pair]]:
    """Synthetic pairs from XSum articles FRANK does not rate and from FRANK's validation
    articles, and FRANK's validation summaries as rated pairs."""
    frank = [json.loads(line) for line in (datasets / "frank" / "frank_articles_refs_systems.jsonl").open()]
    rated = {str(r["orig_id"]) for r in frank} | {str(r["id"]) for r in frank}
    xsum = [json.loads(line) for line in (datasets / "xsum" / "xsum.jsonl").open()]
    docs = [split_sentences(x["document"]) for x in xsum if str(x["id"]) not in rated][:300]
    validation = [r for r in frank if r["frank_split"] == "validation"]
    return {
        "xsum": synthetic_pairs([[s for s in d if len(s.split()) >= 5] for d in docs], seed=seed),
        "frank_validation_synthetic": synthetic_pairs(
            [[s for s in split_sentences(r["article"]) if len(s.split()) >= 5] for r in validation], seed=seed
        ),
        "frank_validation_rated": rated_pairs(validation),
    }


def rated_pairs(rows: list[dict[str, Any]]) -> list[Pair]:
    """Each sentence of a rated summary against the article window sharing most of its content
    words (words, not embeddings: embedding every window of 149 long articles takes most of the
    training budget on 2 cores)."""
    from briefing.grounding import _units, content_words

    out = []
    for row in rows:
        units, _, _ = _units([Evidence("a", row["article"])])
        unit_words = [content_words(u) for u in units]
        for summary in row["system_summaries"]:
            score = summary["frank_factuality"]
            sentences = split_sentences(summary["summary"]) or [summary["summary"]]
            if score is None or (score < 1.0 and len(sentences) > 1):
                continue  # which sentence of an unfaithful summary is wrong is not known
            for s in sentences:
                own = content_words(s)
                best = max(
                    range(len(units)),
                    key=lambda j: len(own & unit_words[j]) / (1 + 0.02 * len(unit_words[j])),
                )
                out.append(Pair(s, units[best], int(score >= 1.0), "frank", "en"))
    return out


if __name__ == "__main__":
    main()
