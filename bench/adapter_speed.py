"""A LoRA adapter served by llama.cpp as a GGUF LoRA or merged into the model's weights: does the
merged file write what the LoRA writes, at which output type, and how fast is each (issue 18).

    nice -n 19 python bench/adapter_speed.py --parts agreement   # trains, merges, compares
    python bench/adapter_speed.py --parts speed                   # times them, keeps the above

The adapter: a small one trained here with briefing.tuning.train (rank 16 on every projection,
the service's default, a few steps on demo articles: a realistic small update), and for contrast
a random one (peft's init_lora_weights=False: a deliberately large update, as the tests use).
Each is served by llama.cpp on the packaged SmolLM2 Q4_1 GGUF (a) as a GGUF LoRA on the base and
(b) merged by briefing.tuning.gguf_merge into one model file per output type.

Agreement (per adapter and output type): greedy decoding of --tokens tokens (end-of-text
suppressed) for --prompts chats, token by token, with (a) and (b): `identical_share` is the share
of positions where (b)'s free-running greedy token equals (a)'s; `teacher_forced_top1` the share
of (a)'s tokens that (b) itself picks greedily after (a)'s own prefix (one flip does not end the
comparison). The base model's figures against (a) say how far the adapter moves the text: a merge
no closer to (a) than the base is has lost the adapter.

Agreement runs on 1 thread: deterministic, and a starved multi-threaded llama.cpp (under nice on
a busy machine) waits on its own threads for minutes.

Speed: llama.cpp decoding tokens/s of the base, base+LoRA and each merged file, 96 tokens forced
per side (end-of-text suppressed), best of --rounds, the base measured before and after, on each
of --threads; the machine's load average is recorded beside the figures. A run of one part keeps
the other part's figures from the --out file it rewrites (with the provenance they had).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import decode_rate, machine, write_results

from briefing.llm.hf import dequantized
from briefing.llm.models import packaged_gguf
from briefing.tuning.config import TrainConfig
from briefing.tuning.data import Example, example
from briefing.tuning.gguf_lora import lora_updates, to_gguf_lora
from briefing.tuning.gguf_merge import merge_lora
from briefing.tuning.train import train_sft

MODEL = "packaged:SmolLM2-135M-Instruct"
ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "Summarize the news article in two sentences."
GENERIC = (
    "Write one sentence about a harbour town.",
    "What is the capital of France? Answer in one word.",
    "Write the numbers from one to ten in words, one per line.",
    "Explain in two sentences why ferries matter to island villages.",
    "Give three tips for a first visit to Norway.",
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/adapter_speed.json")
    parser.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("DATA_DIR", "var")) / "adapter-speed"
    )
    parser.add_argument("--qtypes", default="Q4_1,Q8_0,F16", help="merged output types, comma list")
    parser.add_argument("--threads", default="1,2", help="llama.cpp threads for the speed figures")
    parser.add_argument("--prompts", type=int, default=10, help="chats for agreement (at most 10)")
    parser.add_argument("--tokens", type=int, default=64, help="greedy tokens per chat for agreement")
    parser.add_argument("--train-articles", type=int, default=3, help="demo articles the adapter learns")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=3, help="speed: best of this many 96-token runs")
    parser.add_argument("--parts", default="agreement,speed", help="what to measure now (comma list)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 prompts, 16 tokens, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.tokens, args.rounds, args.epochs, args.train_articles = 3, 16, 1, 1.0, 3
    qtypes = args.qtypes.split(",")
    articles = _articles()
    chats = _chats(articles, args.prompts)
    train = max(int(x) for x in args.threads.split(","))
    adapters = {
        "trained": _trained(articles[: args.train_articles], args, train),
        "random": _random(args.cache / "random", dequantized(MODEL, args.cache / "models")),
    }
    results: dict[str, Any] = {"model": MODEL, "machine": machine(), "qtypes": qtypes}
    files = {name: _files(peft, args.cache / name, qtypes) for name, peft in adapters.items()}
    parts = args.parts.split(",")
    kept = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if "agreement" in parts:
        results["adapters"] = {
            name: {
                "update": _update_size(peft, qtypes),
                "agreement": agreement(files[name], chats, args.tokens),
            }
            for name, peft in adapters.items()
        }
        results["adapters"]["trained"]["train"] = json.loads((args.cache / "trained-train.json").read_text())
    else:
        results["adapters"] = kept["adapters"]
        results["agreement_provenance"] = kept.get("agreement_provenance", kept["provenance"])
    if "speed" in parts:
        results["speed"] = {t: speed(files["trained"], int(t), args.rounds) for t in args.threads.split(",")}
    elif "speed" in kept:
        results["speed"] = kept["speed"]
        results["speed_provenance"] = kept.get("speed_provenance", kept["provenance"])
    print_table(results)
    write_results(results, args.out, args)


def _articles() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (ROOT / "data/demo/articles/business_culture.jsonl").open()]
    rows += [json.loads(line) for line in (ROOT / "data/demo/articles/politics_world.jsonl").open()]
    return rows


def _chat(article: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return (("system", SYSTEM), ("user", f"{article['title']}\n\n{article['body'][:1200]}"))


def _chats(articles: Sequence[dict[str, Any]], count: int) -> list[tuple[tuple[str, str], ...]]:
    """Seven in ten: the first articles (the adapter learned the first --train-articles of them),
    the rest generic requests."""
    news = [_chat(a) for a in articles[: count - count * 3 // 10]]
    generic = [(("user", text),) for text in GENERIC]
    return (news + generic)[:count]


def _trained(articles: Sequence[dict[str, Any]], args: argparse.Namespace, threads: int) -> Path:
    """The service's adapter shape (rank 16, alpha 32, every projection), a few steps on leads."""
    examples: list[Example] = [
        example("reference", "article@1", "en", [a["id"]], _chat(a), a["lead"], {}) for a in articles
    ]
    config = TrainConfig(learning_rate=args.lr, epochs=args.epochs, batch_size=1, threads=threads)
    base = dequantized(MODEL, args.cache / "models")
    done = train_sft(examples, base, args.cache / "trained", config)
    facts = {"examples": done.examples, "steps": done.steps, "seconds": round(done.seconds, 1)}
    facts |= {
        "rank": config.rank,
        "alpha": config.alpha,
        "lr": config.learning_rate,
        "final_loss": done.losses[-1],
    }
    (args.cache / "trained-train.json").write_text(json.dumps(facts))
    return done.adapter_dir


def _random(out: Path, source: str) -> Path:
    """A rank-16 LoRA with random non-zero A and B (as tests/unit/test_gguf_lora.py's)."""
    if (out / "adapter_config.json").is_file():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = LoraConfig(
        r=16, lora_alpha=32, target_modules=list(TrainConfig().target_modules), init_lora_weights=False
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(source), config).save_pretrained(str(out))
    return out


def _files(peft: Path, folder: Path, qtypes: Sequence[str]) -> dict[str, Path]:
    """The GGUF LoRA and one merged model per output type (made once: cached in `folder`, like
    the adapters they come from, and made again when the adapter is newer)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"lora": to_gguf_lora(peft, packaged_gguf(), folder / "lora.gguf")}
    for qtype in qtypes:
        merged = folder / f"merged-{qtype}.gguf"
        if merged.is_file() and merged.stat().st_mtime > (peft / "adapter_model.safetensors").stat().st_mtime:
            files[f"merged-{qtype}"] = folder / f"merged-{qtype}.gguf"
            continue
        began = time.monotonic()
        files[f"merged-{qtype}"] = merge_lora(
            packaged_gguf(), peft, folder / f"merged-{qtype}.gguf", qtype=qtype
        )
        print(f"merged {folder.name} as {qtype} in {time.monotonic() - began:.1f} s")
    return files


def _update_size(peft: Path, qtypes: Sequence[str]) -> dict[str, float]:
    """How large the update is next to the weights, and what each output type keeps of it, over
    the adapted matrices: `kept` = <S - W, ΔW> / <ΔW, ΔW> with S the stored W + ΔW (1: the
    update is there, 0: rounded away), and rms(S - W - ΔW) / rms(ΔW), the rounding next to it
    (noise that need not point the adapter's way)."""
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize, quantize

    updates = {u.name: u for u in lora_updates(peft, packaged_gguf()).updates}
    squares = {"delta": 0.0, "weight": 0.0} | {q: 0.0 for q in qtypes} | {f"{q}-kept": 0.0 for q in qtypes}
    for tensor in GGUFReader(packaged_gguf()).tensors:
        if tensor.name not in updates:
            continue
        weight = dequantize(tensor.data, tensor.tensor_type)
        delta = updates[tensor.name].delta()
        merged = weight + delta
        squares["delta"] += float(np.sum(delta.astype(np.float64) ** 2))
        squares["weight"] += float(np.sum(weight.astype(np.float64) ** 2))
        for q in qtypes:
            kind = GGMLQuantizationType[q]
            stored = dequantize(quantize(merged, kind), kind).reshape(merged.shape)
            squares[q] += float(np.sum((stored - merged).astype(np.float64) ** 2))
            squares[f"{q}-kept"] += float(np.sum((stored - weight).astype(np.float64) * delta))
    ratio = {"rms_delta_over_rms_weight": round(float(np.sqrt(squares["delta"] / squares["weight"])), 5)}
    for q in qtypes:
        ratio[f"{q}_kept"] = round(squares[f"{q}-kept"] / squares["delta"], 4)
        ratio[f"{q}_rounding_over_delta"] = round(float(np.sqrt(squares[q] / squares["delta"])), 4)
    return ratio


def _llama(path: Path, lora: Path | None, threads: int, n_ctx: int = 1024) -> Any:
    from llama_cpp import Llama

    return Llama(
        str(path),
        n_ctx=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        lora_path=str(lora) if lora else None,
        verbose=False,
    )


def _prompt(llama: Any, chat: Sequence[tuple[str, str]]) -> list[int]:
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in chat)
    return list(llama.tokenize(f"{text}<|im_start|>assistant\n".encode(), add_bos=False, special=True))


def _greedy(llama: Any, prompt: list[int], forced: list[int] | None, tokens: int) -> list[int]:
    """Greedy tokens one at a time (end-of-text never picked); with `forced`, those are fed back
    instead of the picks (teacher forcing) and the picks are returned."""

    def last() -> np.ndarray:
        logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),)).copy()
        logits[llama.token_eos()] = -np.inf
        return logits

    llama.reset()
    llama.eval(prompt)
    picked: list[int] = []
    for i in range(tokens):
        picked.append(int(np.argmax(last())))
        llama.eval([forced[i] if forced is not None else picked[-1]])
    return picked


def agreement(files: dict[str, Path], chats: Sequence[Any], tokens: int) -> dict[str, dict[str, float]]:
    """Each merged file, and the base, against the GGUF LoRA's greedy tokens."""
    served = _llama(packaged_gguf(), files["lora"], threads=1)
    prompts = [_prompt(served, chat) for chat in chats]
    reference = [_greedy(served, p, None, tokens) for p in prompts]
    del served
    out: dict[str, dict[str, float]] = {}
    candidates = {"base": (packaged_gguf(), None)} | {k: (v, None) for k, v in files.items() if k != "lora"}
    for name, (path, lora) in candidates.items():
        llama = _llama(path, lora, threads=1)
        free = [_greedy(llama, p, None, tokens) for p in prompts]
        forced = [_greedy(llama, p, ref, tokens) for p, ref in zip(prompts, reference, strict=True)]
        out[name] = {
            "identical_share": _share(free, reference),
            "teacher_forced_top1": _share(forced, reference),
            "identical_prompts": sum(f == r for f, r in zip(free, reference, strict=True)) / len(prompts),
        }
        print(f"agreement with the GGUF LoRA, {name}: {out[name]}")
    return out


def _share(picked: Sequence[list[int]], reference: Sequence[list[int]]) -> float:
    return round(float(np.mean(np.asarray(picked) == np.asarray(reference))), 4)


def speed(files: dict[str, Path], threads: int, rounds: int) -> dict[str, Any]:
    """Decoding tokens/s of each way of serving, 96 tokens forced, the base before and after."""

    def rate(path: Path, lora: Path | None) -> float:
        llama = _llama(path, lora, threads, n_ctx=512)
        return decode_rate(llama, rounds)

    load_before = os.getloadavg()
    before = rate(packaged_gguf(), None)
    rates = {"lora": rate(packaged_gguf(), files["lora"])}
    rates |= {name: rate(path, None) for name, path in files.items() if name != "lora"}
    base = (before + rate(packaged_gguf(), None)) / 2
    return {
        "tokens_per_s_base": round(base, 1),
        "tokens_per_s": {name: round(r, 1) for name, r in rates.items()},
        "ratio_to_base": {name: round(r / base, 3) for name, r in rates.items()},
        "tokens": 96,
        "load_average_1_5_15": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "file_mb": {name: round(path.stat().st_size / 2**20, 1) for name, path in files.items()},
    }


def print_table(results: dict[str, Any]) -> None:
    for name, figures in results["adapters"].items():
        update = figures["update"]
        kept = ", ".join(f"{k.removesuffix('_kept')} {v}" for k, v in update.items() if k.endswith("kept"))
        print(
            f"\n{name} adapter: rms(ΔW)/rms(W) {update['rms_delta_over_rms_weight']:.4f}; "
            f"share of ΔW kept when stored as: {kept}"
        )
        print(f"{'against the GGUF LoRA':<22}{'identical':>10}{'forced top-1':>14}{'same text':>11}")
        for side, a in figures["agreement"].items():
            print(
                f"{side:<22}{a['identical_share']:>10.3f}{a['teacher_forced_top1']:>14.3f}{a['identical_prompts']:>11.2f}"
            )
    for threads, s in results.get("speed", {}).items():
        print(
            f"\ntokens/s on {threads} thread(s), base {s['tokens_per_s_base']}, "
            f"load {s['load_average_1_5_15']}"
        )
        for side, r in s["tokens_per_s"].items():
            print(f"  {side:<14}{r:>8.1f}  x{s['ratio_to_base'][side]:.3f}  {s['file_mb'][side]:>6.1f} MB")


if __name__ == "__main__":
    main()
