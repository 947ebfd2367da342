"""LLM backends behind one `Generator` protocol: `llamacpp` (CPU default), `transformers`
(reference and training, peft adapters) and `openai` (vLLM or any OpenAI-compatible server).

Backends register by name in `GENERATORS`; `make_generator(config)` builds the configured one.
Heavy libraries (llama_cpp, torch, transformers) load when a backend is built, not on import.
"""

from briefing.llm.base import (
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
    Message,
    UnknownAdapter,
    make_generator,
)
from briefing.llm.hf import TransformersGenerator, dequantized
from briefing.llm.llamacpp import LlamaCppGenerator
from briefing.llm.models import packaged_gguf
from briefing.llm.openai_compat import OpenAIGenerator
from briefing.llm.scoring import (
    CachedScorer,
    LikelihoodScorer,
    LlamaCppScorer,
    TransformersScorer,
    make_scorer,
)

__all__ = [
    "GENERATORS",
    "CachedScorer",
    "Chat",
    "Completion",
    "FallbackGenerator",
    "GenerationError",
    "GenerationParams",
    "GenerationTimeout",
    "Generator",
    "GeneratorConfig",
    "GeneratorUnavailable",
    "LikelihoodScorer",
    "LlamaCppGenerator",
    "LlamaCppScorer",
    "Message",
    "OpenAIGenerator",
    "TransformersGenerator",
    "TransformersScorer",
    "UnknownAdapter",
    "dequantized",
    "make_generator",
    "make_scorer",
    "packaged_gguf",
]
