"""How likely a language model finds a text after a context: the grounding check's third signal.

`LikelihoodScorer` contract (tests/unit/test_scorer_contract.py runs it on every scorer here):
`logprobs(context, continuations, tail="")` returns, for each continuation in order, the
natural-log probability of each of its tokens given context + tail and the tokens before it.
Both scorers read the same GGUF file, so they agree to within quantization noise.

Context and tail are evaluated once and every continuation is scored after them. A context too
long for the window keeps its beginning (news puts the facts first); the tail (the question
after a document) is never cut.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from briefing.llm.base import GeneratorUnavailable

MAX_CONTINUATION_TOKENS = 128  # a sentence; longer ones are scored on their beginning


class LikelihoodScorer(Protocol):
    def logprobs(self, context: str, continuations: Sequence[str], tail: str = "") -> list[np.ndarray]: ...


class LlamaCppScorer:
    """The GGUF model through llama.cpp, with logits kept for every position.

    The KV cache of the last context stays for the next call: a context that begins with the
    same tokens (the same article, checked again for another sentence or another side of a
    gate) is not evaluated again, and that evaluation is most of a check's time (2.3 s of 3.2 s
    for an XSum article here). A short context (the grounding check's prior, `SHORT_CONTEXT`
    tokens at most) runs in a small context of its own, so it does not evict the article's."""

    SHORT_CONTEXT = 64

    def __init__(self, model_path: Path, *, threads: int | None = None, context_tokens: int = 4096) -> None:
        self._path, self._threads = model_path, threads
        self._main = _Context(self._load(context_tokens))
        self._llama: Any = self._main.llama  # bench/frank_features.py reads the model from here
        self._short: _Context | None = None
        self.context_tokens = context_tokens
        self._lock = threading.Lock()  # one llama.cpp context is not safe to share between threads

    def _load(self, context_tokens: int) -> Any:
        from llama_cpp import Llama

        try:
            return Llama(
                model_path=str(self._path),
                n_ctx=context_tokens,
                n_threads=self._threads,
                n_threads_batch=self._threads,  # prompt evaluation too (see LlamaCppGenerator._load)
                logits_all=True,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise GeneratorUnavailable(f"llama.cpp cannot load {self._path}: {exc}") from exc

    def logprobs(self, context: str, continuations: Sequence[str], tail: str = "") -> list[np.ndarray]:
        if not continuations:
            return []
        llama = self._llama
        conts = [self._tokens(c)[:MAX_CONTINUATION_TOKENS] or [llama.token_eos()] for c in continuations]
        after = self._tokens(tail)
        room = self.context_tokens - max(map(len, conts)) - len(after) - 1
        prefix = list(llama.tokenize(context.encode(), add_bos=True, special=False))[:room] + after
        prefix = prefix or [llama.token_bos()]  # the first token needs something to follow
        with self._lock:
            return self._context_for(len(prefix)).score(prefix, conts)

    def _context_for(self, prefix_tokens: int) -> _Context:
        if prefix_tokens > self.SHORT_CONTEXT:
            return self._main
        if self._short is None:
            self._short = _Context(self._load(self.SHORT_CONTEXT + MAX_CONTINUATION_TOKENS + 1))
        return self._short

    def _tokens(self, text: str) -> list[int]:
        return list(self._llama.tokenize(text.encode(), add_bos=False, special=False))


class _Context:
    """One llama.cpp context and the tokens whose keys and values its cache holds."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.held: list[int] = []

    def score(self, prefix: list[int], conts: list[list[int]]) -> list[np.ndarray]:
        llama = self.llama
        keep = _common_length(self.held, prefix[:-1])
        self.held = []  # until the cache holds the whole prefix again (an error may stop midway)
        llama.n_tokens = keep  # eval drops the cache past n_tokens
        if keep < len(prefix) - 1:
            self._eval_without_logits(prefix[keep:-1])
        out = []
        for tokens in conts:
            # the context stays and only its last token (whose logits predict the
            # continuation's first) is evaluated again.
            llama.n_tokens = len(prefix) - 1
            llama.eval([prefix[-1], *tokens])
            logits = np.asarray(llama.scores[len(prefix) - 1 : len(prefix) - 1 + len(tokens)], np.float64)
            out.append(_log_softmax(logits)[np.arange(len(tokens)), tokens])
        self.held = prefix
        return out

    def _eval_without_logits(self, tokens: list[int]) -> None:
        """Evaluates the context without computing and copying its logits, which nobody reads
        (a 49,152-wide row per context token; with them, a 600-token article and five sentences
        took 20.7 s instead of 11.8 s, both timed with the cores shared). llama-cpp-python fixes
        `logits_all` at load time; its eval reads the private `_logits_all` per call, so it is
        switched off here for the context only (where that attribute is missing, the logits are
        computed)."""
        llama = self.llama
        saved = getattr(llama, "_logits_all", None)
        if saved is not None:
            llama._logits_all = False
        try:
            llama.eval(tokens)
        finally:
            if saved is not None:
                llama._logits_all = saved


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens two sequences share from their start."""
    return next((n for n, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


class TransformersScorer:
    """The same model in transformers (dequantized once, see `dequantized`): the reference, for
    checking the llama.cpp scorer and for models llama.cpp cannot load."""

    def __init__(self, source: str, *, threads: int | None = None, context_tokens: int = 4096) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(source)
            self._net: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        except OSError as exc:
            raise GeneratorUnavailable(f"transformers cannot load {source!r}: {exc}") from exc
        self.context_tokens = context_tokens
        self._lock = threading.Lock()

    def logprobs(self, context: str, continuations: Sequence[str], tail: str = "") -> list[np.ndarray]:
        import torch

        if not continuations:
            return []
        conts = [self._tokens(c)[:MAX_CONTINUATION_TOKENS] for c in continuations]
        conts = [c or [self._tokenizer.eos_token_id] for c in conts]
        after = self._tokens(tail)
        room = self.context_tokens - max(map(len, conts)) - len(after) - 1
        # With BOS where the model wants one.
        prefix = list(self._tokenizer(context)["input_ids"])[:room] + after
        prefix = prefix or [self._tokenizer.bos_token_id or self._tokenizer.eos_token_id]
        out = []
        # One plain forward pass per continuation, context included: slower than reusing the
        # context's cache, but free of the cache API, which transformers keeps changing.
        with self._lock, torch.inference_mode():
            self._net.eval()
            for tokens in conts:
                logits = self._net(torch.tensor([prefix + tokens])).logits[0, len(prefix) - 1 : -1]
                picked = torch.log_softmax(logits.double(), dim=-1)[torch.arange(len(tokens)), tokens]
                out.append(picked.numpy())
        return out

    def _tokens(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])


class CachedScorer:
    """A `LikelihoodScorer` that keeps what the wrapped one computed in a SQLite file and asks it
    only for continuations it has not scored after the same context and tail. `key` names the
    model: scores depend on nothing else, as long as the context fits the window (a context cut
    to make room for a longer continuation would be cut differently). For benchmarks that rerun
    the checker with other weights: bench/grounding.py --logprob-cache."""

    def __init__(self, scorer: LikelihoodScorer, path: Path, *, key: str) -> None:
        self._scorer, self._key = scorer, key
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("CREATE TABLE IF NOT EXISTS logprobs (key TEXT PRIMARY KEY, value BLOB)")
        self.hits = self.misses = 0

    def logprobs(self, context: str, continuations: Sequence[str], tail: str = "") -> list[np.ndarray]:
        keys = [self._digest(context, tail, c) for c in continuations]
        query = "SELECT key, value FROM logprobs WHERE key = ?"
        rows = (self._db.execute(query, (k,)).fetchone() for k in keys)
        found = dict(row for row in rows if row)
        todo = [i for i, k in enumerate(keys) if k not in found]
        fresh = self._scorer.logprobs(context, [continuations[i] for i in todo], tail) if todo else []
        with self._db:
            for i, values in zip(todo, fresh, strict=True):
                found[keys[i]] = np.asarray(values, np.float64).tobytes()
                self._db.execute("INSERT OR REPLACE INTO logprobs VALUES (?, ?)", (keys[i], found[keys[i]]))
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        return [np.frombuffer(found[k], np.float64) for k in keys]

    def _digest(self, context: str, tail: str, continuation: str) -> str:
        parts = (self._key, context, tail, continuation)
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted: np.ndarray = logits - logits.max(axis=-1, keepdims=True)
    normalized: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return normalized


SCORERS = ("llamacpp", "transformers", "off")


def make_scorer(
    backend: str, model: str, *, cache_dir: Path, threads: int | None = None
) -> LikelihoodScorer | None:
    """The scorer GROUNDING_LIKELIHOOD names, on GROUNDING_MODEL; None for `off`."""
    from briefing.llm.hf import dequantized
    from briefing.llm.models import gguf_path

    if backend == "off":
        return None
    if backend == "transformers":
        return TransformersScorer(dequantized(model, cache_dir), threads=threads)
    if backend != "llamacpp":
        raise ValueError(f"GROUNDING_LIKELIHOOD must be one of {', '.join(SCORERS)}, got {backend!r}")
    path = gguf_path(model)
    if path is None:
        raise GeneratorUnavailable(
            f"the llamacpp scorer needs a GGUF model, got {model!r} "
            "(set GROUNDING_MODEL to a .gguf file, or GROUNDING_LIKELIHOOD=transformers)"
        )
    return LlamaCppScorer(path, threads=threads)
