"""LoRA training speed on one machine: the CPU against a CUDA GPU, on the same snapshot and settings.

    python bench/train_speed.py --data ../shared/datasets --device cpu --out bench/results/train_speed.json
    python bench/train_speed.py --snapshot DIR --device cuda --out FILE.json   # on a GPU machine

The workload is bench/tuning.py's training step: the snapshot it caches (XSum and NorSumm
references the checker supports, plus grounded self-training), its LoRA settings (rank 16, lr 5e-4,
examples up to 1,792 tokens, one epoch) and briefing.tuning.train's loop, which feeds one sequence
at a time. `--data` builds that snapshot as bench/tuning.py does with its defaults (or finds it in
its cache under DATA_DIR/tuning-bench) and prints its folder; `--snapshot` takes such a folder
where ../shared is absent (a GPU machine's copy of the tree). A warm-up run on 4 examples goes
first, so CUDA's start-up is not counted as training.

Each run is stored in --out under --label (default: the device), with its own provenance and
machine, next to the runs already there: runs from different machines sit side by side (a GPU
machine's run is added to the file of the CPU run it is compared with). The table prints every run
with its speed-up over the `cpu` run and how far its per-step losses are from that run's (the same
training should agree to rounding). Set BENCH_COMMIT where the tree has no git history.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import STARTED, machine, provenance

from briefing.llm.hf import dequantized
from briefing.tuning.config import TrainConfig
from briefing.tuning.snapshots import load_snapshot
from briefing.tuning.train import train_sft

WARMUP_EXAMPLES = 4


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="../shared/datasets: bench/tuning.py's snapshot")
    source.add_argument("--snapshot", type=Path, help="a snapshot folder: ROOT/snapshots/<id>")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--base", default="packaged:SmolLM2-135M-Instruct", help="GGUF or transformers model")
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("DATA_DIR", "var")) / "models")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--label", help="the run's name in --out (default: the device)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch CPU threads")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-tokens", type=int, default=1792)
    args = parser.parse_args()

    folder = args.snapshot or bench_snapshot(args.data, args.threads)
    print(f"snapshot {folder}", flush=True)
    snapshot = load_snapshot(folder.parent.parent, folder.name)
    config = TrainConfig(
        learning_rate=args.lr,
        epochs=args.epochs,
        max_tokens=args.max_tokens,
        threads=args.threads,
        device=args.device,
        checkpoint_every=10**9,  # checkpoints are disk time, not training speed
    )
    loaded = time.monotonic()
    base = dequantized(args.base, args.models)
    load_s = time.monotonic() - loaded
    with tempfile.TemporaryDirectory(prefix="train-speed-") as scratch:
        warm = train_sft(snapshot.train[:WARMUP_EXAMPLES], base, Path(scratch) / "warmup", config)
        result = train_sft(snapshot.train, base, Path(scratch) / "run", config, progress=True)
    run = {
        "provenance": {**STARTED, "finished_at": provenance()["ran_at"]},
        "machine": {**machine(), **_accelerator(args.device)},
        "device": args.device,
        "threads": args.threads,
        "snapshot": {"id": snapshot.id, "sources": dict(snapshot.sources)},
        "hyper": config.hyper(),
        "base": args.base,
        "base_load_seconds": round(load_s, 2),
        "warmup_seconds": round(warm.seconds, 2),
        "examples": result.examples,
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 2),
        "tokens_per_s": round(result.tokens_per_s, 1),
        "losses": [round(x, 5) for x in result.losses],
        **_peak_memory(args.device),
    }
    runs = _merge(args.out, args.label or args.device, run)
    print_table(runs)
    print(f"\nwrote {args.out}")


def bench_snapshot(data: Path, threads: int) -> Path:
    """bench/tuning.py's training snapshot under its default arguments, from its cache or built."""
    import tuning

    cache = Path(os.environ.get("DATA_DIR", "var")) / "tuning-bench"
    rows = tuning.load(data, 300, 60, (30, 33), quick=False)  # its --train/--eval/--norsumm defaults
    summarizer, _ = tuning.build(rows, threads)  # every article indexed: the prompts' evidence
    defaults = argparse.Namespace(cache=cache, candidates=2, sample_articles=20, norsumm_candidates=0)
    snapshot = tuning.training_snapshot(summarizer, rows, defaults)
    return cache / "tuning" / "snapshots" / snapshot.id


def _accelerator(device: str) -> dict[str, Any]:
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return {}
    return {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda}


def _peak_memory(device: str) -> dict[str, Any]:
    import resource

    import torch

    peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device != "cpu" and torch.cuda.is_available():
        peak["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return peak


def _merge(out: Path, label: str, run: dict[str, Any]) -> dict[str, Any]:
    """Add this run to the file's runs (replacing one of the same label) and write it back whole."""
    existing = json.loads(out.read_text()) if out.is_file() else {}
    runs = {**existing.get("runs", {}), label: run}
    reference = runs.get("cpu")
    for other in runs.values():
        if reference is not None:
            other["speedup_vs_cpu"] = round(other["tokens_per_s"] / reference["tokens_per_s"], 2)
            other["max_loss_diff_vs_cpu"] = _loss_diff(other, reference)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_suffix(".partial")
    staging.write_text(json.dumps({"benchmark": "train_speed", "runs": runs}, indent=2) + "\n")
    staging.replace(out)
    return runs


def _loss_diff(run: dict[str, Any], reference: dict[str, Any]) -> float | None:
    if run["snapshot"]["id"] != reference["snapshot"]["id"] or run["hyper"] != reference["hyper"]:
        return None  # other data or settings: the curves are not comparable
    pairs = list(zip(run["losses"], reference["losses"], strict=False))
    return round(max(abs(a - b) for a, b in pairs), 5) if pairs else None


def print_table(runs: dict[str, Any]) -> None:
    header = f"{'run':<10}{'hardware':<34}{'examples':>9}{'tokens':>9}{'seconds':>9}{'tok/s':>9}"
    print(f"\n{header}{'x cpu':>7}{'Δloss':>9}  last loss")
    for label, run in runs.items():
        hw = run["machine"].get("gpu") or f"{run['machine']['cpus']} cpus, {run['threads']} torch threads"
        print(
            f"{label:<10}{hw[:33]:<34}{run['examples']:>9}{run['tokens']:>9}{run['seconds']:>9.1f}"
            f"{run['tokens_per_s']:>9.1f}{run.get('speedup_vs_cpu', float('nan')):>7.2f}"
            f"{_fmt(run.get('max_loss_diff_vs_cpu')):>9}  {run['losses'][-1]:.4f}"
        )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


if __name__ == "__main__":
    main()
