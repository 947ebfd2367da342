"""The `llamacpp` backend: a GGUF model in-process through llama-cpp-python; the CPU default.

llama.cpp decodes one sequence at a time here, so a batch is answered in turn; its chat template
is the one stored in the GGUF. LoRA adapters are GGUF LoRA files (briefing.tuning.gguf_lora):
all of them load onto the one base model (a few MB each, where a model instance per adapter would
hold the 100 MB base again) and the context switches between them per call; `add_adapter` loads
a new one while the service runs, so a promoted adapter serves without a restart.

An adapter may also be a merged model GGUF (briefing.tuning.gguf_merge: the LoRA folded into the
base's weights, same architecture and tensor shapes): it gets a model instance of its own, built
like the base's. Measured (bench/adapter_speed.py), a Q8_0 merge keeps the adapter but decodes
no faster than the GGUF LoRA, and a Q4_1 merge loses it; the tune loop installs GGUF LoRAs.

The chat is rendered with llama-cpp-python's own formatter for the GGUF's template and sent to
`create_completion`, because only that call takes stopping criteria (`create_chat_completion`
does not): the time limit is one of them, so decoding ends at the deadline with the text so far.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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
    kept,
    register,
)
from briefing.llm.models import gguf_path


@dataclass(frozen=True)
class _Loaded:
    llama: Any
    template: Any  # llama_cpp's Jinja2ChatFormatter over the GGUF's chat template


@dataclass(frozen=True)
class _Lora:
    path: Path
    handle: Any  # llama_adapter_lora pointer; the model frees it with itself


@dataclass(frozen=True)
class _Merged:
    path: Path
    loaded: _Loaded  # a model instance of its own: the adapter is in its weights


class LlamaCppGenerator:
    def __init__(
        self,
        model_path: Path,
        *,
        threads: int | None = None,
        context_tokens: int = 2048,
        adapters: Mapping[str, Path] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self.model_path = model_path
        self.threads = threads
        self.context_tokens = context_tokens
        self.adapters = dict(adapters or {})  # name → GGUF LoRA file or merged model GGUF
        self.timeout_s = timeout_s
        self._base: _Loaded | None = None
        self._loras: dict[str, _Lora | _Merged] = {}  # adapters loaded, by name
        self._active: str | None = None  # the adapter the context applies now
        self._lock = threading.Lock()  # one llama.cpp context is not safe to share between threads

    @property
    def model(self) -> str:
        return self.model_path.stem

    def llama(self, adapter: str | None = None) -> Any:
        """The llama.cpp model serving `adapter`: the base with its context set to a GGUF LoRA,
        or the merged model's own instance."""
        with self._lock:
            return self._loaded(adapter).llama

    def add_adapter(self, name: str, path: Path) -> None:
        """Serve the GGUF LoRA or merged model GGUF at `path` as `name` from now on (a name
        already served is replaced).

        The file is loaded now, so a bad one fails here (GeneratorUnavailable) rather than on a
        reader's request, and the adapter served before under `name` keeps serving. Adding the same
        name and path again does nothing."""
        with self._lock:
            if self.adapters.get(name) == path and name in self._loras:
                return
            lora = self._load_lora(self._model(), path)
            self._free(name)
            self.adapters[name], self._loras[name] = path, lora

    def _loaded(self, adapter: str | None) -> _Loaded:
        """The model serving `adapter` (None: the base alone); a GGUF LoRA is applied to the base
        model's context. Call under the lock."""
        if adapter is not None and adapter not in self.adapters:
            raise UnknownAdapter(f"llamacpp serves no adapter {adapter!r}; it has {sorted(self.adapters)}")
        base = self._model()
        if adapter is not None and adapter not in self._loras:
            self._loras[adapter] = self._load_lora(base, self.adapters[adapter])
        lora = self._loras[adapter] if adapter else None
        if isinstance(lora, _Merged):
            return lora.loaded
        if adapter != self._active:
            self._apply(base.llama, lora)
            self._active = adapter
        return base

    def _model(self) -> _Loaded:
        """The base model, loaded on first use. Call under the lock."""
        if self._base is None:
            self._base = self._load()
        return self._base

    def _load(self, path: Path | None = None) -> _Loaded:
        """A model instance of the base (or of the merged model at `path`) with these settings."""
        from llama_cpp import Llama  # heavy: loaded on first use only

        path = path or self.model_path
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=self.context_tokens,
                n_threads=self.threads,
                # Prompt evaluation too: left unset, it takes every core (llama-cpp-python's
                # default), and the service's LLM_THREADS would not leave one for requests.
                n_threads_batch=self.threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise GeneratorUnavailable(f"llama.cpp cannot load {path}: {exc}") from exc
        return _Loaded(llama, _chat_template(llama, path))

    def _load_lora(self, base: _Loaded, path: Path) -> _Lora | _Merged:
        import llama_cpp

        if _check_lora(path, self.model_path, base.llama.metadata.get("general.architecture", "")):
            return _Merged(path, self._load(path))
        # llama-cpp-python's own `lora_path` does this at load time, on the same model handle
        handle = llama_cpp.llama_adapter_lora_init(base.llama._model.model, str(path).encode())
        if not handle:
            raise GeneratorUnavailable(f"llama.cpp cannot apply the LoRA {path} to {self.model_path}")
        return _Lora(path, handle)

    def _apply(self, llama: Any, lora: _Lora | None) -> None:
        """Set the context's adapter; what it cached was computed with the other one: dropped."""
        import ctypes

        import llama_cpp

        adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(lora.handle) if lora else None
        scales = (ctypes.c_float * 1)(1.0) if lora else None
        if llama_cpp.llama_set_adapters_lora(llama._ctx.ctx, adapters, 1 if lora else 0, scales):
            raise GeneratorUnavailable(f"llama.cpp cannot set the LoRA {lora.path if lora else None}")
        llama.reset()

    def _free(self, name: str) -> None:
        """Unload the adapter served as `name` (being replaced), taking it off the context first."""
        import llama_cpp

        old = self._loras.pop(name, None)
        if isinstance(old, _Merged):
            old.loaded.llama.close()  # its model and context, now rather than at garbage collection
            return
        if old is None or self._base is None:
            return
        if self._active == name:
            self._apply(self._base.llama, None)
            self._active = None
        llama_cpp.llama_adapter_lora_free(old.handle)

    def ready(self) -> bool:
        """Tokenizes a word with the loaded model (loading it first if no call has yet).

        Tokenizing reads only the vocabulary, not the context a generation is using, so a probe
        does not wait for the lock while a long generation holds it (probes have short timeouts)."""
        loaded = self._base
        if loaded is None:
            with self._lock:
                loaded = self._model()
        if not loaded.llama.tokenize(b"ready", add_bos=False):
            raise GeneratorUnavailable(f"llama.cpp's tokenizer for {self.model_path} answers nothing")
        return True

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        deadline = Deadline(params.limit(self.timeout_s))
        done = [self._complete(chat, params, adapter, deadline) for chat in chats]
        return kept(done, deadline, f"llamacpp generation of {len(chats)} chats")

    def _complete(
        self, chat: Chat, params: GenerationParams, adapter: str | None, deadline: Deadline
    ) -> Completion:
        late = _Late(deadline)
        with self._lock:
            # a chat of a batch the deadline reached before it began is not started at all
            out = None if deadline.passed() else self._create(chat, params, adapter, late, stream=False)
        if out is None:
            return Completion("", self._name(adapter), 0, 0, deadline.elapsed(), "timeout")
        choice = out["choices"][0]
        return Completion(
            text=choice["text"] or "",
            model=self._name(adapter),
            prompt_tokens=out["usage"]["prompt_tokens"],
            completion_tokens=out["usage"]["completion_tokens"],
            seconds=deadline.elapsed(),
            finish_reason="timeout" if late.cut else choice["finish_reason"] or "stop",
        )

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        deadline = Deadline(params.limit(self.timeout_s))
        late = _Late(deadline)
        wrote = False
        with self._lock:
            for chunk in self._create(chat, params, adapter, late, stream=True):
                piece = chunk["choices"][0]["text"]
                if piece:
                    wrote = True
                    yield piece
        if late.cut and not wrote:
            raise deadline.expired("llamacpp stream")

    def _create(
        self, chat: Chat, params: GenerationParams, adapter: str | None, late: _Late, *, stream: bool
    ) -> Any:
        """What `create_chat_completion` does for a GGUF template, plus the deadline as a criterion."""
        from llama_cpp import StoppingCriteriaList

        loaded = self._loaded(adapter)
        # Every call evaluates its whole prompt: llama.cpp's batched and one-token evaluations
        # round differently, so reusing a cached prefix (its last token evaluated alone) made
        # greedy text depend on the previous call (seen with an adapter: a near tie flipped).
        loaded.llama.reset()
        rendered = loaded.template(messages=[dict(m) for m in chat])
        prompt = loaded.llama.tokenize(
            rendered.prompt.encode(), add_bos=not rendered.added_special, special=True
        )
        stop = [*params.stop, *([rendered.stop] if isinstance(rendered.stop, str) else rendered.stop or [])]
        return loaded.llama.create_completion(
            prompt=prompt,
            stream=stream,
            stop=stop or None,
            stopping_criteria=StoppingCriteriaList([late, *(rendered.stopping_criteria or [])]),
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
        )

    def _name(self, adapter: str | None) -> str:
        return f"{self.model}+{adapter}" if adapter else self.model


class _Late:
    """A stopping criterion that ends decoding once the deadline passes, and remembers that it did.

    llama-cpp-python asks the criteria once per sampled token and, after its loop, once more
    with the same tokens; that repeated question gets the earlier answer, so an answer that ended
    on its own just before the deadline is not reported as cut."""

    def __init__(self, deadline: Deadline) -> None:
        self.deadline = deadline
        self.cut = False
        self._seen = -1

    def __call__(self, tokens: Any, logits: Any) -> bool:
        if len(tokens) != self._seen:
            self._seen = len(tokens)
            self.cut = self.deadline.passed()
        return self.cut


def _check_lora(path: Path, base: Path, arch: str) -> bool:
    """Whether `path` is a merged model (True) or a GGUF LoRA (False) for the base; a clear reason
    for the files llama.cpp would refuse or that are not either (its own message goes to its log
    only)."""
    from gguf import GGUFReader

    if not path.is_file():
        raise GeneratorUnavailable(f"no LoRA file {path}")
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError) as exc:
        raise GeneratorUnavailable(f"{path} is not a GGUF file: {exc}") from exc
    fields = reader.fields

    def value(key: str) -> str:
        return str(fields[key].contents()) if key in fields else ""

    merged = value("general.type") in ("model", "")  # files from before general.type: models
    if value("general.architecture") != arch:
        kind = "merged model" if merged else "LoRA"
        raise GeneratorUnavailable(
            f"the {kind} {path} is for a {value('general.architecture')!r} model, the base is {arch!r}"
        )
    if merged:
        _check_merged(reader, path, base)
    elif value("general.type") != "adapter" or value("adapter.type") != "lora":
        raise GeneratorUnavailable(
            f"{path} is not a GGUF LoRA adapter (convert peft adapters with to_gguf_lora)"
        )
    return merged


def _check_merged(reader: Any, path: Path, base: Path) -> None:
    """A merged model has the base's tensors, every one of the base's shape, and is not the base."""
    from gguf import GGUFReader

    if path.resolve() == base.resolve():
        raise GeneratorUnavailable(
            f"{path} is the base model itself, not a GGUF LoRA or a model merged with one"
        )
    theirs = {t.name: tuple(int(d) for d in t.shape) for t in GGUFReader(base).tensors}
    ours = {t.name: tuple(int(d) for d in t.shape) for t in reader.tensors}
    if ours != theirs:
        differ = sorted(set(ours) ^ set(theirs)) or sorted(n for n in ours if ours[n] != theirs[n])
        raise GeneratorUnavailable(
            f"{path} is a model but not one merged from {base.name}: its tensors differ ({differ[:3]}); "
            "merge adapters with merge_lora"
        )


def _chat_template(llama: Any, path: Path) -> Any:
    """The formatter `Llama` itself builds for the GGUF's chat template (same tokens, same stops)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        raise GeneratorUnavailable(f"{path} has no chat template in its GGUF metadata")

    def text(token: int) -> str:
        return llama.detokenize([token], special=True).decode(errors="replace") if token != -1 else ""

    eos = llama.token_eos()
    return Jinja2ChatFormatter(
        template, eos_token=text(eos), bos_token=text(llama.token_bos()), stop_token_ids=[eos]
    )


@register("llamacpp")
def _build(config: GeneratorConfig) -> LlamaCppGenerator:
    path = gguf_path(config.model)
    if path is None:
        raise GeneratorUnavailable(
            f"llamacpp needs a GGUF model, got {config.model!r}: set LLM_MODEL to a .gguf path, "
            "org/repo:file.gguf, or packaged:SmolLM2-135M-Instruct (or LLM_BACKEND=transformers)"
        )
    return LlamaCppGenerator(
        path,
        threads=config.threads,
        context_tokens=config.context_tokens,
        adapters=config.adapters,
        timeout_s=config.timeout_s,
    )
