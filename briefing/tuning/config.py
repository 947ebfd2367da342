"""Tuning settings as frozen dataclasses, light to import (`Settings.from_env` reads TUNE_*)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from briefing.devices import check_device_name

# "per-language": one adapter per language, served as one set (bench/results/tuning_layouts.json:
# as good in English as one joint adapter, better in Bokmål); "joint": one adapter for every language
LAYOUTS = ("per-language", "joint")


@dataclass(frozen=True)
class TrainConfig:
    """LoRA hyper-parameters and the training loop's settings (recorded with each adapter)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    # every projection of attention and MLP; never embed_tokens or lm_head (SmolLM2 ties them)
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    learning_rate: float = 2e-4
    epochs: float = 1.0
    batch_size: int = 4
    max_tokens: int = (
        1280  # the serving prompt carries up to ~900 tokens of article; longer ones are left out
    )
    seed: int = 0
    checkpoint_every: int = 20
    threads: int | None = None
    # "auto": the first CUDA GPU when torch sees one, else the CPU; or "cpu", "cuda", "cuda:N"
    device: str = "auto"
    dpo_beta: float = 0.1
    dpo_epochs: float = 1.0
    dpo_learning_rate: float = 5e-5

    def __post_init__(self) -> None:
        check_device_name(self.device, "training device")

    def hyper(self) -> dict[str, Any]:
        """What decides the weights (threads, device and checkpointing do not, beyond rounding)."""
        skip = {"threads", "checkpoint_every", "device"}
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items() if k not in skip}


@dataclass(frozen=True)
class TuneConfig:
    """How one tune run samples, trains and gates."""

    train: TrainConfig = field(default_factory=TrainConfig)
    every_s: float = 24 * 3600.0  # the tune job's interval (0: no scheduled tuning)
    articles: int = 0  # self-training articles per run (0: every article in the index)
    preference: bool = True  # a DPO step after SFT, kept only if it beats SFT alone on the gate
    min_pairs: int = 8  # fewer preference pairs than this: no DPO step
    min_examples: int = 8  # fewer training examples than this: nothing is trained
    candidates: int = 4  # self-training samples per article
    temperature: float = 0.8
    margin: float = 0.05  # a self-training target's every sentence scores threshold + margin
    min_novel: float = 0.2  # ... and is more than a copy of the article (novel bigram share)
    eval_share: float = 0.2
    eval_limit: int = 40  # eval articles run through the serving backend per side
    budget_s: float = 4 * 3600.0  # sampling and training stop here (a checkpoint resumes next run)
    layout: str = "per-language"  # one of LAYOUTS (briefing.tuning.layouts)

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"tune layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
