"""The product team's experiment pages in a real browser: Debian's Chromium driven by Playwright.

The service runs under uvicorn in a background thread (SQLite, an empty in-memory index: the
pages need no articles), as in test_pages.py. One experiment is planted six days into its run
with a broken split (150 readers against 80 at 50/50), its exposures and clicks spread over the
days; the product person signs in through the form, lands on the experiments list, defines and
starts an experiment with the page's own forms, and reads the planted experiment's results: the
blocking sample-ratio banner, the table per metric and both charts as inline SVG.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext

from briefing import Generator
from indexing import Chunker, Indexer, QdrantConfig, QdrantIndex, SentenceTransformerEmbedder
from recsys import Event, EventType
from server.app import create_app
from server.container import build_service
from server.experiments import parse_experiment
from server.service import Actor, Service
from server.settings import Settings
from tests.browser.test_pages import Site, _wait_for_health, browser, new_context, signed_in
from tests.chats import free_port
from tests.service import SECRET

__all__ = ["browser", "new_context"]  # fixtures shared with test_pages.py

PLANTED = "srm-planted"
HOSTILE = "Shorter summaries <script>window.__x=1</script> get more clicks"
DAYS = 6


def definition(key: str, hypothesis: str) -> dict[str, object]:
    return {
        "key": key,
        "hypothesis": hypothesis,
        "arms": [
            {"name": "control", "weight": 0.5},
            {"name": "one-sentence", "weight": 0.5, "article_prompt": "article-one-sentence"},
        ],
        "primary": "clicks_per_visit",
        "secondary": ["ctr"],
        "guardrails": ["fallback_share"],
        "layer": key,
    }


def plant_mismatch(service: Service) -> None:
    """150 control and 80 one-sentence readers over six days (reader i first served on day
    i % 6); control readers click once or twice per briefing, one-sentence readers twice or
    three times."""
    store = service.experiments
    product = Actor("pia", "product")
    store.create(product, parse_experiment(definition(PLANTED, HOSTILE)))
    start = service.clock() - timedelta(days=DAYS, hours=1)
    e = store.start(product, PLANTED, start)
    events = []
    for arm, n, clicks in (("control", 150, (1, 2)), ("one-sentence", 80, (2, 3))):
        for i in range(n):
            reader, at = f"{arm}-{i}", start + timedelta(days=i % DAYS, minutes=i)
            store.expose(reader, {PLANTED: e.arm(arm)}, at, f"{reader}|first", 35.0, 5, 0)
            events += [
                Event(
                    event_id=f"{reader}-{c}",
                    reader_id=reader,
                    type=EventType.CLICK,
                    article_id="pol-0001",
                    at=at,
                )
                for c in range(clicks[i % 2])
            ]
    service.events.add(events)


@pytest.fixture(scope="module")
def site(
    browser: Browser, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    embedder: SentenceTransformerEmbedder = request.getfixturevalue("embedder")
    chunker: Chunker = request.getfixturevalue("chunker")
    llamacpp: Generator = request.getfixturevalue("llamacpp")
    tmp: Path = tmp_path_factory.mktemp("experiments")
    env = {
        "DATA_DIR": str(tmp),
        "DATABASE_URL": f"sqlite:///{tmp}/briefing.db",
        "JWT_SECRET": SECRET,
        "RATE_LIMIT_PER_MINUTE": "0",
    }
    settings = Settings.from_env(env)
    index = QdrantIndex.open(QdrantConfig(), embedder.dim)
    service = build_service(settings, indexer=Indexer(index, embedder, chunker), generator=llamacpp)
    plant_mismatch(service)
    port = free_port()
    config = uvicorn.Config(create_app(settings, service), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-experiments", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for_health(base, thread)
        yield Site(base, service)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        service.close()
        index.close()
        service.engine.dispose()


def test_a_product_person_defines_and_starts_an_experiment(
    site: Site, new_context: Callable[[], BrowserContext]
) -> None:
    page = signed_in(new_context(), site, "pia", "product")
    assert page.url == site.url("/product/experiments")  # the product role's home
    assert page.get_by_role("heading", level=1, name="Experiments").is_visible()
    planted = page.locator(f'[data-testid="experiment-row"][data-key="{PLANTED}"]')
    assert planted.get_by_test_id("status").inner_text() == "running"

    page.get_by_test_id("definition").fill('{"key": "no"}')
    page.get_by_test_id("create").click()
    reasons = page.get_by_test_id("reason")
    assert reasons.count() >= 3  # the key, the hypothesis, the arms, the primary metric
    assert page.get_by_test_id("definition").input_value() == '{"key": "no"}'  # the text is kept

    page.get_by_test_id("definition").fill(json.dumps(definition("page-made", "Made on the page.")))
    with page.expect_navigation():
        page.get_by_test_id("create").click()
    assert page.url == site.url("/product/experiments/page-made")
    assert page.get_by_test_id("status").inner_text() == "draft"
    assert page.get_by_test_id("not-started").is_visible()
    with page.expect_navigation():
        page.get_by_test_id("start").click()
    assert page.get_by_test_id("status").inner_text() == "running"
    assert site.service.experiments.get("page-made").status == "running"
    assert [e["action"] for e in site.service.audit.entries(target="page-made")] == [
        "experiment-start",
        "experiment-create",
    ]


def test_the_results_page_shows_tables_charts_and_the_srm_banner(
    site: Site, new_context: Callable[[], BrowserContext]
) -> None:
    page = signed_in(new_context(), site, "pia", "product")
    page.goto(site.url(f"/product/experiments/{PLANTED}"))
    banner = page.get_by_test_id("srm-banner")
    assert banner.is_visible()
    assert "Sample ratio mismatch" in banner.inner_text() and "control 150" in banner.inner_text()
    assert page.get_by_test_id("decide").is_disabled()  # no decision on a broken split

    tables = page.get_by_test_id("metric-table")
    assert [tables.nth(n).get_attribute("data-metric") for n in range(tables.count())] == [
        "clicks_per_visit",
        "ctr",
        "fallback_share",
    ]
    row = page.locator('[data-metric="clicks_per_visit"] [data-testid="effect-row"]')
    assert row.get_attribute("data-arm") == "one-sentence"
    assert row.get_by_test_id("effect").inner_text().startswith("+1")  # 1.5 -> 2.5 clicks per visit
    assert row.get_by_test_id("p-adjusted").inner_text() == "< 0.001"
    assert "minimum 100" in page.locator('[data-metric="clicks_per_visit"]').inner_text()  # 80 readers

    for chart in ("effect-chart", "exposure-chart"):
        svg = page.get_by_test_id(chart).locator("svg")
        assert svg.count() == 1 and svg.is_visible()
        box = svg.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 150
    legend = page.get_by_test_id("exposure-chart").locator("svg text").all_text_contents()
    assert "control" in legend and "one-sentence" in legend
    assert page.locator("script").count() == 0  # no script on the page: the charts are drawn on the server
    assert HOSTILE in page.get_by_test_id("hypothesis").inner_text()  # shown as text, never run
    assert page.evaluate("() => window.__x === undefined")


def test_an_editor_cannot_open_the_experiments(site: Site, new_context: Callable[[], BrowserContext]) -> None:
    page = signed_in(new_context(), site, "edith", "editor")
    response = page.goto(site.url("/product/experiments"))
    assert response is not None and response.status == 403
