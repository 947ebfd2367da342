"""LoRA training (briefing/tuning/train.py) on the packaged SmolLM2, real and small: sequences of about
40 tokens, a few optimizer steps each, one torch thread (two threads on two shared cores run several
times slower than one)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from briefing.llm import GenerationParams
from briefing.tuning import checkpoints
from briefing.tuning import train as training
from briefing.tuning.config import TrainConfig
from briefing.tuning.data import Example, PreferencePair, example, pair
from briefing.tuning.train import TrainingStopped, completion_logprobs, train_dpo, train_sft

pytestmark = pytest.mark.slow

SYSTEM = ("system", "Summarize in one sentence.")
FERRY = (
    SYSTEM,
    ("user", "The Nordlys ferry starts a night route from Havnby to Tromsø on Monday."),
)
BRIDGE = (
    SYSTEM,
    ("user", "Havnby council voted to repair the old stone bridge before winter."),
)
FERRY_TARGET = "Nordlys sails to Tromsø at night from Monday."
BRIDGE_TARGET = "The stone bridge is mended before winter."
TINY = TrainConfig(
    rank=4, alpha=8, batch_size=2, max_tokens=96, learning_rate=1e-3, checkpoint_every=100, threads=1
)


def _example(chat: tuple[tuple[str, str], ...], target: str) -> Example:
    return example("self", "article@1", "en", ["a-" + target[:6]], chat, target, {})


def _pair(chat: tuple[tuple[str, str], ...], chosen: str, rejected: str) -> PreferencePair:
    return pair("editor", "article@1", "en", ["a-" + chosen[:6]], chat, chosen, rejected, {})


EXAMPLES = [_example(FERRY, FERRY_TARGET), _example(BRIDGE, BRIDGE_TARGET)]
THREE = [*EXAMPLES, _example(BRIDGE, "Havnby repairs its bridge.")]


@pytest.fixture(scope="module")
def base(model_cache: Path) -> str:
    from briefing.llm.hf import dequantized

    return dequantized("packaged:SmolLM2-135M-Instruct", model_cache)


@pytest.fixture(scope="module")
def memorized(base: str, tmp_path_factory: pytest.TempPathFactory) -> training.TrainResult:
    """Known answer: 30 steps on the same two examples teach the model to say their targets."""
    out = tmp_path_factory.mktemp("memorized")
    return train_sft(EXAMPLES, base, out, TrainConfig(**{**vars(TINY), "epochs": 30.0, "dropout": 0.0}))


def _weights(adapter: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_falls_and_the_adapter_says_its_target_where_the_base_does_not(
    base: str, memorized: training.TrainResult
) -> None:
    from briefing.llm.hf import TransformersGenerator

    assert memorized.steps == 30 and memorized.examples == 2 and memorized.stage == "sft"
    assert memorized.losses[-1] < 0.1 * memorized.losses[0]
    assert memorized.tokens > 0 and memorized.tokens_per_s > 0
    generator = TransformersGenerator(base, adapters={"tuned": memorized.adapter_dir}, threads=1)
    chats = [[{"role": r, "content": c} for r, c in chat] for chat in (FERRY, BRIDGE)]
    greedy = GenerationParams(max_tokens=24)
    tuned = [c.text.strip() for c in generator.generate(chats, greedy, adapter="tuned")]
    plain = [c.text.strip() for c in generator.generate(chats, greedy)]
    assert tuned == [FERRY_TARGET, BRIDGE_TARGET]
    assert plain[0] != FERRY_TARGET and plain[1] != BRIDGE_TARGET


def test_the_adapter_is_peft_on_projections_only(memorized: training.TrainResult) -> None:
    config = json.loads((memorized.adapter_dir / "adapter_config.json").read_text())
    assert set(config["target_modules"]) <= set(TrainConfig().target_modules)
    assert not config.get("modules_to_save")
    names = _weights(memorized.adapter_dir).keys()
    assert names and all("lora_" in n for n in names)
    assert not [n for n in names if "embed_tokens" in n or "lm_head" in n]
    assert json.loads((memorized.adapter_dir / "training.json").read_text())["steps"] == 30


def test_embeddings_and_lm_head_are_refused(base: str, tmp_path: Path) -> None:
    for modules in (("q_proj", "lm_head"), ("embed_tokens",), ("model.embed_tokens",)):
        with pytest.raises(ValueError, match="tie"):
            train_sft(EXAMPLES, base, tmp_path, TrainConfig(target_modules=modules))
    tied = tmp_path / "tied"
    tied.mkdir()
    (tied / "adapter_config.json").write_text(json.dumps({"target_modules": ["q_proj", "lm_head"]}))
    with pytest.raises(ValueError, match="tie"):
        train_dpo([_pair(FERRY, FERRY_TARGET, BRIDGE_TARGET)], base, tied, tmp_path / "dpo")
    assert not (tmp_path / "adapter").exists() and not (tmp_path / "dpo").exists()


def test_same_seed_and_data_give_the_same_weights_and_another_seed_does_not(
    base: str, tmp_path: Path
) -> None:
    config = TrainConfig(**{**vars(TINY), "epochs": 1.5})  # 3 examples, batches of 2: 3 steps
    first = train_sft(THREE, base, tmp_path / "a", config)
    again = train_sft(THREE, base, tmp_path / "b", config)
    other = train_sft(THREE, base, tmp_path / "c", TrainConfig(**{**vars(config), "seed": 1}))
    assert first.steps == 3 and first.losses == again.losses
    assert _same(_weights(first.adapter_dir), _weights(again.adapter_dir))
    assert not _same(_weights(first.adapter_dir), _weights(other.adapter_dir))
    # a rerun with the same inputs finds the finished adapter and trains nothing
    assert train_sft(THREE, base, tmp_path / "a", config) == first


def test_a_stopped_run_resumes_to_the_same_weights_as_an_uninterrupted_one(base: str, tmp_path: Path) -> None:
    config = TrainConfig(**{**vars(TINY), "epochs": 2.0, "batch_size": 1})  # 4 steps of one example
    whole = train_sft(EXAMPLES, base, tmp_path / "whole", config)
    steps = iter(range(100))
    with pytest.raises(TrainingStopped) as stopped:
        train_sft(EXAMPLES, base, tmp_path / "cut", config, stop=lambda: next(steps) >= 1)
    assert stopped.value.step == 2 and stopped.value.checkpoint is not None
    assert (tmp_path / "cut" / "checkpoints" / "step-2" / "state.pt").is_file()
    assert not (tmp_path / "cut" / "adapter").exists()
    resumed = train_sft(EXAMPLES, base, tmp_path / "cut", config)
    assert resumed.resumed_from == 2 and resumed.steps == whole.steps == 4
    assert resumed.losses == whole.losses
    assert _same(_weights(resumed.adapter_dir), _weights(whole.adapter_dir))
    assert not (tmp_path / "cut" / "checkpoints").exists()


def test_a_deadline_stops_after_a_step_and_other_inputs_do_not_resume_its_checkpoint(
    base: str, tmp_path: Path
) -> None:
    config = TrainConfig(**{**vars(TINY), "batch_size": 1})
    with pytest.raises(TrainingStopped, match="after step 1 of 2"):
        train_sft(EXAMPLES, base, tmp_path, config, deadline_s=0.0)
    changed = TrainConfig(**{**vars(config), "learning_rate": 5e-4})
    assert train_sft(EXAMPLES, base, tmp_path, changed).resumed_from is None


def test_a_crash_while_saving_leaves_no_adapter_under_the_real_name(
    base: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = checkpoints.write_adapter

    def crash(net: Any, folder: Path) -> None:
        write(net, folder)
        if folder.name == "adapter.partial":
            raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "write_adapter", crash)
    config = TrainConfig(**{**vars(TINY), "epochs": 1.0})
    with pytest.raises(OSError, match="disk full"):
        train_sft(EXAMPLES, base, tmp_path, config)
    assert (tmp_path / "adapter.partial").is_dir() and not (tmp_path / "adapter").exists()
    monkeypatch.undo()
    done = train_sft(EXAMPLES, base, tmp_path, config)
    assert (done.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "adapter.partial").exists()


def test_too_long_examples_are_left_out_not_cut(base: str, tmp_path: Path) -> None:
    long_chat = (SYSTEM, ("user", "Article: " + "The harbour was busy. " * 40 + "\nSummary:"))
    config = TrainConfig(**{**vars(TINY), "epochs": 1.0})
    done = train_sft([*EXAMPLES, _example(long_chat, "Busy harbour.")], base, tmp_path / "a", config)
    assert done.examples == 2
    with pytest.raises(ValueError, match="nothing to train"):
        train_sft([_example(long_chat, "Busy harbour.")], base, tmp_path / "b", config)


def test_dpo_widens_the_chosen_over_rejected_margin(
    base: str, memorized: training.TrainResult, tmp_path: Path
) -> None:
    chosen, rejected = "Nordlys starts a night route to Tromsø.", FERRY_TARGET
    pairs = [_pair(FERRY, chosen, rejected)]
    config = TrainConfig(**{**vars(TINY), "dpo_epochs": 4.0, "dpo_learning_rate": 1e-3, "dropout": 0.0})
    done = train_dpo(pairs, base, memorized.adapter_dir, tmp_path, config)
    assert done.stage == "dpo" and done.steps == 4 and done.examples == 1
    before = completion_logprobs(base, memorized.adapter_dir, FERRY, [chosen, rejected])
    after = completion_logprobs(base, done.adapter_dir, FERRY, [chosen, rejected])
    assert before[0] - before[1] < 0  # the SFT adapter prefers its memorized target
    assert after[0] - after[1] > before[0] - before[1] + 1.0
    assert done.losses[-1] < done.losses[0]
