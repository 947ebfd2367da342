"""The `llamacpp` backend: a GGUF model in-process through llama-cpp-python; the CPU default.

llama.cpp decodes one sequence at a time here, so a batch is answered in turn; its chat template
is the one stored in the GGUF. LoRA adapters must be GGUF adapters and are fixed at load time,
so each named adapter gets its own model instance, created on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from briefing.llm.base import (
    Chat,
    Completion,
    Deadline,
    GenerationParams,
    GeneratorConfig,
    GeneratorUnavailable,
    UnknownAdapter,
    register,
)
from briefing.llm.models import gguf_path


class LlamaCppGenerator:
    def __init__(
        self,
        model_path: Path,
        *,
        threads: int | None = None,
        context_tokens: int = 2048,
        adapters: Mapping[str, Path] | None = None,
    ) -> None:
        self.model_path = model_path
        self.threads = threads
        self.context_tokens = context_tokens
        self.adapters = dict(adapters or {})
        self._models: dict[str | None, Any] = {}
        self._lock = threading.Lock()  # one llama.cpp context is not safe to share between threads

    @property
    def model(self) -> str:
        return self.model_path.stem

    def llama(self, adapter: str | None = None) -> Any:
        if adapter is not None and adapter not in self.adapters:
            raise UnknownAdapter(f"llamacpp serves no adapter {adapter!r}; it has {sorted(self.adapters)}")
        if adapter not in self._models:
            self._models[adapter] = self._load(self.adapters.get(adapter) if adapter else None)
        return self._models[adapter]

    def _load(self, lora: Path | None) -> Any:
        from llama_cpp import Llama  # heavy: loaded on first use only

        try:
            return Llama(
                model_path=str(self.model_path),
                n_ctx=self.context_tokens,
                n_threads=self.threads,
                lora_path=str(lora) if lora else None,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise GeneratorUnavailable(f"llama.cpp cannot load {self.model_path}: {exc}") from exc

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        return [self._complete(chat, params, adapter) for chat in chats]

    def _complete(self, chat: Chat, params: GenerationParams, adapter: str | None) -> Completion:
        deadline = Deadline(params.timeout_s)
        with self._lock:
            llama = self.llama(adapter)
            out = llama.create_chat_completion(
                messages=[dict(m) for m in chat],
                logits_processor=_stop_when(deadline, llama.token_eos()),
                **_sampling(params),
            )
        deadline.check(f"llamacpp generation ({out['usage']['completion_tokens']} tokens)")
        choice = out["choices"][0]
        return Completion(
            text=choice["message"]["content"] or "",
            model=self._name(adapter),
            prompt_tokens=out["usage"]["prompt_tokens"],
            completion_tokens=out["usage"]["completion_tokens"],
            seconds=deadline.elapsed(),
            finish_reason=choice["finish_reason"] or "stop",
        )

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        deadline = Deadline(params.timeout_s)
        with self._lock:
            chunks = self.llama(adapter).create_chat_completion(
                messages=[dict(m) for m in chat], stream=True, **_sampling(params)
            )
            for chunk in chunks:
                deadline.check("llamacpp stream")
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece

    def _name(self, adapter: str | None) -> str:
        return f"{self.model}+{adapter}" if adapter else self.model


def _sampling(params: GenerationParams) -> dict[str, Any]:
    return {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "seed": params.seed,
        "stop": list(params.stop) or None,
    }


def _stop_when(deadline: Deadline, eos: int) -> Any:
    """Ends the answer once the deadline passes: the chat API has no stopping criteria, but it
    runs logits processors before every token, so past the deadline only end-of-text remains."""
    import numpy as np
    from llama_cpp import LogitsProcessorList

    def late(_tokens: Any, scores: Any) -> Any:
        if deadline.passed():
            scores = np.full_like(scores, -np.inf)
            scores[eos] = 0.0
        return scores

    return LogitsProcessorList([late])


@register("llamacpp")
def _build(config: GeneratorConfig) -> LlamaCppGenerator:
    path = gguf_path(config.model)
    if path is None:
        raise GeneratorUnavailable(
            f"llamacpp needs a GGUF model, got {config.model!r}: set LLM_MODEL to a .gguf path, "
            "org/repo:file.gguf, or packaged:SmolLM2-135M-Instruct (or LLM_BACKEND=transformers)"
        )
    return LlamaCppGenerator(
        path, threads=config.threads, context_tokens=config.context_tokens, adapters=config.adapters
    )
