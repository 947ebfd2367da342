"""Weighted merging of per-language adapters (briefing.tuning.merge): the merged update is the
weighted sum of the adapters' updates, and it converts to llama.cpp's GGUF LoRA like any other."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from briefing import GeneratorConfig
from briefing.llm import dequantized, packaged_gguf
from briefing.tuning.gguf_lora import to_gguf_lora
from briefing.tuning.merge import merge_adapters
from tests.unit.test_gguf_lora import _peft_adapter, _tiny_llama

MODULE = "base_model.model.model.layers.0.self_attn.q_proj"


def _update(adapter: Path, module: str = MODULE) -> np.ndarray:
    """ΔW = B·A·alpha/r of one module, as peft applies it."""
    from safetensors.numpy import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    a, b = weights[f"{module}.lora_A.weight"], weights[f"{module}.lora_B.weight"]
    return np.asarray(b @ a * config["lora_alpha"] / config["r"], np.float64)


def test_the_merge_is_the_weighted_sum_of_the_updates(tmp_path: Path) -> None:
    base = _tiny_llama(tmp_path / "tiny")
    en = _peft_adapter(base, tmp_path / "en", seed=1, r=4, target_modules=["q_proj", "v_proj"])
    nb = _peft_adapter(base, tmp_path / "nb", seed=2, r=2, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    merged = merge_adapters(base, {"en": en, "nb": nb}, {"en": 1.0, "nb": 0.5}, tmp_path / "merged")
    expected = _update(en) + 0.5 * _update(nb)
    assert np.allclose(_update(merged), expected, atol=1e-5)
    assert json.loads((merged / "adapter_config.json").read_text())["r"] == 6  # ranks concatenated
    assert json.loads((merged / "merged_from.json").read_text())["nb"]["weight"] == 0.5
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".merged.")]  # no staging left


def test_merging_needs_two_adapters_and_a_weight_for_each(tmp_path: Path) -> None:
    base = _tiny_llama(tmp_path / "tiny")
    en = _peft_adapter(base, tmp_path / "en", seed=1, r=2, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="at least two"):
        merge_adapters(base, {"en": en}, {"en": 1.0}, tmp_path / "merged")
    with pytest.raises(ValueError, match="weights name"):
        merge_adapters(base, {"en": en, "nb": en}, {"en": 1.0}, tmp_path / "merged")


def test_a_merged_smollm2_adapter_converts_to_gguf(tmp_path: Path, model_cache: Path) -> None:
    source = dequantized(GeneratorConfig.model, model_cache)
    en = _peft_adapter(source, tmp_path / "en", seed=1, r=2, target_modules=["q_proj", "down_proj"])
    nb = _peft_adapter(source, tmp_path / "nb", seed=2, r=2, target_modules=["q_proj", "down_proj"])
    merged = merge_adapters(source, {"en": en, "nb": nb}, {"en": 1.0, "nb": 1.0}, tmp_path / "merged")
    gguf = to_gguf_lora(merged, packaged_gguf(), tmp_path / "merged.gguf")
    assert gguf.stat().st_size > 0
