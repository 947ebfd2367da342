"""Settings: one frozen dataclass, read from the environment in one place (`Settings.from_env`).

| variable | default | meaning |
|---|---|---|
| DATA_DIR | ./var | where the embedded store, SQLite file and caches live |
| QDRANT_URL | (unset) | a Qdrant server; unset means embedded Qdrant under DATA_DIR/qdrant |
| QDRANT_API_KEY | (unset) | API key for QDRANT_URL |
| QDRANT_PATH | DATA_DIR/qdrant | embedded store folder, or `:memory:` |
| COLLECTION_PREFIX | news | collections are `<prefix>_chunks` and `<prefix>_articles` (aliases) |
| DATABASE_URL | sqlite:///DATA_DIR/briefing.db | app state (used from the service issue on) |
| EMBEDDING_MODEL | packaged:all-MiniLM-L6-v2 | a local path or hub id for sentence-transformers |
| LLM_MODEL | packaged:SmolLM2-135M-Instruct | GGUF path or hub id (from the generation issue on) |
| CHUNK_TOKENS / CHUNK_OVERLAP | 200 / 20 | chunk size and overlap in embedding-model tokens |
| STORY_WINDOW_HOURS / STORY_THRESHOLD | 96 / 1.1 | story clustering window and join threshold |
| RECSYS_RANKER | learned | default ranker (popularity, recency, content, learned) |
| RECSYS_DIVERSITY | 0.3 | MMR weight of novelty (0: the ranker's order) |
| RECSYS_WINDOW_DAYS | 7 | articles published this recently are candidates |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from indexing import PACKAGED_MINILM, QdrantConfig, StoryConfig
from recsys import RecsysConfig

_DEFAULT_LLM = "packaged:SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    qdrant: QdrantConfig = field(default_factory=lambda: QdrantConfig(path="var/qdrant"))
    database_url: str = "sqlite:///var/briefing.db"
    embedding_model: str = PACKAGED_MINILM
    llm_model: str = _DEFAULT_LLM
    chunk_tokens: int = 200
    chunk_overlap: int = 20
    stories: StoryConfig = field(default_factory=StoryConfig)
    recsys: RecsysConfig = field(default_factory=RecsysConfig)
    recsys_window_days: float = 7.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("DATA_DIR", "var"))
        return cls(
            data_dir=data_dir,
            qdrant=QdrantConfig(
                url=env.get("QDRANT_URL") or None,
                api_key=env.get("QDRANT_API_KEY") or None,
                path=env.get("QDRANT_PATH", str(data_dir / "qdrant")),
                prefix=env.get("COLLECTION_PREFIX", "news"),
            ),
            database_url=env.get("DATABASE_URL", f"sqlite:///{data_dir / 'briefing.db'}"),
            embedding_model=env.get("EMBEDDING_MODEL", PACKAGED_MINILM),
            llm_model=env.get("LLM_MODEL", _DEFAULT_LLM),
            chunk_tokens=_int(env, "CHUNK_TOKENS", 200),
            chunk_overlap=_int(env, "CHUNK_OVERLAP", 20),
            recsys=RecsysConfig(
                ranker=env.get("RECSYS_RANKER", RecsysConfig.ranker),
                diversity=_float(env, "RECSYS_DIVERSITY", RecsysConfig.diversity),
            ),
            recsys_window_days=_float(env, "RECSYS_WINDOW_DAYS", 7.0),
            stories=StoryConfig(
                window_hours=_float(env, "STORY_WINDOW_HOURS", StoryConfig.window_hours),
                threshold=_float(env, "STORY_THRESHOLD", StoryConfig.threshold),
            ),
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {env[name]!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a number, got {env[name]!r}") from None
