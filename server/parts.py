"""What the composition root (server.container) wraps around pipeline parts for the service.

- `Stoppable` and `StoppableScorer`: the LLM and the grounding check's likelihood scorer start
  no call once the service's stop event is set (Ctrl-C), so a job in the middle of an item ends
  at its next call instead of writing on; a call in progress ends at its own deadline.
- `RememberingEmbedder`: the grounding checks embed an article's evidence sentences again for
  every draft, update and editor's edit of it. Kept vectors make an editor's save embed only the
  editor's own sentences: on a busy 2-core machine the evidence's 20-odd sentences took 4 s of
  the request alone and 9-12 s while a draft was being written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from briefing import Chat, Completion, GenerationError, GenerationParams, Generator, LikelihoodScorer
from indexing import Embedder, Vectors


class Stoppable:
    """A generator that starts no call once `stop` is set (the service is shutting down)."""

    def __init__(self, inner: Generator, stop: threading.Event) -> None:
        self.inner, self.stop = inner, stop

    @property
    def model(self) -> str:
        return self.inner.model

    def generate(
        self, chats: Sequence[Chat], params: GenerationParams, adapter: str | None = None
    ) -> list[Completion]:
        self._check()
        return self.inner.generate(chats, params, adapter)

    def stream(self, chat: Chat, params: GenerationParams, adapter: str | None = None) -> Iterator[str]:
        self._check()
        return self.inner.stream(chat, params, adapter)

    def ready(self) -> bool:
        return self.inner.ready()

    def add_adapter(self, name: str, path: Path) -> None:
        """Serve a LoRA adapter from now on (the promoted one changed; no restart)."""
        add = getattr(self.inner, "add_adapter", None)
        if add is None:
            raise GenerationError(f"{type(self.inner).__name__} cannot load adapters at runtime")
        add(name, path)

    def _check(self) -> None:
        if self.stop.is_set():
            raise GenerationError("the service is shutting down: no new LLM call starts")


class StoppableScorer:
    """The likelihood scorer, starting no pass once `stop` is set: a draft in hand at shutdown is
    dropped between its passes (each a long prompt evaluation on a busy CPU) rather than
    finished; the job counts it as failed and a later run writes it."""

    def __init__(self, inner: LikelihoodScorer, stop: threading.Event) -> None:
        self.inner, self.stop = inner, stop

    def logprobs(self, context: str, continuations: Sequence[str], tail: str = "") -> list[np.ndarray]:
        if self.stop.is_set():
            raise GenerationError("the service is shutting down: no new likelihood pass starts")
        return self.inner.logprobs(context, continuations, tail)


class RememberingEmbedder:
    """An embedder keeping the vectors of the last `size` texts it embedded (least recently used
    out first); only texts it has not kept go to the model, in one batch. Thread-safe: jobs and
    requests check sentences at the same time."""

    def __init__(self, inner: Embedder, size: int = 50_000) -> None:
        self.inner, self.size = inner, size
        self._kept: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_query(self, text: str) -> Vectors:
        return self.inner.embed_query(text)

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        found = self._recall(texts)
        new = list(dict.fromkeys(t for t in texts if t not in found))
        if new:  # outside the lock: other callers' kept texts do not wait for the model
            found.update(zip(new, self.inner.embed_documents(new, progress=progress), strict=True))
            self._keep({t: found[t] for t in new})
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def __len__(self) -> int:
        return len(self._kept)

    def _recall(self, texts: Sequence[str]) -> dict[str, Vectors]:
        with self._lock:
            found = {t: self._kept[t] for t in dict.fromkeys(texts) if t in self._kept}
            for text in found:
                self._kept.move_to_end(text)
            self.hits += len(found)
            self.misses += len(set(texts)) - len(found)
            return found

    def _keep(self, vectors: dict[str, Vectors]) -> None:
        with self._lock:
            self._kept.update(vectors)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
