"""QDRANT_SHARDS / QDRANT_REPLICATION / QDRANT_WRITE_CONSISTENCY: a Qdrant cluster's collections are
created with them, and the embedded store, which has no shards, is unaffected.

No Qdrant server runs here (DESIGN §3), so the server side is a stand-in that records the REST
requests qdrant-client sends and answers them the way Qdrant does: a fake of what cannot run here.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from indexing import QdrantConfig, QdrantIndex
from server.settings import Settings

LAYOUT = {"QDRANT_SHARDS": "6", "QDRANT_REPLICATION": "2", "QDRANT_WRITE_CONSISTENCY": "1"}


class _RecordingQdrant(http.server.BaseHTTPRequestHandler):
    """Empty server: no collections or aliases; every write succeeds and is recorded."""

    created: dict[str, dict[str, Any]]

    def do_GET(self) -> None:
        if self.path.startswith("/aliases") or self.path.endswith("/aliases"):
            self._answer({"aliases": []})
        elif self.path.startswith("/collections"):
            self._answer({"collections": []})
        else:  # the client's version check
            self._answer({"title": "qdrant", "version": "1.20.0"}, wrap=False)

    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[-1] == "index":
            self._answer({"operation_id": 0, "status": "completed"})
            return
        self.created[parts[1]] = body
        self._answer(True)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(True)

    def _answer(self, result: object, wrap: bool = True) -> None:
        data = json.dumps({"result": result, "status": "ok", "time": 0.0} if wrap else result).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def qdrant_server() -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    created: dict[str, dict[str, Any]] = {}
    handler = type("Handler", (_RecordingQdrant,), {"created": created})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", created
    server.shutdown()
    server.server_close()


def test_a_server_gets_collections_with_the_configured_layout(
    qdrant_server: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    url, created = qdrant_server
    config = Settings.from_env({"QDRANT_URL": url, **LAYOUT}).qdrant
    # as server.container builds it; the staged generation is what `ensure` and re-index create
    QdrantIndex(config.connect(), config.prefix, layout=config.layout()).new_generation(8)
    assert set(created) == {"news_chunks_g1", "news_articles_g1"}
    for body in created.values():
        assert (body["shard_number"], body["replication_factor"]) == (6, 2)
        assert body["write_consistency_factor"] == 1


def test_unset_layout_leaves_the_servers_defaults(
    qdrant_server: tuple[str, dict[str, dict[str, Any]]],
) -> None:
    url, created = qdrant_server
    config = Settings.from_env({"QDRANT_URL": url}).qdrant
    QdrantIndex(config.connect(), config.prefix, layout=config.layout()).new_generation(8)
    assert created and all("shard_number" not in body for body in created.values())


def test_the_embedded_store_ignores_the_layout() -> None:
    config = Settings.from_env({"QDRANT_PATH": ":memory:", **LAYOUT}).qdrant
    assert config.layout() == {"shard_number": 6, "replication_factor": 2, "write_consistency_factor": 1}
    index = QdrantIndex.open(config, dim=8)
    assert index.dim() == 8 and index.exists()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"QDRANT_SHARDS": "0"}, "QDRANT_SHARDS must be a positive integer"),
        ({"QDRANT_REPLICATION": "two"}, "QDRANT_REPLICATION must be an integer"),
        ({"QDRANT_REPLICATION": "2", "QDRANT_WRITE_CONSISTENCY": "3"}, "cannot wait for 3 copies"),
    ],
)
def test_a_bad_layout_is_refused_with_the_variable_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_config_without_layout_is_unchanged() -> None:
    assert QdrantConfig().layout() == {}
