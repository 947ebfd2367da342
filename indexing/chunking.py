"""Split an article into retrieval chunks with llama-index's SentenceSplitter.

Chunk sizes are counted in the embedding model's own tokens (all-MiniLM-L6-v2 truncates at
256), so no chunk loses its tail to truncation. Chunk ids carry the content hash: a citation
names the exact version of the text it points at.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from indexing.articles import Article

_POINT_NAMESPACE = uuid.UUID("6b3c1f0e-8d2a-4c4e-9a57-3f1d2b7e9c10")


@dataclass(frozen=True)
class Chunk:
    """One piece of one version of an article."""

    article_id: str
    content_hash: str
    index: int
    text: str
    embed_text: str

    @property
    def chunk_id(self) -> str:
        return chunk_id(self.article_id, self.content_hash, self.index)

    @property
    def point_id(self) -> str:
        return point_id(self.chunk_id)


def chunk_id(article_id: str, content_hash: str, index: int) -> str:
    return f"{article_id}@{content_hash[:12]}#{index}"


def point_id(key: str) -> str:
    """Qdrant wants UUIDs or integers; a name-based UUID keeps ids stable across runs."""
    return str(uuid.uuid5(_POINT_NAMESPACE, key))


class Chunker:
    """Sentence-aware splitting into chunks of at most `chunk_tokens` model tokens."""

    def __init__(
        self,
        tokenizer: Callable[[str], list[Any]] | None = None,
        *,
        chunk_tokens: int = 200,
        overlap_tokens: int = 20,
    ) -> None:
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.core.utils import get_tokenizer

        self._count = tokenizer or get_tokenizer()
        self._max_tokens = chunk_tokens
        self._splitter = SentenceSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=overlap_tokens,
            tokenizer=tokenizer,
            paragraph_separator="\n\n",
        )

    def split(self, article: Article) -> list[Chunk]:
        content_hash = article.content_hash()
        text = article.text_for_embedding()
        # Short articles are one chunk; skipping the splitter for them halves ingest overhead.
        fits = len(self._count(text)) <= self._max_tokens
        texts = [text.strip()] if fits else self._splitter.split_text(text)
        # Later chunks get the title in front so they still embed as "about" the story.
        return [
            Chunk(
                article_id=article.id,
                content_hash=content_hash,
                index=i,
                text=text,
                embed_text=text if i == 0 else f"{article.title}\n{text}",
            )
            for i, text in enumerate(texts)
        ]
