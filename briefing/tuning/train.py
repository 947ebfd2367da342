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
- `config.device` picks where it trains ("auto": a CUDA GPU when torch sees one, else the CPU); on a
  GPU the per-step losses agree with the CPU's within 1e-3 (an H200), not bit for bit. A checkpoint
  resumes on either.
- Checkpoints under `out/checkpoints/step-N` every `checkpoint_every` steps and when stopped; a call
  with the same inputs resumes from the last one (and with a finished adapter in place returns its
  result); checkpoints of other inputs are removed (`briefing.tuning.checkpoints`).
- `stop()` or `deadline_s` (seconds from the call's start, checked after each optimizer step) raise
  `TrainingStopped` with the checkpoint kept.
- The adapter is written to `out/adapter.partial` and renamed to `out/adapter` (peft format, with a
  `training.json` of the result): a crash never leaves a half adapter under the real name.
- embed_tokens and lm_head are never adapted: SmolLM2 ties them, and a GGUF LoRA cannot carry them.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from briefing.devices import torch_device
from briefing.tuning.checkpoints import (
    adapter_digest,
    digest,
    fingerprint,
    finished,
    publish,
    resume,
    save_checkpoint,
)
from briefing.tuning.config import TrainConfig  # light to import: settings read it

if TYPE_CHECKING:
    import torch

    from briefing.tuning.data import Example, PreferencePair

log = logging.getLogger(__name__)

NEVER_ADAPTED = ("embed_tokens", "lm_head")  # tied in SmolLM2; llama.cpp LoRA cannot carry them
WARMUP_SHARE = 0.05  # of the optimizer steps, with a linear rise; then linear decay
MAX_GRAD_NORM = 1.0

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
    run = fingerprint("sft", base, config, [digest([m, t]) for m, t in chats])
    done = _finished(out, run)
    if done is not None:
        return done
    started = time.monotonic()
    with _threads(config.threads):
        net, tokenizer = _fresh_lora(base, config)
        net.to(torch_device(config.device))
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
        return _train(net, stage, out, config, run, progress, stop, _deadline(started, deadline_s))


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
    data = [digest(list(c)) for c in chats]
    run = fingerprint("dpo", base, config, data, adapter_digest(sft_adapter))
    done = _finished(out, run)
    if done is not None:
        return done
    started = time.monotonic()
    with _threads(config.threads):
        import torch
        from peft import PeftModel

        model, tokenizer = _load_base(base)
        net = PeftModel.from_pretrained(model, str(sft_adapter), is_trainable=True)
        net.to(torch_device(config.device))
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
        return _train(net, stage, out, config, run, progress, stop, _deadline(started, deadline_s))


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
    run: str,
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
    state = resume(net, optimizer, scheduler, out / "checkpoints", run)
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
                saved = save_checkpoint(net, optimizer, scheduler, out, run, done, losses, tokens, seconds)
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
    publish(net, out, asdict(result), run)
    return result


def _finished(out: Path, run: str) -> TrainResult | None:
    """The result of a finished run with the same inputs, if its adapter is in place."""
    record = finished(out, run)
    if record is None:
        return None
    return TrainResult(**{**record, "adapter_dir": out / "adapter", "losses": tuple(record["losses"])})


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

    ids = torch.tensor([[*seq.prompt, *seq.completion]], device=net.device)
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
