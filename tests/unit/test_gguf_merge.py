"""merge_lora folds a peft adapter into a GGUF's weights: known answers on a tiny synthetic GGUF.

The base here is a one-block llama (4 query heads, 2 KV heads of 8 dims) written with gguf-py,
and the adapter a hand-written peft file, so every expected weight is computed independently:
W + B·A·alpha/r, with B's rows of q and k reordered as llama.cpp stores them (within each head the
two rotary halves interleaved), written out index by index rather than with the converter's code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from briefing.tuning.gguf_lora import AdapterNotConvertible
from briefing.tuning.gguf_merge import merge_lora

HIDDEN, HEADS, HEADS_KV, HEAD_DIM, FFN, RANK, ALPHA = 64, 4, 2, 16, 96, 4, 8.0
# HF module → (GGUF tensor, (out, in))
MODULES = {
    "self_attn.q_proj": ("attn_q", (HEADS * HEAD_DIM, HIDDEN)),
    "self_attn.k_proj": ("attn_k", (HEADS_KV * HEAD_DIM, HIDDEN)),
    "self_attn.v_proj": ("attn_v", (HEADS_KV * HEAD_DIM, HIDDEN)),
    "mlp.up_proj": ("ffn_up", (FFN, HIDDEN)),
}
TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def _base(out: Path) -> dict[str, np.ndarray]:
    """A GGUF with F32 matrices, an F32 norm and a Q8_0 embedding; returns the weights written."""
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_type("model")
    writer.add_block_count(1)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS_KV)
    writer.add_embedding_length(HIDDEN)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"t{i}" for i in range(32)])
    writer.add_chat_template(TEMPLATE)
    weights = {
        f"blk.0.{name}.weight": rng.normal(0, 0.05, shape).astype(np.float32)
        for name, shape in MODULES.values()
    }
    weights["blk.0.attn_norm.weight"] = rng.normal(1, 0.1, (HIDDEN,)).astype(np.float32)
    for name, array in weights.items():
        writer.add_tensor(name, array)
    embedding = quantize(rng.normal(0, 0.05, (32, HIDDEN)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("token_embd.weight", embedding, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return weights


def _adapter(
    out: Path, modules: list[str] | None = None, **config: Any
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A peft LoRA folder with random A and B on `modules`; returns {GGUF kind: (A, B)}."""
    import torch
    from safetensors.torch import save_file

    rng = np.random.default_rng(1)
    out.mkdir(parents=True, exist_ok=True)
    pairs, tensors = {}, {}
    for module in modules or list(MODULES):
        kind, (rows, cols) = MODULES.get(module, ("", (HIDDEN, HIDDEN)))
        a = rng.normal(0, 0.5, (RANK, cols)).astype(np.float32)
        b = rng.normal(0, 0.5, (rows, RANK)).astype(np.float32)
        prefix = (
            f"base_model.model.model.layers.0.{module}" if "." in module else f"base_model.model.{module}"
        )
        tensors[f"{prefix}.lora_A.weight"] = torch.from_numpy(a)
        tensors[f"{prefix}.lora_B.weight"] = torch.from_numpy(b)
        pairs[kind] = (a, b)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    settings = {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "bias": "none", **config}
    (out / "adapter_config.json").write_text(json.dumps(settings))
    return pairs


def _llama_rows(b: np.ndarray, heads: int) -> np.ndarray:
    """B's rows as llama.cpp stores q and k: per head, row 2i+j is the HF row j*half+i."""
    out = np.empty_like(b)
    half = HEAD_DIM // 2
    for h in range(heads):
        for i in range(half):
            for j in range(2):
                out[h * HEAD_DIM + 2 * i + j] = b[h * HEAD_DIM + j * half + i]
    return out


def _read(path: Path) -> tuple[Any, dict[str, Any]]:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return reader, {t.name: t for t in reader.tensors}


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path / "base.gguf"
    return path, _base(path)


def test_merged_weights_are_w_plus_the_scaled_update_in_llama_cpp_row_order(
    base: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    path, weights = base
    pairs = _adapter(tmp_path / "adapter")
    out = merge_lora(path, tmp_path / "adapter", tmp_path / "merged.gguf", qtype="F32")
    _, tensors = _read(out)
    heads = {"attn_q": HEADS, "attn_k": HEADS_KV}
    for kind, (a, b) in pairs.items():
        rows = _llama_rows(b, heads[kind]) if kind in heads else b
        expected = weights[f"blk.0.{kind}.weight"] + rows @ a * (ALPHA / RANK)
        merged = np.asarray(tensors[f"blk.0.{kind}.weight"].data)
        np.testing.assert_allclose(merged, expected, rtol=1e-5, atol=1e-6)
        assert np.abs(merged - weights[f"blk.0.{kind}.weight"]).max() > 0.5  # the update is there
    # q's rows really are reordered: the unpermuted update would be far off
    a, b = pairs["attn_q"]
    unpermuted = weights["blk.0.attn_q.weight"] + b @ a * (ALPHA / RANK)
    assert np.abs(np.asarray(tensors["blk.0.attn_q.weight"].data) - unpermuted).max() > 0.5


def test_rslora_scales_by_alpha_over_the_root_of_the_rank(
    base: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    path, weights = base
    pairs = _adapter(tmp_path / "adapter", ["self_attn.v_proj"], use_rslora=True)
    _, tensors = _read(merge_lora(path, tmp_path / "adapter", tmp_path / "m.gguf", qtype="F32"))
    a, b = pairs["attn_v"]
    expected = weights["blk.0.attn_v.weight"] + b @ a * (ALPHA / np.sqrt(RANK))
    np.testing.assert_allclose(
        np.asarray(tensors["blk.0.attn_v.weight"].data), expected, rtol=1e-5, atol=1e-6
    )


def test_metadata_and_untouched_tensors_are_copied_as_they_are(
    base: tuple[Path, dict[str, np.ndarray]], tmp_path: Path
) -> None:
    import gguf
    from gguf.quants import dequantize

    path, weights = base
    pairs = _adapter(tmp_path / "adapter", ["self_attn.q_proj"])
    out = merge_lora(path, tmp_path / "adapter", tmp_path / "merged.gguf", qtype="Q8_0")
    (before, old), (after, new) = _read(path), _read(out)

    def fields(reader: Any) -> dict[str, Any]:
        return {
            f.name: (f.types, f.contents()) for f in reader.fields.values() if not f.name.startswith("GGUF.")
        }

    changed = {k for k in fields(before) if fields(before)[k] != fields(after).get(k)}
    assert changed == {"general.file_type"} and set(fields(after)) == set(fields(before))
    assert after.fields["general.file_type"].contents() == int(gguf.LlamaFileType.MOSTLY_Q8_0)
    assert after.fields["tokenizer.chat_template"].contents() == TEMPLATE
    assert [t.name for t in after.tensors] == [t.name for t in before.tensors]
    for name in ("token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_k.weight", "blk.0.ffn_up.weight"):
        assert new[name].tensor_type == old[name].tensor_type
        assert np.asarray(new[name].data).tobytes() == np.asarray(old[name].data).tobytes()
    # the adapted matrix, as Q8_0: W + update within Q8_0's rounding (half a step of max/127)
    q = new["blk.0.attn_q.weight"]
    assert q.tensor_type == gguf.GGMLQuantizationType.Q8_0
    a, b = pairs["attn_q"]
    expected = weights["blk.0.attn_q.weight"] + _llama_rows(b, HEADS) @ a * (ALPHA / RANK)
    merged = dequantize(q.data, q.tensor_type).reshape(expected.shape)
    assert np.abs(merged - expected).max() <= np.abs(expected).max() / 127


@pytest.mark.parametrize(
    ("modules", "config", "reason"),
    [
        (["self_attn.q_proj"], {"use_dora": True}, "DoRA"),
        (["self_attn.q_proj"], {"bias": "lora_only"}, "trains biases"),
        (["self_attn.q_proj"], {"modules_to_save": ["lm_head"]}, "saves whole modules"),
        (["lm_head"], {}, "embeddings or the output head"),
        (["self_attn.o_proj"], {}, "wrong base model"),  # this base has no attn_output
    ],
)
def test_what_gguf_lora_refuses_is_refused_and_nothing_is_written(
    base: tuple[Path, dict[str, np.ndarray]],
    tmp_path: Path,
    modules: list[str],
    config: dict[str, Any],
    reason: str,
) -> None:
    _adapter(tmp_path / "adapter", modules, **config)
    out = tmp_path / "merged.gguf"
    with pytest.raises(AdapterNotConvertible, match=reason):
        merge_lora(base[0], tmp_path / "adapter", out)
    assert not out.exists()


def test_an_unknown_output_type_is_refused(base: tuple[Path, dict[str, np.ndarray]], tmp_path: Path) -> None:
    _adapter(tmp_path / "adapter")
    with pytest.raises(ValueError, match="Q4_K"):
        merge_lora(base[0], tmp_path / "adapter", tmp_path / "merged.gguf", qtype="Q4_K")


def test_a_crash_mid_write_leaves_the_previous_file(
    base: tuple[Path, dict[str, np.ndarray]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gguf

    def crash(self: Any, *args: Any, **kwargs: Any) -> None:
        self.fout[0].write(b"half a tensor")
        raise OSError("disk full")

    _adapter(tmp_path / "adapter")
    folder = tmp_path / "out"
    folder.mkdir()
    fresh, old = folder / "fresh.gguf", folder / "old.gguf"
    old.write_bytes(b"the merged model that serves now")
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", crash)
    for out in (fresh, old):
        with pytest.raises(OSError, match="disk full"):
            merge_lora(base[0], tmp_path / "adapter", out)
    assert not fresh.exists() and old.read_bytes() == b"the merged model that serves now"
    assert [p.name for p in folder.iterdir()] == ["old.gguf"]  # no half file left either
