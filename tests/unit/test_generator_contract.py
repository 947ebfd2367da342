"""The `Generator` contract on every backend that runs here: llamacpp and transformers on the
packaged SmolLM2, both real. The openai backend runs the same contract against vLLM's server in
tests/integration/test_vllm_server.py; its error paths are tested here against real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
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
from tests.chats import CAPITAL, COUNT, HARBOUR, free_port

pytestmark = pytest.mark.slow

GREEDY = GenerationParams(max_tokens=24)


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


def test_a_slow_generation_times_out(backend: Generator) -> None:
    with pytest.raises(GenerationTimeout, match="LLM_TIMEOUT_S"):
        backend.generate([COUNT], GenerationParams(max_tokens=200, timeout_s=0.05))


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
    get_peft_model(AutoModelForCausalLM.from_pretrained(source), lora).save_pretrained(tmp_path / "noisy")
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
    with pytest.raises(GenerationTimeout, match="did not answer in time"):
        generator.generate([CAPITAL], GenerationParams(timeout_s=0.5))


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
