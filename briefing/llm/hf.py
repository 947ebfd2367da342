"""The `transformers` backend: the reference and training model, with peft LoRA adapters.

A GGUF model (the packaged SmolLM2 by default) is dequantized to float32 by transformers once and
saved as safetensors under the cache folder; later loads read that copy in well under a second.
A hub id or a local folder of a transformers model loads as it is. Batches are padded on the
left and decoded together; adapters are switched per call (`disable_adapter` for the base model).
The time limit is a stopping criterion checked after every decoding step.
"""

from __future__ import annotations

import contextlib
import shutil
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
    cut_at_stop,
    kept,
    register,
)
from briefing.llm.models import gguf_path, slug


def dequantized(model: str, cache_dir: Path) -> str:
    """A folder or hub id transformers can load quickly: GGUF models are converted once."""
    gguf = gguf_path(model)
    if gguf is None:
        return model
    target = cache_dir / f"{slug(model)}-f32"
    if (target / "config.json").is_file():
        return str(target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain float32 now; the GGUF quantizer would refuse to save them.
    loaded.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(loaded.config, "quantization_config"):
        del loaded.config.quantization_config
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    loaded.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    staging.replace(target)  # a crash mid-save leaves no half model behind the real name
    return str(target)


class TransformersGenerator:
    def __init__(
        self,
        source: str,
        *,
        adapters: Mapping[str, Path] | None = None,
        threads: int | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.source = source
        self.timeout_s = timeout_s
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
            base = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        except OSError as exc:
            raise GeneratorUnavailable(f"transformers cannot load {source!r}: {exc}") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.net = _with_adapters(base, adapters or {}).eval()
        self.adapters = dict(adapters or {})  # name → peft adapter folder
        self._lock = threading.Lock()  # adapter switching is model-wide state

    @property
    def model(self) -> str:
        return Path(self.source).name

    def add_adapter(self, name: str, path: Path) -> None:
        """Serve the peft adapter folder `path` as `name` from now on (a name already served is
        replaced; the same name and path again does nothing). Waits for a generation in progress:
        the adapters are model-wide state. A folder peft cannot load raises GeneratorUnavailable and
        leaves what served before serving."""
        with self._lock:
            if self.adapters.get(name) == path:
                return
            try:
                self.net = _added(self.net, name, path, replaces=name in self.adapters).eval()
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise GeneratorUnavailable(f"transformers cannot load the adapter {path}: {exc}") from exc
            self.adapters[name] = path

    def ready(self) -> bool:
        """The model is loaded with the generator; tokenizing a word checks its tokenizer answers."""
        if not self.tokenizer("ready", add_special_tokens=False)["input_ids"]:
            raise GeneratorUnavailable(f"the tokenizer of {self.source!r} answers nothing")
        return True

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        if not chats:
            return []
        deadline = Deadline(params.limit(self.timeout_s))
        batch = self._encode(chats)
        with self._lock, self._adapter(adapter):
            out = self.net.generate(**batch, **self._sampling(params, deadline))
        width = batch["input_ids"].shape[1]
        masks = batch["attention_mask"]
        done = [
            self._completion(masks[n], out[n, width:], params, adapter, deadline) for n in range(len(chats))
        ]
        return kept(done, deadline, f"transformers generation of {len(chats)} chats")

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        deadline = Deadline(params.limit(self.timeout_s))
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = {**self._encode([chat]), **self._sampling(params, deadline), "streamer": streamer}
        with self._lock, self._adapter(adapter):
            worker = threading.Thread(target=self.net.generate, kwargs=kwargs, daemon=True)
            worker.start()
            text = ""
            for piece in streamer:
                text += piece
                head, stopped = cut_at_stop(text, params.stop)
                if stopped:
                    yield head[len(text) - len(piece) :]
                    break
                yield piece
            worker.join()
        if not text and deadline.passed():
            raise deadline.expired("transformers stream")

    def _encode(self, chats: Sequence[Chat]) -> Any:
        texts = [
            self.tokenizer.apply_chat_template(
                [dict(m) for m in c], tokenize=False, add_generation_prompt=True
            )
            for c in chats
        ]
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)

    def _sampling(self, params: GenerationParams, deadline: Deadline) -> dict[str, Any]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Late(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), deadline.passed(), dtype=torch.bool)

        torch.manual_seed(params.seed)
        sample = params.temperature > 0
        return {
            "max_new_tokens": params.max_tokens,
            "do_sample": sample,
            "temperature": params.temperature if sample else None,
            "top_p": params.top_p if sample else None,
            "top_k": None,
            "pad_token_id": self.tokenizer.pad_token_id,
            "stopping_criteria": StoppingCriteriaList([_Late()]),
            # stop strings end decoding early; the text is cut at them again in `_completion`
            **({"stop_strings": list(params.stop), "tokenizer": self.tokenizer} if params.stop else {}),
        }

    def _completion(
        self, mask: Any, new: Any, params: GenerationParams, adapter: str | None, deadline: Deadline
    ) -> Completion:
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        ids = [int(t) for t in new]
        end = next((i for i, t in enumerate(ids) if t in ends), None)
        ended = end is not None
        # A row without an end, a stop string or max_tokens can only have been cut by the deadline:
        # the batch decodes until every row is done otherwise.
        finish = "stop" if ended else "length" if len(ids) >= params.max_tokens else "timeout"
        ids = ids[:end]
        decoded = str(self.tokenizer.decode(ids, skip_special_tokens=True))
        text, stopped = cut_at_stop(decoded, params.stop)
        return Completion(
            text=text,
            model=f"{self.model}+{adapter}" if adapter else self.model,
            prompt_tokens=int(mask.sum()),
            completion_tokens=len(ids),
            seconds=deadline.elapsed(),
            finish_reason="stop" if stopped else finish,
        )

    def _adapter(self, adapter: str | None) -> Any:
        if adapter is None:
            return self.net.disable_adapter() if self.adapters else contextlib.nullcontext()
        if adapter not in self.adapters:
            raise UnknownAdapter(
                f"transformers serves no adapter {adapter!r}; it has {sorted(self.adapters)}"
            )
        self.net.set_adapter(adapter)
        return contextlib.nullcontext()


def _with_adapters(base: Any, adapters: Mapping[str, Path]) -> Any:
    if not adapters:
        return base
    from peft import PeftModel

    (first, path), *rest = adapters.items()
    net = PeftModel.from_pretrained(base, str(path), adapter_name=first)
    for name, more in rest:
        net.load_adapter(str(more), adapter_name=name)
    return net


def _added(net: Any, name: str, path: Path, *, replaces: bool) -> Any:
    """`net` serving the adapter `path` as `name` too: the base wrapped in a PeftModel first if it
    had none. A replacement is loaded under a spare name first (a few MB, quick), so a folder peft
    cannot load fails before the adapter it was to replace is deleted."""
    from peft import PeftModel

    if not isinstance(net, PeftModel):
        return PeftModel.from_pretrained(net, str(path), adapter_name=name)
    if not replaces:
        net.load_adapter(str(path), adapter_name=name)
        return net
    spare = f"{name}__incoming"  # peft adapter names are module names: no dots
    net.load_adapter(str(path), adapter_name=spare)
    net.delete_adapter(name)
    net.load_adapter(str(path), adapter_name=name)
    net.delete_adapter(spare)
    return net


@register("transformers")
def _build(config: GeneratorConfig) -> TransformersGenerator:
    source = dequantized(config.model, config.cache_dir)
    return TransformersGenerator(
        source, adapters=config.adapters, threads=config.threads, timeout_s=config.timeout_s
    )
