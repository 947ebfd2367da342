"""The `briefing` CLI end to end on an embedded store in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import PARTIAL, main
from tests.factories import make_article

COMMANDS = ["ingest", "search", "stories", "retract", "reindex", "demo", "serve", "token"]


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("QDRANT_URL", raising=False)
    monkeypatch.delenv("QDRANT_PATH", raising=False)
    return CliRunner()


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(runner: CliRunner, command: str | None) -> None:
    result = runner.invoke(main, [command, "--help"] if command else ["--help"])
    assert result.exit_code == 0 and "Usage:" in result.output


def test_ingest_search_stories_retract(runner: CliRunner, tmp_path: Path) -> None:
    good = make_article("cli-1", title="Havnby opens a heated sea bath", section="local")
    broken = {**make_article("cli-2").model_dump(mode="json"), "published_at": "yesterday"}
    feed = tmp_path / "day.jsonl"
    feed.write_text(good.model_dump_json() + "\n" + json.dumps(broken) + "\n")

    result = runner.invoke(main, ["ingest", str(feed)])
    assert result.exit_code == PARTIAL, result.output
    assert f"rejected {feed}:2: published_at:" in result.stderr
    assert "1 new, 0 updated, 0 unchanged, 1 rejected" in result.stdout

    result = runner.invoke(main, ["search", "sea bath", "--section", "local", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[0])["article_id"] == "cli-1"
    assert "no matches" in runner.invoke(main, ["search", "sea bath", "--section", "sport"]).stdout

    assert "1 stories in all" in runner.invoke(main, ["stories"]).stdout
    # a draft in the service's store (the same DATA_DIR database): the CLI's retraction runs the
    # admin API's cascade and retires it for good
    from dataclasses import replace

    from briefing import Status
    from server.container import build_summary_store
    from server.settings import Settings
    from tests.unit.test_summary_store import make_summary

    store = build_summary_store(Settings.from_env())
    draft = store.put(replace(make_summary("cli-1"), id="cli-1--000000000001"))
    result = runner.invoke(main, ["retract", "cli-1", "nope-1"])
    assert "retracted cli-1: 1 summaries retired" in result.stdout, result.output
    assert "nope-1: article 'nope-1' is not in the index" in result.stderr
    assert store.get(draft.id).status is Status.RETRACTED  # type: ignore[union-attr]
    assert "no matches" in runner.invoke(main, ["search", "sea bath"]).stdout


def test_missing_source_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["ingest", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 1 and "no such file or directory" in result.output


def test_store_in_use_by_another_process_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    holder = QdrantClient(path=str(tmp_path / "data" / "qdrant"))  # holds the folder's lock
    try:
        result = runner.invoke(main, ["search", "anything"])
    finally:
        holder.close()
    assert result.exit_code == 1 and "in use by another process" in result.output


def test_token_prints_a_token_the_service_accepts(runner: CliRunner, tmp_path: Path) -> None:
    from server.auth import read_token, secret

    result = runner.invoke(main, ["token", "edith", "--role", "editor"])
    assert result.exit_code == 0, result.output
    actor = read_token(secret(None, tmp_path / "data"), result.output.strip())
    assert (actor.id, actor.role) == ("edith", "editor")
    assert (tmp_path / "data" / "jwt-secret").stat().st_mode & 0o077 == 0  # the key is private
    assert runner.invoke(main, ["token", "x", "--role", "root"]).exit_code == 2
