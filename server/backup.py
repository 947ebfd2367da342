"""Backup and restore of a deployment's state: `backup(settings, dest)` and `restore(settings, source)`.

A backup is a folder: the SQL database (`database/`: SQLite's online backup, or pg_dump's custom
format), the vectors (`qdrant/`: the embedded store's folder, or `qdrant-snapshots/`: one snapshot
per collection of a Qdrant server), the trained state under DATA_DIR (`data/`: AREAS, and the show
gate when it lies under DATA_DIR) and `manifest.json`, written last: versions (schema migration
head, embedding model) and every file's sha256. It is written beside DEST and renamed into place.

Out of it: secrets (DATA_DIR/jwt-secret, *.key, *.pem; API keys live in the environment and are
never read here), locks, and caches that rebuild (dequantized models, training checkpoints).

Restore checks every digest and version before it touches anything, stages the new state beside
the old, then swaps it in: the database first (one rename, or one PostgreSQL transaction: the
commit point), then the folders. A journal (DATA_DIR/restore.journal.json) lists the swaps, so a
restore killed before the commit point left the old state as it was, and the next `restore`
removes what it staged; killed after it, the next `restore` finishes the swaps first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

from briefing.tuning.snapshots import fsync_path
from server import backup_journal as journal_file
from server import backup_stores as stores
from server.backup_journal import Move
from server.backup_stores import BackupError
from server.db import MIGRATIONS, connect, migrate
from server.settings import Settings

__all__ = ["AREAS", "BackupError", "Manifest", "backup", "restore", "resume", "verified"]

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
# What DATA_DIR holds that cannot be rebuilt: installed adapters, the trained verifier, the tuning
# datasets the adapters were made from and the gate's outputs. Not models/ as a whole: it also
# caches dequantized copies of the packaged models; not tuning/runs: checkpoints of training.
AREAS = ("adapters", "models/verifier", "tuning/snapshots", "tuning/gate")
SECRETS = ("jwt-secret", "*.key", "*.pem")
SKIPPED = (*SECRETS, "*.lock", "*.fence")


@dataclass(frozen=True)
class Manifest:
    id: str
    created_at: str
    app_version: str
    database: str  # "sqlite" or "postgresql"
    schema_head: str  # the alembic revision the database was at
    embedding_model: str
    vectors: str  # "embedded", "server" or "none"
    areas: tuple[str, ...]  # DATA_DIR paths the backup holds (absent ones are emptied on restore)
    files: dict[str, str]  # backup-relative path -> sha256
    details: dict[str, Any] = field(default_factory=dict)  # pg schema and tool versions, aliases

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **asdict(self), "areas": list(self.areas)}

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise BackupError(f"{folder} is not a complete backup: it has no {MANIFEST} (written last)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if (found := data.pop("format")) != FORMAT:
                raise BackupError(f"{path}: backup format {found!r}, this version reads {FORMAT}")
            return cls(**{**data, "areas": tuple(data["areas"])})
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"{path} is not a backup manifest: {exc}") from None


def backup(settings: Settings, dest: Path) -> Manifest:
    """Write a backup of the deployment's state to the folder `dest` (new, or empty)."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise BackupError(f"{dest} already exists and is not an empty folder: choose a new one")
    pending = journal_file.read(settings.data_dir)
    if pending is not None:
        raise BackupError(
            f"a restore of {pending['backup']} was interrupted here: run `briefing restore` again "
            "to finish or undo it before taking a backup"
        )
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    staging.mkdir(parents=True)
    try:
        manifest = _write_backup(settings, staging)
        if dest.exists():
            dest.rmdir()
        staging.rename(dest)
        fsync_path(dest.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write_backup(settings: Settings, out: Path) -> Manifest:
    details: dict[str, Any] = {}
    # Held, the store's lock keeps out every process that could write (servers, jobs, commands):
    # the database, the vectors and the adapters are copied as of one moment.
    with stores.embedded_store_held(_embedded(settings)):
        database, head = _dump_database(settings, out / "database", details)
        vectors = _copy_vectors(settings, out, details)
        areas = tuple(a for a in _areas(settings) if _copy_area(settings.data_dir / a, out / "data" / a))
    for path in [*_files(out), *(p for p in out.rglob("*") if p.is_dir()), out]:
        fsync_path(path)  # on disk before the manifest says the backup is whole
    manifest = Manifest(
        id=f"bk-{datetime.now(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(3)}",
        created_at=datetime.now(UTC).isoformat(),
        app_version=package_version("havnby-briefing"),
        database=database,
        schema_head=head,
        embedding_model=settings.embedding_model,
        vectors=vectors,
        areas=areas,
        files={str(path.relative_to(out)): _sha256(path) for path in _files(out)},
        details=details,
    )
    journal_file.write_durably(out / MANIFEST, json.dumps(manifest.to_json(), indent=1).encode())
    return manifest


def _dump_database(settings: Settings, out: Path, details: dict[str, Any]) -> tuple[str, str]:
    out.mkdir()
    url = settings.database_url
    if url.startswith("sqlite"):
        stores.sqlite_copy(stores.sqlite_path(url), out / "briefing.db")
        return "sqlite", stores.sqlite_head(out / "briefing.db")
    schema, head, major = stores.pg_schema(url)
    details["pg_dump"] = stores.pg_dump(url, schema, major, out / "schema.pgdump")
    details.update(pg_schema=schema, pg_server_major=major)
    return "postgresql", head


def _copy_vectors(settings: Settings, out: Path, details: dict[str, Any]) -> str:
    config = settings.qdrant
    if config.url:
        client = config.connect()
        try:
            aliases = stores.served_collections(client, config.prefix)
            stores.snapshot_collections(
                client, config.url, config.api_key, set(aliases.values()), out / "qdrant-snapshots"
            )
        finally:
            client.close()
        details["aliases"] = aliases
        return "server"
    folder = _embedded(settings)
    if folder is None or not folder.is_dir():
        return "none"
    stores.copy_tree(folder, out / "qdrant")
    return "embedded"


def _copy_area(source: Path, out: Path) -> bool:
    if source.is_file() and not _skipped(source):
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, out)
        return True
    if source.is_dir():
        shutil.copytree(source, out, ignore=lambda _, names: [n for n in names if _skipped(Path(n))])
        return True
    return False


def restore(
    settings: Settings, source: Path, *, force: bool = False, report: Callable[[str], object] = log.warning
) -> Manifest:
    """Put the backup in `source` back as the deployment's state, after checking it whole.
    Without `force`, a deployment that already holds state is left alone. An interrupted
    restore found on the way is finished or undone first (and `report`ed)."""
    manifest = verified(source)
    _check_fits(settings, manifest)
    with stores.embedded_store_held(_embedded(settings)):
        done = resume(settings)
        if done:
            report(done)
        if not force and _holds_state(settings):
            raise BackupError(
                "this deployment already holds state (DATABASE_URL, the index or DATA_DIR): "
                "`briefing restore --force` replaces it with the backup"
            )
        journal = _stage(settings, manifest, source)
        _commit(settings, manifest, source, journal)
    return manifest


def verified(source: Path) -> Manifest:
    """The backup's manifest, once every file it lists is there with its digest and no other
    file is: a partial or altered backup is refused before anything is touched."""
    manifest = Manifest.read(source)
    found = {str(path.relative_to(source)) for path in _files(source)} - {MANIFEST}
    missing, extra = sorted(set(manifest.files) - found), sorted(found - set(manifest.files))
    if missing or extra:
        listed = ", ".join(
            [*(f"{m} (missing)" for m in missing), *(f"{e} (not in the manifest)" for e in extra)]
        )
        raise BackupError(f"{source} is not the backup its manifest describes: {listed[:1000]}")
    changed = [name for name, digest in sorted(manifest.files.items()) if _sha256(source / name) != digest]
    if changed:
        raise BackupError(
            f"{source}: these files changed since the backup was written: {', '.join(changed[:20])}"
        )
    return manifest


def _check_fits(settings: Settings, manifest: Manifest) -> None:
    kind = "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"
    vectors = "server" if settings.qdrant.url else "embedded"
    known = _known_revisions()
    problems = [
        f"the backup's schema {manifest.schema_head} is newer than this version knows "
        f"(newest {max(known)}): upgrade the service first"
        if manifest.schema_head not in known
        else "",
        f"the backup is of a {manifest.database} database and DATABASE_URL is {kind}"
        if manifest.database != kind
        else "",
        f"the backup's vectors are from an {manifest.vectors} Qdrant, this deployment's is {vectors}"
        if manifest.vectors not in ("none", vectors)
        else "",
        f"the backup's vectors were made by {manifest.embedding_model}: set EMBEDDING_MODEL to it for "
        "the restore (and `briefing reindex` afterwards to change models)"
        if manifest.vectors != "none" and manifest.embedding_model != settings.embedding_model
        else "",
    ]
    if any(problems):
        raise BackupError("cannot restore this backup here: " + "; ".join(p for p in problems if p))


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory(str(MIGRATIONS)).walk_revisions()}


def _holds_state(settings: Settings) -> bool:
    folder = _embedded(settings)
    if folder is not None and any(p.name != stores.LOCK_FILE for p in _files(folder)):
        return True
    if any((settings.data_dir / area).exists() for area in _areas(settings)):
        return True
    if settings.qdrant.url:
        client = settings.qdrant.connect()
        try:
            return bool(stores.served_collections(client, settings.qdrant.prefix))
        finally:
            client.close()
    return stores.database_holds_state(settings.database_url)


# -- staging and swapping in ----------------------------------------------------------------


def _stage(settings: Settings, manifest: Manifest, source: Path) -> dict[str, Any]:
    """Copy the backup beside the live state; the journal says what is staged where."""
    moves = _moves(settings, manifest)
    journal = {
        "backup": manifest.id,
        "database": manifest.database,
        "marker": f"briefing restore {manifest.id} {secrets.token_hex(4)}",
        "moves": journal_file.as_json(moves),
        "state": "staging",
    }
    journal_file.write(settings.data_dir, journal)
    for move in moves:
        journal_file.remove(move.staged)
        journal_file.remove(move.old)
        if move.present:
            _copy_staged(settings, source, move)
            fsync_path(move.staged)
    if manifest.database == "sqlite":
        stores.sqlite_migrated(moves[0].staged, migrate)  # what is renamed in is already current
    journal["state"] = "staged"
    journal_file.write(settings.data_dir, journal)
    return journal


def _moves(settings: Settings, manifest: Manifest) -> list[Move]:
    """A SQLite file first (its rename is the commit point), then the store and DATA_DIR's areas."""
    moves = []
    if manifest.database == "sqlite":
        moves.append(Move(str(stores.sqlite_path(settings.database_url)), True))
    folder = _embedded(settings)
    if folder is not None:
        moves.append(Move(str(folder), manifest.vectors == "embedded"))
    areas = dict.fromkeys([*_areas(settings), *manifest.areas])
    return moves + [Move(str(settings.data_dir / area), area in manifest.areas) for area in areas]


def _copy_staged(settings: Settings, source: Path, move: Move) -> None:
    target = Path(move.target)
    if target == _sqlite_target(settings):
        held = source / "database" / "briefing.db"
    elif target == _embedded(settings):
        held = source / "qdrant"
    else:
        held = source / "data" / target.relative_to(settings.data_dir)
    move.staged.parent.mkdir(parents=True, exist_ok=True)
    if held.is_dir():
        shutil.copytree(held, move.staged)
    else:
        shutil.copy2(held, move.staged)


def _commit(settings: Settings, manifest: Manifest, source: Path, journal: dict[str, Any]) -> None:
    """The database first (the commit point), then the folders, each swap a rename."""
    if manifest.database == "sqlite":
        database = journal_file.moves_of(journal)[0]
        stores.sqlite_quiesce(Path(database.target))
        os.replace(database.staged, database.target)  # the commit point
        fsync_path(database.staged.parent)
    else:
        url, schema = settings.database_url, manifest.details["pg_schema"]
        stores.pg_restore(url, schema, source / "database" / "schema.pgdump", journal["marker"])
        _migrate(url)
    if manifest.vectors == "server":
        _recover_server(settings, source, manifest)
    journal_file.finish(settings.data_dir, journal)


def resume(settings: Settings) -> str | None:
    """Finish a restore that was killed after its commit point, or drop what one killed before
    it had staged (the live state was not touched then). Returns what it did, if anything."""
    journal = journal_file.read(settings.data_dir)
    if journal is None:
        return None
    if journal["state"] == "staged" and _committed(settings, journal):
        journal_file.finish(settings.data_dir, journal)
        return f"finished the interrupted restore of {journal['backup']}"
    journal_file.drop_staged(settings.data_dir, journal)
    return f"dropped what the interrupted restore of {journal['backup']} had staged"


def _committed(settings: Settings, journal: dict[str, Any]) -> bool:
    if journal["database"] == "sqlite":
        return not journal_file.moves_of(journal)[0].staged.exists()
    return stores.pg_marked(settings.database_url, journal["marker"])


def _recover_server(settings: Settings, source: Path, manifest: Manifest) -> None:
    config = settings.qdrant
    assert config.url is not None  # _check_fits: a server backup restores onto a server
    client = config.connect()
    try:
        aliases = dict(manifest.details["aliases"])
        stores.recover_collections(client, config.url, config.api_key, source / "qdrant-snapshots", aliases)
    finally:
        client.close()


# -- small helpers ------------------------------------------------------------------------------


def _migrate(url: str) -> None:
    engine = connect(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()


def _embedded(settings: Settings) -> Path | None:
    path = settings.qdrant.path
    return None if settings.qdrant.url or not path or path == ":memory:" else Path(path)


def _sqlite_target(settings: Settings) -> Path | None:
    url = settings.database_url
    return stores.sqlite_path(url) if url.startswith("sqlite") else None


def _areas(settings: Settings) -> list[str]:
    """AREAS, and the show gate when it is a file under DATA_DIR (else it ships with the code)."""
    gate = settings.show_gate.resolve()
    inside = gate.is_relative_to(settings.data_dir.resolve())
    return [*AREAS, str(gate.relative_to(settings.data_dir.resolve()))] if inside else list(AREAS)


def _skipped(path: Path) -> bool:
    return any(fnmatch(path.name, pattern) for pattern in SKIPPED)


def _files(folder: Path) -> Iterator[Path]:
    return (path for path in sorted(folder.rglob("*")) if path.is_file())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
