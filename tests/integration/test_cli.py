"""The `briefing` CLI end to end on an embedded store in a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import PARTIAL, main
from tests.factories import make_article

COMMANDS = sorted(main.commands)  # every command, those added later too (worker, backup, restore, ...)


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
    assert runner.invoke(main, ["retract", "cli-1"]).exit_code == 2  # no reason: nothing retracted
    assert runner.invoke(main, ["retract", "cli-1", "--reason", " \t "]).exit_code == 2
    result = runner.invoke(main, ["retract", "cli-1", "nope-1", "--reason", "wrong  figures\nin the lead"])
    assert "retracted cli-1: 1 summaries retired" in result.stdout, result.output
    assert "nope-1: article 'nope-1' is not in the index" in result.stderr
    assert store.get(draft.id).status is Status.RETRACTED  # type: ignore[union-attr]
    from server.container import build_engine
    from server.stores import AuditLog

    (entry,) = AuditLog(build_engine(Settings.from_env())).entries("cli-1")
    assert (entry["action"], entry["detail"]["reason"]) == ("retract", "wrong figures in the lead")
    assert "no matches" in runner.invoke(main, ["search", "sea bath"]).stdout


def test_recommend_json_is_one_document_a_program_can_read(runner: CliRunner, tmp_path: Path) -> None:
    feed = tmp_path / "day.jsonl"
    articles = [
        # distinct bodies: the factory's shared body would make them one story (one candidate)
        make_article(
            "cli-a",
            title="Havnby opens a heated sea bath",
            body="The sea bath at Nordkaia opens. " * 5,
            published_at=2,
        ),
        make_article(
            "cli-b",
            title="Ferry timetable changes",
            body="Skjærøy ferries leave later from Monday. " * 5,
            section="business",
            published_at=3,
        ),
        make_article("cli-c", title="Old news", published_at=-72),  # outside a first visit's 24 hours
    ]
    feed.write_text("".join(a.model_dump_json() + "\n" for a in articles))
    assert runner.invoke(main, ["ingest", str(feed)]).exit_code == 0

    now = "2026-11-16T12:00:00+00:00"
    result = runner.invoke(main, ["recommend", "nobody", "--json", "--now", now, "-k", "5"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert (body["reader"], body["now"]) == ("nobody", now)
    assert sorted(i["article_id"] for i in body["items"]) == ["cli-a", "cli-b"]
    assert [i["rank"] for i in body["items"]] == [1, 2]
    first = body["items"][0]
    assert isinstance(first["score"], float) and first["update"] is False and first["reason"]
    assert first["url"].startswith("https://news.example/")
    # nothing to recommend is still a document, not a sentence
    later = runner.invoke(main, ["recommend", "nobody", "--json", "--now", "2026-12-24T12:00:00+00:00"])
    assert json.loads(later.stdout)["items"] == []


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


def test_serve_prints_sign_in_links_only_for_the_demo(tmp_path: Path) -> None:
    """Outside --demo the output is a deployment's log: a week-long admin token must not be in it."""
    from server.serve import _links
    from server.settings import Settings

    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "JWT_SECRET": "s" * 40})
    runner = CliRunner()
    with runner.isolation() as (out, _err, *_):
        _links(settings, "0.0.0.0", 8000, demo=False)
        deployed = out.getvalue().decode()
        _links(settings, "127.0.0.1", 8000, demo=True)
        demo = out.getvalue().decode()[len(deployed) :]
    assert "token=" not in deployed and "briefing token NAME" in deployed
    assert demo.count("/login?token=") == 4 and "admin" in demo
