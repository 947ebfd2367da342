"""The generation stage: LLM backends, evidence retrieval, versioned prompts, the grounding
check, stored article summaries and the personalized briefing composer."""

from briefing.compose import VARIANTS, Briefing, BriefingItem, BriefingPolicy, Composer, Variant
from briefing.grounding import (
    EmbeddingLexicalChecker,
    Evidence,
    GroundingChecker,
    GroundingConfig,
    Support,
    content_words,
    split_sentences,
)
from briefing.llm import (
    GENERATORS,
    Chat,
    Completion,
    FallbackGenerator,
    GenerationError,
    GenerationParams,
    GenerationTimeout,
    Generator,
    GeneratorConfig,
    GeneratorUnavailable,
    UnknownAdapter,
    make_generator,
    packaged_gguf,
)
from briefing.prompts import PROMPTS, PromptRegistry, PromptTemplate, parse_points, untrusted
from briefing.retrieval import EvidenceChunk, EvidenceRetriever
from briefing.summaries import (
    FileSummaryStore,
    InMemorySummaryStore,
    Status,
    Summary,
    SummaryRepository,
    SummarySentence,
)
from briefing.summarize import Summarizer, SummarizerConfig

__all__ = [
    "GENERATORS",
    "PROMPTS",
    "VARIANTS",
    "Briefing",
    "BriefingItem",
    "BriefingPolicy",
    "Chat",
    "Completion",
    "Composer",
    "EmbeddingLexicalChecker",
    "Evidence",
    "EvidenceChunk",
    "EvidenceRetriever",
    "FallbackGenerator",
    "FileSummaryStore",
    "GenerationError",
    "GenerationParams",
    "GenerationTimeout",
    "Generator",
    "GeneratorConfig",
    "GeneratorUnavailable",
    "GroundingChecker",
    "GroundingConfig",
    "InMemorySummaryStore",
    "PromptRegistry",
    "PromptTemplate",
    "Status",
    "Summarizer",
    "SummarizerConfig",
    "Summary",
    "SummaryRepository",
    "SummarySentence",
    "Support",
    "UnknownAdapter",
    "Variant",
    "content_words",
    "make_generator",
    "packaged_gguf",
    "parse_points",
    "split_sentences",
    "untrusted",
]
