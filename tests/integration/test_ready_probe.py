"""`/ready` probes the model: a real tokenization on llama.cpp, the server's model list for the
openai backend. An LLM server nobody listens on makes the service not ready."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import TestClient

from briefing import Generator
from briefing.llm import OpenAIGenerator
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.app import create_app
from tests.chats import free_port
from tests.service import demo_service

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", ["llamacpp", "openai on a closed port"])
def test_ready_reports_whether_the_model_answers(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
) -> None:
    generator: Generator = (
        request.getfixturevalue("llamacpp")
        if backend == "llamacpp"
        else OpenAIGenerator(f"http://127.0.0.1:{free_port()}/v1", "smollm2")
    )
    url = f"sqlite:///{tmp_path / 'briefing.db'}"
    articles = demo_articles[:3]  # the index must answer; its size is not what is probed
    with (
        demo_service(tmp_path, url, embedder, chunker, articles, generator, GROUNDING_LIKELIHOOD="off") as (
            settings,
            service,
        ),
        TestClient(create_app(settings, service)) as client,
    ):
        ready = client.get("/ready")
    checks = ready.json()
    assert (checks["database"], checks["index"]) == ("ok", "ok")
    if backend == "llamacpp":
        assert ready.status_code == 200 and checks["model"] == "ok"
    else:
        assert ready.status_code == 503
        assert checks["model"].startswith("failed: cannot reach the LLM server at http://127.0.0.1")
