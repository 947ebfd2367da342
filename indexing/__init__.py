"""The indexing stage: articles in, chunks with vectors in Qdrant out, grouped into stories."""

from indexing.articles import Article, RecordError, validate_record
from indexing.chunking import Chunk, Chunker
from indexing.embedding import (
    EMBEDDERS,
    PACKAGED_MINILM,
    Embedder,
    SentenceTransformerEmbedder,
    Vectors,
    make_embedder,
)
from indexing.pipeline import Indexer, IngestReport, reindex
from indexing.sources import (
    Record,
    open_source,
    read_feed,
    read_jsonl,
    read_mind_news,
)
from indexing.store import (
    ArticleRecord,
    Hit,
    IndexedArticle,
    IndexUnavailable,
    QdrantConfig,
    QdrantIndex,
    SearchFilter,
    VectorIndex,
)
from indexing.stories import PairScores, StoryClusterer, StoryConfig, batch_stories, pairwise_scores
from indexing.text import CALENDAR_WORDS, STOPWORDS, html_to_text

__all__ = [
    "CALENDAR_WORDS",
    "EMBEDDERS",
    "PACKAGED_MINILM",
    "STOPWORDS",
    "Article",
    "ArticleRecord",
    "Chunk",
    "Chunker",
    "Embedder",
    "Hit",
    "IndexUnavailable",
    "IndexedArticle",
    "Indexer",
    "IngestReport",
    "PairScores",
    "QdrantConfig",
    "QdrantIndex",
    "Record",
    "RecordError",
    "SearchFilter",
    "SentenceTransformerEmbedder",
    "StoryClusterer",
    "StoryConfig",
    "VectorIndex",
    "Vectors",
    "batch_stories",
    "html_to_text",
    "make_embedder",
    "open_source",
    "pairwise_scores",
    "read_feed",
    "read_jsonl",
    "read_mind_news",
    "reindex",
    "validate_record",
]
