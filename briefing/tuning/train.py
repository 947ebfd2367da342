"""LoRA fine-tuning of the transformers model: SFT on grounded targets, then DPO on preference pairs.

Contract (tests/unit/test_tuning_train.py):
- `train_sft(examples, base, out, config)` trains a fresh peft LoRA on `base` (a transformers folder,
  `briefing.llm.hf.dequantized(...)`); `train_dpo(pairs, base, sft_adapter, out, config)` trains the SFT
  adapter further with the DPO loss, the SFT model being the reference. Both return a `TrainResult`.
- The prompt is rendered exactly as the serving backend renders it (the tokenizer's chat template with
  `add_generation_prompt=True`, no extra special tokens); the loss covers the target and its end token only.
- An example whose prompt and target do not fit in `max_tokens` is left out, never cut: a cut article
  under a full summary would teach the model to state facts it was not shown.
- Deterministic: the same base, data, config and seed give the same adapter weights, bit for bit
  (one sequence at a time on the CPU, batch order drawn from the seed and the step number alone).
- Checkpoints under `out/checkpoints/step-N` (adapter, optimizer, scheduler, RNG, step, losses and a
  fingerprint of base, data and config) every `checkpoint_every` steps and when stopped. A call with
  the same inputs resumes from the last one (and with a finished adapter in place returns its result);
  checkpoints of other inputs are removed.
- `stop()` or `deadline_s` (seconds from the call's start, checked after each optimizer step) raise
  `TrainingStopped` with the checkpoint kept.
- The adapter is written to `out/adapter.partial` and renamed to `out/adapter` (peft format, with a
  `training.json` of the result): a crash never leaves a half adapter under the real name.
- embed_tokens and lm_head are never adapted: SmolLM2 ties them, and a GGUF LoRA cannot carry them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from briefing.tuning.config import TrainConfig  # light to import: settings read it

if TYPE_CHECKING:
    import torch

    from briefing.tuning.data import Example, PreferencePair

log = logging.getLogger(__name__)

NEVER_ADAPTED = ("embed_tokens", "lm_head")  # tied in SmolLM2; llama.cpp LoRA cannot carry them
WARMUP_SHARE = 0.05  # of the optimizer steps, with a linear rise; then linear decay
MAX_GRAD_NORM = 1.0
RESULT_FILE = "training.json"  # inside the adapter folder: the result and its fingerprint

T = TypeVar("T")
DEFAULT = TrainConfig()


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path
    steps: int  # optimizer steps of the whole run (resumed ones included)
    examples: int  # examples (SFT) or pairs (DPO) trained on, after leaving out the too long ones
    tokens: int  # tokens through the model in training (prompt and target, every forward pass)
    seconds: float  # training time of the whole run (model loading excluded)
    tokens_per_s: float
    losses: tuple[float, ...]  # mean loss of each optimizer step
    resumed_from: int | None  # the checkpoint step this call started from
    stage: str  # "sft" | "dpo"


class TrainingStopped(RuntimeError):
    """The deadline passed or `stop()` said so; the checkpoint at `step` is kept for a resume."""

    def __init__(self, message: str, *, step: int = 0, checkpoint: Path | None = None) -> None:
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


@dataclass(frozen=True)
class _Sequence:
    prompt: tuple[int, ...]  # chat template with the generation prompt, as the server renders it
    completion: tuple[int, ...]  # target tokens and the end token: the only positions with a loss

    def __len__(self) -> int:
        return len(self.prompt) + len(self.completion)


@dataclass(frozen=True)
class _Pair:
    chosen: _Sequence
    rejected: _Sequence


@dataclass(frozen=True)
class _Stage:
    """What differs between SFT and DPO for the shared optimizer loop."""

    name: str
    items: int
    learning_rate: float
    epochs: float
    weight: Callable[[int], int]  # an item's share of its batch's mean (target tokens, or 1 per pair)
    loss: Callable[[Any, int], tuple[torch.Tensor, int]]  # (summed loss, tokens) of one item


def train_sft(
    examples: Sequence[Example],
    base: str,
    out: Path,
    config: TrainConfig = DEFAULT,
    *,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
    deadline_s: float | None = None,
) -> TrainResult:
    """Train a fresh LoRA adapter on `examples` (prompt → target, loss on the target only)."""
    _refuse_untrainable(config.target_modules)
    chats = [(_messages(e.chat), e.target) for e in examples]
    fingerprint = _fingerprint("sft", base, config, [_digest([m, t]) for m, t in chats])
    done = _finished(out, fingerprint)
    if done is not None:
        return done
    started = time.monotonic()
    with _threads(config.threads):
        net, tokenizer = _fresh_lora(base, config)
        sequences = _fitting(
            [_encode(tokenizer, m, t) for m, t in chats], config.max_tokens, "SFT examples", len
        )

        def loss(model: Any, i: int) -> tuple[torch.Tensor, int]:
            return -_logprob(model, sequences[i]), len(sequences[i])

        stage = _Stage(
            "sft",
            len(sequences),
            config.learning_rate,
            config.epochs,
            lambda i: len(sequences[i].completion),
            loss,
        )
        return _train(net, stage, out, config, fingerprint, progress, stop, _deadline(started, deadline_s))


def train_dpo(
    pairs: Sequence[PreferencePair],
    base: str,
    sft_adapter: Path,
    out: Path,
    config: TrainConfig = DEFAULT,
    *,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
    deadline_s: float | None = None,
) -> TrainResult:
    """Train the SFT adapter further on preference pairs with the DPO loss (Rafailov et al. 2023).

    The reference is the SFT model itself: its log-probabilities are computed once, before any step,
    so no second copy of the model is held (and a resume recomputes them from `sft_adapter`)."""
    _refuse_untrainable(_adapter_modules(sft_adapter))
    chats = [(_messages(p.chat), p.chosen, p.rejected) for p in pairs]
    data = [_digest(list(c)) for c in chats]
    fingerprint = _fingerprint("dpo", base, config, data, _adapter_digest(sft_adapter))
    done = _finished(out, fingerprint)
    if done is not None:
        return done
    started = time.monotonic()
    with _threads(config.threads):
        import torch
        from peft import PeftModel

        model, tokenizer = _load_base(base)
        net = PeftModel.from_pretrained(model, str(sft_adapter), is_trainable=True)
        encoded = [_Pair(_encode(tokenizer, m, c), _encode(tokenizer, m, r)) for m, c, r in chats]
        kept = _fitting(
            encoded, config.max_tokens, "DPO pairs", lambda p: max(len(p.chosen), len(p.rejected))
        )
        net.eval()  # the reference without dropout
        with torch.no_grad():
            reference = [(float(_logprob(net, p.chosen)), float(_logprob(net, p.rejected))) for p in kept]
        torch.manual_seed(config.seed)

        def loss(model: Any, i: int) -> tuple[torch.Tensor, int]:
            pair, (ref_chosen, ref_rejected) = kept[i], reference[i]
            chosen = _logprob(model, pair.chosen) - ref_chosen
            rejected = _logprob(model, pair.rejected) - ref_rejected
            loss = -torch.nn.functional.logsigmoid(config.dpo_beta * (chosen - rejected))
            return loss, len(pair.chosen) + len(pair.rejected)

        stage = _Stage("dpo", len(kept), config.dpo_learning_rate, config.dpo_epochs, lambda i: 1, loss)
        return _train(net, stage, out, config, fingerprint, progress, stop, _deadline(started, deadline_s))


def completion_logprobs(
    base: str, adapter: Path | None, chat: Iterable[tuple[str, str]], completions: Sequence[str]
) -> list[float]:
    """Summed log-probability of each completion (with its end token) after the chat's prompt, under
    the base model or base + adapter: what SFT raises and DPO pulls apart (tests, diagnostics)."""
    import torch

    model, tokenizer = _load_base(base)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    messages = _messages(chat)
    with torch.no_grad():
        return [float(_logprob(model, _encode(tokenizer, messages, c))) for c in completions]


def _train(
    net: Any,
    stage: _Stage,
    out: Path,
    config: TrainConfig,
    fingerprint: str,
    progress: bool,
    stop: Callable[[], bool] | None,
    late: Callable[[], bool],
) -> TrainResult:
    """The optimizer loop both stages share: AdamW, linear warmup and decay, accumulation to batch_size."""
    import torch
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    if stage.items == 0:
        raise ValueError(f"nothing to train on in the {stage.name} stage (no example fits in max_tokens)")
    total = _total_steps(stage.items, config.batch_size, stage.epochs)
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.learning_rate, weight_decay=0.0)
    warmup = int(WARMUP_SHARE * total)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)  # type: ignore[no-untyped-call]
    state = _resume(net, optimizer, scheduler, out / "checkpoints", fingerprint)
    start = state["step"]
    losses: list[float] = list(state["losses"])
    tokens, seconds = int(state["tokens"]), float(state["seconds"])
    net.train()
    bar = tqdm(total=total, initial=start, desc=f"train {stage.name}", unit="step", disable=not progress)
    try:
        for step in range(start, total):
            began = time.monotonic()
            batch = _batch(stage.items, config.batch_size, config.seed, step)
            norm = sum(stage.weight(i) for i in batch)
            optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for i in batch:
                loss, n = stage.loss(net, i)
                (loss / norm).backward()  # type: ignore[no-untyped-call]
                step_loss += float(loss.detach()) / norm
                tokens += n
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            optimizer.step()
            scheduler.step()
            losses.append(step_loss)
            seconds += time.monotonic() - began
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.3f}", tok_s=f"{tokens / max(seconds, 1e-9):.0f}")
            done = step + 1
            if done == total:
                break
            halted = (stop is not None and stop()) or late()
            if done % config.checkpoint_every == 0 or halted:
                saved = _checkpoint(
                    net, optimizer, scheduler, out, fingerprint, done, losses, tokens, seconds
                )
                if halted:
                    raise TrainingStopped(
                        f"{stage.name} training stopped after step {done} of {total}; "
                        f"a rerun resumes from {saved}",
                        step=done,
                        checkpoint=saved,
                    )
    finally:
        bar.close()
    result = TrainResult(
        adapter_dir=out / "adapter",
        steps=total,
        examples=stage.items,
        tokens=tokens,
        seconds=seconds,
        tokens_per_s=tokens / seconds if seconds > 0 else 0.0,
        losses=tuple(losses),
        resumed_from=start or None,
        stage=stage.name,
    )
    _publish(net, out, result, fingerprint)
    return result


def _publish(net: Any, out: Path, result: TrainResult, fingerprint: str) -> None:
    """Write the adapter under a staging name and rename it: the real name holds a whole adapter or none."""
    staging, final, old = out / "adapter.partial", out / "adapter", out / "adapter.old"
    shutil.rmtree(staging, ignore_errors=True)
    _write_adapter(net, staging)
    record = {**asdict(result), "adapter_dir": str(final), "fingerprint": fingerprint}
    (staging / RESULT_FILE).write_text(json.dumps(record, indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)  # an adapter of other inputs: out of the way first, removed after
    staging.replace(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


def _write_adapter(net: Any, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(str(folder), save_embedding_layers=False)


def _finished(out: Path, fingerprint: str) -> TrainResult | None:
    """The result of a finished run with the same inputs, if its adapter is in place."""
    path = out / "adapter" / RESULT_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.pop("fingerprint", None) != fingerprint:
        return None
    return TrainResult(**{**record, "adapter_dir": out / "adapter", "losses": tuple(record["losses"])})


def _checkpoint(
    net: Any,
    optimizer: Any,
    scheduler: Any,
    out: Path,
    fingerprint: str,
    step: int,
    losses: list[float],
    tokens: int,
    seconds: float,
) -> Path:
    """Save everything a resume needs under checkpoints/step-N (staged, renamed); older ones go."""
    import torch

    root = out / "checkpoints"
    folder, staging = root / f"step-{step}", root / f"step-{step}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    _write_adapter(net, staging / "adapter")
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "losses": losses,
        "tokens": tokens,
        "seconds": seconds,
    }
    torch.save(state, staging / "state.pt")
    (staging / "fingerprint").write_text(fingerprint)
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    for other in root.iterdir():
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)
    return folder


def _resume(net: Any, optimizer: Any, scheduler: Any, root: Path, fingerprint: str) -> dict[str, Any]:
    """Restore the newest checkpoint of the same inputs; remove checkpoints of other inputs."""
    import torch
    from peft import set_peft_model_state_dict
    from peft.utils import load_peft_weights

    fresh: dict[str, Any] = {"step": 0, "losses": [], "tokens": 0, "seconds": 0.0}
    if not root.is_dir():
        return fresh
    ours: list[tuple[int, Path]] = []
    for folder in root.iterdir():
        mark = folder / "fingerprint"
        numbered = folder.name.startswith("step-") and folder.name[5:].isdigit()
        if numbered and mark.is_file() and mark.read_text() == fingerprint:
            ours.append((int(folder.name[5:]), folder))
            continue
        shutil.rmtree(folder, ignore_errors=True)  # other inputs, or a checkpoint cut short
    if not ours:
        return fresh
    _, folder = max(ours)
    set_peft_model_state_dict(net, load_peft_weights(str(folder / "adapter")))
    state: dict[str, Any] = torch.load(folder / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    log.info("resuming training from %s", folder)
    return state


def _load_base(base: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return model, tokenizer


def _fresh_lora(base: str, config: TrainConfig) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, get_peft_model

    model, tokenizer = _load_base(base)
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(config.seed)  # LoRA A's initial draw, then dropout masks
    net = get_peft_model(model, lora)
    adapted = [n for n, p in net.named_parameters() if p.requires_grad]
    wrong = [n for n in adapted if "lora_" not in n or any(m in n for m in NEVER_ADAPTED)]
    if wrong:
        raise ValueError(f"only LoRA matrices outside embed_tokens/lm_head may train; got {wrong[:3]}")
    return net, tokenizer


def _refuse_untrainable(modules: Iterable[str]) -> None:
    named = [m for m in modules if any(m == n or m.endswith("." + n) for n in NEVER_ADAPTED)]
    if named:
        raise ValueError(
            f"LoRA on {named} refused: SmolLM2 ties embed_tokens and lm_head, and llama.cpp's LoRA "
            "cannot carry them; adapt the attention and MLP projections only"
        )


def _adapter_modules(adapter: Path) -> list[str]:
    config = json.loads((adapter / "adapter_config.json").read_text())
    modules = config.get("target_modules") or []
    if isinstance(modules, str):  # a regular expression: refuse it if it could name a tied layer
        return [n for n in NEVER_ADAPTED if n in modules]
    saved = config.get("modules_to_save") or []
    return [*modules, *saved]


def _messages(chat: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in chat]


def _encode(tokenizer: Any, messages: list[dict[str, str]], target: str) -> _Sequence:
    """Prompt tokens exactly as `TransformersGenerator` encodes them; the target and the end token."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    completion = tokenizer(target.strip(), add_special_tokens=False)["input_ids"]
    return _Sequence(tuple(prompt), (*completion, tokenizer.eos_token_id))


def _fitting(items: list[T], max_tokens: int, what: str, size: Callable[[T], int]) -> list[T]:
    kept = [item for item in items if size(item) <= max_tokens]
    if len(kept) < len(items):
        log.warning(
            "%d of %d %s are longer than %d tokens: left out",
            len(items) - len(kept),
            len(items),
            what,
            max_tokens,
        )
    return kept


def _logprob(net: Any, seq: _Sequence) -> torch.Tensor:
    """Summed log-probability of the completion; logits only at the completion's positions (the
    vocabulary projection over a 600-token prompt would be a fifth of the work for nothing)."""
    import torch

    ids = torch.tensor([[*seq.prompt, *seq.completion]])
    keep = len(seq.completion) + 1
    logits = net(input_ids=ids, logits_to_keep=keep, use_cache=False).logits[0, :-1]
    labels = ids[0, -len(seq.completion) :]
    return -torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")


def _total_steps(items: int, batch_size: int, epochs: float) -> int:
    return max(1, math.ceil(epochs * math.ceil(items / batch_size)))


def _batch(items: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The item indices of one optimizer step: a fresh permutation per epoch, drawn from the seed and
    the epoch alone, so a resumed run sees the same batches without replaying the ones before."""
    import torch

    per_epoch = math.ceil(items / batch_size)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(items, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    return [int(i) for i in order[k * batch_size : (k + 1) * batch_size]]


def _fingerprint(stage: str, base: str, config: TrainConfig, data: list[str], *more: str) -> str:
    """What decides the weights: a checkpoint or an adapter of other inputs is never resumed."""
    hyper = {k: v for k, v in config.hyper().items() if k not in ("threads", "checkpoint_every")}
    if stage == "sft":
        hyper = {k: v for k, v in hyper.items() if not k.startswith("dpo_")}
    return _digest([stage, _base_identity(base), hyper, data, *more])


def _base_identity(base: str) -> Any:
    folder = Path(base)
    if not folder.is_dir():
        return base  # a hub id
    weights = sorted((p.name, p.stat().st_size) for p in folder.glob("*.safetensors"))
    return [folder.name, _digest((folder / "config.json").read_text()), weights]


def _adapter_digest(adapter: Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        path = adapter / name
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _deadline(started: float, deadline_s: float | None) -> Callable[[], bool]:
    return lambda: deadline_s is not None and time.monotonic() - started >= deadline_s


@contextmanager
def _threads(threads: int | None) -> Iterator[None]:
    """torch's CPU thread count for the duration of training, restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingStopped",
    "completion_logprobs",
    "train_dpo",
    "train_sft",
]
