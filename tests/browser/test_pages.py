"""The server-rendered pages in a real browser: Debian's Chromium driven by Playwright.

The service runs on the demo newsroom (SQLite, in-memory Qdrant, the real embedder and LLM) under
uvicorn in a background thread; each test signs in through `/login?token=...` (the form, then its
Sign in button) in its own browser context, as a reader or an editor would. Where Chromium is not
installed or cannot be launched, the tests are skipped with the reason.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from briefing import Generator, Status
from indexing import Article, Chunker, SentenceTransformerEmbedder
from recsys import Event, EventType
from server.app import create_app
from server.auth import issue_token
from server.service import Service
from tests.chats import free_port
from tests.service import SECRET, demo_service

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FIRST_PAGE_MS = 120_000  # an uncached briefing composes a greeting with a small CPU LLM
PAGE_MS = 60_000
LABELS = (
    "Quoted from the article.",
    "AI-generated summary, reviewed by an editor",
    "AI-generated and checked against the cited article; not yet reviewed by an editor.",
)
INJECTED = "bro-0001"
PAYLOAD = '<img src=x onerror="window.__injected=1">'
SCRIPT = "<script>window.__injected=2</script>"


@dataclass(frozen=True)
class Site:
    base: str
    service: Service

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    def login(self, subject: str, role: str) -> str:
        return self.url(f"/login?token={issue_token(SECRET, subject, role, timedelta(hours=1))}")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright, or a skip saying why there is none."""
    if not CHROMIUM.exists():
        pytest.skip(f"browser tests need Chromium at {CHROMIUM}, which is not installed")
    playwright = sync_playwright().start()
    try:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    except Exception as exc:
        playwright.stop()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        pytest.skip(f"Playwright could not launch {CHROMIUM}: {first}")
    try:
        yield launched
    finally:
        launched.close()
        playwright.stop()


@pytest.fixture(scope="module")
def site(
    browser: Browser, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    # The models are asked for only now, so that a missing browser skips before they load.
    embedder: SentenceTransformerEmbedder = request.getfixturevalue("embedder")
    chunker: Chunker = request.getfixturevalue("chunker")
    demo_articles: list[Article] = request.getfixturevalue("demo_articles")
    llamacpp: Generator = request.getfixturevalue("llamacpp")
    tmp = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp}/briefing.db"
    with demo_service(tmp, url, embedder, chunker, demo_articles, llamacpp) as (settings, service):
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, service), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_for_health(base, thread)
            yield Site(base, service)
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def _wait_for_health(base: str, thread: threading.Thread, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("uvicorn stopped before it answered /health")
        try:
            with _HTTP.open(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{base}/health did not answer within {timeout_s:.0f} s")


_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy


def _post_json(url: str, body: dict[str, Any], token: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with _HTTP.open(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")}


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[[], BrowserContext]]:
    """Fresh browser contexts (own cookies each), closed after the test."""
    made: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = browser.new_context()
        context.set_default_timeout(PAGE_MS)
        context.set_default_navigation_timeout(FIRST_PAGE_MS)
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def signed_in(context: BrowserContext, site: Site, subject: str, role: str) -> Page:
    """A page in `context` after following the sign-in link and pressing Sign in: the role's home."""
    page = context.new_page()
    form = page.goto(site.login(subject, role))
    assert form is not None and form.status == 200, form and form.text()
    with page.expect_navigation(timeout=FIRST_PAGE_MS) as home:
        page.get_by_test_id("sign-in").click()
    response = home.value
    assert response is not None and response.status == 200, response and response.text()
    return page


def assert_nothing_injected(page: Page) -> None:
    """No element or script came out of untrusted article text: the only script is our own file."""
    scripts = page.locator("script")
    assert {scripts.nth(n).get_attribute("src") for n in range(scripts.count())} <= {"/static/briefing.js"}
    assert page.locator("img").count() == 0
    assert page.evaluate("() => window.__injected === undefined")


def test_a_reader_sees_their_briefing(site: Site, new_context: Callable[[], BrowserContext]) -> None:
    # Untrusted text first, before the reader's briefing is composed and cached.
    hostile = {
        "id": INJECTED,
        "url": f"https://havnbypost.example/local/{INJECTED}",
        "title": f"Harbour lights {PAYLOAD} return to Nordkaia",
        "lead": f"The harbour lights on Nordkaia are back after repairs. {SCRIPT}",
        "body": (
            "The harbour lights on Nordkaia were switched on again on Thursday evening after two "
            f"weeks of repairs by Havnby port authority. {PAYLOAD} {SCRIPT}\n\n"
            "The port authority said the new lamps use less power and are easier to see from the "
            "ferry lanes."
        ),
        "section": "local",
        "language": "en",
        "publication": "Havnby Post",
        "published_at": "2026-11-19T22:30:00+01:00",
    }
    admin = issue_token(SECRET, "ada", "admin", timedelta(hours=1))
    status, pushed = _post_json(site.url("/v1/admin/articles"), {"articles": [hostile]}, admin)
    assert (status, pushed) == (200, {"new": 1, "updated": 0, "unchanged": 0})

    page = signed_in(new_context(), site, "r01", "reader")
    assert page.url == site.url("/")
    assert page.get_by_role("heading", level=1, name="Since you were last here").is_visible()
    items = page.get_by_test_id("item")
    assert items.count() >= 1
    records = site.service.indexer.index.get(
        [a for i in range(items.count()) if (a := items.nth(i).get_attribute("data-article"))]
    )
    published = {str(r.article.url) for r in site.service.indexer.index.scroll()}
    for n in range(items.count()):
        item = items.nth(n)
        article_id = item.get_attribute("data-article")
        assert article_id in records, article_id
        url = str(records[article_id].article.url)
        assert item.locator("h2 a").get_attribute("href") == url
        # a citation opens its passage (a link to the cited article inside), or is a plain link
        cites = item.locator('[data-testid="citation"] a.source, a.cite')
        assert cites.count() >= 1, f"{article_id} has no citations"
        hrefs = {cites.nth(c).get_attribute("href") for c in range(cites.count())}
        assert hrefs <= published and (item.get_by_text("update to a story").count() or hrefs == {url})
        label = item.get_by_test_id("label").inner_text()
        assert any(label.startswith(known) for known in LABELS), label
        assert "Why you see this:" in label
    assert "Summaries are written by an AI model" in page.locator("footer.ai").inner_text()
    assert_nothing_injected(page)

    mine = page.locator(f'[data-testid="item"][data-article="{INJECTED}"]')
    if mine.count():  # the recommender usually picks the fresh local story; shown as text, not parsed
        assert shown_as_text(mine.locator("h2 a").inner_text(), TITLE_WORDS)

    # The editor's review page shows the same untrusted title, and the body as highlighted evidence.
    (draft,) = site.service.summarizer.summarize([INJECTED])
    review = signed_in(new_context(), site, "edith", "editor")
    response = review.goto(site.url(f"/editor/summaries/{draft.id}"))
    assert response is not None and response.status == 200
    heading = review.get_by_role("heading", level=1).inner_text()
    assert shown_as_text(heading, TITLE_WORDS)
    if PAYLOAD not in heading:  # reduced at ingest: the editor still sees what arrived, as text
        assert PAYLOAD in (review.locator("details.original").text_content() or "")
    evidence = review.locator("blockquote.evidence")
    assert evidence.count() >= 1
    assert any(shown_as_text(evidence.nth(n).inner_text(), BODY_WORDS) for n in range(evidence.count()))
    article = review.get_by_test_id("article").inner_text()  # the whole article beside the summary
    assert BODY_WORDS in " ".join(article.split()) and "ferry lanes" in article
    assert_nothing_injected(review)


def test_a_citation_opens_the_passage_it_cites(site: Site, new_context: Callable[[], BrowserContext]) -> None:
    page = signed_in(new_context(), site, "r03", "reader")
    citation = page.get_by_test_id("citation").first
    passage = citation.get_by_test_id("passage")
    assert not passage.is_visible()  # closed until the reader asks for it; no script involved
    citation.locator("summary").click()
    assert passage.is_visible()
    chunk_id = (citation.locator("summary").get_attribute("title") or "").split(": ")[-1]  # "source: <id>"
    stored = site.service.indexer.index.chunks_by_id([chunk_id])[chunk_id]
    assert " ".join(passage.inner_text().split()) == " ".join(stored.text.split())
    assert citation.locator("a.source").get_attribute("href") == stored.url
    assert_nothing_injected(page)


TITLE_WORDS = "Harbour lights return to Nordkaia"
BODY_WORDS = "two weeks of repairs by Havnby port authority."


def shown_as_text(shown: str, words: str) -> bool:
    """Untrusted markup reaches a page as text: the payload literally (escaped) where it is kept as
    it arrived, else reduced to the words around it at ingest (indexing), never parsed."""
    flat = " ".join(shown.split())
    return PAYLOAD in shown or (words in flat and "onerror" not in flat)


def test_an_editors_edit_shows_in_the_readers_next_briefing(
    site: Site, new_context: Callable[[], BrowserContext]
) -> None:
    reader = signed_in(new_context(), site, "r02", "reader")
    items = reader.get_by_test_id("item")
    assert items.count() >= 1
    # an item in the article's own words (a checked draft may already show where the show gate
    # lets it: the edit must replace quoted text here)
    target = next(
        items.nth(n)
        for n in range(items.count())
        if "update to a story you follow" not in items.nth(n).locator("p.section").inner_text()
        and items.nth(n).get_by_test_id("label").inner_text().startswith("Quoted from the article.")
    )
    article_id = target.get_attribute("data-article")
    assert article_id

    (draft,) = site.service.summarizer.summarize([article_id])
    assert draft.status is Status.DRAFT
    editor = signed_in(new_context(), site, "edith", "editor")
    assert editor.url == site.url("/editor")
    assert editor.get_by_role("heading", level=1, name="Review queue").is_visible()
    row = editor.get_by_test_id("queue-row").filter(
        has=editor.locator(f'a[href="/editor/summaries/{draft.id}"]')
    )
    assert row.count() == 1
    with editor.expect_navigation():
        row.locator("a").click()
    assert editor.url == site.url(f"/editor/summaries/{draft.id}")
    assert editor.get_by_test_id("status").inner_text() == "draft"

    sentence = f"Editors at the Havnby desk checked this story ({article_id}) on the review page."
    editor.get_by_test_id("edit-text").fill(sentence)
    with editor.expect_navigation():
        editor.get_by_test_id("save-edit").click()
    assert editor.url == site.url(f"/editor/summaries/{draft.id}")
    assert editor.get_by_test_id("status").inner_text() == "edited"
    assert f"+{sentence}" in editor.get_by_test_id("diff").inner_text()
    assert editor.get_by_test_id("edit-text").input_value() == sentence

    response = reader.reload()
    assert response is not None and response.status == 200
    item = reader.locator(f'[data-testid="item"][data-article="{article_id}"]')
    assert item.count() == 1
    assert sentence in item.locator("ul.sentences").inner_text()
    assert item.locator('[data-testid="citation"] a.source, a.cite').count() >= 1  # its passages
    label = item.get_by_test_id("label").inner_text()
    assert "reviewed by an editor and edited" in label, label


def test_a_reader_cannot_open_the_editor_pages(site: Site, new_context: Callable[[], BrowserContext]) -> None:
    reader = signed_in(new_context(), site, "r01", "reader")
    response = reader.goto(site.url("/editor"))
    assert response is not None and response.status == 403
    assert "Review queue" not in reader.content()


# What the reader page records (server/static/briefing.js) -----------------------------------------

ARTICLE_STUB = "<!doctype html><title>Article</title><p>The article, served by the test.</p>"


class Recorded:
    """A reader's events stored from now on (their demo history left out), waited for: the
    page's script sends them in the background."""

    def __init__(self, site: Site, reader: str) -> None:
        self.site, self.reader = site, reader
        self.history = {e.event_id for e in site.service.events.for_reader(reader)}

    def now(self) -> list[Event]:
        return [e for e in self.site.service.events.for_reader(self.reader) if e.event_id not in self.history]

    def until(self, wanted: Callable[[list[Event]], bool], timeout_s: float = 20.0) -> list[Event]:
        deadline = time.monotonic() + timeout_s
        while not wanted(events := self.now()):
            assert time.monotonic() < deadline, [(e.type.value, e.article_id) for e in events]
            time.sleep(0.2)
        return events


def _of(events: list[Event], kind: EventType, article_id: str | None = None) -> list[Event]:
    return [e for e in events if e.type is kind and (article_id is None or e.article_id == article_id)]


def test_the_reader_page_records_impressions_clicks_reads_and_thumbs_and_retries_offline(
    site: Site, new_context: Callable[[], BrowserContext]
) -> None:
    context = new_context()
    # The articles live on the newsroom's site; a stub answers for it, so a click lands somewhere.
    context.route(
        "https://havnbypost.example/**",
        lambda route: route.fulfill(body=ARTICLE_STUB, content_type="text/html"),
    )
    recorded = Recorded(site, "r09")
    page = signed_in(context, site, "r09", "reader")
    items = page.get_by_test_id("item")
    shown = [items.nth(n).get_attribute("data-article") or "" for n in range(items.count())]
    assert len(shown) >= 2
    stored = recorded.until(lambda es: len(_of(es, EventType.IMPRESSION)) == len(shown))
    assert {e.article_id for e in _of(stored, EventType.IMPRESSION)} == set(shown)
    assert len({e.at for e in _of(stored, EventType.IMPRESSION)}) == 1  # one moment: one impression

    first, second = shown[0], shown[1]
    with page.expect_navigation():
        items.nth(0).locator("h2 a").click()
    assert page.url.startswith("https://havnbypost.example/")
    page.wait_for_timeout(1500)  # reading
    page.go_back(wait_until="load")
    assert page.url == site.url("/")
    stored = recorded.until(lambda es: bool(_of(es, EventType.READ, first)))
    (click,) = _of(stored, EventType.CLICK, first)
    (read,) = _of(stored, EventType.READ, first)
    assert 1.0 <= (read.dwell_s or 0) < 120
    assert read.at == click.at  # a read is dated by its click, on the service's clock
    assert abs((click.at - site.service.clock()).total_seconds()) < 300
    assert len(_of(stored, EventType.IMPRESSION)) == len(shown)  # back on the page: none counted twice

    up = page.get_by_test_id("item").nth(1).get_by_test_id("thumbs-up")
    up.click()
    assert up.get_attribute("aria-pressed") == "true"
    recorded.until(lambda es: bool(_of(es, EventType.THUMBS_UP, second)))
    up.click()  # pressed already: nothing more is sent
    page.wait_for_timeout(500)
    assert len(_of(recorded.now(), EventType.THUMBS_UP, second)) == 1

    context.set_offline(True)
    page.get_by_test_id("item").nth(0).get_by_test_id("thumbs-down").click()
    page.wait_for_timeout(1000)
    queued = page.evaluate("() => JSON.parse(localStorage.getItem('briefing.events.r09') || '[]')")
    assert [(e["type"], e["article_id"]) for e in queued] == [("thumbs_down", first)]
    assert not _of(recorded.now(), EventType.THUMBS_DOWN)
    context.set_offline(False)  # the browser's online event sends the queue
    recorded.until(lambda es: bool(_of(es, EventType.THUMBS_DOWN, first)))
    page.wait_for_function("() => (localStorage.getItem('briefing.events.r09') || '[]') === '[]'")
    assert_nothing_injected(page)


def test_more_stories_the_about_page_and_sign_out(
    site: Site, new_context: Callable[[], BrowserContext]
) -> None:
    page = signed_in(new_context(), site, "r10", "reader")
    items = page.get_by_test_id("item")
    briefing = {items.nth(n).get_attribute("data-article") for n in range(items.count())}
    with page.expect_navigation():
        page.get_by_test_id("more").click()
    assert page.get_by_role("heading", level=1, name="More stories").is_visible()
    more = page.get_by_test_id("item")
    assert more.count() >= 1
    assert not briefing & {more.nth(n).get_attribute("data-article") for n in range(more.count())}
    with page.expect_navigation():
        page.get_by_test_id("about").click()
    assert page.get_by_role("heading", level=1, name="How this briefing is made").is_visible()
    assert "support score" in page.content()
    with page.expect_navigation():
        page.get_by_test_id("sign-out").click()
    assert page.url == site.url("/login")
    response = page.goto(site.url("/"))
    assert response is not None and response.status == 401
