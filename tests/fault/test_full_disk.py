"""A full disk under DATA_DIR, for real: DATA_DIR is a small tmpfs (skipped with the reason where
this user cannot mount one) that a filler file fills to the last byte while `briefing serve` runs
on it. Event writes and article pushes then fail with a 507 that says the disk is full (not a 500),
every event acknowledged before stays stored, and once the filler is gone the same process stores
again; the SQLite file passes `pragma integrity_check` and the articles pushed before are searchable.
`briefing ingest` on the full disk fails with an error naming it."""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from indexing import QdrantConfig, QdrantIndex, SentenceTransformerEmbedder
from tests.conftest import DEMO
from tests.fault.processes import environment, run, served
from tests.service import auth

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fault,
]  # a service start and a CLI ingest, each loading the embedder
SIZE = "48m"  # the models live outside DATA_DIR: this holds the database, the index and the filler
TRIES = 200  # event batches sent at the full disk before giving up on a refusal


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for DATA_DIR here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    """Write a file until the disk refuses a single byte more."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as handle:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


def _articles(first: int, count: int) -> list[dict[str, Any]]:
    lines = (DEMO / "articles" / "business_culture.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[first : first + count]]


def _events(serial: int, n: int = 100) -> dict[str, Any]:
    at = "2026-11-19T21:00:00+01:00"
    events = [
        {
            "event_id": f"d{serial:04d}-{i:03d}",
            "type": "read",
            "article_id": "bus-0001",
            "at": at,
            "dwell_s": 9.5,
        }
        for i in range(n)
    ]
    return {"events": events}


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 507, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "disk" in answer.json()["detail"] and "full" in answer.json()["detail"]


def test_a_full_disk_refuses_writes_clearly_and_corrupts_nothing(
    disk: Path, embedder: SentenceTransformerEmbedder
) -> None:
    env = environment(disk, f"sqlite:///{disk / 'briefing.db'}")
    reader, admin = auth("r-disk", "reader"), auth("ada", "admin")
    acked: list[str] = []
    with served(env) as server, httpx.Client(base_url=server.base, timeout=60) as client:
        pushed = client.post("/v1/admin/articles", json={"articles": _articles(0, 4)}, headers=admin)
        assert pushed.status_code == 200, pushed.text
        filler = _fill(disk)

        refusal = None
        for serial in range(TRIES):
            answer = client.post("/v1/events", json=_events(serial), headers=reader)
            if answer.status_code != 200:
                refusal = answer
                break
            acked.append(f"d{serial:04d}")
        assert refusal is not None, f"{TRIES} batches went in on a full disk"
        _refused(refusal)
        _refused(client.post("/v1/admin/articles", json={"articles": _articles(4, 4)}, headers=admin))

        filler.unlink()
        assert client.post("/v1/events", json=_events(TRIES), headers=reader).status_code == 200
        acked.append(f"d{TRIES:04d}")
        assert (
            client.post("/v1/admin/articles", json={"articles": _articles(4, 4)}, headers=admin).status_code
            == 200
        )

    _assert_intact(disk, acked, embedder)
    filler = _fill(disk)
    feed = disk.parent / "feed.jsonl"
    feed.write_text("".join(json.dumps(a) + "\n" for a in _articles(8, 8)))
    ingest = run(["ingest", str(feed)], env)
    assert ingest.returncode == 1, ingest.stdout + ingest.stderr
    assert "the disk under DATA_DIR is full" in ingest.stderr, ingest.stderr
    assert "Traceback" not in ingest.stderr, ingest.stderr
    filler.unlink()
    _assert_intact(disk, acked, embedder)


def _assert_intact(data_dir: Path, acked: list[str], embedder: SentenceTransformerEmbedder) -> None:
    engine = create_engine(f"sqlite:///{data_dir / 'briefing.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("pragma integrity_check")).scalar() == "ok"
            rows = connection.execute(text("select event_id from events where reader_id = 'r-disk'"))
            batches = {r[0].split("-")[0] for r in rows}
    finally:
        engine.dispose()
    assert set(acked) <= batches  # every acknowledged batch is there
    index = QdrantIndex(QdrantConfig(path=str(data_dir / "qdrant")).connect(), "news")
    try:
        for article in _articles(0, 8):
            hits = index.search(embedder.embed_query(article["title"]), 1)
            assert hits and hits[0].article_id == article["id"], article["title"]
    finally:
        index.close()


def test_installing_an_adapter_on_a_full_disk_leaves_no_folder_and_works_once_freed(
    disk: Path, tmp_path: Path
) -> None:
    from briefing.tuning.registry import install_adapter

    peft, gguf = tmp_path / "peft", tmp_path / "adapter.gguf"
    peft.mkdir()
    (peft / "adapter_config.json").write_text("{}")
    (peft / "adapter_model.safetensors").write_bytes(b"\1" * (256 << 10))  # copied, never read here
    gguf.write_bytes(b"\2" * (256 << 10))
    root, adapter = disk / "adapters", "ad-20261119230000-abc123"
    root.mkdir()
    filler = _fill(disk)
    with pytest.raises(OSError) as full:
        install_adapter(root, adapter, peft, gguf)
    assert "No space left on device" in str(full.value)  # copytree's Error lists each file's errno 28
    assert list(root.iterdir()) == []  # no adapter folder and no staging folder left behind
    filler.unlink()
    assert install_adapter(root, adapter, peft, gguf) == adapter
    assert (root / adapter / "adapter.gguf").read_bytes() == gguf.read_bytes()
