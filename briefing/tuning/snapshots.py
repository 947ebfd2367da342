"""Dataset snapshots on disk: written whole or not at all, loaded only when they are what their id says.

A snapshot (`briefing.tuning.data.Snapshot`) is written under `root/snapshots/<id>/` through a
staging folder and one rename, so a crash leaves either the whole snapshot or none under its id;
loading checks every file against the digests in its manifest and the id against the rows.
This module simplifies: a snapshot is a few JSONL files read whole into memory (thousands of rows,
not millions).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from briefing.tuning.data import (
    SNAPSHOT_FORMAT,
    Example,
    PreferencePair,
    Row,
    Snapshot,
    expected_id,
    snapshot_id_of,
)

FILES = ("train.jsonl", "eval.jsonl", "pairs.jsonl")


class SnapshotError(RuntimeError):
    """A snapshot is missing, unreadable, or does not match its id; the message says which."""


def write_snapshot(snapshot: Snapshot, root: Path) -> Path:
    """Write the snapshot to `root/snapshots/<id>/` and return that folder. Atomic: the files go
    to a staging folder first, renamed into place once complete (a crash leaves nothing under the
    id). Idempotent: a snapshot already there is kept as it is (same id, same rows)."""
    folder = root / "snapshots" / snapshot.id
    if (folder / "manifest.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{snapshot.id}-", dir=folder.parent))
    try:
        _write_files(snapshot, staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "manifest.json").is_file():  # not a concurrent writer's success
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _write_files(snapshot: Snapshot, staging: Path) -> None:
    parts: tuple[Sequence[Row], ...] = (snapshot.train, snapshot.eval, snapshot.pairs)
    digests = {
        name: _write_jsonl(staging / name, [_to_json(r) for r in rows])
        for name, rows in zip(FILES, parts, strict=True)
    }
    manifest = {**snapshot.manifest(), "files": digests}
    _write_bytes(staging / "manifest.json", json.dumps(manifest, ensure_ascii=False, indent=1).encode())
    fsync_path(staging)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows).encode()
    _write_bytes(path, data)
    return {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())  # the rename must not reach the disk before the data


def fsync_path(path: Path) -> None:
    """Flush a file or a folder (its entries: a rename into it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _to_json(row: Row) -> dict[str, Any]:
    data = {k: v for k, v in vars(row).items() if k not in ("chat", "article_ids", "meta")}
    return {
        **data,
        "chat": [list(t) for t in row.chat],
        "article_ids": list(row.article_ids),
        "meta": row.meta,
    }


def _example(data: dict[str, Any]) -> Example:
    return Example(**{**data, **_tuples(data)})


def _pair(data: dict[str, Any]) -> PreferencePair:
    return PreferencePair(**{**data, **_tuples(data)})


def _tuples(data: dict[str, Any]) -> dict[str, Any]:
    return {"chat": tuple((r, c) for r, c in data["chat"]), "article_ids": tuple(data["article_ids"])}


def load_snapshot(root: Path, snapshot_id: str) -> Snapshot:
    """The snapshot written under `root/snapshots/<snapshot_id>/`. Raises `SnapshotError` when it
    is missing, or when a file differs from its manifest's digest or the rows do not give the id
    (changed after it was written): train from a snapshot only when it is what its id says."""
    folder = root / "snapshots" / snapshot_id
    manifest = _manifest(folder, root, snapshot_id)
    rows = {name: _read_jsonl(folder, name, manifest) for name in FILES}
    snapshot = Snapshot(
        id=manifest["id"],
        created_at=manifest["created_at"],
        sources=manifest["sources"],
        counts=manifest["counts"],
        filters=manifest["filters"],
        train=tuple(_example(r) for r in rows["train.jsonl"]),
        eval=tuple(_example(r) for r in rows["eval.jsonl"]),
        pairs=tuple(_pair(r) for r in rows["pairs.jsonl"]),
    )
    _verify(snapshot, snapshot_id, folder)
    return snapshot


def _manifest(folder: Path, root: Path, snapshot_id: str) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file():
        known = ", ".join(str(m["id"]) for m in list_snapshots(root)[:5]) or "none"
        raise SnapshotError(
            f"no dataset snapshot {snapshot_id!r} under {root / 'snapshots'} (newest: {known})"
        )
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"snapshot {snapshot_id}: its manifest cannot be read ({exc})") from exc
    if manifest.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotError(
            f"snapshot {snapshot_id}: format {manifest.get('format')!r}, expected {SNAPSHOT_FORMAT}"
        )
    return manifest


def _read_jsonl(folder: Path, name: str, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    path = folder / name
    if not path.is_file():
        raise SnapshotError(f"snapshot {manifest['id']}: {name} is missing; rebuild the snapshot")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["files"][name]["sha256"]:
        raise SnapshotError(
            f"snapshot {manifest['id']}: {name} was changed after it was written (its sha256 differs "
            "from the manifest's); rebuild the snapshot rather than train on altered data"
        )
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line]


def _verify(snapshot: Snapshot, snapshot_id: str, folder: Path) -> None:
    altered = [r.id for r in snapshot.rows() if expected_id(r) != r.id]
    actual = snapshot_id_of(snapshot)
    if altered or actual != snapshot_id or snapshot.id != snapshot_id:
        detail = (
            f"rows whose content does not give their id: {altered[:3]}"
            if altered
            else f"content gives {actual}"
        )
        raise SnapshotError(
            f"snapshot {snapshot_id} at {folder} does not match its id ({detail}); rebuild it"
        )


def list_snapshots(root: Path) -> list[Mapping[str, Any]]:
    """The manifests of the snapshots under `root/snapshots`, newest first (staging folders of
    unfinished writes are not snapshots and are skipped)."""
    found: list[Mapping[str, Any]] = []
    for path in (root / "snapshots").glob("ds-*/manifest.json"):
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # unreadable: `load_snapshot` says why when it is asked for
    return sorted(found, key=lambda m: (str(m.get("created_at", "")), str(m.get("id", ""))), reverse=True)
