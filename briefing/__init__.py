"""The generation stage (in progress): so far the grounding check that every generated
sentence must pass before it reaches a reader."""

from briefing.grounding import (
    EmbeddingLexicalChecker,
    Evidence,
    GroundingChecker,
    GroundingConfig,
    Support,
    split_sentences,
)

__all__ = [
    "EmbeddingLexicalChecker",
    "Evidence",
    "GroundingChecker",
    "GroundingConfig",
    "Support",
    "split_sentences",
]
