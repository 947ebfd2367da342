"""`briefing backup` and `briefing restore` (server.backup does the work; these print and exit)."""

from __future__ import annotations

from pathlib import Path

import click

from server.settings import Settings


@click.command()
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
def backup(dest: Path) -> None:
    """Back up this deployment's state into the new folder DEST.

    \b
    In it: the database (DATABASE_URL: SQLite's online backup, or pg_dump of its schema),
    the vectors (the embedded Qdrant folder, or a snapshot of each collection of the
    QDRANT_URL server), and under DATA_DIR the adapters, the trained verifier
    (models/verifier), the tuning datasets (tuning/snapshots, tuning/gate) and the show
    gate if it lies there. Then manifest.json, written last: the schema's migration head,
    the embedding model and every file's sha256.

    Not in it: secrets (DATA_DIR/jwt-secret, *.key, *.pem, API keys in the environment),
    locks, and caches that rebuild (dequantized models, training checkpoints).

    A running server holds the embedded Qdrant store: stop it first (a deployment on a
    Qdrant server and PostgreSQL is backed up while it serves). DEST appears only once
    the backup is complete.
    """
    from server.backup import BackupError
    from server.backup import backup as run_backup

    try:
        manifest = run_backup(Settings.from_env(), dest)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    size = sum(path.stat().st_size for path in dest.rglob("*") if path.is_file())
    click.echo(
        f"backup {manifest.id} in {dest}: {manifest.database} database at schema {manifest.schema_head}, "
        f"{manifest.vectors} vectors, {len(manifest.files)} files, {size / 1e6:.1f} MB"
    )


@click.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace the state this deployment already holds.")
def restore(source: Path, force: bool) -> None:
    """Restore the backup in SOURCE (a folder `briefing backup` wrote) as this deployment's state.

    \b
    First every file's sha256 is checked against the manifest, and the backup must fit:
    the same database engine and vector store kind, the same EMBEDDING_MODEL, and a schema
    this version knows (an older one is migrated afterwards). A partial, altered or newer
    backup is refused before anything changes. Without --force, a deployment that already
    holds state is left alone.

    The new state is staged beside the old and swapped in (the database first: one rename,
    or one PostgreSQL transaction). A restore killed before that leaves the old state as it
    was; run `briefing restore` again, and it first finishes or undoes the interrupted one.
    Stop the server first: it holds the embedded Qdrant store.
    """
    from server.backup import BackupError
    from server.backup import restore as run_restore

    try:
        manifest = run_restore(Settings.from_env(), source, force=force, report=click.echo)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"restored {manifest.id} (written {manifest.created_at}): {manifest.database} database, "
        f"{manifest.vectors} vectors, {', '.join(manifest.areas) or 'no files'} from DATA_DIR"
    )
