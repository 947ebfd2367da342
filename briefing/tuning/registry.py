"""The adapter registry: which LoRA adapters exist, what they were made from, and which one serves.

`AdapterRegistry` contract (tests/unit/test_adapter_registry.py runs it on every implementation:
in memory here, SQLite and PostgreSQL in `server.adapters.SqlAdapterRegistry`):
- `add(record)` stores a new *candidate* (state candidate, never promoted, no `previous`) and
  returns what is stored: `hyper` and `report` as JSON gives them back (tuples become lists), so
  what `add` returns equals what `get` returns later. A known id or another state is a ValueError;
- `get(id)` returns the record or None; `all()` every record, newest first; `promoted()` the one
  promoted record, or None before anything was promoted;
- `set_report(id, report)` stores the gate's report (any state) and returns the record;
- `promote(id, actor)` makes that adapter the promoted one in one atomic step: the adapter
  promoted until then becomes retired and is recorded as the new one's `previous` (the rollback
  target). A candidate or a retired adapter may be promoted; promoting the promoted one changes
  nothing. Two promotes racing leave exactly one promoted adapter, each `previous` naming the one
  promoted just before it;
- `rollback(actor)` retires the promoted adapter and promotes its `previous` again, returning that
  record; when nothing was promoted before it (the base model served), it retires it and returns
  None: the base model serves again. With nothing promoted it returns None and changes nothing;
- `version()` counts the promotes and rollbacks that changed something (API workers poll it to
  notice a new promoted adapter without a restart); it never goes down;
- unknown ids raise `AdapterNotFound` (a KeyError) naming the id.
The SQL registry also writes an audit entry per promote and rollback in the same transaction;
`role` says whether a person ("admin") or the nightly job ("job") did it.

Files: a joint adapter lives in `<adapters root>/<record.path>/` as `adapter/` (peft, for
transformers) and `adapter.gguf` (for llama.cpp). An adapter *set* (`record.hyper["layout"]` is
"per-language") has one part per language, `<record.path>/<lang>/adapter/` and `.../adapter.gguf`;
it is one record, gated, promoted and rolled back as a whole. `install_adapter` and
`install_adapter_set` copy the files through a staging folder and one rename, so a crash leaves
either the whole folder or none under the adapter's name. Records without a layout (made before
sets existed) are joint. `adapter_parts` lists what a record's backend loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from briefing.tuning.snapshots import fsync_path

ID_PATTERN = re.compile(r"ad-\d{14}-[0-9a-f]{6}")
PEFT_DIR = "adapter"
GGUF_FILE = "adapter.gguf"
JOINT, PER_LANGUAGE = "joint", "per-language"  # record.hyper["layout"]
# a part's folder name: a language code, never a path ("en", "nb", "pt-br")
LANGUAGE_PATTERN = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})*")


class AdapterState(StrEnum):
    CANDIDATE = "candidate"  # trained, maybe gated, never served
    PROMOTED = "promoted"  # the one new text is written with
    RETIRED = "retired"  # served once; a rollback or an explicit promote may bring it back


class AdapterNotFound(KeyError):
    """No adapter with that id is registered."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument
        return str(self.args[0]) if self.args else "adapter not found"


@dataclass(frozen=True)
class AdapterRecord:
    id: str  # "ad-YYYYmmddHHMMSS-<6 hex>" (new_adapter_id); also its folder name
    base_model: str  # e.g. "packaged:SmolLM2-135M-Instruct"
    base_hash: str  # hash_file of the base GGUF: an adapter only fits the weights it was trained on
    snapshot_id: str  # the dataset snapshot it was trained on (briefing.tuning.data)
    hyper: Mapping[str, Any]  # TrainConfig.hyper() and whatever else reproduces the run
    report: Mapping[str, Any] | None  # GateReport.to_json() once gated
    state: AdapterState
    created_at: datetime
    promoted_at: datetime | None  # when it last became the promoted one
    path: str  # folder relative to the adapters root (install_adapter's answer)
    previous: str | None  # promoted before it, when it was last promoted: the rollback target

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "base_model": self.base_model,
            "base_hash": self.base_hash,
            "snapshot_id": self.snapshot_id,
            "hyper": dict(self.hyper),
            "report": None if self.report is None else dict(self.report),
            "state": str(self.state),
            "created_at": self.created_at.isoformat(),
            "promoted_at": None if self.promoted_at is None else self.promoted_at.isoformat(),
            "path": self.path,
            "previous": self.previous,
        }


class AdapterRegistry(Protocol):
    def add(self, record: AdapterRecord) -> AdapterRecord: ...

    def get(self, adapter_id: str) -> AdapterRecord | None: ...

    def all(self) -> list[AdapterRecord]: ...

    def promoted(self) -> AdapterRecord | None: ...

    def set_report(self, adapter_id: str, report: Mapping[str, Any]) -> AdapterRecord: ...

    def promote(self, adapter_id: str, actor: str, *, role: str = "admin") -> AdapterRecord: ...

    def rollback(self, actor: str, *, role: str = "admin") -> AdapterRecord | None: ...

    def version(self) -> int: ...


def new_adapter_id(at: datetime | None = None) -> str:
    """A fresh id: the creation time (UTC, sortable) and 6 random hex digits."""
    at = (at or datetime.now(UTC)).astimezone(UTC)
    return f"ad-{at:%Y%m%d%H%M%S}-{secrets.token_hex(3)}"


def hash_file(path: Path) -> str:
    """sha256 of a file's bytes, first 16 hex digits (the `base_hash` of a base GGUF)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def checked_new(record: AdapterRecord) -> AdapterRecord:
    """The record as `add` stores it, or ValueError saying why it cannot be added."""
    if not ID_PATTERN.fullmatch(record.id):
        raise ValueError(f"adapter id {record.id!r} is not like 'ad-YYYYmmddHHMMSS-abc123' (new_adapter_id)")
    if record.state is not AdapterState.CANDIDATE or record.promoted_at or record.previous is not None:
        raise ValueError(f"adapter {record.id}: add a candidate (never promoted), then promote it")
    if record.created_at.tzinfo is None:
        raise ValueError(f"adapter {record.id}: created_at must be an aware time")
    _relative(record.path)
    return replace(record, hyper=plain(record.hyper), report=plain_or_none(record.report))


def plain(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` as JSON gives it back, so every registry returns the same thing (TypeError if not JSON)."""
    result: dict[str, Any] = json.loads(json.dumps(dict(data)))
    return result


def plain_or_none(data: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if data is None else plain(data)


def promoted_change(
    target: AdapterRecord, current: AdapterRecord | None, at: datetime
) -> tuple[AdapterRecord | None, AdapterRecord]:
    """(the retired old one or None, the promoted target) after promoting `target`."""
    retired = None if current is None else replace(current, state=AdapterState.RETIRED)
    previous = None if current is None else current.id
    return retired, replace(target, state=AdapterState.PROMOTED, promoted_at=at, previous=previous)


def rolled_back_change(
    current: AdapterRecord, previous: AdapterRecord, at: datetime
) -> tuple[AdapterRecord, AdapterRecord]:
    """(the retired current one, the promoted previous one); the restored adapter keeps its own
    `previous`, so rolling back again steps further back."""
    return replace(current, state=AdapterState.RETIRED), replace(
        previous, state=AdapterState.PROMOTED, promoted_at=at
    )


class InMemoryAdapterRegistry:
    """The registry in a dict behind one lock (tests, benchmarks, the CLI without a database)."""

    def __init__(self) -> None:
        self._records: dict[str, AdapterRecord] = {}
        self._version = 0
        self._lock = threading.Lock()

    def add(self, record: AdapterRecord) -> AdapterRecord:
        stored = checked_new(record)
        with self._lock:
            if stored.id in self._records:
                raise ValueError(f"adapter {stored.id} is already registered")
            self._records[stored.id] = stored
        return stored

    def get(self, adapter_id: str) -> AdapterRecord | None:
        return self._records.get(adapter_id)

    def all(self) -> list[AdapterRecord]:
        with self._lock:
            records = list(self._records.values())
        return sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)

    def promoted(self) -> AdapterRecord | None:
        with self._lock:
            return self._promoted()

    def set_report(self, adapter_id: str, report: Mapping[str, Any]) -> AdapterRecord:
        with self._lock:
            record = replace(self._known(adapter_id), report=plain(report))
            self._records[adapter_id] = record
        return record

    def promote(self, adapter_id: str, actor: str, *, role: str = "admin") -> AdapterRecord:
        with self._lock:
            target = self._known(adapter_id)
            if target.state is AdapterState.PROMOTED:
                return target
            retired, promoted = promoted_change(target, self._promoted(), datetime.now(UTC))
            self._store(retired, promoted)
            return promoted

    def rollback(self, actor: str, *, role: str = "admin") -> AdapterRecord | None:
        with self._lock:
            current = self._promoted()
            if current is None:
                return None
            if current.previous is None:  # the base model served before it: it serves again
                self._store(replace(current, state=AdapterState.RETIRED))
                return None
            retired, promoted = rolled_back_change(current, self._known(current.previous), datetime.now(UTC))
            self._store(retired, promoted)
            return promoted

    def version(self) -> int:
        return self._version

    def _known(self, adapter_id: str) -> AdapterRecord:
        record = self._records.get(adapter_id)
        if record is None:
            raise AdapterNotFound(f"no adapter {adapter_id!r} is registered")
        return record

    def _promoted(self) -> AdapterRecord | None:
        return next((r for r in self._records.values() if r.state is AdapterState.PROMOTED), None)

    def _store(self, *records: AdapterRecord | None) -> None:
        for record in records:
            if record is not None:
                self._records[record.id] = record
        self._version += 1


# Files ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdapterPart:
    """One loadable adapter of a record: the joint adapter (`language` None) or a set's part."""

    language: str | None
    peft_dir: Path
    gguf_file: Path


def layout_of(record: AdapterRecord) -> str:
    """JOINT or PER_LANGUAGE; a record from before adapter sets has no layout and is joint."""
    layout = str(record.hyper.get("layout") or JOINT)
    if layout not in (JOINT, PER_LANGUAGE):
        raise ValueError(f"adapter {record.id} has an unknown layout {layout!r}")
    return layout


def languages_of(record: AdapterRecord) -> tuple[str, ...]:
    """The languages an adapter was trained on (a set: those with a part; `()` when not recorded)."""
    return tuple(str(language) for language in record.hyper.get("languages") or ())


def adapter_parts(root: Path, record: AdapterRecord) -> list[AdapterPart]:
    """What serving loads for `record`: its one joint adapter, or a set's part per language."""
    folder = root / _relative(record.path)
    if layout_of(record) == JOINT:
        return [AdapterPart(None, folder / PEFT_DIR, folder / GGUF_FILE)]
    languages = languages_of(record)
    if not languages:
        raise ValueError(f"adapter set {record.id} names no languages")
    return [
        AdapterPart(lang, folder / _language(lang) / PEFT_DIR, folder / lang / GGUF_FILE)
        for lang in languages
    ]


def adapter_files(root: Path, record: AdapterRecord) -> tuple[Path, Path]:
    """(the peft folder, the GGUF LoRA file) of an installed joint adapter (a set: `adapter_parts`)."""
    if layout_of(record) != JOINT:
        raise ValueError(f"adapter {record.id} is a set of per-language parts: use adapter_parts")
    (part,) = adapter_parts(root, record)
    return part.peft_dir, part.gguf_file


def install_adapter(root: Path, adapter_id: str, peft_dir: Path, gguf_file: Path) -> str:
    """Copy a trained adapter into `root/<adapter_id>/` and return that folder relative to root.
    The copy is made and synced in a staging folder under root and renamed into place, so the
    adapter's folder is complete or absent; an existing one is never overwritten."""
    return _install(root, adapter_id, [(None, peft_dir, gguf_file)])


def install_adapter_set(root: Path, adapter_id: str, parts: Mapping[str, tuple[Path, Path]]) -> str:
    """Copy an adapter set, {language: (peft folder, GGUF LoRA)}, into `root/<adapter_id>/<lang>/`
    as `install_adapter` does (one staging folder, one rename: the whole set or nothing)."""
    if not parts:
        raise ValueError(f"adapter set {adapter_id} has no parts")
    return _install(root, adapter_id, [(_language(lang), p, g) for lang, (p, g) in sorted(parts.items())])


def _install(root: Path, adapter_id: str, parts: Sequence[tuple[str | None, Path, Path]]) -> str:
    if not ID_PATTERN.fullmatch(adapter_id):
        raise ValueError(f"adapter id {adapter_id!r} is not like 'ad-YYYYmmddHHMMSS-abc123'")
    for _language, peft_dir, gguf_file in parts:
        if not (peft_dir / "adapter_config.json").is_file():
            raise ValueError(f"{peft_dir} is not a peft adapter folder (no adapter_config.json)")
        if not gguf_file.is_file():
            raise ValueError(f"{gguf_file} is not a file (expected the GGUF LoRA from to_gguf_lora)")
    final = root / adapter_id
    if final.exists():
        raise FileExistsError(f"{final} exists already; adapter folders are never overwritten")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{adapter_id}.", dir=root))
    try:
        for language, peft_dir, gguf_file in parts:
            folder = staging if language is None else staging / language
            shutil.copytree(peft_dir, folder / PEFT_DIR)
            shutil.copy2(gguf_file, folder / GGUF_FILE)
        _sync_tree(staging)
        os.rename(staging, final)  # atomic; fails instead of merging if `final` appeared meanwhile
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_path(root)
    return adapter_id


def sweep_adapters(root: Path, registry: AdapterRegistry) -> list[str]:
    """Remove what a crash left under the adapters root and return the names removed: staging
    folders of an `install_adapter` that never reached its rename, and installed folders that no
    record names (a crash between `install_adapter` and `registry.add`). Call it only while no
    install can be under way: the tune lock (server.tuning.tuning_lock) is held."""
    if not root.is_dir():
        return []
    registered = {_relative(record.path) for record in registry.all()}
    removed = []
    for entry in sorted(root.iterdir()):
        staging = entry.name.startswith(".") and ID_PATTERN.match(entry.name[1:]) is not None
        orphan = ID_PATTERN.fullmatch(entry.name) is not None and entry.name not in registered
        if entry.is_dir() and not entry.is_symlink() and (staging or orphan):
            shutil.rmtree(entry)
            removed.append(entry.name)
    if removed:
        fsync_path(root)
    return removed


def _relative(path: str) -> str:
    """`path` if it stays inside the adapters root, else ValueError (a record is data, not trust)."""
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts:
        raise ValueError(f"adapter path {path!r} must be a folder inside the adapters root")
    return path


def _language(language: str) -> str:
    """`language` if it is a language code (a part's folder name), else ValueError."""
    if not LANGUAGE_PATTERN.fullmatch(language):
        raise ValueError(f"adapter part language {language!r} is not a language code like 'en' or 'nb'")
    return language


def _sync_tree(folder: Path) -> None:
    """fsync every file and folder below `folder`, so the rename publishes written bytes."""
    for current, _dirs, files in os.walk(folder):
        for name in files:
            fsync_path(Path(current) / name)
        fsync_path(Path(current))
