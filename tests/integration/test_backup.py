"""`briefing backup` / `restore` round trips on SQLite and PostgreSQL with the embedded Qdrant
store on disk: the state comes back as it was, secrets stay out, a tampered, partial or newer
backup is refused, a running holder of the store gets a clear message, and a restore killed with
SIGKILL (or crashing half-way through its swaps) leaves a state the next restore completes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import server.backup_journal as backup_journal
from indexing import Article, Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder
from server.auth import secret
from server.backup import BackupError, backup, restore
from server.backup_journal import JOURNAL
from server.db import Base, connect, migrate
from server.settings import Settings
from tests.conftest import DATABASES, DEMO, PG_URL, _database

SLOW = pytest.mark.slow  # the real embedder fills the embedded store
BRIEFING = str(Path(sys.executable).with_name("briefing"))
NOW = datetime(2026, 11, 19, 22, 0, tzinfo=UTC)


@pytest.fixture(params=DATABASES)
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    for url in _database(request.param, tmp_path):
        data = tmp_path / "data"
        yield Settings.from_env({"DATA_DIR": str(data), "DATABASE_URL": url})


def build_state(
    settings: Settings, embedder: SentenceTransformerEmbedder, chunker: Chunker, articles: list[Article]
) -> None:
    """A small deployment: four articles in the embedded store, the demo readers with their
    events, a reviewed summary, a promoted adapter with its files, and the JWT secret."""
    from briefing.tuning.registry import AdapterRecord, AdapterState, new_adapter_id
    from server.adapters import SqlAdapterRegistry
    from server.readers import parse_readers
    from server.stores import Readers, SqlSummaryStore
    from tests.unit.test_summary_store import make_summary

    index = QdrantIndex.open(QdrantConfig(path=settings.qdrant.path), embedder.dim)
    assert Indexer(index, embedder, chunker).ingest(articles[:4]).ok
    index.close()
    engine = connect(settings.database_url)
    migrate(engine)
    readers = (DEMO / "readers.jsonl").read_text(encoding="utf-8")
    Readers(engine).load(parse_readers(readers), NOW)
    SqlSummaryStore(engine).put(make_summary(articles[0].id))
    adapter = new_adapter_id(NOW)
    record = AdapterRecord(adapter, "packaged:SmolLM2", "ab" * 32, "ds-1", {"rank": 8}, None,
                           AdapterState.CANDIDATE, NOW, None, adapter, None)  # fmt: skip
    registry = SqlAdapterRegistry(engine)
    registry.add(record)
    registry.promote(adapter, "tester")
    engine.dispose()
    folder = settings.data_dir / "adapters" / adapter
    folder.mkdir(parents=True)
    (folder / "adapter.gguf").write_bytes(os.urandom(4096))
    (folder / "signing.key").write_text("not for backups")
    secret(None, settings.data_dir)


def state_of(settings: Settings) -> dict[str, Any]:
    """Every row of every table, the store's articles and chunk count, and the adapter files."""
    engine = connect(settings.database_url)
    try:
        with engine.connect() as connection:
            rows = {
                table.name: sorted(map(repr, connection.execute(table.select())))
                for table in Base.metadata.sorted_tables
            }
            head = connection.execute(text("select version_num from alembic_version")).scalar_one()
    finally:
        engine.dispose()
    index = QdrantIndex(QdrantConfig(path=settings.qdrant.path).connect(), "news")
    try:
        vectors = (sorted((r.article.id, r.content_hash, r.story_id) for r in index.scroll()), index.count())
    finally:
        index.close()
    adapters = settings.data_dir / "adapters"
    files = {str(p.relative_to(adapters)): p.read_bytes() for p in sorted(adapters.rglob("*")) if p.is_file()}
    return {"rows": rows, "head": head, "vectors": vectors, "files": files}


def damage(settings: Settings, article_id: str) -> None:
    """What a bad day does: events and summaries deleted, a reader changed, the adapters folder
    gone, an article out of the store."""
    engine = connect(settings.database_url)
    with engine.begin() as connection:
        connection.execute(text("delete from events"))
        connection.execute(text("delete from summaries"))
        connection.execute(text("update readers set name = 'changed'"))
    engine.dispose()
    shutil.rmtree(settings.data_dir / "adapters")
    index = QdrantIndex(QdrantConfig(path=settings.qdrant.path).connect(), "news")
    assert index.delete([article_id]) > 0
    index.close()


@SLOW
def test_round_trip(
    settings: Settings,
    tmp_path: Path,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
) -> None:
    build_state(settings, embedder, chunker, demo_articles)
    before = state_of(settings)
    assert before["rows"]["events"] and before["rows"]["adapters"] and before["vectors"][1][0] > 0
    jwt_secret = (settings.data_dir / "jwt-secret").read_bytes()

    manifest = backup(settings, tmp_path / "bk")

    assert manifest.schema_head == before["head"] and manifest.vectors == "embedded"
    names = {Path(name).name for name in manifest.files}
    assert "jwt-secret" not in names and "signing.key" not in names and ".lock" not in names
    assert not any(jwt_secret in p.read_bytes() for p in (tmp_path / "bk").rglob("*") if p.is_file())
    damage(settings, demo_articles[0].id)
    assert state_of(settings) != before

    with pytest.raises(BackupError, match=r"already holds state.*--force"):
        restore(settings, tmp_path / "bk")
    restore(settings, tmp_path / "bk", force=True)

    after = state_of(settings)
    key = next(name for name in before["files"] if name.endswith("signing.key"))
    assert after == {**before, "files": {k: v for k, v in before["files"].items() if k != key}}
    assert (settings.data_dir / "jwt-secret").read_bytes() == jwt_secret  # the live secret stays
    assert not (settings.data_dir / JOURNAL).exists()
    assert not list(settings.data_dir.glob("*.restoring")) + list(settings.data_dir.glob("*.pre-restore"))


@pytest.fixture(scope="module")
def template(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
) -> tuple[Path, dict[str, Any]]:
    """A SQLite deployment and its backup (folders `data` and `bk`), and its state, made once."""
    root = tmp_path_factory.mktemp("template")
    settings = _sqlite(root / "data")
    build_state(settings, embedder, chunker, demo_articles)
    before = state_of(settings)
    before["files"] = {k: v for k, v in before["files"].items() if not k.endswith(".key")}  # secrets stay out
    backup(settings, root / "bk")
    return root, before


@pytest.fixture
def backed_up(
    template: tuple[Path, dict[str, Any]], tmp_path: Path, demo_articles: list[Article]
) -> tuple[Settings, Path, dict[str, Any]]:
    """A copy of the template deployment and its backup; the deployment was then damaged."""
    root, before = template
    shutil.copytree(root / "data", tmp_path / "data")
    shutil.copytree(root / "bk", tmp_path / "bk")
    settings = _sqlite(tmp_path / "data")
    damage(settings, demo_articles[0].id)
    return settings, tmp_path / "bk", before


def _sqlite(data: Path) -> Settings:
    return Settings.from_env({"DATA_DIR": str(data), "DATABASE_URL": f"sqlite:///{data / 'briefing.db'}"})


@SLOW
def test_a_tampered_partial_or_newer_backup_is_refused(
    backed_up: tuple[Settings, Path, dict[str, Any]],
) -> None:
    settings, bk, _ = backed_up
    damaged = state_of(settings)
    gguf = next(bk.rglob("adapter.gguf"))
    original = gguf.read_bytes()
    gguf.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(
        BackupError, match=r"changed since the backup was written: data/adapters/.*adapter.gguf"
    ):
        restore(settings, bk, force=True)
    gguf.write_bytes(original)

    (bk / "qdrant" / "meta.json").rename(bk / "meta.json.aside")
    with pytest.raises(
        BackupError, match=r"qdrant/meta.json \(missing\).*meta.json.aside \(not in the manifest\)"
    ):
        restore(settings, bk, force=True)
    (bk / "meta.json.aside").rename(bk / "qdrant" / "meta.json")

    manifest = json.loads((bk / "manifest.json").read_text())
    (bk / "manifest.json").write_text(json.dumps({**manifest, "schema_head": "0099_from_the_future"}))
    with pytest.raises(BackupError, match="schema 0099_from_the_future is newer than this version knows"):
        restore(settings, bk, force=True)
    (bk / "manifest.json").unlink()
    with pytest.raises(BackupError, match=r"not a complete backup: it has no manifest.json"):
        restore(settings, bk, force=True)
    assert state_of(settings) == damaged  # nothing was touched


@SLOW
def test_a_running_holder_of_the_embedded_store_gets_a_clear_message(
    backed_up: tuple[Settings, Path, dict[str, Any]], tmp_path: Path
) -> None:
    settings, bk, _ = backed_up
    hold = "import sys, time; from qdrant_client import QdrantClient; c = QdrantClient(path=sys.argv[1]); "
    hold += "print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, settings.qdrant.path], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(BackupError, match=r"in use by a running process.*stop it first"):
            restore(settings, bk, force=True)
        with pytest.raises(BackupError, match=r"in use by a running process.*QDRANT_URL"):
            backup(settings, tmp_path / "bk2")
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "bk2").exists() and not list(tmp_path.glob(".bk2.partial-*"))


@SLOW
def test_restore_killed_before_its_commit_leaves_the_previous_state(
    backed_up: tuple[Settings, Path, dict[str, Any]],
) -> None:
    settings, bk, before = backed_up
    damaged = state_of(settings)
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.database_url}
    env.pop("QDRANT_URL", None)
    env.pop("QDRANT_PATH", None)
    journal = settings.data_dir / JOURNAL
    process = subprocess.Popen([BRIEFING, "restore", str(bk), "--force"], env=env)
    deadline = time.monotonic() + 60
    while not journal.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    process.send_signal(signal.SIGKILL)  # staging: it copies and migrates the database beside the live one
    assert process.wait() == -signal.SIGKILL
    assert json.loads(journal.read_text())["state"] == "staging"

    assert state_of(settings) == damaged  # the previous state, whole and usable
    with pytest.raises(BackupError, match="was interrupted here: run `briefing restore` again"):
        backup(settings, bk.parent / "bk2")  # not of a half-restored deployment

    result = subprocess.run(
        [BRIEFING, "restore", str(bk), "--force"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "dropped what the interrupted restore" in result.stdout
    assert state_of(settings) == before


def test_postgresql_restore_killed_in_its_transaction_leaves_the_previous_state(tmp_path: Path) -> None:
    """SIGKILL while the restoring transaction waits on a reader's lock: psql dies with the
    restore, PostgreSQL rolls the transaction back, and the damaged-but-previous state stays."""
    for url in _database("postgresql", tmp_path):
        settings = Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": url})
        engine = connect(url)
        migrate(engine)
        from server.readers import parse_readers
        from server.stores import Readers

        Readers(engine).load(parse_readers((DEMO / "readers.jsonl").read_text(encoding="utf-8")), NOW)
        backup(settings, tmp_path / "bk")
        with engine.begin() as connection:
            events = connection.execute(text("select count(*) from events")).scalar_one()
            connection.execute(text("delete from events"))
        env = {**os.environ, "DATA_DIR": str(settings.data_dir), "DATABASE_URL": url}
        with engine.connect() as reader:
            reader.execute(text("lock table readers in access share mode"))  # held until rollback
            process = subprocess.Popen([BRIEFING, "restore", str(tmp_path / "bk"), "--force"], env=env)
            _wait_for(partial(_restores, engine, waiting=True), process)
            tools = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            assert [Path(f"/proc/{pid}/comm").read_text().strip() for pid in tools] == ["psql"]
            process.send_signal(signal.SIGKILL)
            assert process.wait() == -signal.SIGKILL
            _wait_for(partial(_gone, int(tools[0])))  # psql died with it
            reader.rollback()  # the backend goes on, finds its client gone and rolls back
        _wait_for(lambda: not _restores(engine, waiting=False))  # noqa: B023
        with engine.connect() as connection:
            assert connection.execute(text("select count(*) from events")).scalar_one() == 0
        assert json.loads((settings.data_dir / JOURNAL).read_text())["state"] == "staged"

        restore(settings, tmp_path / "bk", force=True)
        with engine.connect() as connection:
            assert connection.execute(text("select count(*) from events")).scalar_one() == events > 0
        engine.dispose()


def _restores(engine: Any, *, waiting: bool) -> int:
    """Transactions restoring this schema (waiting on a lock, or at all) PostgreSQL is running."""
    sql = "select count(*) from pg_stat_activity where query like :restoring"
    sql += " and wait_event_type = 'Lock'" if waiting else ""
    with engine.connect() as connection:
        schema = connection.execute(text("select current_schema()")).scalar_one()
        restoring = f'DROP SCHEMA IF EXISTS "{schema}"%'
        return int(connection.execute(text(sql), {"restoring": restoring}).scalar_one())


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_for(condition: Callable[[], object], process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert process is None or process.poll() is None, "the restore ended on its own"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@SLOW
def test_a_crash_after_the_commit_is_finished_by_the_next_restore(
    backed_up: tuple[Settings, Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, bk, before = backed_up
    moved: list[str] = []
    real_move_in = backup_journal.move_in

    def crash_at_the_adapters(move: Any) -> None:
        if move.target.endswith("adapters"):
            raise SystemExit("crashed half-way through the swaps")
        moved.append(move.target)
        real_move_in(move)

    monkeypatch.setattr(backup_journal, "move_in", crash_at_the_adapters)
    with pytest.raises(SystemExit):
        restore(settings, bk, force=True)
    monkeypatch.undo()
    database = str(settings.data_dir / "briefing.db")
    assert moved == [database, settings.qdrant.path]  # the database and the store are in, not adapters

    reports: list[str] = []
    restore(settings, bk, force=True, report=reports.append)
    assert reports and reports[0].startswith("finished the interrupted restore")
    assert state_of(settings) == before


def test_the_commands_on_a_deployment_without_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI end to end on a fresh SQLite deployment (no store yet): the backup says what it
    holds, a used folder is refused, and so is a restore onto another database engine."""
    from click.testing import CliRunner

    from server.cli import main

    data = tmp_path / "data"
    monkeypatch.setenv("DATA_DIR", str(data))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{data / 'briefing.db'}")
    for name in ("QDRANT_URL", "QDRANT_PATH"):
        monkeypatch.delenv(name, raising=False)
    engine = connect(f"sqlite:///{data / 'briefing.db'}")
    migrate(engine)
    engine.dispose()
    runner = CliRunner()
    for command, words in (("backup", "secrets"), ("restore", "--force")):
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and words in result.output

    result = runner.invoke(main, ["backup", str(tmp_path / "bk")])
    assert result.exit_code == 0, result.output
    assert "sqlite database at schema" in result.output and "none vectors" in result.output
    assert json.loads((tmp_path / "bk" / "manifest.json").read_text())["vectors"] == "none"
    result = runner.invoke(main, ["backup", str(tmp_path / "bk")])
    assert result.exit_code == 1 and "already exists and is not an empty folder" in result.output

    fresh = tmp_path / "fresh"  # a new machine: restore makes DATA_DIR
    monkeypatch.setenv("DATA_DIR", str(fresh))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{fresh / 'briefing.db'}")
    result = runner.invoke(main, ["restore", str(tmp_path / "bk")])
    assert result.exit_code == 0 and "restored bk-" in result.output, result.output
    assert sorted(p.name for p in fresh.iterdir()) == ["briefing.db"]

    monkeypatch.setenv("DATABASE_URL", PG_URL)
    result = runner.invoke(main, ["restore", str(tmp_path / "bk")])
    assert result.exit_code == 1
    assert "the backup is of a sqlite database and DATABASE_URL is postgresql" in result.output


@pytest.mark.skipif(not os.environ.get("QDRANT_URL"), reason="needs a Qdrant server (QDRANT_URL)")
@SLOW
def test_round_trip_on_a_qdrant_server(
    tmp_path: Path, embedder: SentenceTransformerEmbedder, chunker: Chunker, demo_articles: list[Article]
) -> None:
    """Snapshots of the served collections, taken while the server runs, come back over a change."""
    from uuid import uuid4

    prefix = f"bk{uuid4().hex[:8]}"
    url = os.environ["QDRANT_URL"]
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data), "QDRANT_URL": url, "COLLECTION_PREFIX": prefix}
    settings = Settings.from_env({**env, "DATABASE_URL": f"sqlite:///{data / 'briefing.db'}"})
    migrate(connect(settings.database_url))
    config = QdrantConfig(url=url, api_key=os.environ.get("QDRANT_API_KEY"), prefix=prefix)
    index = QdrantIndex.open(config, embedder.dim)
    try:
        indexer = Indexer(index, embedder, chunker)
        assert indexer.ingest(demo_articles[:3]).ok
        before = sorted(r.article.id for r in index.scroll())
        manifest = backup(settings, tmp_path / "bk")
        assert manifest.vectors == "server" and len(manifest.details["aliases"]) == 2
        assert indexer.ingest(demo_articles[3:5]).ok
        restore(settings, tmp_path / "bk", force=True)
        assert sorted(r.article.id for r in index.scroll()) == before
    finally:
        for collection in index.client.get_collections().collections:
            if collection.name.startswith(prefix):
                index.client.delete_collection(collection.name)
        index.close()
