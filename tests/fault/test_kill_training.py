"""kill -9 of adapter training (briefing/tuning/train.py) in a subprocess, right after a
checkpoint: no adapter appears under the real name, every checkpoint left is whole, and the next
run resumes from the newest one to the very weights of a run that was never interrupted. A tiny
run as tests/unit/test_tuning_train.py makes one: the packaged SmolLM2, two short examples, one
torch thread. (The registry's side of a killed promote: tests/unit/test_adapter_registry.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from briefing.tuning.config import TrainConfig
from briefing.tuning.data import Example, example
from briefing.tuning.train import train_sft
from tests.fault.processes import kill_after

pytestmark = [pytest.mark.slow, pytest.mark.fault]
CONFIG = TrainConfig(
    rank=4,
    alpha=8,
    batch_size=1,
    max_tokens=96,
    learning_rate=1e-3,
    epochs=4.0,
    checkpoint_every=1,
    threads=1,
)  # 8 steps, a checkpoint after each
SYSTEM = ("system", "Summarize in one sentence.")
CHATS = (
    (
        (SYSTEM, ("user", "The Nordlys ferry starts a night route from Havnby to Tromsø on Monday.")),
        "Nordlys sails at night.",
    ),
    (
        (SYSTEM, ("user", "Havnby council voted to repair the old stone bridge before winter.")),
        "The bridge is mended.",
    ),
)
SCRIPT = """
import sys
from pathlib import Path
from tests.fault.test_kill_training import CONFIG, examples
from briefing.tuning.train import train_sft
train_sft(examples(), sys.argv[1], Path(sys.argv[2]), CONFIG)
"""


def examples() -> list[Example]:
    return [example("self", "article@1", "en", ["a-1"], chat, target, {}) for chat, target in CHATS]


@pytest.fixture(scope="module")
def base(model_cache: Path) -> str:
    from briefing.llm.hf import dequantized

    return dequantized("packaged:SmolLM2-135M-Instruct", model_cache)


def _weights(adapter: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def test_killed_training_leaves_no_adapter_and_resumes_to_the_same_weights(base: str, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    root = Path(__file__).resolve().parents[2]
    trainer = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, base, str(out)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    kill_after(trainer, lambda: (out / "checkpoints" / "step-2").is_dir(), 0.0)

    assert not (out / "adapter").exists()  # the real name holds a whole adapter or none
    # The newest checkpoint is whole (written under a staging name, then renamed); an older one
    # may be half-deleted by the kill, without its fingerprint, and a resume skips and removes it.
    steps = {int(f.name[5:]): f for f in (out / "checkpoints").glob("step-*") if f.name[5:].isdigit()}
    marked = [f for f in steps.values() if (f / "fingerprint").is_file()]
    assert marked, "no checkpoint survived"
    newest = max(marked, key=lambda f: int(f.name.removeprefix("step-")))
    assert (newest / "state.pt").is_file() and (newest / "adapter" / "adapter_model.safetensors").is_file()

    resumed = train_sft(examples(), base, out, CONFIG)
    whole = train_sft(examples(), base, tmp_path / "whole", CONFIG)
    assert resumed.resumed_from == int(newest.name.removeprefix("step-")) >= 2
    assert resumed.steps == whole.steps == 8 and resumed.losses == whole.losses
    import torch

    mine, theirs = _weights(resumed.adapter_dir), _weights(whole.adapter_dir)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not (out / "checkpoints").exists() and not (out / "adapter.partial").exists()
