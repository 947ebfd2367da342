"""A peft adapter converted to a GGUF LoRA computes on llama.cpp what peft computes on transformers,
and every backend loads adapters while it runs.

Known answers: on an unquantized (F32) copy of the packaged GGUF, llama.cpp's logits with the
converted adapter equal transformers+peft's within float noise (measured max |diff| 0.02-0.04 on
both the base and the adapter, while the adapter moves logits by 15-27 and unpermuted q/k rows
leave them 7-12 off), and greedy texts agree (first 20 tokens identical). On the served Q4_1
model the base itself differs from its exact dequantization, so the tolerance there comes from
the base: measured
teacher-forced top-1 agreement with transformers' greedy tokens 0.975-1.0 for the base and
0.85-1.0 for this (deliberately strong, random) adapter, 0.4-0.6 between base and adapter.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from briefing import GenerationParams, GeneratorConfig, GeneratorUnavailable, UnknownAdapter
from briefing.llm import FallbackGenerator, OpenAIGenerator, TransformersGenerator, dequantized, packaged_gguf
from briefing.llm.llamacpp import LlamaCppGenerator
from briefing.tuning import gguf_lora
from briefing.tuning.gguf_lora import AdapterNotConvertible, to_gguf_lora
from tests.chats import CAPITAL, COUNT, HARBOUR

GREEDY = GenerationParams(max_tokens=32)
CHATS = (CAPITAL, COUNT, HARBOUR)
PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _peft_adapter(source: str, out: Path, seed: int, **lora: Any) -> Path:
    """A LoRA with random non-zero A and B (peft's init_lora_weights=False) saved to `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    options = {"r": 8, "lora_alpha": 16, "target_modules": PROJECTIONS, "init_lora_weights": False, **lora}
    model = AutoModelForCausalLM.from_pretrained(source)
    get_peft_model(model, LoraConfig(**options)).save_pretrained(str(out))
    return out


def _tiny_llama(out: Path) -> str:
    """A 2-layer llama with 64 hidden units: adapters for it do not fit SmolLM2."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    LlamaForCausalLM(config).save_pretrained(str(out))
    return str(out)


def _f32_gguf(source: Path, out: Path) -> Path:
    """The GGUF with every tensor dequantized to F32: the weights transformers loads from it."""
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(str(out), str(reader.fields["general.architecture"].contents()))
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        value = 0 if field.name == "general.file_type" else field.contents()  # 0: all F32
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
    for tensor in reader.tensors:
        shape = [int(d) for d in reversed(tensor.shape)]
        writer.add_tensor(tensor.name, dequantize(tensor.data, tensor.tensor_type).reshape(shape))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


@pytest.fixture(scope="module")
def source(model_cache: Path) -> str:
    return dequantized(GeneratorConfig.model, model_cache)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf-lora")


@pytest.fixture(scope="module")
def noisy(source: str, folder: Path) -> Path:
    return _peft_adapter(source, folder / "noisy", seed=0)


@pytest.fixture(scope="module")
def noisy_gguf(noisy: Path, folder: Path) -> Path:
    return to_gguf_lora(noisy, packaged_gguf(), folder / "noisy.gguf")


@pytest.fixture(scope="module")
def f32_base(folder: Path) -> Path:
    return _f32_gguf(packaged_gguf(), folder / "base-f32.gguf")


@pytest.fixture(scope="module")
def peft_net(source: str, noisy: Path) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(source), str(noisy)).eval()


def _ids(source: str, chat: Any) -> list[int]:
    from transformers import AutoTokenizer

    tokens: Any = AutoTokenizer.from_pretrained(source).apply_chat_template(
        chat, tokenize=True, add_generation_prompt=True
    )
    return list(tokens["input_ids"] if hasattr(tokens, "keys") else tokens)  # a dict in transformers 5


def _peft_logits(net: Any, ids: list[int], adapter: bool) -> np.ndarray:
    import contextlib

    import torch

    with torch.no_grad(), contextlib.nullcontext() if adapter else net.disable_adapter():
        return np.asarray(net(torch.tensor([ids])).logits[0].numpy())


def _llama_logits(base: Path, lora: Path | None, ids: list[int]) -> np.ndarray:
    from llama_cpp import Llama

    lora_path = str(lora) if lora else None
    llama = Llama(
        str(base),
        n_ctx=256,
        n_threads=1,
        n_threads_batch=1,
        logits_all=True,
        lora_path=lora_path,
        verbose=False,
    )
    llama.eval(ids)
    return np.asarray(llama.scores[: len(ids)])


@pytest.mark.slow
def test_the_file_holds_what_llama_cpp_checks(noisy_gguf: Path) -> None:
    from gguf import GGUFReader

    reader = GGUFReader(noisy_gguf)
    meta = {key: reader.fields[key].contents() for key in ("general.architecture", "general.type")}
    assert meta == {"general.architecture": "llama", "general.type": "adapter"}
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 16.0
    kinds = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    expected = {f"blk.{n}.{k}.weight.lora_{p}" for n in range(30) for k in kinds for p in "ab"}
    shapes = {t.name: [int(d) for d in t.shape] for t in reader.tensors}
    assert set(shapes) == expected
    # ggml dims: lora_a (in, rank), lora_b (rank, out); attn_k has 3 KV heads of 64
    assert shapes["blk.0.attn_k.weight.lora_a"] == [576, 8]
    assert shapes["blk.0.attn_k.weight.lora_b"] == [8, 192]


@pytest.mark.slow
@pytest.mark.parametrize(("rslora", "alpha"), [(False, 16), (True, 6)])  # scales 2 and 2.1
def test_llama_cpp_computes_what_peft_computes(
    source: str, f32_base: Path, folder: Path, rslora: bool, alpha: int
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = _peft_adapter(source, folder / f"rs-{rslora}", seed=2, use_rslora=rslora, lora_alpha=alpha)
    net = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(source), str(adapter)).eval()
    lora = to_gguf_lora(adapter, f32_base, folder / f"rs-{rslora}.gguf")
    ids = _ids(source, HARBOUR) + _ids(source, COUNT)[1:]
    tuned = _peft_logits(net, ids, adapter=True)
    assert np.abs(_llama_logits(f32_base, None, ids) - _peft_logits(net, ids, adapter=False)).max() < 0.1
    assert np.abs(_llama_logits(f32_base, lora, ids) - tuned).max() < 0.1
    assert np.abs(_llama_logits(f32_base, None, ids) - tuned).max() > 5  # the adapter matters


@pytest.mark.slow
def test_q_and_k_rows_must_be_permuted(
    source: str, noisy: Path, peft_net: Any, f32_base: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The known answer above is sensitive to the converter's one subtle step."""
    monkeypatch.setattr(gguf_lora, "_permuted", lambda name, b, base: b)
    unpermuted = to_gguf_lora(noisy, f32_base, folder / "unpermuted.gguf")
    ids = _ids(source, HARBOUR)
    assert np.abs(_llama_logits(f32_base, unpermuted, ids) - _peft_logits(peft_net, ids, True)).max() > 1


@pytest.mark.slow
def test_greedy_text_is_the_same_on_an_unquantized_base(
    source: str, noisy: Path, f32_base: Path, folder: Path
) -> None:
    """The first 20 tokens, or whole answers when shorter: float noise of ~0.03 can still flip a
    near tie late in an answer (seen once, with torch on 2 threads: a final "." against the end)."""
    lora = to_gguf_lora(noisy, f32_base, folder / "noisy-f32.gguf")
    llama = LlamaCppGenerator(f32_base, threads=1, adapters={"noisy": lora})
    hf = TransformersGenerator(source, adapters={"noisy": noisy}, threads=1)
    for adapter in (None, "noisy"):
        for chat in CHATS:  # one at a time: transformers' left padding of a batch changes its sums
            [served], [reference] = (
                llama.generate([chat], GREEDY, adapter),
                hf.generate([chat], GREEDY, adapter),
            )
            served_ids, reference_ids = (hf.tokenizer(t.text)["input_ids"][:20] for t in (served, reference))
            assert served_ids == reference_ids, (served.text, reference.text)


def _agreement(llama: Any, prompt: list[int], expected: list[int]) -> float:
    """Share of `expected` tokens llama.cpp would itself pick greedily after the ones before them."""

    def last() -> np.ndarray:
        return np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),))

    llama.reset()
    llama.eval(prompt)
    picked = []
    for token in expected:
        picked.append(int(np.argmax(last())))
        llama.eval([token])
    return float(np.mean(np.asarray(picked) == np.asarray(expected)))


@pytest.mark.slow
def test_the_served_q4_model_agrees_within_its_quantization(
    source: str, noisy: Path, noisy_gguf: Path
) -> None:
    """Through the serving instance (its context switched per adapter); tolerance from the base."""
    hf = TransformersGenerator(source, adapters={"noisy": noisy}, threads=1)
    served = LlamaCppGenerator(packaged_gguf(), threads=1, adapters={"noisy": noisy_gguf})
    scores: dict[tuple[str | None, str | None], list[float]] = {}
    for chat in CHATS:
        prompt = _ids(source, chat)
        for expected_from in (None, "noisy"):
            [answer] = hf.generate([chat], GREEDY, expected_from)
            expected = hf.tokenizer(answer.text, add_special_tokens=False)["input_ids"]
            for served_by in (None, "noisy"):
                agreement = _agreement(served.llama(served_by), prompt, expected)
                scores.setdefault((expected_from, served_by), []).append(agreement)
    mean = {pair: float(np.mean(values)) for pair, values in scores.items()}
    assert mean[None, None] >= 0.95 and mean["noisy", "noisy"] >= 0.85
    assert mean["noisy", None] <= 0.7 and mean[None, "noisy"] <= 0.7


@pytest.mark.slow
def test_llamacpp_serves_an_added_adapter_and_switches_back(noisy_gguf: Path) -> None:
    generator = LlamaCppGenerator(packaged_gguf(), threads=1)
    with pytest.raises(UnknownAdapter):
        generator.generate([HARBOUR], GREEDY, adapter="noisy")
    generator.add_adapter("noisy", noisy_gguf)
    base = generator.generate(CHATS, GREEDY)
    tuned = generator.generate(CHATS, GREEDY, adapter="noisy")
    assert all(t.text != b.text for t, b in zip(tuned, base, strict=True))
    assert tuned[0].model.endswith("+noisy")
    # one context serves both: switching drops the prompt it cached with the other adapter
    assert [c.text for c in generator.generate(CHATS, GREEDY)] == [c.text for c in base]
    assert [c.text for c in generator.generate(CHATS, GREEDY, "noisy")] == [c.text for c in tuned]
    # and the same call again, right after, writes the same (a reused prompt cache did not)
    assert [c.text for c in generator.generate(CHATS, GREEDY, "noisy")] == [c.text for c in tuned]


@pytest.mark.slow
def test_llamacpp_replaces_an_adapter_and_keeps_it_when_a_file_is_bad(
    source: str, noisy: Path, noisy_gguf: Path, folder: Path
) -> None:
    other = to_gguf_lora(_peft_adapter(source, folder / "other", seed=1), packaged_gguf(), folder / "o.gguf")
    generator = LlamaCppGenerator(packaged_gguf(), threads=1, adapters={"a": noisy_gguf})
    [first] = generator.generate([HARBOUR], GREEDY, "a")
    generator.add_adapter("a", noisy_gguf)  # the same again: nothing changes
    generator.add_adapter("a", other)
    [second] = generator.generate([HARBOUR], GREEDY, "a")
    assert second.text != first.text
    with pytest.raises(GeneratorUnavailable, match="not a GGUF LoRA"):
        generator.add_adapter("a", packaged_gguf())  # a model, not an adapter
    with pytest.raises(GeneratorUnavailable, match="no LoRA file"):
        generator.add_adapter("a", noisy)  # the peft folder: llama.cpp needs the GGUF
    assert generator.generate([HARBOUR], GREEDY, "a")[0].text == second.text


@pytest.mark.slow
def test_transformers_adds_and_replaces_adapters_at_runtime(source: str, noisy: Path, folder: Path) -> None:
    other = _peft_adapter(source, folder / "other-hf", seed=1)
    generator = TransformersGenerator(source, threads=1)
    [base] = generator.generate([HARBOUR], GREEDY)
    generator.add_adapter("a", noisy)  # wraps the plain model in a PeftModel
    [tuned] = generator.generate([HARBOUR], GREEDY, "a")
    assert tuned.text != base.text and tuned.model.endswith("+a")
    assert generator.generate([HARBOUR], GREEDY)[0].text == base.text
    generator.add_adapter("a", other)
    [replaced] = generator.generate([HARBOUR], GREEDY, "a")
    assert replaced.text not in (tuned.text, base.text)
    with pytest.raises(GeneratorUnavailable, match="cannot load the adapter"):
        generator.add_adapter("a", folder / "missing")
    assert generator.generate([HARBOUR], GREEDY, "a")[0].text == replaced.text


@pytest.mark.parametrize(
    ("lora", "reason"),
    [
        ({"target_modules": ["embed_tokens"]}, "embeddings or the output head"),
        ({"target_modules": ["lm_head"]}, "embeddings or the output head"),
        ({"use_dora": True}, "DoRA"),
        ({"bias": "lora_only"}, "trains biases"),
        ({"modules_to_save": ["lm_head"]}, "saves whole modules"),
    ],
)
def test_adapters_llama_cpp_cannot_apply_are_refused(
    tmp_path: Path, lora: dict[str, Any], reason: str
) -> None:
    tiny = _tiny_llama(tmp_path / "tiny")
    adapter = _peft_adapter(tiny, tmp_path / "adapter", seed=0, **{"target_modules": ["q_proj"], **lora})
    out = tmp_path / "adapter.gguf"
    with pytest.raises(AdapterNotConvertible, match=reason):
        to_gguf_lora(adapter, packaged_gguf(), out)
    assert not out.exists()


def test_an_adapter_for_another_base_is_refused(tmp_path: Path) -> None:
    adapter = _peft_adapter(_tiny_llama(tmp_path / "tiny"), tmp_path / "adapter", seed=0)
    with pytest.raises(AdapterNotConvertible, match="trained for another base model"):
        to_gguf_lora(adapter, packaged_gguf(), tmp_path / "adapter.gguf")


@pytest.mark.slow
def test_a_crash_mid_write_leaves_the_previous_file(
    noisy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf

    def crash(self: Any, *args: Any, **kwargs: Any) -> None:
        self.fout[0].write(b"half a tensor")
        raise OSError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", crash)
    fresh, old = tmp_path / "fresh.gguf", tmp_path / "old.gguf"
    old.write_bytes(b"the adapter that serves now")
    for out in (fresh, old):
        with pytest.raises(OSError, match="disk full"):
            to_gguf_lora(noisy, packaged_gguf(), out)
    assert not fresh.exists() and old.read_bytes() == b"the adapter that serves now"
    assert [p.name for p in tmp_path.iterdir()] == ["old.gguf"]  # no half file left either


# The openai backend asks vLLM to load an adapter (POST /v1/load_lora_adapter), against a real
# HTTP server that answers as vLLM does with runtime LoRA updating enabled, or disabled.


class _VLLM(BaseHTTPRequestHandler):
    enabled = True
    loaded: ClassVar[dict[str, str]] = {}  # each test's server gets its own (the `vllm` fixture)
    posts: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.posts.append((self.path, body))
        name = body["lora_name"]
        if not self.enabled:
            self._answer(404, {"detail": "Not Found"})
        elif self.path == "/v1/load_lora_adapter" and name in self.loaded:
            message = f"The lora adapter '{name}' has already been loaded."
            self._answer(400, {"object": "error", "message": message, "type": "InvalidUserInput"})
        elif self.path == "/v1/load_lora_adapter":
            self.loaded[name] = body["lora_path"]
            self._answer(200, f"Success: LoRA adapter '{name}' added successfully.")
        else:
            self.loaded.pop(name)
            self._answer(200, f"Success: LoRA adapter '{name}' removed successfully.")

    def do_GET(self) -> None:
        cards = [{"id": "smollm2", "root": "/models/smollm2"}]
        self._answer(200, {"data": cards + [{"id": n, "root": r} for n, r in self.loaded.items()]})

    def _answer(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def vllm() -> Iterator[type[_VLLM]]:
    handler = type("Handler", (_VLLM,), {"enabled": True, "loaded": {}, "posts": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_address[1]}/v1"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def test_openai_asks_the_server_to_load_and_replace_an_adapter(vllm: Any) -> None:
    generator = OpenAIGenerator(vllm.url, "smollm2")
    generator.add_adapter("ad-1", Path("/srv/adapters/ad-1/adapter"))
    assert vllm.posts == [
        ("/v1/load_lora_adapter", {"lora_name": "ad-1", "lora_path": "/srv/adapters/ad-1/adapter"})
    ]
    generator.add_adapter("ad-1", Path("/srv/adapters/ad-1/adapter"))  # served already: left alone
    assert [path for path, _ in vllm.posts] == ["/v1/load_lora_adapter"] * 2
    generator.add_adapter("ad-1", Path("/srv/adapters/new"))
    loads, unloads = "/v1/load_lora_adapter", "/v1/unload_lora_adapter"
    assert [path for path, _ in vllm.posts[2:]] == [loads, unloads, loads]  # refused, then replaced
    assert vllm.loaded == {"ad-1": "/srv/adapters/new"}


def test_openai_says_how_to_enable_runtime_loading(vllm: Any) -> None:
    vllm.enabled = False
    generator = FallbackGenerator(OpenAIGenerator(vllm.url, "smollm2"), OpenAIGenerator(vllm.url, "other"))
    with pytest.raises(GeneratorUnavailable, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"):
        generator.add_adapter("ad-1", Path("/srv/adapters/ad-1/adapter"))  # forwarded to the primary
    assert len(vllm.posts) == 1
