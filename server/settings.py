"""Settings: one frozen dataclass, read from the environment in one place (`Settings.from_env`).

| variable | default | meaning |
|---|---|---|
| DATA_DIR | ./var | where the embedded store, SQLite file and caches live |
| QDRANT_URL | (unset) | a Qdrant server; unset means embedded Qdrant under DATA_DIR/qdrant |
| QDRANT_API_KEY | (unset) | API key for QDRANT_URL |
| QDRANT_PATH | DATA_DIR/qdrant | embedded store folder, or `:memory:` |
| COLLECTION_PREFIX | news | collections are `<prefix>_chunks` and `<prefix>_articles` (aliases) |
| QDRANT_SHARDS | (the server's) | a Qdrant cluster's shards per new collection (embedded: ignored) |
| QDRANT_REPLICATION | (the server's) | copies of each shard a Qdrant cluster keeps |
| QDRANT_WRITE_CONSISTENCY | (the server's) | copies a write waits for (at most QDRANT_REPLICATION) |
| DATABASE_URL | sqlite:///DATA_DIR/briefing.db | app state (used from the service issue on) |
| REDIS_URL | (unset) | API workers share visits, briefing cache, rate limits in Redis (unset: in-process) |
| REDIS_PREFIX | briefing | every Redis key starts with this (deployments sharing a Redis) |
| VERSION_POLL_S | 5 | seconds between checks for a refreshed matrix, ranker or adapter (0: never) |
| EMBEDDING_MODEL | packaged:all-MiniLM-L6-v2 | a local path or hub id for sentence-transformers |
| LLM_BACKEND | llamacpp | llamacpp, transformers or openai (vLLM or any OpenAI-compatible server) |
| LLM_MODEL | packaged:SmolLM2-135M-Instruct | GGUF file, transformers folder or hub id, or served name |
| LLM_BASE_URL / LLM_API_KEY | http://127.0.0.1:8011/v1 / (unset) | the openai backend's server |
| LLM_TIMEOUT_S | 60 | every generation call's time limit: it stops there, keeping what it wrote |
| LLM_FALLBACK | (unset) | backend to answer with when LLM_BACKEND is unreachable, e.g. llamacpp |
| LLM_THREADS | (their defaults; service: half the cores) | llama.cpp (decodes on cores/2) and torch threads |
| LLM_ADAPTERS / LLM_ADAPTER | (unset) | LoRA adapters `name=path,...`; one to pin (unset: the promoted) |
| TUNE_EVERY_S | 86400 | the tune job's interval: snapshot, train, gate, promote or keep (0: off) |
| TUNE_ARTICLES / TUNE_CANDIDATES | 0 / 4 | self-training articles per run (0: all) and samples per article |
| TUNE_EVAL_ARTICLES | 40 | held-out articles the gate runs through the serving backend |
| TUNE_RANK / TUNE_ALPHA / TUNE_LR | 16 / 32 / 2e-4 | LoRA rank, alpha and learning rate |
| TUNE_EPOCHS / TUNE_MAX_TOKENS / TUNE_SEED | 1 / 1280 / 0 | epochs, longest example, seed |
| TUNE_DEVICE | auto | where LoRA trains: auto (a CUDA GPU when torch sees one), cpu, cuda or cuda:N |
| TUNE_BUDGET_S | 14400 | a tune's sampling and training stop after this long (training resumes next run) |
| TUNE_PREFERENCE | true | a DPO step after SFT, kept only if it beats SFT alone on the gate |
| TUNE_LAYOUT | per-language | one adapter per language (too few examples: base model), or `joint` |
| GROUNDING_THRESHOLD | 0.6 | a generated sentence needs this support to reach a reader |
| GROUNDING_LIKELIHOOD | llamacpp | the checker's LLM signal: llamacpp, transformers or off |
| GROUNDING_MODEL | packaged:SmolLM2-135M-Instruct | the model it reads (its curve is fitted to this one) |
| GROUNDING_CHECKER | embedding-lexical | or relation: the verifier `make verifier` puts in DATA_DIR/models |
| BRIEFING_ITEMS | 5 | items per briefing |
| BRIEFING_ALLOW_DRAFTS | false | true: checked drafts show in every language (a demo of generation) |
| SHOW_GATE | data/labels/gate.json | measured checker precision per language: where drafts may show |
| BRIEFING_LLM_GREETING | true | the LLM writes the greeting (false: a template, no LLM call) |
| CHUNK_TOKENS / CHUNK_OVERLAP | 200 / 20 | chunk size and overlap in embedding-model tokens |
| STORY_WINDOW_HOURS / STORY_THRESHOLD | 168 / 1.3 | story clustering window and join threshold |
| RECSYS_RANKER | learned | default ranker (popularity, recency, content, learned) |
| RECSYS_DIVERSITY | 0.3 | MMR weight of novelty (0: the ranker's order) |
| RECSYS_WINDOW_DAYS | 7 | articles published this recently are candidates |
| HOST / PORT | 127.0.0.1 / 8000 | where `briefing serve` listens |
| SECURE_COOKIES | (on unless HOST is loopback) | cookies only travel over HTTPS (off: plain-HTTP runs) |
| JWT_SECRET | (a random key kept in DATA_DIR/jwt-secret) | signs the access tokens |
| CLOCK_START | (unset: the wall clock) | ISO time the service clock starts from (demos, tests) |
| SESSION_MINUTES | 30 | requests this close together are one visit, with one "since" |
| RATE_LIMIT_PER_MINUTE | 600 | requests per client and minute on the API and pages (0: off) |
| EXPERIMENT_HOLDOUT | 0 | share of readers in no experiment (a long-term holdout), in [0, 1) |
| MAX_BODY_BYTES | 1000000 | larger request bodies are refused (413) |
| JOBS | true | run the scheduler in this process (one per deployment: it takes a lock) |
| JOB_RETRIES / JOB_BACKOFF_S | 3 / 30 | a failed job run is retried after 30 s, 60 s, 120 s |
| FEEDS | (none) | comma-separated feeds or files the ingest job reads |
| SUMMARIZE_PER_RUN | 20 | drafts the summarize-new job writes per run (newest articles first) |
| JOB_BUDGET_S | 300 | an LLM job (summarize-new, precompute-briefings) starts no new item after this long |
| RETENTION_DAYS | 365 | events and served briefings older than this are deleted |
| PUBLICATION_LANGUAGE | en | readers' language unless they chose one (en, nb) |
| PUBLICATION_TZ | Europe/Oslo | readers' time zone unless they chose one (an IANA name) |
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from briefing import BriefingPolicy, GeneratorConfig, GroundingConfig
from briefing.gate import GATE_FILE
from briefing.tuning.config import LAYOUTS, TrainConfig, TuneConfig
from briefing.verifier import CHECKERS
from indexing import PACKAGED_MINILM, QdrantConfig, StoryConfig
from recsys import RecsysConfig
from server.i18n import check_language, check_timezone

_DEFAULT_LLM = "packaged:SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    jwt_secret: str | None = None
    clock_start: datetime | None = None
    session_minutes: float = 30.0
    rate_limit_per_minute: int = 600
    max_body_bytes: int = 1_000_000
    jobs: bool = True
    job_retries: int = 3
    job_backoff_s: float = 30.0
    feeds: tuple[str, ...] = ()
    retention_days: float = 365.0
    summarize_per_run: int = 20
    job_budget_s: float = 300.0
    cookie_secure: bool | None = None  # None: derived from `host` (see `secure_cookies`)
    # The long-term holdout: this share of readers enters no experiment (server.experiments.assign).
    experiment_holdout: float = 0.0

    @property
    def secure_cookies(self) -> bool:
        """Cookies carry `Secure` unless set off, or unset and the service listens on loopback
        only: there a browser talks plain HTTP to it, and a Secure cookie would not come back."""
        return self.cookie_secure if self.cookie_secure is not None else not _loopback(self.host)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("var")
    qdrant: QdrantConfig = field(default_factory=lambda: QdrantConfig(path="var/qdrant"))
    database_url: str = "sqlite:///var/briefing.db"
    redis_url: str | None = None  # unset: shared state lives in this process (the embedded default)
    redis_prefix: str = "briefing"
    version_poll_s: float = 5.0
    embedding_model: str = PACKAGED_MINILM
    chunk_tokens: int = 200
    chunk_overlap: int = 20
    stories: StoryConfig = field(default_factory=StoryConfig)
    recsys: RecsysConfig = field(default_factory=RecsysConfig)
    recsys_window_days: float = 7.0
    llm: GeneratorConfig = field(default_factory=GeneratorConfig)
    llm_adapter: str | None = None  # pins an adapter; unset: the registry's promoted one
    tune: TuneConfig = field(default_factory=TuneConfig)
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    grounding_checker: str = "embedding-lexical"  # or "relation" (briefing/verifier.py)
    briefing: BriefingPolicy = field(default_factory=BriefingPolicy)
    show_gate: Path = GATE_FILE  # by DESIGN §5, drafts show only where it says the checker passed
    service: ServiceConfig = field(default_factory=ServiceConfig)
    publication_language: str = "en"  # a reader's language and zone until they choose their own
    publication_timezone: str = "Europe/Oslo"

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
                shards=_count(env, "QDRANT_SHARDS"),
                replication=_count(env, "QDRANT_REPLICATION"),
                write_consistency=_count(env, "QDRANT_WRITE_CONSISTENCY"),
            ),
            database_url=env.get("DATABASE_URL", f"sqlite:///{data_dir / 'briefing.db'}"),
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("REDIS_PREFIX") or "briefing",
            version_poll_s=_float(env, "VERSION_POLL_S", 5.0),
            embedding_model=env.get("EMBEDDING_MODEL", PACKAGED_MINILM),
            chunk_tokens=_int(env, "CHUNK_TOKENS", 200),
            chunk_overlap=_int(env, "CHUNK_OVERLAP", 20),
            recsys=RecsysConfig(
                ranker=env.get("RECSYS_RANKER", RecsysConfig.ranker),
                diversity=_float(env, "RECSYS_DIVERSITY", RecsysConfig.diversity),
            ),
            recsys_window_days=_float(env, "RECSYS_WINDOW_DAYS", 7.0),
            llm=_llm(env, data_dir),
            llm_adapter=env.get("LLM_ADAPTER") or None,
            tune=_tune(env),
            grounding=GroundingConfig(
                threshold=_float(env, "GROUNDING_THRESHOLD", GroundingConfig.threshold),
                likelihood_backend=env.get("GROUNDING_LIKELIHOOD", GroundingConfig.likelihood_backend),
                likelihood_model=env.get("GROUNDING_MODEL", GroundingConfig.likelihood_model),
            ),
            grounding_checker=_choice(env, "GROUNDING_CHECKER", "embedding-lexical", CHECKERS),
            briefing=BriefingPolicy(
                items=_int(env, "BRIEFING_ITEMS", BriefingPolicy.items),
                allow_drafts=_bool(env, "BRIEFING_ALLOW_DRAFTS", BriefingPolicy.allow_drafts),
                llm_greeting=_bool(env, "BRIEFING_LLM_GREETING", BriefingPolicy.llm_greeting),
            ),
            show_gate=Path(env.get("SHOW_GATE") or GATE_FILE),
            service=_service(env),
            publication_language=check_language(env.get("PUBLICATION_LANGUAGE", "en")),
            publication_timezone=check_timezone(env.get("PUBLICATION_TZ", "Europe/Oslo")),
            stories=StoryConfig(
                window_hours=_float(env, "STORY_WINDOW_HOURS", StoryConfig.window_hours),
                threshold=_float(env, "STORY_THRESHOLD", StoryConfig.threshold),
            ),
        )


def _llm(env: Mapping[str, str], data_dir: Path) -> GeneratorConfig:
    return GeneratorConfig(
        backend=env.get("LLM_BACKEND", GeneratorConfig.backend),
        model=env.get("LLM_MODEL", _DEFAULT_LLM),
        base_url=env.get("LLM_BASE_URL", GeneratorConfig.base_url),
        api_key=env.get("LLM_API_KEY") or None,
        timeout_s=_float(env, "LLM_TIMEOUT_S", GeneratorConfig.timeout_s),
        threads=_int(env, "LLM_THREADS", 0) or None,
        cache_dir=data_dir / "models",
        adapters=_adapters(env.get("LLM_ADAPTERS", "")),
        fallback=env.get("LLM_FALLBACK") or None,
    )


def _tune(env: Mapping[str, str]) -> TuneConfig:
    d, t = TuneConfig, TrainConfig
    return TuneConfig(
        train=TrainConfig(
            rank=_int(env, "TUNE_RANK", t.rank),
            alpha=_int(env, "TUNE_ALPHA", t.alpha),
            learning_rate=_float(env, "TUNE_LR", t.learning_rate),
            epochs=_float(env, "TUNE_EPOCHS", t.epochs),
            max_tokens=_int(env, "TUNE_MAX_TOKENS", t.max_tokens),
            seed=_int(env, "TUNE_SEED", t.seed),
            device=env.get("TUNE_DEVICE") or t.device,
        ),
        every_s=_float(env, "TUNE_EVERY_S", d.every_s),
        articles=_int(env, "TUNE_ARTICLES", d.articles),
        preference=_bool(env, "TUNE_PREFERENCE", d.preference),
        candidates=_int(env, "TUNE_CANDIDATES", d.candidates),
        eval_limit=_int(env, "TUNE_EVAL_ARTICLES", d.eval_limit),
        budget_s=_float(env, "TUNE_BUDGET_S", d.budget_s),
        layout=_choice(env, "TUNE_LAYOUT", d.layout, LAYOUTS),
    )


def _service(env: Mapping[str, str]) -> ServiceConfig:
    d = ServiceConfig
    clock = env.get("CLOCK_START")
    return ServiceConfig(
        host=env.get("HOST", d.host),
        port=_int(env, "PORT", d.port),
        jwt_secret=env.get("JWT_SECRET") or None,
        clock_start=_time(clock, "CLOCK_START") if clock else None,
        session_minutes=_float(env, "SESSION_MINUTES", d.session_minutes),
        rate_limit_per_minute=_int(env, "RATE_LIMIT_PER_MINUTE", d.rate_limit_per_minute),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", d.max_body_bytes),
        jobs=_bool(env, "JOBS", d.jobs),
        job_retries=_int(env, "JOB_RETRIES", d.job_retries),
        job_backoff_s=_float(env, "JOB_BACKOFF_S", d.job_backoff_s),
        feeds=tuple(f.strip() for f in env.get("FEEDS", "").split(",") if f.strip()),
        retention_days=_float(env, "RETENTION_DAYS", d.retention_days),
        summarize_per_run=_int(env, "SUMMARIZE_PER_RUN", d.summarize_per_run),
        job_budget_s=_float(env, "JOB_BUDGET_S", d.job_budget_s),
        cookie_secure=_bool(env, "SECURE_COOKIES", True) if env.get("SECURE_COOKIES") else None,
        experiment_holdout=_share(env, "EXPERIMENT_HOLDOUT", d.experiment_holdout),
    )


def _time(value: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be an ISO 8601 time, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _adapters(spec: str) -> dict[str, Path]:
    """`name=path,name2=path2` → {name: path}."""
    pairs = [p.strip() for p in spec.split(",") if p.strip()]
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise ValueError(f"LLM_ADAPTERS entries must be name=path, got {bad[0]!r}")
    return {name.strip(): Path(path.strip()) for name, path in (p.split("=", 1) for p in pairs)}


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {env[name]!r}") from None


def _count(env: Mapping[str, str], name: str) -> int | None:
    """A positive integer, or None when unset (the other side's default)."""
    if not env.get(name):
        return None
    value = _int(env, name, 0)
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return value


def _share(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be a share in [0, 1), got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        raise ValueError(f"{name} must be a number, got {env[name]!r}") from None
