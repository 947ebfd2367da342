"""Serving a registered adapter: which file each backend loads, and loading it without a restart."""

from __future__ import annotations

from pathlib import Path

from briefing.llm import Generator
from briefing.tuning.registry import AdapterRecord, adapter_files


def adapter_path(backend: str, peft_dir: Path, gguf_file: Path) -> Path:
    """What a backend loads: llama.cpp a GGUF LoRA, transformers and vLLM a peft folder."""
    return gguf_file if backend == "llamacpp" else peft_dir


def serve(generator: Generator, backend: str, root: Path, record: AdapterRecord) -> None:
    """Make `record` servable by `generator` under its id (idempotent). The generator must load
    adapters at runtime (`add_adapter`: every backend here, and the service's wrappers)."""
    peft_dir, gguf_file = adapter_files(root, record)
    add = getattr(generator, "add_adapter", None)
    if add is None:
        raise TypeError(f"{type(generator).__name__} cannot load adapters at runtime")
    add(record.id, adapter_path(backend, peft_dir, gguf_file))
