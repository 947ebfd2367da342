"""Where torch work runs (LoRA tuning, the relation verifier): "auto" is the first CUDA GPU when torch
sees one, else the CPU. Light to import: torch is imported only when a device is resolved."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = "auto, cpu, cuda or cuda:N"


def check_device_name(name: str, what: str) -> str:
    """`name` if it names a device this project trains on; a ValueError saying so otherwise."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ValueError(f"{what} must be {DEVICES}, got {name!r}")
    return name


def torch_device(name: str) -> torch.device:
    """The torch device `name` means; a GPU asked for but absent is an error, not a silent hour on
    the CPU."""
    import torch

    check_device_name(name, "device")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU")
    return torch.device(name)
