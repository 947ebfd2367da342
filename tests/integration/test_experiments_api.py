"""The experiments API, pages and CLI end to end on litestar's test client, on SQLite and on
PostgreSQL: role boundaries, refused definitions with every reason, the lifecycle with its audit
entries, results (JSON, CSV, page) of planted exposures and clicks against the hand-computed
answer, the sample-ratio banner, and escaping of what product people type.

The service runs over an empty in-memory index: experiments need no articles, and exposures and
events are planted through the store and the event log, as serving and readers would write them.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import TestClient

from briefing import Generator
from indexing import Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder
from recsys import Event, EventType
from server.app import create_app
from server.cli import main
from server.container import build_service
from server.service import Actor, Service
from server.settings import Settings
from tests.conftest import DATABASES, _database
from tests.service import SECRET, auth

PRODUCT, ADMIN = auth("pia", "product"), auth("ada", "admin")
EDITOR, READER = auth("edith", "editor"), auth("r01", "reader")
PIA = Actor("pia", "product")


def definition(key: str, **changes: Any) -> dict[str, Any]:
    return {
        "key": key,
        "hypothesis": "One-sentence summaries get more clicks per visit.",
        "arms": [
            {"name": "control", "weight": 0.5},
            {"name": "one-sentence", "weight": 0.5, "article_prompt": "article-one-sentence"},
        ],
        "primary": "clicks_per_visit",
        "secondary": ["ctr"],
        "guardrails": ["fallback_share", "latency_ms"],
        "layer": key,  # a layer each: the tests' experiments never compete for room
        **changes,
    }


@pytest.fixture(scope="module", params=DATABASES)
def running(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    llamacpp: Generator,
) -> Iterator[tuple[Settings, Service, Litestar]]:
    tmp = tmp_path_factory.mktemp(request.param)
    for url in _database(request.param, tmp):
        env = {"DATA_DIR": str(tmp), "DATABASE_URL": url, "JWT_SECRET": SECRET, "RATE_LIMIT_PER_MINUTE": "0"}
        settings = Settings.from_env(env)
        index = QdrantIndex.open(QdrantConfig(), embedder.dim)
        service = build_service(settings, indexer=Indexer(index, embedder, chunker), generator=llamacpp)
        try:
            yield settings, service, create_app(settings, service)
        finally:
            service.close()
            index.close()
            service.engine.dispose()


@pytest.fixture
def client(running: tuple[Settings, Service, Litestar]) -> Iterator[TestClient[Litestar]]:
    with TestClient(running[2]) as client:
        yield client


@pytest.fixture
def service(running: tuple[Settings, Service, Litestar]) -> Service:
    return running[1]


def plant(service: Service, key: str, readers: dict[str, int], clicks: dict[str, list[int]]) -> datetime:
    """`readers[arm]` readers served one briefing (5 items, 1 fell back) under the arm, reader i
    clicking `clicks[arm][i % len]` times; returns when they were served."""
    e = service.experiments.get(key)
    at = service.clock()
    events = []
    for arm, n in readers.items():
        for i in range(n):
            reader = f"{key}-{arm}-{i}"
            briefing = f"{reader}|{arm}|first"
            service.experiments.expose(reader, {key: e.arm(arm)}, at, briefing, 40.0, 5, 1)
            pattern = clicks[arm]
            events += [
                Event(
                    event_id=f"{reader}-c{c}",
                    reader_id=reader,
                    type=EventType.CLICK,
                    article_id="pol-0001",
                    at=at,
                )
                for c in range(pattern[i % len(pattern)])
            ]
    service.events.add(events)
    return at


# Roles ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/experiments"),
        ("POST", "/v1/experiments"),
        ("GET", "/v1/experiments/nope-nope"),
        ("POST", "/v1/experiments/nope-nope/start"),
        ("GET", "/v1/experiments/nope-nope/results"),
        ("GET", "/product/experiments"),
    ],
)
def test_editors_and_readers_are_refused_everything(
    client: TestClient[Litestar], method: str, path: str
) -> None:
    for headers in (EDITOR, READER):
        response = client.request(method, path, headers=headers, json={} if method == "POST" else None)
        assert response.status_code == 403, (path, response.text)
    assert client.request(method, path).status_code == 401


def test_an_admin_reads_but_cannot_change(client: TestClient[Litestar], service: Service) -> None:
    key = "admin-reads"
    assert client.post("/v1/experiments", json=definition(key), headers=PRODUCT).status_code == 201
    assert client.get("/v1/experiments", headers=ADMIN).status_code == 200
    assert client.get(f"/v1/experiments/{key}/results", headers=ADMIN).status_code == 200
    assert client.post("/v1/experiments", json=definition("admin-writes"), headers=ADMIN).status_code == 403
    for step in ("start", "stop"):
        assert client.post(f"/v1/experiments/{key}/{step}", headers=ADMIN).status_code == 403
    assert client.patch(f"/v1/experiments/{key}", json={"hypothesis": "x"}, headers=ADMIN).status_code == 403
    assert client.get("/product/experiments", headers=ADMIN).status_code == 403  # the pages are product's
    assert service.experiments.get(key).status == "draft"


# Refusals ------------------------------------------------------------------------------------------


def test_a_bad_definition_is_refused_with_every_reason_and_nothing_stored(
    client: TestClient[Litestar], service: Service
) -> None:
    bad = definition(
        "Bad Key!",
        arms=[
            {"name": "control", "weight": 0.6},
            # openai: a backend this deployment does not draft with (it runs llama.cpp)
            {
                "name": "haiku",
                "weight": 0.6,
                "article_prompt": "article-haiku",
                "adapter": "lora-x",
                "backend": "openai",
            },
        ],
        primary="happiness",
        guardrails=["ctr"],
        colour="blue",
    )
    response = client.post("/v1/experiments", json=bad, headers=PRODUCT)
    assert response.status_code == 400, response.text
    reasons = response.json()["reasons"]
    expected = [
        "key:",
        "weights sum to 1.2",
        "article-haiku",
        "lora-x",
        "unknown backend 'openai'; known: llamacpp",
        "happiness",
        "'ctr' is not a guardrail",
        "colour",
    ]
    for fragment in expected:
        assert any(fragment in reason for reason in reasons), (fragment, reasons)
    assert response.json()["detail"] == f"{len(reasons)} problem(s); nothing was changed"
    assert all(e.key != "Bad Key!" for e in service.experiments.list())


def test_changing_the_arms_of_a_running_experiment_is_refused(client: TestClient[Litestar]) -> None:
    key = "running-arms"
    client.post("/v1/experiments", json=definition(key), headers=PRODUCT)
    assert client.post(f"/v1/experiments/{key}/start", headers=PRODUCT).status_code == 200
    arms = [{"name": "control", "weight": 0.2}, {"name": "one-sentence", "weight": 0.8}]
    response = client.patch(f"/v1/experiments/{key}", json={"arms": arms}, headers=PRODUCT)
    assert response.status_code == 400
    assert any(r.startswith("arms:") and "running" in r for r in response.json()["reasons"])
    changed = client.patch(f"/v1/experiments/{key}", json={"hypothesis": "Sharper."}, headers=PRODUCT)
    assert changed.status_code == 200 and changed.json()["hypothesis"] == "Sharper."
    again = client.post(f"/v1/experiments/{key}/start", headers=PRODUCT)
    assert again.status_code == 400 and "only a draft can start" in again.json()["reasons"][0]


# The whole flow ------------------------------------------------------------------------------------


def test_create_start_expose_results_stop_decide(client: TestClient[Litestar], service: Service) -> None:
    key = "flow-clicks"
    created = client.post("/v1/experiments", json=definition(key), headers=PRODUCT)
    assert created.status_code == 201 and created.json()["status"] == "draft"
    edited = client.patch(
        f"/v1/experiments/{key}", json={"secondary": ["ctr", "reads_per_visit"]}, headers=PRODUCT
    )
    assert edited.json()["secondary"] == ["ctr", "reads_per_visit"]
    assert client.post(f"/v1/experiments/{key}/start", headers=PRODUCT).json()["status"] == "running"
    # control readers click 0, 1, 2, ... times (mean 1); one-sentence readers one more (mean 2)
    plant(
        service, key, {"control": 120, "one-sentence": 120}, {"control": [0, 1, 2], "one-sentence": [1, 2, 3]}
    )

    body = client.get(f"/v1/experiments/{key}/results", headers=PRODUCT).json()
    assert body["exposures"] == {"control": 120, "one-sentence": 120}
    assert body["srm"]["mismatch"] is False and body["blocked"] is False
    metrics = {m["name"]: m for m in body["metrics"]}
    assert list(metrics) == ["clicks_per_visit", "ctr", "reads_per_visit", "fallback_share", "latency_ms"]
    (clicks,) = metrics["clicks_per_visit"]["effects"]
    assert (clicks["n_control"], clicks["n_arm"]) == (120, 120)
    assert clicks["mean_control"] == pytest.approx(1.0) and clicks["mean_arm"] == pytest.approx(2.0)
    assert clicks["absolute"] == pytest.approx(1.0) and clicks["relative"] == pytest.approx(1.0)
    assert clicks["ci_low"] > 0 and clicks["p_value"] < 0.001 and clicks["p_adjusted"] >= clicks["p_value"]
    assert clicks["chance_to_win"] > 0.99
    (ctr,) = metrics["ctr"]["effects"]  # clicks over the 5 items each briefing showed
    assert ctr["mean_control"] == pytest.approx(0.2) and ctr["mean_arm"] == pytest.approx(0.4)
    (fallback,) = metrics["fallback_share"]["effects"]
    assert (
        fallback["mean_arm"] == pytest.approx(0.2) and fallback["p_adjusted"] is None
    )  # guardrails: no Holm
    assert body["provenance"]["correction"] == "holm" and body["provenance"]["checker"] == "embedding-lexical"
    assert {look["arm"] for look in body["over_time"]} == {"control", "one-sentence"}

    table = client.get(f"/v1/experiments/{key}/results.csv", headers=PRODUCT)
    assert table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    first = rows[0]
    assert (first["metric"], first["role"], first["arm"]) == ("clicks_per_visit", "primary", "one-sentence")
    assert float(first["absolute"]) == pytest.approx(1.0) and len(rows) == 5

    assert client.post(f"/v1/experiments/{key}/stop", headers=PRODUCT).json()["status"] == "stopped"
    decided = client.post(
        f"/v1/experiments/{key}/decide", json={"arm": "one-sentence"}, headers=PRODUCT
    ).json()
    assert (decided["status"], decided["decision"]) == ("decided", "one-sentence")
    late = client.patch(f"/v1/experiments/{key}", json={"hypothesis": "Too late."}, headers=PRODUCT)
    assert late.status_code == 400
    actions = [e["action"] for e in service.audit.entries(target=key)]
    assert actions == [
        "experiment-decide",
        "experiment-stop",
        "experiment-start",
        "experiment-update",
        "experiment-create",
    ]
    assert {e["actor"] for e in service.audit.entries(target=key)} == {"pia"}


# Pages ---------------------------------------------------------------------------------------------


def test_the_results_page_draws_svg_and_escapes_what_people_typed(
    client: TestClient[Litestar], service: Service
) -> None:
    key = "page-escapes"
    hostile = 'Readers click more <script>window.__x=1</script> & "quote" <img src=x onerror=alert(1)>'
    client.post("/v1/experiments", json=definition(key, hypothesis=hostile), headers=PRODUCT)
    client.post(f"/v1/experiments/{key}/start", headers=PRODUCT)
    plant(service, key, {"control": 60, "one-sentence": 60}, {"control": [0, 1], "one-sentence": [1, 2]})

    page = client.get(f"/product/experiments/{key}", headers=PRODUCT)
    assert page.status_code == 200
    html = page.text
    assert "&lt;script&gt;window.__x=1&lt;/script&gt;" in html and "<script>window.__x" not in html
    assert "<img src=x" not in html and "<script" not in html  # no script at all on the page
    assert (
        html.count("<svg") == 2
        and 'data-testid="effect-chart"' in html
        and 'data-testid="exposure-chart"' in html
    )
    assert 'data-metric="clicks_per_visit"' in html and "minimum 100" in html  # 60 readers an arm
    assert 'data-testid="srm-banner"' not in html
    listed = client.get("/product/experiments", headers=PRODUCT).text
    assert "&lt;script&gt;window.__x" in listed and "<script>window.__x" not in listed


def test_a_sample_ratio_mismatch_blocks_the_results(client: TestClient[Litestar], service: Service) -> None:
    key = "page-srm"
    client.post("/v1/experiments", json=definition(key), headers=PRODUCT)
    client.post(f"/v1/experiments/{key}/start", headers=PRODUCT)
    plant(service, key, {"control": 150, "one-sentence": 80}, {"control": [1], "one-sentence": [1, 2]})

    body = client.get(f"/v1/experiments/{key}/results", headers=PRODUCT).json()
    assert body["blocked"] is True and body["srm"]["observed"] == [150, 80]
    assert body["srm"]["p_value"] < 0.001 and body["warnings"][0].startswith("sample ratio mismatch")
    html = client.get(f"/product/experiments/{key}", headers=PRODUCT).text
    assert 'data-testid="srm-banner"' in html and "do not read or act on these results" in html


def test_the_create_form_shows_reasons_and_keeps_the_text(
    client: TestClient[Litestar], service: Service
) -> None:
    text = json.dumps(definition("form-bad", primary="happiness"))
    response = client.post("/product/experiments", data={"definition": text}, headers=PRODUCT)
    assert response.status_code == 400
    assert "unknown metric &#39;happiness&#39;" in response.text and "&#34;form-bad&#34;" in response.text
    broken = client.post("/product/experiments", data={"definition": "{not json"}, headers=PRODUCT)
    assert broken.status_code == 400 and "definition: not JSON" in broken.text
    good = client.post(
        "/product/experiments",
        data={"definition": json.dumps(definition("form-good"))},
        headers=PRODUCT,
        follow_redirects=False,
    )
    assert good.status_code == 303 and good.headers["location"] == "/product/experiments/form-good"
    started = client.post(
        "/product/experiments/form-good/start", data={}, headers=PRODUCT, follow_redirects=False
    )
    assert started.status_code == 303 and service.experiments.get("form-good").status == "running"


# CLI -----------------------------------------------------------------------------------------------


def test_the_cli_defines_starts_and_reports(
    running: tuple[Settings, Service, Litestar], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, service, _ = running
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("USER", "cli-pia")
    file = tmp_path / "experiment.json"
    file.write_text(json.dumps(definition("cli-flow")))
    runner = CliRunner()

    assert "cli-flow: draft" in runner.invoke(main, ["experiments", "create", str(file)]).output
    assert "cli-flow: running" in runner.invoke(main, ["experiments", "start", "cli-flow"]).output
    plant(service, "cli-flow", {"control": 30, "one-sentence": 30}, {"control": [1], "one-sentence": [2, 3]})
    shown = runner.invoke(main, ["experiments", "results", "cli-flow", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["exposures"] == {"control": 30, "one-sentence": 30}
    text = runner.invoke(main, ["experiments", "results", "cli-flow"]).output
    assert "Clicks per visit [primary]" in text and "1 -> 2.5" in text
    rows = runner.invoke(main, ["experiments", "results", "cli-flow", "--csv"]).output
    assert rows.splitlines()[0].startswith("metric,role,arm")
    refused = runner.invoke(main, ["experiments", "decide", "cli-flow", "nobody"])
    assert refused.exit_code == 1 and "'nobody' is not one of control, one-sentence" in refused.output
    assert (
        "decided: one-sentence"
        in runner.invoke(main, ["experiments", "decide", "cli-flow", "one-sentence"]).output
    )
    assert service.audit.entries(target="cli-flow")[0]["actor"] == "cli-pia"
    file.write_text(json.dumps(definition("cli-bad", arms=[{"name": "control", "weight": 1.0}])))
    bad = runner.invoke(main, ["experiments", "create", str(file)])
    assert bad.exit_code == 1 and "needs at least 2 arms" in bad.output
