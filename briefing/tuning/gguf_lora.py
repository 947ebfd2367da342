"""A peft LoRA adapter as the GGUF LoRA file llama.cpp serves next to its base GGUF.

This does what llama.cpp's `convert_lora_to_gguf.py` does for a llama-architecture base, without
that script's need for the base model's transformers config (it fetches it from the hub): the base
GGUF itself gives the architecture (llama.cpp refuses an adapter whose `general.architecture`
differs), the head counts for the q/k permutation, and the shapes the adapter must fit.

The file holds `general.type=adapter`, `adapter.type=lora`, `adapter.lora.alpha` and, per adapted
matrix W (GGUF name from gguf's `TensorNameMap`, e.g. `blk.0.attn_q.weight`), `<name>.lora_a`
(peft's lora_A, rank x in) and `<name>.lora_b` (lora_B, out x rank). llama.cpp adds
`lora_b @ lora_a @ x * alpha / rank` to `W @ x`, rank read from lora_b: peft's plain scaling.
rsLoRA's `alpha / sqrt(rank)` is folded into lora_b. llama.cpp keeps q and k in its own rotary
layout (the converter permutes their rows), so lora_b's rows of q and k are permuted alike.

Refused, with the reason: adapters on `embed_tokens`/`lm_head` (SmolLM2 ties them; llama.cpp's
converter fails on them too), DoRA, trained biases, fully saved modules, per-module alphas.

`lora_updates` (the validated pairs in llama.cpp's layout) and `write_atomically` are shared with
briefing.tuning.gguf_merge, which folds the same updates into the base's weights instead.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

# Architectures converted here, and whether llama.cpp permutes their q/k rows (LlamaModel.permute).
_ARCHITECTURES = {"llama": True}
_LORA_KEY = re.compile(r"base_model\.model\.(?P<module>.+)\.lora_(?P<part>[AB])\.weight")
_TIED = ("embed_tokens", "lm_head", "wte", "word_embeddings")


class AdapterNotConvertible(ValueError):
    """The adapter cannot be served by llama.cpp as a GGUF LoRA; the message says why."""


@dataclass(frozen=True)
class _Base:
    arch: str
    blocks: int
    heads: int
    heads_kv: int
    shapes: Mapping[str, tuple[int, ...]]  # GGUF tensor name → ggml dims (in, out)


@dataclass(frozen=True)
class LoraUpdate:
    """One adapted matrix as llama.cpp applies it: W (GGUF name `name`) += b @ a * alpha / rank."""

    name: str  # the base tensor, e.g. blk.0.attn_q.weight
    a: np.ndarray  # peft's lora_A (rank x in)
    b: np.ndarray  # peft's lora_B (out x rank), rows in llama.cpp's q/k layout, rsLoRA folded in
    alpha: float

    def delta(self) -> np.ndarray:
        """The update to W in numpy's (out, in) order, float32: what the merge adds."""
        scale = self.alpha / self.a.shape[0]  # llama.cpp reads the rank from lora_b
        return (self.b.astype(np.float32) @ self.a.astype(np.float32)) * np.float32(scale)


@dataclass(frozen=True)
class LoraUpdates:
    arch: str  # the base's general.architecture
    alpha: float
    updates: tuple[LoraUpdate, ...]


def lora_updates(adapter_dir: Path, base_gguf: Path) -> LoraUpdates:
    """The peft adapter in `adapter_dir` checked against `base_gguf` and laid out as llama.cpp
    computes it. Raises `AdapterNotConvertible` for what llama.cpp cannot apply or what does not
    fit the base."""
    config = _lora_config(adapter_dir)
    base = _base(base_gguf)
    alpha = float(config["lora_alpha"])
    updates = _tensors(_pairs(adapter_dir), base, alpha, bool(config.get("use_rslora")))
    return LoraUpdates(base.arch, alpha, tuple(updates))


def to_gguf_lora(
    adapter_dir: Path, base_gguf: Path, out: Path, *, dtype: Literal["f32", "f16"] = "f32"
) -> Path:
    """Write the peft adapter in `adapter_dir` as a GGUF LoRA for `base_gguf` to `out`; returns `out`.

    Atomic: the file is written beside `out` under a temporary name and renamed, so a crash
    leaves `out` as it was (absent, or the previous file). Raises `AdapterNotConvertible` for
    adapters llama.cpp cannot apply, or that were not trained for this base's shapes."""
    converted = lora_updates(adapter_dir, base_gguf)
    kind = np.float16 if dtype == "f16" else np.float32
    tensors = [
        (f"{u.name}.lora_{part}", np.ascontiguousarray(matrix.astype(kind)))
        for u in converted.updates
        for part, matrix in (("a", u.a), ("b", u.b))
    ]
    _write(out, converted.arch, converted.alpha, tensors)
    return out


def _lora_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "adapter_config.json"
    if not path.is_file():
        raise AdapterNotConvertible(f"{adapter_dir} is not a peft adapter: it has no adapter_config.json")
    config: dict[str, Any] = json.loads(path.read_text())
    refusals = {
        config.get("peft_type", "LORA") != "LORA": f"it is a {config.get('peft_type')} adapter, not LoRA",
        bool(config.get("use_dora")): "it uses DoRA (llama.cpp applies plain LoRA only)",
        config.get("bias", "none") != "none" or bool(config.get("lora_bias")): "it trains biases",
        bool(config.get("modules_to_save")): f"it saves whole modules {config.get('modules_to_save')}",
        bool(config.get("alpha_pattern")): "it has per-module alphas (llama.cpp has one alpha)",
        bool(config.get("fan_in_fan_out")): "its weights are stored fan-in-fan-out (Conv1D models)",
    }
    for refused, why in refusals.items():
        if refused:
            raise AdapterNotConvertible(f"cannot convert {adapter_dir} to a GGUF LoRA: {why}")
    return config


def _base(base_gguf: Path) -> _Base:
    from gguf import GGUFReader

    reader = GGUFReader(base_gguf)

    def field(key: str) -> Any:
        if key not in reader.fields:
            raise AdapterNotConvertible(f"{base_gguf} has no {key} in its metadata")
        return reader.fields[key].contents()

    arch = str(field("general.architecture"))
    if arch not in _ARCHITECTURES:
        raise AdapterNotConvertible(
            f"{base_gguf} is a {arch!r} model; adapters are converted here for {sorted(_ARCHITECTURES)} "
            "bases only (llama.cpp's convert_lora_to_gguf.py handles the others)"
        )
    heads = int(field(f"{arch}.attention.head_count"))
    kv = reader.fields.get(f"{arch}.attention.head_count_kv")  # absent: as many as query heads
    return _Base(
        arch=arch,
        blocks=int(field(f"{arch}.block_count")),
        heads=heads,
        heads_kv=int(kv.contents()) if kv is not None else heads,
        shapes={t.name: tuple(int(d) for d in t.shape) for t in reader.tensors},
    )


def _pairs(adapter_dir: Path) -> dict[str, dict[str, np.ndarray]]:
    """peft's saved tensors as {module: {"A": lora_A, "B": lora_B}} in float32."""
    from safetensors.torch import load_file

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise AdapterNotConvertible(f"{adapter_dir} has no adapter_model.safetensors")
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in load_file(str(path)).items():
        match = _LORA_KEY.fullmatch(key)
        if match is None or any(part in _TIED for part in key.split(".")):
            raise AdapterNotConvertible(f"cannot convert {adapter_dir} to a GGUF LoRA: {_unexpected(key)}")
        pairs.setdefault(match["module"], {})[match["part"]] = tensor.float().numpy()
    return pairs


def _unexpected(key: str) -> str:
    if any(part in _TIED or part.startswith("lora_embedding") for part in key.split(".")):
        return (
            f"it adapts the embeddings or the output head ({key}); SmolLM2 ties them and llama.cpp "
            "cannot apply such an adapter: train without embed_tokens/lm_head in target_modules"
        )
    if "lora_magnitude_vector" in key:
        return f"it uses DoRA ({key})"
    return f"unexpected tensor {key} (only lora_A/lora_B weights convert)"


def _tensors(
    pairs: Mapping[str, Mapping[str, np.ndarray]], base: _Base, alpha: float, rslora: bool
) -> Iterator[LoraUpdate]:
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = {name: arch for arch, name in MODEL_ARCH_NAMES.items()}[base.arch]
    names = get_tensor_name_map(arch, base.blocks)
    for module, pair in sorted(pairs.items()):
        name = names.get_name(f"{module}.weight", try_suffixes=(".weight",))
        if name is None or "A" not in pair or "B" not in pair:
            raise AdapterNotConvertible(f"module {module}: no {base.arch} tensor for it, or a half pair")
        a, b = pair["A"], pair["B"]
        _check_shape(name, a, b, base)
        rank = a.shape[0]
        # llama.cpp scales by alpha / rank; rsLoRA trained with alpha / sqrt(rank)
        b = b * (math.sqrt(rank) if rslora else 1.0)
        yield LoraUpdate(name, a, _permuted(name, b, base), alpha)


def _check_shape(name: str, a: np.ndarray, b: np.ndarray, base: _Base) -> None:
    """The pair must fit the base tensor (ggml dims: in, out), or llama.cpp refuses the file."""
    dims = base.shapes.get(name)
    if dims is None:
        raise AdapterNotConvertible(f"the base model has no tensor {name}: wrong base model?")
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or (a.shape[1], b.shape[0]) != dims[:2]:
        raise AdapterNotConvertible(
            f"{name}: lora_A {a.shape} and lora_B {b.shape} do not fit the base tensor "
            f"(in {dims[0]}, out {dims[1]}): the adapter was trained for another base model"
        )


def _permuted(name: str, b: np.ndarray, base: _Base) -> np.ndarray:
    """lora_B's rows in llama.cpp's q/k layout: convert_hf_to_gguf's LlamaModel.permute on rows."""
    if not _ARCHITECTURES[base.arch] or not name.endswith(("attn_q.weight", "attn_k.weight")):
        return b
    heads = base.heads if name.endswith("attn_q.weight") else base.heads_kv
    rows = b.shape[0]
    return b.reshape(heads, 2, rows // heads // 2, *b.shape[1:]).swapaxes(1, 2).reshape(b.shape)


def _write(out: Path, arch: str, alpha: float, tensors: list[tuple[str, np.ndarray]]) -> None:
    from gguf import GGUFType, GGUFWriter, Keys

    def fill(staged: Path) -> None:
        writer = GGUFWriter(staged, arch)
        writer.add_type(GGUFType.ADAPTER)
        writer.add_string(Keys.Adapter.TYPE, "lora")
        writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha)
        for name, array in tensors:
            writer.add_tensor(name, array)
        write_all(writer)

    write_atomically(out, fill)


def write_all(writer: Any) -> None:
    """Write a filled `gguf.GGUFWriter`'s header, metadata and tensors, and close it."""
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def write_atomically(out: Path, fill: Callable[[Path], None]) -> None:
    """`fill` writes a file at the path it is given, beside `out`; it becomes `out` once on disk.

    A crash (or an exception from `fill`) leaves `out` as it was and no partial file behind."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # a name of its own, so two conversions to the same `out` never write into one file
    staged = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        fill(staged)
        with open(staged, "rb") as written:
            os.fsync(written.fileno())  # on disk before the rename makes it the real file
        os.replace(staged, out)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
