"""Serving a registered adapter: which file each backend loads, and loading it without a restart.

A joint adapter is loaded under its record id. An adapter set is loaded part by part, each under
`part_name(record id, language)`, and the summarizer is told which languages have a part
(`Summarizer.add_parts`): it routes each article to its language's part, and an article whose
language has none to the base model (`serve_summarizer` does both).
"""

from __future__ import annotations

from pathlib import Path

from briefing.llm import Generator
from briefing.summarize import Summarizer, part_name
from briefing.tuning.registry import JOINT, AdapterRecord, adapter_parts, layout_of


def adapter_path(backend: str, peft_dir: Path, gguf_file: Path) -> Path:
    """What a backend loads: llama.cpp a GGUF LoRA, transformers and vLLM a peft folder."""
    return gguf_file if backend == "llamacpp" else peft_dir


def serve(generator: Generator, backend: str, root: Path, record: AdapterRecord) -> tuple[str, ...] | None:
    """Make `record` servable by `generator` (idempotent): a joint adapter under its id, a set's
    parts under `part_name`. Returns the set's languages, or None for a joint adapter. The
    generator must load adapters at runtime (`add_adapter`: every backend here, and the service's
    wrappers)."""
    add = getattr(generator, "add_adapter", None)
    if add is None:
        raise TypeError(f"{type(generator).__name__} cannot load adapters at runtime")
    parts = adapter_parts(root, record)
    for part in parts:
        name = record.id if part.language is None else part_name(record.id, part.language)
        add(name, adapter_path(backend, part.peft_dir, part.gguf_file))
    if layout_of(record) == JOINT:
        return None
    return tuple(part.language for part in parts if part.language is not None)


def serve_summarizer(summarizer: Summarizer, backend: str, root: Path, record: AdapterRecord) -> None:
    """`serve` into the summarizer's generator, and tell the summarizer a set's parts, so that
    drafts written as `record.id` go to the article language's part (or to the base model)."""
    languages = serve(summarizer.generator, backend, root, record)
    if languages is not None:
        summarizer.add_parts(record.id, languages)
