"""The `Generator` contract on every backend that runs here: llamacpp and transformers on the
packaged SmolLM2, both real. The openai backend runs the same contract against vLLM's server in
tests/integration/test_vllm_server.py; its error paths are tested here against real sockets."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from briefing import (
    GenerationParams,
    GenerationTimeout,
    Generator,
    GeneratorConfig,
    GeneratorUnavailable,
    UnknownAdapter,
    make_generator,
)
from briefing.llm import OpenAIGenerator
from briefing.prompts import PROMPTS
from server.settings import Settings
from tests.chats import CAPITAL, COUNT, HARBOUR, free_port

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(max_tokens=24)
LONG = GenerationParams(max_tokens=64)  # COUNT runs to the limit or near it


@pytest.fixture(scope="module")
def transformers_backend(model_cache: Path) -> Generator:
    return make_generator(GeneratorConfig(backend="transformers", cache_dir=model_cache, threads=2))


@pytest.fixture(params=["llamacpp", "transformers"])
def backend(request: pytest.FixtureRequest) -> Generator:
    name = "transformers_backend" if request.param == "transformers" else "llamacpp"
    generator: Generator = request.getfixturevalue(name)
    return generator


def test_chat_template_applies_and_answers(backend: Generator) -> None:
    [answer] = backend.generate([CAPITAL], GREEDY)
    assert "paris" in answer.text.lower()
    assert answer.prompt_tokens > 10 and 0 < answer.completion_tokens <= 24
    assert answer.model and answer.finish_reason in ("stop", "length")


def test_a_batch_answers_in_order_and_greedy_is_repeatable(backend: Generator) -> None:
    first, second, again = backend.generate([CAPITAL, COUNT, CAPITAL], GREEDY)
    assert first.text == again.text
    assert "paris" in first.text.lower() and "paris" not in second.text.lower()


def test_stream_pieces_join_to_the_generated_text(backend: Generator) -> None:
    pieces = list(backend.stream(COUNT, GREEDY))
    [whole] = backend.generate([COUNT], GREEDY)
    assert len(pieces) > 3
    assert "".join(pieces).strip() == whole.text.strip()


def test_max_tokens_and_stop_strings(backend: Generator) -> None:
    [short] = backend.generate([COUNT], GenerationParams(max_tokens=4))
    assert short.completion_tokens <= 4 and short.finish_reason == "length"
    [cut] = backend.generate([COUNT], GenerationParams(max_tokens=40, stop=("\n",)))
    assert "\n" not in cut.text.strip() and cut.text.strip()


def test_generation_stops_at_the_time_limit_and_keeps_its_text(backend: Generator) -> None:
    [whole] = backend.generate([COUNT], LONG)
    assert whole.finish_reason != "timeout" and whole.completion_tokens > 20
    # Limits relative to this machine's own time for the whole answer: a tiny one and a quarter.
    for limit in (whole.seconds / 50, whole.seconds / 4):
        start = time.monotonic()
        try:
            [cut] = backend.generate([COUNT], replace(LONG, timeout_s=limit))
        except GenerationTimeout as exc:  # the limit passed before the first token: nothing to keep
            assert limit < whole.seconds / 4 and "wrote nothing" in str(exc)
        else:
            assert cut.finish_reason == "timeout" and cut.completion_tokens < whole.completion_tokens
            assert cut.text.strip() and whole.text.strip().startswith(cut.text.strip())  # greedy
        assert time.monotonic() - start < whole.seconds / 2


def test_a_stream_ends_at_the_time_limit(backend: Generator) -> None:
    [whole] = backend.generate([COUNT], LONG)
    start = time.monotonic()
    text = "".join(backend.stream(COUNT, replace(LONG, timeout_s=whole.seconds / 4)))
    assert time.monotonic() - start < whole.seconds / 2
    assert text.strip() and len(text) < len(whole.text) and whole.text.strip().startswith(text.strip())


def test_the_configured_time_limit_applies_to_every_call(llamacpp: Generator) -> None:
    """LLM_TIMEOUT_S reaches the backend: prompt templates' params and the defaults cannot outlast it."""
    [whole] = llamacpp.generate([COUNT], LONG)
    settings = Settings.from_env({"LLM_TIMEOUT_S": str(whole.seconds / 3), "LLM_THREADS": "2"})
    limited = make_generator(settings.llm)
    assert limited.ready()  # loads the model: its load time is not what this test measures
    with contextlib.suppress(GenerationTimeout):  # a fresh context's first decode is slower: warm it
        limited.generate([COUNT], replace(LONG, max_tokens=1))
    for params in (
        LONG,
        replace(LONG, timeout_s=3600.0),
        replace(PROMPTS.get("article").params, max_tokens=64),
    ):
        start = time.monotonic()
        [cut] = limited.generate([COUNT], params)
        assert cut.finish_reason == "timeout" and cut.completion_tokens < whole.completion_tokens
        assert time.monotonic() - start < whole.seconds * 0.6


def test_a_batch_keeps_what_finished_before_the_limit(llamacpp: Generator) -> None:
    [capital] = llamacpp.generate([CAPITAL], GREEDY)
    [whole] = llamacpp.generate([COUNT], LONG)
    # CAPITAL finishes well inside the limit; the limit cuts COUNT; the last chat never starts.
    limit = capital.seconds + whole.seconds / 3
    first, second, third = llamacpp.generate([CAPITAL, COUNT, COUNT], replace(LONG, timeout_s=limit))
    assert first.text == capital.text and first.finish_reason == "stop"
    assert second.finish_reason == "timeout" and whole.text.startswith(second.text)
    assert (third.text, third.finish_reason) == ("", "timeout")


def test_ready_probes_the_loaded_model(backend: Generator) -> None:
    assert backend.ready() is True


def test_an_unknown_adapter_is_refused(backend: Generator) -> None:
    with pytest.raises(UnknownAdapter, match="no-such-adapter"):
        backend.generate([CAPITAL], GREEDY, adapter="no-such-adapter")


def test_transformers_caches_the_dequantized_model(
    model_cache: Path, transformers_backend: Generator
) -> None:
    saved = list(model_cache.glob("*-f32/model.safetensors"))
    assert len(saved) == 1 and not list(model_cache.glob("*.partial"))


def test_transformers_applies_a_peft_adapter_by_name(model_cache: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from briefing.llm import dequantized

    source = dequantized(GeneratorConfig.model, model_cache)
    lora = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    noisy = get_peft_model(AutoModelForCausalLM.from_pretrained(source), lora)
    noisy.save_pretrained(str(tmp_path / "noisy"))
    generator = make_generator(
        GeneratorConfig(backend="transformers", cache_dir=model_cache, adapters={"noisy": tmp_path / "noisy"})
    )
    [base] = generator.generate([HARBOUR], GREEDY)
    [tuned] = generator.generate([HARBOUR], GREEDY, adapter="noisy")
    [base_again] = generator.generate([HARBOUR], GREEDY)
    assert tuned.text != base.text and tuned.model.endswith("+noisy")
    assert base_again.text == base.text


# The openai backend's failures, against real sockets: nothing listening, and a server that
# accepts the connection but never answers.


@pytest.fixture
def silent_server() -> Iterator[str]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted: list[Any] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    listener.close()


def test_openai_backend_reports_an_unreachable_server() -> None:
    generator = OpenAIGenerator(f"http://127.0.0.1:{free_port()}/v1", "smollm2")
    with pytest.raises(GeneratorUnavailable, match=r"cannot reach the LLM server at http://127\.0\.0\.1"):
        generator.generate([CAPITAL], GREEDY)
    with pytest.raises(GeneratorUnavailable):
        list(generator.stream(CAPITAL, GREEDY))


def test_openai_backend_times_out_on_a_silent_server(silent_server: str) -> None:
    generator = OpenAIGenerator(silent_server, "smollm2")
    with pytest.raises(GenerationTimeout, match=r"wrote nothing within 0\.5 s"):
        generator.generate([CAPITAL], GenerationParams(timeout_s=0.5))


def test_openai_backend_uses_the_configured_time_limit(silent_server: str) -> None:
    settings = Settings.from_env(
        {"LLM_BACKEND": "openai", "LLM_BASE_URL": silent_server, "LLM_TIMEOUT_S": "0.3"}
    )
    with pytest.raises(GenerationTimeout, match=r"within 0\.3 s"):
        make_generator(settings.llm).generate([CAPITAL], GREEDY)  # GREEDY names no limit of its own


def test_openai_ready_fails_on_a_closed_port_or_a_silent_server(silent_server: str) -> None:
    with pytest.raises(GeneratorUnavailable, match="cannot reach the LLM server"):
        OpenAIGenerator(f"http://127.0.0.1:{free_port()}/v1", "smollm2").ready()
    with pytest.raises(GeneratorUnavailable, match="did not list its models within"):
        OpenAIGenerator(silent_server, "smollm2", timeout_s=0.3).ready()


@pytest.fixture
def models_server() -> Iterator[str]:
    """A real HTTP server that lists one model, as an OpenAI-compatible server does."""

    class Models(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}).encode()
            self.send_response(200 if self.path == "/v1/models" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_ready_needs_the_server_to_serve_the_model(models_server: str) -> None:
    assert OpenAIGenerator(models_server, "smollm2").ready() is True
    with pytest.raises(GeneratorUnavailable, match="does not serve 'other'"):
        OpenAIGenerator(models_server, "other").ready()


def test_unreachable_server_falls_back_to_the_local_model() -> None:
    config = GeneratorConfig(
        backend="openai", model="smollm2", base_url=f"http://127.0.0.1:{free_port()}/v1", fallback="llamacpp"
    )
    [answer] = make_generator(config).generate([CAPITAL], GREEDY)
    assert "paris" in answer.text.lower() and answer.model == "SmolLM2-135M-Instruct.Q4_1"


def test_an_unknown_backend_names_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        make_generator(GeneratorConfig(backend="gpt-cloud"))


def test_models_are_named_by_path_or_hub_id_with_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(GeneratorUnavailable, match="no such GGUF file"):
        make_generator(GeneratorConfig(model=str(tmp_path / "missing.gguf")))
    with pytest.raises(GeneratorUnavailable, match=r"cannot fetch model\.gguf from org/repo"):
        make_generator(GeneratorConfig(model="org/repo:model.gguf"))  # HF_HUB_OFFLINE=1 in tests
    with pytest.raises(GeneratorUnavailable, match="needs a GGUF model"):
        make_generator(GeneratorConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct"))


def test_llamacpp_evaluates_prompts_on_its_own_threads_only() -> None:
    """LLM_THREADS bounds prompt evaluation too (llama-cpp-python's default takes every core),
    so the service's jobs leave a core for requests."""
    from briefing.llm.llamacpp import LlamaCppGenerator
    from briefing.llm.models import packaged_gguf

    generator = LlamaCppGenerator(packaged_gguf(), threads=1)
    llama = generator._loaded(None).llama
    assert (llama.context_params.n_threads, llama.context_params.n_threads_batch) == (1, 1)
