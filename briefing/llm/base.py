"""The `Generator` protocol, its value types and errors, and the fallback wrapper.

`Generator` contract (tests/unit/test_generator_contract.py runs it on every backend here):
- `generate(chats, params, adapter=None)` answers a batch of chats, one `Completion` each, in
  order; `adapter` names a LoRA adapter the backend serves, None is the base model, and an
  adapter the backend does not know raises `UnknownAdapter`;
- `stream(chat, params, adapter=None)` yields the text of one answer piece by piece; the pieces
  join to what `generate` returns for the same chat and greedy params;
- every call has one time limit: the backend's configured `timeout_s` (LLM_TIMEOUT_S), or
  `params.timeout_s` where that is shorter. Generation stops at the limit, not after it, and what
  was written by then is kept: each answer the limit cut is returned with `finish_reason="timeout"`
  (its text may be empty for chats of a batch the limit reached before they began). Only a call
  that produced no text at all raises `GenerationTimeout` (so a caller never mistakes an empty
  answer for a finished one); a stream cut by the limit simply ends, or raises `GenerationTimeout`
  if it yielded nothing. Callers that need whole sentences check `finish_reason`;
- `ready()` answers a cheap probe of the model (a tokenization, or the server's model list) and
  returns True, or raises `GeneratorUnavailable` saying why it cannot answer (like redis' ping);
- a backend that cannot be reached or loaded raises `GeneratorUnavailable`. Errors are
  `GenerationError`s with a message a person can act on.
Chat templates come from the model's own tokenizer (GGUF metadata or tokenizer_config.json).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
Chat = Sequence[Message]


class GenerationError(RuntimeError):
    """A generation failed; the message says why."""


class GenerationTimeout(GenerationError):
    """A generation ran past its time limit."""


class GeneratorUnavailable(GenerationError):
    """The backend cannot be reached or its model cannot be loaded."""


class UnknownAdapter(GenerationError):
    """The named LoRA adapter is not served by this backend."""


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 160
    temperature: float = 0.0  # greedy: summaries must be reproducible for review
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    # None: the backend's configured limit (LLM_TIMEOUT_S). A value only tightens that limit, so
    # a prompt template cannot outlast what the operator configured.
    timeout_s: float | None = None

    def limit(self, configured: float) -> float:
        """The time limit of a call with these params on a backend configured with `configured`."""
        return configured if self.timeout_s is None else min(self.timeout_s, configured)


@dataclass(frozen=True)
class Completion:
    text: str
    model: str  # the model (and adapter) that wrote it: provenance for the summary
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str  # "stop", "length", or "timeout" (cut at the time limit)


class Generator(Protocol):
    @property
    def model(self) -> str: ...

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]: ...

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]: ...

    def ready(self) -> bool: ...


@dataclass(frozen=True)
class GeneratorConfig:
    """What a backend needs; `Settings.from_env` fills it (LLM_* variables)."""

    backend: str = "llamacpp"
    model: str = "packaged:SmolLM2-135M-Instruct"  # GGUF/HF path, hub id, or served model name
    base_url: str = "http://127.0.0.1:8011/v1"  # openai backend
    api_key: str | None = None
    timeout_s: float = 60.0  # every call's time limit (LLM_TIMEOUT_S); see GenerationParams.timeout_s
    threads: int | None = None  # CPU threads (llama.cpp, torch); None: all cores
    context_tokens: int = 2048
    cache_dir: Path = Path("var/models")  # dequantized models (transformers backend)
    adapters: Mapping[str, Path] | None = None  # LoRA adapters by name (local backends)
    fallback: str | None = None  # backend to use when this one is unreachable (openai → llamacpp)


class Deadline:
    """A monotonic deadline; backends poll it between tokens."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def passed(self) -> bool:
        return time.monotonic() - self.start > self.seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def remaining(self) -> float:
        return max(0.0, self.seconds - self.elapsed())

    def expired(self, what: str) -> GenerationTimeout:
        return GenerationTimeout(
            f"{what} wrote nothing within {self.seconds:g} s (LLM_TIMEOUT_S or the call's timeout_s)"
        )


def kept(completions: list[Completion], deadline: Deadline, what: str) -> list[Completion]:
    """The completions of a call, unless the time limit left all of them empty (see the protocol)."""
    cut = [c for c in completions if c.finish_reason == "timeout"]
    if cut and not any(c.text.strip() for c in completions):
        raise deadline.expired(what)
    return completions


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the first stop string, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class FallbackGenerator:
    """Uses `primary`; when it is unreachable or times out, answers with `fallback` (base model).

    The completion names the model that actually wrote it, so provenance stays true.
    """

    def __init__(self, primary: Generator, fallback: Generator) -> None:
        self.primary = primary
        self.fallback = fallback

    @property
    def model(self) -> str:
        return self.primary.model

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        try:
            return self.primary.generate(chats, params, adapter)
        except (GeneratorUnavailable, GenerationTimeout) as exc:
            log.warning("%s; answering with %s instead", exc, self.fallback.model)
            return self.fallback.generate(chats, params)

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        try:
            pieces = self.primary.stream(chat, params, adapter)
            first = next(pieces, None)
        except (GeneratorUnavailable, GenerationTimeout) as exc:
            log.warning("%s; streaming from %s instead", exc, self.fallback.model)
            yield from self.fallback.stream(chat, params)
            return
        if first is not None:
            yield first
            yield from pieces

    def add_adapter(self, name: str, path: Path) -> None:
        """Load a LoRA adapter into the primary at runtime; the fallback answers with the base model."""
        add = getattr(self.primary, "add_adapter", None)
        if add is None:
            raise GenerationError(f"{type(self.primary).__name__} cannot load adapters at runtime")
        add(name, path)

    def ready(self) -> bool:
        """Ready while either answers: the fallback exists to serve while the primary is down."""
        try:
            return self.primary.ready()
        except GeneratorUnavailable as exc:
            log.warning("%s; %s would answer instead", exc, self.fallback.model)
            return self.fallback.ready()


GeneratorFactory = Callable[[GeneratorConfig], Generator]
GENERATORS: dict[str, GeneratorFactory] = {}


def register(name: str) -> Callable[[GeneratorFactory], GeneratorFactory]:
    def add(factory: GeneratorFactory) -> GeneratorFactory:
        GENERATORS[name] = factory
        return factory

    return add


def make_generator(config: GeneratorConfig) -> Generator:
    """The configured backend, wrapped with its fallback backend if one is named."""
    if config.backend not in GENERATORS:
        raise ValueError(f"unknown LLM backend {config.backend!r}; choose one of {sorted(GENERATORS)}")
    generator = GENERATORS[config.backend](config)
    if config.fallback and config.fallback != config.backend:
        fallback = replace(config, backend=config.fallback, model=GeneratorConfig.model, fallback=None)
        return FallbackGenerator(generator, make_generator(fallback))
    return generator
