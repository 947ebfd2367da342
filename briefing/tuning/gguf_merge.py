"""A peft LoRA adapter folded into its base GGUF: one complete model file llama.cpp serves alone.

Served as a GGUF LoRA (briefing.tuning.gguf_lora), llama.cpp computes `lora_b @ (lora_a @ x)`
beside every adapted matrix on every token (bench/results/adapter_speed.json: 0.80 of the base's
decoding speed on 2 threads). A merged file holds W + B·A·alpha/rank instead, so there is no LoRA product per
token, at the price of a full model file (and a model instance in memory) per adapter; the
merged matrices' type then sets the speed (see DEFAULT_QTYPE).

`merge_lora` reads the base with gguf-py, takes the adapter's pairs as gguf_lora validates and lays
them out (the same refusals, the same q/k row permutation, rsLoRA folded in), dequantizes each
adapted matrix, adds the update and quantizes the sum to `qtype`. Every other tensor is copied
byte for byte and every metadata field (architecture, tokenizer, chat template) as it is; only
`general.file_type` says the new type of the adapted matrices.

Which type keeps the adapter: bench/adapter_speed.py measures it (bench/results/adapter_speed.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from briefing.tuning.gguf_lora import (
    AdapterNotConvertible,
    LoraUpdate,
    lora_updates,
    write_all,
    write_atomically,
)

# Q8_0 by measurement (bench/results/adapter_speed.json: a small adapter trained on demo articles
# and a random one, merged into the packaged Q4_1 SmolLM2, 10 chats x 64 greedy tokens against the
# GGUF LoRA on llama.cpp). Requantizing to Q4_1 puts the weights back on nearly the grid they came
# from: it keeps 6% of a trained update (<stored - W, ΔW> / |ΔW|²), and the merged model picks the
# LoRA's next token no more often than the base does (teacher-forced 0.886 vs 0.875). Q8_0 keeps
# all of it (1.000) and agrees 0.969 (F16 0.978, at 1.7x Q8_0's file). The price: Q8_0's weights
# are 1.7x Q4_1's bytes, and the merged Q8_0 model decoded at 0.85x the Q4_1 base on 1 thread and
# 0.84x on 2 (GGUF LoRA 0.86x, 0.80x; merged Q4_1 0.97x, 0.98x; F16 0.67x, 0.64x): behaviour kept,
# little speed won on this small model. A merge into the unquantized base, then quantized to Q4_1,
# would keep the update on average and decode at the base's speed; only the Q4_1 GGUF ships here.
DEFAULT_QTYPE = "Q8_0"
# output type → the llama.cpp file type that names a model mostly of it
_FILE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "Q8_0": "MOSTLY_Q8_0", "Q4_1": "MOSTLY_Q4_1"}


def merge_lora(base_gguf: Path, adapter_dir: Path, out: Path, *, qtype: str = DEFAULT_QTYPE) -> Path:
    """Write `base_gguf` with the peft adapter in `adapter_dir` added to its weights to `out`, the
    adapted matrices stored as `qtype` (one of F32, F16, Q8_0, Q4_1); returns `out`.

    Written beside `out` under a temporary name and renamed, so a crash leaves `out` as it was
    (absent, or the previous file). Raises `AdapterNotConvertible` for the adapters `to_gguf_lora`
    refuses, and ValueError for an unknown `qtype`."""
    from gguf import GGMLQuantizationType, GGUFReader

    if qtype not in _FILE_TYPES:
        raise ValueError(f"merge_lora writes {sorted(_FILE_TYPES)}, not {qtype!r}")
    target = GGMLQuantizationType[qtype]
    converted = lora_updates(adapter_dir, base_gguf)  # refuses first: nothing is written then
    updates = {u.name: u for u in converted.updates}
    reader = GGUFReader(base_gguf)
    tensors = [_tensor(t, updates.get(t.name), target) for t in reader.tensors]

    def fill(staged: Path) -> None:
        from gguf import GGUFWriter

        writer = GGUFWriter(staged, converted.arch)
        _copy_fields(reader, writer, qtype)
        for name, data, dtype in tensors:
            writer.add_tensor(name, data, raw_dtype=dtype)
        write_all(writer)

    write_atomically(out, fill)
    return out


def _tensor(tensor: Any, update: LoraUpdate | None, target: Any) -> tuple[str, np.ndarray, Any]:
    """(name, data, type) for the writer: the base's own bytes, or the merged matrix as `target`."""
    from gguf.quants import QuantError, dequantize, quantize

    if update is None:
        return tensor.name, tensor.data, tensor.tensor_type
    weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)  # (out, in)
    merged = weight + update.delta()
    try:
        return tensor.name, quantize(merged, target), target
    except QuantError as exc:  # a row length that is not a multiple of the block size
        raise AdapterNotConvertible(
            f"cannot store {tensor.name} {merged.shape} as {target.name}: {exc}"
        ) from exc


def _copy_fields(reader: Any, writer: Any, qtype: str) -> None:
    """Every metadata field of the base, in its order and types; the writer adds the GGUF.* ones
    and the architecture itself."""
    from gguf import GGUFValueType, LlamaFileType

    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        value = field.contents()
        if field.name == "general.file_type":
            value = int(LlamaFileType[_FILE_TYPES[qtype]])
        sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub)
