"""Training runs on disk: checkpoints to resume from, the finished adapter, and what names both.

A run folder `out` holds `checkpoints/step-N` (adapter, optimizer, scheduler, RNG, step, losses and
the run's fingerprint) and, once finished, `adapter` (peft format, with `training.json`: the result
and its fingerprint). The fingerprint is a digest of what decides the weights (stage, base model,
hyper-parameters, data; for DPO the SFT adapter too): a checkpoint or an adapter of other inputs is
never resumed or returned. Everything is written under a staging name and renamed into place, so a
crash never leaves half a checkpoint or half an adapter under its real name.
torch and peft are imported inside the functions that need them: fingerprinting stays light.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from briefing.tuning.config import TrainConfig

log = logging.getLogger(__name__)

RESULT_FILE = "training.json"  # inside the adapter folder: the result and its fingerprint


def fingerprint(stage: str, base: str, config: TrainConfig, data: list[str], *more: str) -> str:
    """What decides the weights: a checkpoint or an adapter of other inputs is never resumed."""
    hyper = {k: v for k, v in config.hyper().items() if k not in ("threads", "checkpoint_every")}
    if stage == "sft":
        hyper = {k: v for k, v in hyper.items() if not k.startswith("dpo_")}
    return digest([stage, _base_identity(base), hyper, data, *more])


def _base_identity(base: str) -> Any:
    folder = Path(base)
    if not folder.is_dir():
        return base  # a hub id
    weights = sorted((p.name, p.stat().st_size) for p in folder.glob("*.safetensors"))
    return [folder.name, digest((folder / "config.json").read_text()), weights]


def adapter_digest(adapter: Path) -> str:
    """16 hex of sha256 over the adapter's config and weights: a DPO run names its SFT start."""
    hashed = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        path = adapter / name
        if path.is_file():
            hashed.update(path.read_bytes())
    return hashed.hexdigest()[:16]


def digest(value: Any) -> str:
    """16 hex of sha256 over the value as canonical JSON."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def finished(out: Path, run_fingerprint: str) -> dict[str, Any] | None:
    """The recorded result of a finished run with the same inputs, if its adapter is in place."""
    path = out / "adapter" / RESULT_FILE
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    if record.pop("fingerprint", None) != run_fingerprint:
        return None
    return record


def publish(net: Any, out: Path, result: dict[str, Any], run_fingerprint: str) -> None:
    """Write the adapter under a staging name and rename it: the real name holds a whole adapter or
    none. `result` (JSON) is recorded with the fingerprint; the run's checkpoints go afterwards."""
    staging, final, old = out / "adapter.partial", out / "adapter", out / "adapter.old"
    shutil.rmtree(staging, ignore_errors=True)
    write_adapter(net, staging)
    record = {**result, "adapter_dir": str(final), "fingerprint": run_fingerprint}
    (staging / RESULT_FILE).write_text(json.dumps(record, indent=1))
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.replace(old)  # an adapter of other inputs: out of the way first, removed after
    staging.replace(final)
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)


def write_adapter(net: Any, folder: Path) -> None:
    """The LoRA weights in peft format, without the (tied, never adapted) embedding layers."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(str(folder), save_embedding_layers=False)


def save_checkpoint(
    net: Any,
    optimizer: Any,
    scheduler: Any,
    out: Path,
    run_fingerprint: str,
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
    write_adapter(net, staging / "adapter")
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
    (staging / "fingerprint").write_text(run_fingerprint)
    shutil.rmtree(folder, ignore_errors=True)
    staging.replace(folder)
    for other in root.iterdir():
        if other != folder:
            shutil.rmtree(other, ignore_errors=True)
    return folder


def resume(net: Any, optimizer: Any, scheduler: Any, root: Path, run_fingerprint: str) -> dict[str, Any]:
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
        if numbered and mark.is_file() and mark.read_text() == run_fingerprint:
            ours.append((int(folder.name[5:]), folder))
            continue
        shutil.rmtree(folder, ignore_errors=True)  # other inputs, or a checkpoint cut short
    if not ours:
        return fresh
    _, folder = max(ours)
    set_peft_model_state_dict(net, load_peft_weights(str(folder / "adapter"), device="cpu"))
    state: dict[str, Any] = torch.load(folder / "state.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    log.info("resuming training from %s", folder)
    return state
