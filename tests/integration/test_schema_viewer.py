"""/schema shows the API in Swagger UI served by the service itself: the page loads nothing from
another origin (no CDN: where it is unreachable the page was blank), every asset it names is
served, and the security headers let the page run."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from briefing import Generator
from indexing import Article, Chunker, SentenceTransformerEmbedder
from server.app import create_app
from tests.service import demo_service

pytestmark = pytest.mark.slow
ASSET_TYPES = {"js": "javascript", "css": "text/css", "png": "image/png"}


class Assets(HTMLParser):
    """Every URL the page makes the browser fetch: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        url = found.get("src") if tag in ("script", "img") else found.get("href") if tag == "link" else None
        if url is not None:
            self.urls.append(url)
        elif tag == "script":
            self.inline_scripts += 1


@pytest.fixture(scope="module")
def app(
    tmp_path_factory: pytest.TempPathFactory,
    embedder: SentenceTransformerEmbedder,
    chunker: Chunker,
    demo_articles: list[Article],
    llamacpp: Generator,
) -> Iterator[Litestar]:
    tmp: Path = tmp_path_factory.mktemp("schema")
    url = f"sqlite:///{tmp / 'b.db'}"
    with demo_service(tmp, url, embedder, chunker, demo_articles[:3], llamacpp) as (settings, service):
        yield create_app(settings, service)


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
def test_the_viewer_loads_only_same_origin_assets_and_they_are_served(app: Litestar, path: str) -> None:
    with TestClient(app) as client:
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "SwaggerUIBundle(" in page.text  # the viewer, with the schema inline
        parsed = Assets()
        parsed.feed(page.text)
        assert {u.rsplit("/", 1)[-1] for u in parsed.urls} >= {
            "swagger-ui-bundle.js",
            "swagger-ui-standalone-preset.js",
            "swagger-ui.css",
        }
        for url in parsed.urls:
            assert url.startswith("/") and not url.startswith("//"), f"{url} is not same-origin"
            asset = client.get(url)
            assert asset.status_code == 200 and len(asset.content) > 0, url
            kind = ASSET_TYPES[url.rsplit(".", 1)[-1]]
            assert kind in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert _csp_allows(page.headers.get("content-security-policy", ""), parsed.inline_scripts > 0)
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "Briefing service"


def test_the_stylesheet_fetches_nothing_from_elsewhere(app: Litestar) -> None:
    with TestClient(app) as client:
        css = client.get("/static/swagger-ui/swagger-ui.css").text
    external = [u for u in re.findall(r"url\(([^)]*)\)", css) if re.match(r"['\"]?(https?:)?//", u)]
    assert external == [] and "@import" not in css


def _csp_allows(policy: str, inline_scripts: bool) -> bool:
    """Whether a Content-Security-Policy lets same-origin scripts and styles (and the page's own
    inline script, if it has one) run; no policy, or one without script/style rules, does."""
    rules = {
        name: set(values) for name, *values in (part.split() for part in policy.split(";") if part.strip())
    }
    for kind in ("script-src", "style-src"):
        allowed = rules.get(kind, rules.get("default-src"))
        if allowed is None:
            continue
        if "'self'" not in allowed:
            return False
        if kind == "script-src" and inline_scripts and "'unsafe-inline'" not in allowed:
            return False
    return True
