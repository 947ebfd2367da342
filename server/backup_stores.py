"""How each store is copied out and put back, for `server.backup`: the SQL database (SQLite's
online backup API, PostgreSQL's pg_dump and one restoring transaction) and the vector store
(the embedded Qdrant folder under its own lock, or a Qdrant server's collection snapshots).

Simplifications: a PostgreSQL backup holds the one schema DATABASE_URL uses and restores into a
schema of the same name; a Qdrant server's collections are restored one after another (each
snapshot upload replaces its collection whole), then the aliases are pointed at them; and since
Qdrant's snapshots are per node, the QDRANT_URL node must hold every shard (else a clear refusal).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from server.db import connect

PR_SET_PDEATHSIG = 1  # prctl(2)
LOCK_FILE = ".lock"  # qdrant-client's local mode holds an flock on this file while it runs


class BackupError(Exception):
    """A backup or restore that cannot be done, with the reason and what to do about it."""


# -- SQLite -------------------------------------------------------------------------------------


def sqlite_path(url: str) -> Path:
    path = url.split("///", 1)[-1]
    if not path or path == ":memory:":
        raise BackupError("DATABASE_URL is an in-memory SQLite database: there is nothing to back up")
    return Path(path)


def sqlite_copy(source: Path, out: Path) -> None:
    """A consistent copy through SQLite's online backup API (readers and writers may go on),
    turned into one self-contained file (rollback journal: no -wal beside it)."""
    if not source.is_file():
        raise BackupError(f"no database at {source}: nothing to back up (has the service run?)")
    with _closing(sqlite3.connect(source, timeout=30)) as src, _closing(sqlite3.connect(out)) as dst:
        src.backup(dst)
        self_contained(dst)


def self_contained(connection: sqlite3.Connection) -> None:
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.execute("PRAGMA journal_mode=DELETE")


def sqlite_head(path: Path) -> str:
    """The migration head of a database file, read without writing anything beside it."""
    with _closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
        return _one_version(db.execute("select version_num from alembic_version").fetchall())


def sqlite_migrated(path: Path, migrate: Any) -> None:
    """Bring a staged database file to this code's schema, then make it one file again."""
    engine = connect(f"sqlite:///{path}")
    try:
        migrate(engine)
    finally:
        engine.dispose()
    with _closing(sqlite3.connect(path)) as db:
        self_contained(db)


def sqlite_quiesce(target: Path) -> None:
    """Fold the live database's write-ahead log into it and remove the log, so a database renamed
    over it later is not read through a stale log (the caller holds out every other process)."""
    if target.is_file():
        with _closing(sqlite3.connect(target, timeout=30)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)


@contextmanager
def _closing(connection: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    try:
        yield connection
        connection.commit()
    finally:
        connection.close()


def _one_version(rows: list[Any]) -> str:
    if len(rows) != 1:
        raise BackupError(f"the database has {len(rows)} migration heads, expected one")
    return str(rows[0][0])


def database_holds_state(url: str) -> bool:
    """Whether the database has readers, events, summaries or adapters."""
    if url.startswith("sqlite") and not sqlite_path(url).exists():
        return False
    engine = connect(url)
    try:
        with engine.connect() as connection:
            tables = {"readers", "events", "summaries", "adapters"} & set(
                inspect(connection).get_table_names()
            )
            return any(connection.execute(text(f"select 1 from {t} limit 1")).first() for t in tables)
    finally:
        engine.dispose()


# -- PostgreSQL ---------------------------------------------------------------------------------


def pg_schema(url: str) -> tuple[str, str, int]:
    """(schema, migration head, server major version) of DATABASE_URL, for a backup."""
    schema, major = pg_target(url)
    engine = connect(url)
    try:
        with engine.connect() as connection:
            rows = list(connection.execute(text("select version_num from alembic_version")))
    finally:
        engine.dispose()
    return schema, _one_version(rows), major


def pg_target(url: str) -> tuple[str, int]:
    """(the schema DATABASE_URL works in, even while it does not exist, server major version)."""
    engine = connect(url)
    try:
        with engine.connect() as connection:
            sql = "select current_schema(), current_setting('search_path'), "
            sql += "current_setting('server_version_num')"
            current, path, number = connection.execute(text(sql)).one()
    finally:
        engine.dispose()
    listed = [p.strip().strip('"') for p in str(path).split(",") if p.strip() and p.strip() != '"$user"']
    schema = current or (listed[0] if listed else "public")
    return str(schema), int(number) // 10000


def pg_dump(url: str, schema: str, server_major: int, out: Path) -> str:
    """pg_dump's custom format of `schema`; returns pg_dump's version line."""
    version = _client("pg_dump", server_major)
    _run(["pg_dump", "-Fc", "--no-owner", "--no-privileges", "-n", _quoted(schema), "-f", str(out)], url)
    return version


def pg_restore(url: str, schema: str, dump: Path, marker: str) -> None:
    """Replace `schema` by the dump's in ONE transaction: the old schema is dropped and the dump
    loaded before the commit, so a restore killed on the way leaves the old schema as it was.
    The transaction also marks the schema with `marker` (how a resumed restore knows it committed)."""
    target, major = pg_target(url)
    if target != schema:
        raise BackupError(f"the backup holds schema {schema!r} and DATABASE_URL works in {target!r}")
    for tool in ("pg_restore", "psql"):
        _client(tool, major)
    with tempfile.TemporaryDirectory() as scratch:
        script = Path(scratch) / "restore.sql"
        _run(["pg_restore", "--no-owner", "--no-privileges", "-f", str(script), str(dump)], url)
        creates = re.search(rf"^CREATE SCHEMA {re.escape(schema)};", script.read_text(), re.M)
        prelude = Path(scratch) / "prelude.sql"
        create = "" if creates else f"CREATE SCHEMA {_quoted(schema)};\n"
        prelude.write_text(f"DROP SCHEMA IF EXISTS {_quoted(schema)} CASCADE;\n{create}")
        epilogue = Path(scratch) / "epilogue.sql"
        epilogue.write_text(f"COMMENT ON SCHEMA {_quoted(schema)} IS '{marker}';\n")
        files = [arg for path in (prelude, script, epilogue) for arg in ("-f", str(path))]
        _run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", *files], url)


def pg_marked(url: str, marker: str) -> bool:
    """Whether the restore that wrote `marker` committed."""
    schema, _ = pg_target(url)
    engine = connect(url)
    try:
        with engine.connect() as connection:
            sql = "select obj_description(to_regnamespace(:s), 'pg_namespace')"
            return bool(connection.execute(text(sql), {"s": _quoted(schema)}).scalar_one_or_none() == marker)
    finally:
        engine.dispose()


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _client(tool: str, server_major: int) -> str:
    """The tool's version line; a missing tool or one older than the server is a clear error."""
    if shutil.which(tool) is None:
        raise BackupError(f"{tool} not found: install the PostgreSQL {server_major} client tools")
    line = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    found = re.search(r"(\d+)(?:\.\d+)+", line)
    major = int(found.group(1)) if found else 0
    if major < server_major:
        raise BackupError(
            f"{line} is older than the PostgreSQL {server_major} server: install the "
            f"PostgreSQL {server_major} client tools (pg_dump, pg_restore, psql)"
        )
    return line


def _run(command: list[str], url: str) -> None:
    done = subprocess.run(
        command, env=_pg_env(url), capture_output=True, text=True, preexec_fn=_die_with_parent
    )
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip()[-2000:]}")


def _die_with_parent() -> None:
    """The tool is killed with the restore that started it (Linux): a psql left running would
    commit a transaction its killed parent can no longer account for in the journal."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _pg_env(url: str) -> dict[str, str]:
    """Connection parameters for the client tools; the password through the environment,
    never the command line (other users can read command lines)."""
    parsed = make_url(url)
    env = dict(os.environ)
    pairs = {
        "PGHOST": parsed.host,
        "PGPORT": str(parsed.port) if parsed.port else None,
        "PGUSER": parsed.username,
        "PGPASSWORD": parsed.password,
        "PGDATABASE": parsed.database,
        "PGSSLMODE": parsed.query.get("sslmode"),
    }
    env.update({key: str(value) for key, value in pairs.items() if value})
    return env


# -- the embedded Qdrant store ------------------------------------------------------------------


@contextmanager
def embedded_store_held(folder: Path | None) -> Iterator[None]:
    """Hold the embedded store's lock (the one qdrant-client's local mode takes) for the duration:
    no server or CLI command can open the store meanwhile. Held by a running process: a clear error."""
    if folder is None or not folder.is_dir():
        yield
        return
    with (folder / LOCK_FILE).open("a") as handle:
        _lock(handle, folder)
        yield


def _lock(handle: IO[str], folder: Path) -> None:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BackupError(
            f"the embedded index at {folder} is in use by a running process (`briefing serve`, "
            "`briefing worker` or another command): stop it first. A deployment that cannot stop "
            "runs Qdrant as a server (QDRANT_URL), whose snapshots are taken while it serves."
        ) from None


def copy_tree(source: Path, out: Path) -> None:
    """The store's files without its lock file (qdrant-client makes a new one)."""
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(LOCK_FILE))


# -- a Qdrant server ----------------------------------------------------------------------------


def served_collections(client: Any, prefix: str) -> dict[str, str]:
    """{alias: collection} of the index's aliases (`<prefix>_chunks`, `<prefix>_articles`)."""
    names = {f"{prefix}_chunks", f"{prefix}_articles"}
    return {a.alias_name: a.collection_name for a in client.get_aliases().aliases if a.alias_name in names}


def snapshot_collections(client: Any, url: str, api_key: str | None, names: set[str], out: Path) -> None:
    """One snapshot per collection, taken by the server while it serves, downloaded to `out`."""
    import httpx

    out.mkdir(parents=True)
    headers = {"api-key": api_key} if api_key else {}
    for name in sorted(names):
        _every_shard_here(client, name)
        taken = client.create_snapshot(collection_name=name, wait=True)
        if taken is None:
            raise BackupError(f"Qdrant took no snapshot of {name}")
        address = f"{url.rstrip('/')}/collections/{name}/snapshots/{taken.name}"
        with (
            httpx.stream("GET", address, headers=headers, timeout=600) as response,
            (out / f"{name}.snapshot").open("wb") as file,
        ):
            response.raise_for_status()
            for block in response.iter_bytes(1 << 20):
                file.write(block)
        client.delete_snapshot(collection_name=name, snapshot_name=taken.name, wait=True)


def _every_shard_here(client: Any, name: str) -> None:
    """A collection snapshot holds the shards of the node that takes it (Qdrant's snapshots are
    per node): in a cluster where QDRANT_URL's node lacks some shard, it would be incomplete."""
    info = client.http.distributed_api.collection_cluster_info(name).result
    here = {shard.shard_id for shard in info.local_shards} if info is not None else set()
    if info is not None and len(here) < info.shard_count:
        raise BackupError(
            f"the Qdrant node at QDRANT_URL holds {len(here)} of the {info.shard_count} shards of {name}, "
            "and a snapshot holds only its node's shards: point QDRANT_URL at a node with a replica of "
            "every shard, or back the cluster up with a snapshot on every node (Qdrant's own tooling)"
        )


def recover_collections(
    client: Any, url: str, api_key: str | None, folder: Path, aliases: dict[str, str]
) -> None:
    """Upload each snapshot (it replaces its collection), then point the aliases at them."""
    import httpx
    from qdrant_client.http import models as qm

    headers = {"api-key": api_key} if api_key else {}
    for path in sorted(folder.glob("*.snapshot")):
        address = f"{url.rstrip('/')}/collections/{path.stem}/snapshots/upload?priority=snapshot&wait=true"
        with path.open("rb") as file:
            response = httpx.post(address, headers=headers, files={"snapshot": file}, timeout=600)
        if response.status_code >= 400:
            raise BackupError(f"Qdrant refused the snapshot of {path.stem}: {response.text[:500]}")
    known = {a.alias_name for a in client.get_aliases().aliases}
    ops: list[Any] = [
        qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=alias))
        for alias in aliases
        if alias in known
    ]
    ops += [
        qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=name, alias_name=alias))
        for alias, name in aliases.items()
    ]
    client.update_collection_aliases(change_aliases_operations=ops)
