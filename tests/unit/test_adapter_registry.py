"""The `AdapterRegistry` contract, run on every registry (in memory, SQLite, PostgreSQL); then what
SQL adds (audit entries in the change's transaction, one promoted row enforced by the database,
a kill -9 midway leaves a consistent registry) and the adapter files (`install_adapter`, and
`install_adapter_set` for a set with one part per language)."""

from __future__ import annotations

import queue
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text, update

from briefing.tuning.registry import (
    AdapterNotFound,
    AdapterRecord,
    AdapterRegistry,
    AdapterState,
    InMemoryAdapterRegistry,
    adapter_files,
    adapter_parts,
    hash_file,
    install_adapter,
    install_adapter_set,
    languages_of,
    layout_of,
    new_adapter_id,
    sweep_adapters,
)
from tests.conftest import DATABASES, migrated

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 10, 3, 0, tzinfo=UTC)
WAIT_S = 60.0  # the most a poll below waits: a bound for a stuck test, not a speed assumption


def candidate(minutes: int = 0, **changes: Any) -> AdapterRecord:
    at = T0 + timedelta(minutes=minutes)
    adapter_id = new_adapter_id(at)
    fields: dict[str, Any] = {
        "id": adapter_id,
        "base_model": "packaged:SmolLM2-135M-Instruct",
        "base_hash": "0123456789abcdef",
        "snapshot_id": "ds-0123456789ab",
        "hyper": {"rank": 16, "target_modules": ("q_proj", "v_proj")},
        "report": None,
        "state": AdapterState.CANDIDATE,
        "created_at": at,
        "promoted_at": None,
        "path": adapter_id,
        "previous": None,
    }
    return AdapterRecord(**(fields | changes))


@pytest.fixture(params=["memory", *(f"sql-{kind}" for kind in DATABASES)])
def handles(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[AdapterRegistry, ...]]:
    """Two handles on one registry; the SQL ones on two engines, as two processes would be."""
    if request.param == "memory":
        memory = InMemoryAdapterRegistry()
        yield memory, memory
        return
    from server.adapters import SqlAdapterRegistry
    from server.db import connect

    for engine in migrated(request.param.removeprefix("sql-"), tmp_path):
        other = connect(engine.url.render_as_string(hide_password=False))
        yield SqlAdapterRegistry(engine), SqlAdapterRegistry(other)
        other.dispose()


@pytest.fixture
def registry(handles: tuple[AdapterRegistry, ...]) -> AdapterRegistry:
    return handles[0]


def states(registry: AdapterRegistry) -> dict[str, AdapterState]:
    return {r.id: r.state for r in registry.all()}


# The contract ------------------------------------------------------------------------------------


def test_a_candidate_round_trips_and_all_lists_newest_first(registry: AdapterRegistry) -> None:
    old, new = candidate(0), candidate(5, report={"promote": False})
    stored = registry.add(old)
    assert stored.hyper == {"rank": 16, "target_modules": ["q_proj", "v_proj"]}  # as JSON gives it back
    assert registry.get(old.id) == stored
    assert registry.add(new) == registry.get(new.id)
    assert [r.id for r in registry.all()] == [new.id, old.id]
    assert registry.get("ad-20260101000000-000000") is None
    assert registry.promoted() is None and registry.version() == 0


def test_add_refuses_a_known_id_a_non_candidate_and_a_path_outside_the_root(
    registry: AdapterRegistry,
) -> None:
    record = registry.add(candidate())
    with pytest.raises(ValueError, match="already registered"):
        registry.add(record)
    with pytest.raises(ValueError, match="add a candidate"):
        registry.add(candidate(1, state=AdapterState.PROMOTED))
    with pytest.raises(ValueError, match="inside the adapters root"):
        registry.add(candidate(2, path="../elsewhere"))
    with pytest.raises(ValueError, match="not like"):
        registry.add(candidate(3, id="latest"))
    assert [r.id for r in registry.all()] == [record.id]


def test_promote_retires_the_old_one_and_remembers_it(registry: AdapterRegistry) -> None:
    first, second = registry.add(candidate(0)), registry.add(candidate(1))
    one = registry.promote(first.id, "ada")
    assert (one.state, one.previous, registry.version()) == (AdapterState.PROMOTED, None, 1)
    assert one.promoted_at is not None and one == registry.get(first.id) == registry.promoted()
    two = registry.promote(second.id, "ada")
    assert (two.state, two.previous, registry.version()) == (AdapterState.PROMOTED, first.id, 2)
    assert states(registry) == {first.id: AdapterState.RETIRED, second.id: AdapterState.PROMOTED}
    assert registry.promoted() == two


def test_promoting_the_promoted_one_changes_nothing(registry: AdapterRegistry) -> None:
    record = registry.promote(registry.add(candidate()).id, "ada")
    assert registry.promote(record.id, "ada") == record
    assert registry.version() == 1


def test_promoting_an_unknown_id_is_a_clear_error_and_changes_nothing(registry: AdapterRegistry) -> None:
    record = registry.promote(registry.add(candidate()).id, "ada")
    with pytest.raises(AdapterNotFound, match="no adapter 'ad-20990101000000-abcdef' is registered"):
        registry.promote("ad-20990101000000-abcdef", "ada")
    with pytest.raises(KeyError):  # AdapterNotFound is a KeyError for callers that catch those
        registry.set_report("ad-20990101000000-abcdef", {})
    assert registry.promoted() == record and registry.version() == 1


def test_rollback_restores_the_previous_adapter_step_by_step(registry: AdapterRegistry) -> None:
    a, b, c = (registry.add(candidate(m)) for m in range(3))
    for record in (a, b, c):
        registry.promote(record.id, "ada")
    back = registry.rollback("ada")
    assert back is not None and back.id == b.id and back.previous == a.id
    assert states(registry) == {a.id: "retired", b.id: "promoted", c.id: "retired"}
    again = registry.rollback("ada")
    assert again is not None and again.id == a.id and registry.promoted() == again
    assert registry.version() == 5


def test_rolling_back_the_first_promoted_adapter_brings_the_base_model_back(
    registry: AdapterRegistry,
) -> None:
    assert registry.rollback("ada") is None and registry.version() == 0  # nothing promoted: no change
    record = registry.promote(registry.add(candidate()).id, "ada")
    assert registry.rollback("ada") is None  # the base model served before it
    assert registry.promoted() is None and registry.version() == 2
    assert states(registry) == {record.id: "retired"}
    assert registry.rollback("ada") is None and registry.version() == 2


def test_a_retired_adapter_can_be_promoted_again(registry: AdapterRegistry) -> None:
    a, b = registry.add(candidate(0)), registry.add(candidate(1))
    registry.promote(a.id, "ada")
    registry.promote(b.id, "ada")
    again = registry.promote(a.id, "ada")
    assert (again.state, again.previous) == (AdapterState.PROMOTED, b.id)
    assert states(registry) == {a.id: "promoted", b.id: "retired"} and registry.version() == 3


def test_set_report_stores_the_gate_report_in_any_state(registry: AdapterRegistry) -> None:
    record = registry.add(candidate())
    report = {"promote": True, "reasons": ("better",), "n": 40}
    assert registry.set_report(record.id, report).report == {"promote": True, "reasons": ["better"], "n": 40}
    registry.promote(record.id, "ada")
    updated = registry.set_report(record.id, {"promote": True, "n": 41})
    assert updated == registry.get(record.id) and updated.state is AdapterState.PROMOTED
    assert registry.version() == 1  # a report is no promote


def test_racing_promotes_leave_one_promoted_and_each_previous_intact(
    handles: tuple[AdapterRegistry, AdapterRegistry],
) -> None:
    first, second = handles
    base = first.promote(first.add(candidate(0)).id, "ada")
    for round_ in range(3):
        b, c = first.add(candidate(10 * round_ + 1)), first.add(candidate(10 * round_ + 2))
        version = first.version()
        barrier = threading.Barrier(2)

        def promote(
            registry: AdapterRegistry, adapter_id: str, barrier: threading.Barrier = barrier
        ) -> AdapterRecord:
            barrier.wait(timeout=WAIT_S)  # both start together: the promotes overlap
            return registry.promote(adapter_id, "racer", role="job")

        with ThreadPoolExecutor(2) as pool:
            results = [
                f.result() for f in [pool.submit(promote, first, b.id), pool.submit(promote, second, c.id)]
            ]
        winner = first.promoted()
        assert winner is not None and winner.id in (b.id, c.id)
        loser = first.get(c.id if winner.id == b.id else b.id)
        assert loser is not None and loser.state is AdapterState.RETIRED
        assert (winner.previous, loser.previous) == (loser.id, base.id)  # promoted one after the other
        assert sorted(r.id for r in results) == sorted([b.id, c.id]) and first.version() == version + 2
        assert [s for s in states(first).values() if s is AdapterState.PROMOTED] == ["promoted"]
        back = [second.rollback("ada"), second.rollback("ada")]  # steps back through both
        assert [r.id if r else None for r in back] == [loser.id, base.id] and first.promoted() == back[1]


# SQL: audit, the database's own guard, crashes ---------------------------------------------------


@pytest.fixture(params=DATABASES)
def sql(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Engine]]:
    from server.adapters import SqlAdapterRegistry

    for engine in migrated(request.param, tmp_path):
        yield SqlAdapterRegistry(engine), engine


def audit(engine: Engine) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    from server.db import AuditRow

    query = select(AuditRow.actor, AuditRow.role, AuditRow.action, AuditRow.target, AuditRow.detail)
    with engine.connect() as connection:
        found = connection.execute(query.where(AuditRow.action.like("adapter.%")).order_by(AuditRow.id))
        return [tuple(r) for r in found]


def test_promote_and_rollback_write_their_audit_entries(sql: tuple[Any, Engine]) -> None:
    registry, engine = sql
    a, b = registry.add(candidate(0)), registry.add(candidate(1))
    registry.promote(a.id, "ada")
    registry.promote(b.id, "nightly-tune", role="job")
    registry.promote(b.id, "ada")  # changes nothing, so no entry
    registry.rollback("bob")
    registry.rollback("bob")  # nothing before a: the base model serves again
    registry.rollback("bob")  # nothing promoted: no entry
    assert audit(engine) == [
        ("ada", "admin", "adapter.promote", a.id, {"promoted": a.id, "retired": None, "version": 1}),
        ("nightly-tune", "job", "adapter.promote", b.id, {"promoted": b.id, "retired": a.id, "version": 2}),
        ("bob", "admin", "adapter.rollback", b.id, {"promoted": a.id, "retired": b.id, "version": 3}),
        ("bob", "admin", "adapter.rollback", a.id, {"promoted": None, "retired": a.id, "version": 4}),
    ]


def test_a_promote_that_fails_midway_changes_nothing(
    sql: tuple[Any, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, engine = sql
    a, b = registry.add(candidate(0)), registry.add(candidate(1))
    registry.promote(a.id, "ada")

    def broken(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("server.adapters._audit", broken)  # the last step of the transaction
    with pytest.raises(OSError, match="disk full"):
        registry.promote(b.id, "ada")
    assert states(registry) == {a.id: "promoted", b.id: "candidate"} and registry.version() == 1
    assert len(audit(engine)) == 1


def test_the_database_refuses_a_second_promoted_row(sql: tuple[Any, Engine]) -> None:
    from sqlalchemy.exc import IntegrityError

    from server.db import AdapterRow

    registry, engine = sql
    a, b = registry.add(candidate(0)), registry.add(candidate(1))
    registry.promote(a.id, "ada")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(update(AdapterRow).where(AdapterRow.id == b.id).values(state="promoted"))
    assert registry.promoted() == registry.get(a.id)


PROMOTER = """
import sys
from server.adapters import SqlAdapterRegistry
from server.db import connect
registry = SqlAdapterRegistry(connect(sys.argv[1]))
ids = sys.argv[2:]
for i in range(10**9):
    if i % 4 == 3:
        registry.rollback("looper")
    else:
        registry.promote(ids[i % len(ids)], "looper", role="job")
    if i == 5:
        print("looping", flush=True)
"""


def forward(process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    for line in process.stdout or ():
        lines.put(line.strip())


def test_a_promoter_killed_with_sigkill_leaves_a_consistent_registry(tmp_path: Path) -> None:
    from server.adapters import SqlAdapterRegistry

    url = f"sqlite:///{tmp_path / 'briefing.db'}"
    engine = next(migrated("sqlite", tmp_path))
    registry = SqlAdapterRegistry(engine)
    ids = [registry.add(candidate(m)).id for m in range(3)]
    pace = random.Random(18)
    for _ in range(2):
        looper = subprocess.Popen(
            [sys.executable, "-c", PROMOTER, url, *ids], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=forward, args=(looper, lines), daemon=True).start()
        try:
            assert lines.get(timeout=WAIT_S) == "looping"
            threading.Event().wait(pace.uniform(0.05, 0.3))  # land somewhere inside a transaction
        finally:
            looper.kill()  # SIGKILL: no rollback, no cleanup; SQLite's journal undoes the rest
            looper.wait(timeout=WAIT_S)
        entries = [detail for *_, detail in audit(engine)]
        promoted = [r for r in registry.all() if r.state is AdapterState.PROMOTED]
        assert len(promoted) == 1 and registry.version() == len(entries) > 5
        # The log replays to the stored state: versions 1..n, each change retiring the adapter
        # the change before it promoted, the last one promoting the one promoted now.
        assert [e["version"] for e in entries] == list(range(1, len(entries) + 1))
        assert [e["retired"] for e in entries] == [None, *(e["promoted"] for e in entries[:-1])]
        assert entries[-1]["promoted"] == promoted[0].id
        with engine.connect() as connection:
            assert connection.execute(text("pragma integrity_check")).scalar_one() == "ok"
    engine.dispose()


# Files ------------------------------------------------------------------------------------------


def trained(tmp_path: Path) -> tuple[Path, Path]:
    peft_dir, gguf = tmp_path / "out" / "adapter", tmp_path / "out" / "adapter.gguf"
    peft_dir.mkdir(parents=True)
    (peft_dir / "adapter_config.json").write_text('{"r": 16}')
    (peft_dir / "adapter_model.safetensors").write_bytes(b"\x00" * 1024)
    gguf.write_bytes(b"GGUF" + b"\x01" * 64)
    return peft_dir, gguf


def test_install_adapter_copies_both_forms_and_adapter_files_finds_them(tmp_path: Path) -> None:
    peft_dir, gguf = trained(tmp_path)
    root = tmp_path / "adapters"
    record = candidate()
    path = install_adapter(root, record.id, peft_dir, gguf)
    assert path == record.id and sorted(p.name for p in root.iterdir()) == [record.id]  # no staging left
    installed_peft, installed_gguf = adapter_files(root, record)
    assert (
        installed_peft == root / record.id / "adapter" and installed_gguf == root / record.id / "adapter.gguf"
    )
    assert (installed_peft / "adapter_model.safetensors").read_bytes() == b"\x00" * 1024
    assert hash_file(installed_gguf) == hash_file(gguf) and len(hash_file(gguf)) == 16
    with pytest.raises(FileExistsError):
        install_adapter(root, record.id, peft_dir, gguf)


def test_install_adapter_refuses_what_is_not_an_adapter(tmp_path: Path) -> None:
    peft_dir, gguf = trained(tmp_path)
    root, adapter_id = tmp_path / "adapters", new_adapter_id(T0)
    with pytest.raises(ValueError, match=r"no adapter_config\.json"):
        install_adapter(root, adapter_id, peft_dir.parent, gguf)
    with pytest.raises(ValueError, match="is not a file"):
        install_adapter(root, adapter_id, peft_dir, tmp_path / "missing.gguf")
    with pytest.raises(ValueError, match="not like"):
        install_adapter(root, "../escape", peft_dir, gguf)
    with pytest.raises(ValueError, match="inside the adapters root"):
        adapter_files(root, candidate(path="/etc"))


def test_a_copy_that_fails_midway_leaves_no_adapter_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    peft_dir, gguf = trained(tmp_path)
    root, adapter_id = tmp_path / "adapters", new_adapter_id(T0)

    def full(*_: Any, **__: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(shutil, "copy2", full)  # after the peft folder was copied
    with pytest.raises(OSError, match="No space left"):
        install_adapter(root, adapter_id, peft_dir, gguf)
    assert list(root.iterdir()) == []


def test_sweep_removes_what_a_crash_left_and_keeps_registered_adapters(tmp_path: Path) -> None:
    """A kill -9 inside `install_adapter` leaves its staging folder; one between the install and
    `registry.add` leaves a folder no record names. The next tune sweeps both, nothing else."""
    peft_dir, gguf = trained(tmp_path)
    root, registry = tmp_path / "adapters", InMemoryAdapterRegistry()
    kept, orphan = candidate(), candidate(minutes=1)
    install_adapter(root, kept.id, peft_dir, gguf)
    registry.add(kept)
    install_adapter(root, orphan.id, peft_dir, gguf)  # the crash came before registry.add
    staging = root / f".{new_adapter_id(T0 + timedelta(minutes=2))}.k3j9x"
    (staging / "adapter").mkdir(parents=True)
    (root / "notes").mkdir()  # not ours to judge: no adapter id
    assert sweep_adapters(root, registry) == sorted([staging.name, orphan.id])
    assert sorted(p.name for p in root.iterdir()) == sorted([kept.id, "notes"])
    assert adapter_files(root, kept)[1].read_bytes() == gguf.read_bytes()
    assert sweep_adapters(root, registry) == [] and sweep_adapters(tmp_path / "none", registry) == []


def _part(tmp_path: Path, language: str) -> tuple[Path, Path]:
    peft_dir, gguf = tmp_path / language / "adapter", tmp_path / language / "adapter.gguf"
    peft_dir.mkdir(parents=True)
    (peft_dir / "adapter_config.json").write_text(f'{{"r": 4, "language": "{language}"}}')
    gguf.write_bytes(b"GGUF" + language.encode() * 16)
    return peft_dir, gguf


def test_an_adapter_set_installs_a_part_per_language_and_reads_back_as_one_record(tmp_path: Path) -> None:
    root, registry = tmp_path / "adapters", InMemoryAdapterRegistry()
    parts = {lang: _part(tmp_path / "runs", lang) for lang in ("nb", "en")}
    record = candidate(hyper={"rank": 4, "layout": "per-language", "languages": ["en", "nb"]})
    assert install_adapter_set(root, record.id, parts) == record.id
    assert sorted(p.name for p in root.iterdir()) == [record.id]  # one rename: no staging left
    stored = registry.add(record)
    assert layout_of(stored) == "per-language" and languages_of(stored) == ("en", "nb")
    found = adapter_parts(root, stored)
    assert [p.language for p in found] == ["en", "nb"]
    for part in found:
        assert part.peft_dir == root / record.id / str(part.language) / "adapter"
        assert part.gguf_file.read_bytes() == parts[str(part.language)][1].read_bytes()
        assert str(part.language) in (part.peft_dir / "adapter_config.json").read_text()
    with pytest.raises(ValueError, match="use adapter_parts"):
        adapter_files(root, stored)  # a set has no single file to load
    with pytest.raises(FileExistsError):
        install_adapter_set(root, record.id, parts)
    # the tune's sweep keeps a registered set and removes an orphaned one whole
    orphan = candidate(minutes=1)
    install_adapter_set(root, orphan.id, parts)
    assert sweep_adapters(root, registry) == [orphan.id]
    assert [p.gguf_file.is_file() for p in adapter_parts(root, stored)] == [True, True]


def test_an_old_record_without_a_layout_is_a_joint_adapter(tmp_path: Path) -> None:
    peft_dir, gguf = trained(tmp_path)
    root, old = tmp_path / "adapters", candidate()  # hyper as records were before adapter sets
    install_adapter(root, old.id, peft_dir, gguf)
    assert "layout" not in old.hyper and layout_of(old) == "joint" and languages_of(old) == ()
    (part,) = adapter_parts(root, old)
    assert part.language is None and (part.peft_dir, part.gguf_file) == adapter_files(root, old)


def test_an_adapter_set_refuses_parts_that_are_not_languages_and_an_empty_set(tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    part = _part(tmp_path, "en")
    with pytest.raises(ValueError, match="not a language code"):
        install_adapter_set(root, new_adapter_id(T0), {"../en": part})
    with pytest.raises(ValueError, match="no parts"):
        install_adapter_set(root, new_adapter_id(T0), {})
    with pytest.raises(ValueError, match="names no languages"):
        adapter_parts(root, candidate(hyper={"layout": "per-language"}))
    with pytest.raises(ValueError, match="unknown layout"):
        layout_of(candidate(hyper={"layout": "mixed"}))
    assert not root.exists() or list(root.iterdir()) == []
