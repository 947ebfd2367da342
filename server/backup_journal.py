"""The restore journal of `server.backup`: what a restore staged beside the live state and how
each staged path is swapped in. Every step can be redone after a kill: a swap that happened
leaves its staged path gone, one that did not leaves it there.

The journal is DATA_DIR/restore.journal.json, written beside and renamed over (never half)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from briefing.tuning.snapshots import fsync_path

JOURNAL = "restore.journal.json"


@dataclass(frozen=True)
class Move:
    """Put `staged` at `target`; the previous content waits at `old` until the restore is done."""

    target: str
    present: bool  # False: the backup has none, so the target is only moved out of the way

    @property
    def staged(self) -> Path:
        return Path(f"{self.target}.restoring")

    @property
    def old(self) -> Path:
        return Path(f"{self.target}.pre-restore")


def moves_of(journal: dict[str, Any]) -> list[Move]:
    return [Move(**move) for move in journal["moves"]]


def as_json(moves: list[Move]) -> list[dict[str, Any]]:
    return [asdict(move) for move in moves]


def read(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / JOURNAL
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def write(data_dir: Path, journal: dict[str, Any]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    write_durably(data_dir / JOURNAL, json.dumps(journal, indent=1).encode())


def drop_staged(data_dir: Path, journal: dict[str, Any]) -> None:
    """Undo a restore that never reached its commit point: only staged copies to remove."""
    for move in moves_of(journal):
        remove(move.staged)
    (data_dir / JOURNAL).unlink()


def finish(data_dir: Path, journal: dict[str, Any]) -> None:
    """Swap every staged folder in (each step can be redone after a kill), then drop the old."""
    moves = moves_of(journal)
    for move in moves:
        move_in(move)
    for move in moves:
        remove(move.old)
    (data_dir / JOURNAL).unlink()
    fsync_path(data_dir)


def move_in(move: Move) -> None:
    target = Path(move.target)
    if move.present and not move.staged.exists():
        return  # already in place (a SQLite file, or a swap done before a kill)
    if (target.exists() or target.is_symlink()) and not move.old.exists():
        target.rename(move.old)
    if move.present:
        move.staged.rename(target)
    if target.parent.exists():
        fsync_path(target.parent)


def write_durably(path: Path, data: bytes) -> None:
    """Write beside, flush, rename over: the file is the old one or the new one, never half."""
    partial = path.with_name(f".{path.name}.partial")
    with partial.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    fsync_path(path.parent)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
