"""Where LoRA trains (TrainConfig.device; TUNE_DEVICE is tested with the other settings in
test_tuning_pipeline.py): a GPU asked for but absent is a clear error, and on a CUDA GPU the same
training gives the CPU's per-step losses within 1e-3 and its checkpoint resumes on the CPU. The GPU
tests run where torch sees one (they passed on an H200 through the device tool, 4 December 2026)
and are skipped elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from briefing.devices import torch_device
from briefing.tuning.config import TrainConfig
from briefing.tuning.data import Example, example
from briefing.tuning.train import TrainingStopped, train_sft

torch = pytest.importorskip("torch")
CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not CUDA, reason="torch sees no CUDA GPU here")

CHAT = (
    ("system", "Summarize in one sentence."),
    ("user", "The Nordlys ferry starts a night route from Havnby to Tromsø on Monday."),
)
EXAMPLES: list[Example] = [
    example("self", "article@1", "en", [f"a-{i}"], CHAT, target, {})
    for i, target in enumerate(["Nordlys sails to Tromsø at night.", "A night ferry to Tromsø from Monday."])
]
TINY = TrainConfig(rank=4, alpha=8, batch_size=1, max_tokens=96, learning_rate=1e-3, dropout=0.0, threads=1)


def test_auto_is_the_gpu_when_there_is_one_and_an_absent_gpu_is_an_error() -> None:
    assert torch_device("auto").type == ("cuda" if CUDA else "cpu")
    assert torch_device("cpu").type == "cpu"
    if not CUDA:
        with pytest.raises(ValueError, match="device 'cuda' asked for, but torch sees no CUDA GPU"):
            torch_device("cuda")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    # its own model cache, not conftest's: this file runs with --noconftest on a GPU machine that
    # lacks the service's packages
    from briefing.llm.hf import dequantized

    return dequantized("packaged:SmolLM2-135M-Instruct", tmp_path_factory.mktemp("models"))


def _weights(adapter: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


@pytest.mark.slow
@needs_gpu
def test_the_gpu_trains_with_the_cpus_losses(base: str, tmp_path: Path) -> None:
    config = TrainConfig(**{**vars(TINY), "epochs": 3.0})
    cpu = train_sft(EXAMPLES, base, tmp_path / "cpu", TrainConfig(**{**vars(config), "device": "cpu"}))
    gpu = train_sft(EXAMPLES, base, tmp_path / "gpu", TrainConfig(**{**vars(config), "device": "cuda"}))
    assert gpu.steps == cpu.steps == 6 and gpu.tokens == cpu.tokens
    assert max(abs(a - b) for a, b in zip(cpu.losses, gpu.losses, strict=True)) < 1e-3
    assert sum(gpu.losses[-2:]) < sum(gpu.losses[:2]) - 1.0  # it learned, on the GPU
    # the same adapter tensors; not elementwise equal: after 6 Adam steps at lr 1e-3 one layer's
    # lora_B differed by 2.4% in norm on an H200 (Adam's normalized steps amplify rounding)
    assert _weights(cpu.adapter_dir).keys() == _weights(gpu.adapter_dir).keys()


@pytest.mark.slow
@needs_gpu
def test_a_gpu_checkpoint_resumes_on_the_cpu(base: str, tmp_path: Path) -> None:
    config = TrainConfig(**{**vars(TINY), "epochs": 2.0, "device": "cuda"})
    steps = iter(range(100))
    with pytest.raises(TrainingStopped):
        train_sft(EXAMPLES, base, tmp_path, config, stop=lambda: next(steps) >= 1)
    resumed = train_sft(EXAMPLES, base, tmp_path, TrainConfig(**{**vars(config), "device": "cpu"}))
    whole = train_sft(EXAMPLES, base, tmp_path / "whole", TrainConfig(**{**vars(config), "device": "cpu"}))
    assert resumed.resumed_from == 2 and resumed.steps == whole.steps == 4
    assert max(abs(a - b) for a, b in zip(resumed.losses, whole.losses, strict=True)) < 1e-3
