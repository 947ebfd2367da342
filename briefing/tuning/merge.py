"""One adapter from several: per-language (or per-publication) LoRA adapters merged with peft's
weighted merging, so that publications share what they learned without one joint training run.

`merge_adapters` loads each adapter onto the base model and combines them with
`add_weighted_adapter(..., combination_type="cat")`: the merged update is the weighted sum of the
adapters' updates, ΔW = Σ wᵢ·scaleᵢ·Bᵢ·Aᵢ, exactly (its rank is the sum of theirs), so no SVD
approximation is involved and the result converts to GGUF like any trained adapter. The weights
are the caller's choice; 1.0 each applies every adapter's full update to every language (task
arithmetic with λ = 1).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

MERGED = "merged"


def merge_adapters(base: str, adapters: Mapping[str, Path], weights: Mapping[str, float], out: Path) -> Path:
    """Write the weighted merge of `adapters` (name → peft adapter directory, all trained on
    `base`) to `out` (a peft adapter directory); returns `out`. It is written beside `out` and
    renamed into place, so a crash never leaves a half-written adapter there."""
    if len(adapters) < 2:
        raise ValueError(f"merging needs at least two adapters, got {sorted(adapters)}")
    if set(weights) != set(adapters):
        raise ValueError(f"weights name {sorted(weights)}, adapters {sorted(adapters)}")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    names = sorted(adapters)
    net = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        net.load_adapter(str(adapters[name]), adapter_name=name)
    net.add_weighted_adapter(names, [weights[n] for n in names], MERGED, combination_type="cat")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        net.save_pretrained(str(staging), selected_adapters=[MERGED])
        saved = staging / MERGED  # peft writes a non-default adapter into a folder of its name
        _record_sources(saved, adapters, weights)
        if out.exists():
            shutil.rmtree(out)
        os.replace(saved, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _record_sources(saved: Path, adapters: Mapping[str, Path], weights: Mapping[str, float]) -> None:
    """What the merge was made of, next to peft's own files."""
    sources = {n: {"adapter": str(p), "weight": weights[n]} for n, p in sorted(adapters.items())}
    (saved / "merged_from.json").write_text(json.dumps(sources, indent=2) + "\n")
