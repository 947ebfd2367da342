"""What a truth filter on training targets would buy: an English adapter trained only on the
targets of bench/tuning.py's snapshot that a person labelled supported, gated against the base
model on XSum's held-out articles exactly as bench/tuning.py gates its adapter.

    python bench/tuning.py --data ../shared/datasets --out bench/results/tuning.json
    python bench/tuning_labelled.py --data ../shared/datasets --labels FILE.jsonl \\
        --out bench/results/tuning_labelled.json

The shipped checker keeps the XSum references it supports, but cannot tell which of those are
true: that is what the labels stand in for (an oracle filter, to size the gain a verifier could
bring). `--labels`: JSONL, one row per labelled sentence of a target: `example_id` (a row of the
snapshot's train split), `label` (supported, unsupported or garbled), and optionally `error` and
`note`, as data/labels/README.md defines them. A target is kept when every one of its sentences is
labelled supported. It quotes XSum (research-only): keep it under DATA_DIR, out of the repository.

It reuses bench/tuning.py's cache: run it with the same --cache and article options, after that
benchmark, so the snapshot and the base model's outcomes are read, not rebuilt. The hyper-parameters
are bench/tuning.py's; only English is trained and gated. Outputs (base and this adapter side by
side) go to `outputs_xsum_labelled.jsonl` under --cache.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from _common import machine, write_results
from tuning import (
    MODEL,
    _key,
    arguments,
    build,
    gate,
    install_adapter,
    load,
    print_rows,
    train_config,
    training_snapshot,
)

from briefing.llm.hf import dequantized
from briefing.tuning.train import train_sft

LABELS = ("supported", "unsupported", "garbled")
NAME = "en-labelled"


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--labels", type=Path, required=True, help="JSONL of labelled target sentences")
    args = parser.parse_args()
    labels = read_labels(args.labels)
    rows = load(
        args.data, args.train_articles, args.eval_articles, (args.norsumm_train, args.norsumm_eval), False
    )
    summarizer, embedder = build(rows, args.threads)
    snapshot = training_snapshot(summarizer, rows, args)
    english = [e for e in snapshot.train if e.language == "en"]
    kept = [e for e in english if labels.get(e.id) == {"supported"}]
    counts = Counter("unlabelled" if e.id not in labels else _verdict(labels[e.id]) for e in english)
    if not kept:
        raise SystemExit(f"no English target of snapshot {snapshot.id} is labelled supported: {dict(counts)}")
    config = train_config(args)
    run_dir = args.cache / "runs" / f"{snapshot.id}-{NAME}-{_key(config)}-{_key(sorted(e.id for e in kept))}"
    print(f"training {NAME} on {len(kept)} of {len(english)} English targets ({dict(counts)})", flush=True)
    run = train_sft(kept, dequantized(MODEL, args.cache / "models"), run_dir, config, progress=True)
    install_adapter(summarizer, NAME, run.adapter_dir)
    xsum = gate(summarizer, embedder, rows["xsum"]["eval"], "xsum", (args.cache, "_labelled"), NAME)
    results: dict[str, Any] = {
        "model": MODEL,
        "backend": "llamacpp",
        "machine": machine(),
        "snapshot": snapshot.id,
        "targets": {"english": len(english), **dict(counts), "trained": len(kept)},
        "train": {
            "examples": run.examples,
            "steps": run.steps,
            "tokens": run.tokens,
            "seconds": round(run.seconds, 1),
        },
        "xsum": xsum,
    }
    _print(results)
    write_results(results, args.out, args)


def read_labels(path: Path) -> dict[str, set[str]]:
    """example id → the labels of its sentences; a row without an id or with another label is refused."""
    out: dict[str, set[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("example_id"), str) or row.get("label") not in LABELS:
            raise SystemExit(
                f"{path}:{n}: needs a string example_id and a label in {LABELS}, got {line[:120]}"
            )
        out.setdefault(row["example_id"], set()).add(row["label"])
    return out


def _verdict(labels: set[str]) -> str:
    return "supported" if labels == {"supported"} else "garbled" if "garbled" in labels else "unsupported"


def _print(results: dict[str, Any]) -> None:
    t = results["targets"]
    print(f"\nEnglish targets: {t}; trained {results['train']['examples']} examples")
    print(f"{'figure':<17}{'base':>8}{'adapter':>9}{'Δ mean':>9}{'95% CI':>20}")
    print_rows(results["xsum"])


if __name__ == "__main__":
    main()
