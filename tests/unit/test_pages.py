"""Pages escape everything they show (article text is untrusted) and highlight evidence safely;
the words the staff pages use for jobs and live summaries, and the ids the reader page sends."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.plugins.jinja import JinjaTemplateEngine

from briefing import Briefing, BriefingItem, BriefingPolicy, Status, Summary, SummarySentence
from indexing import Article, Hit
from recsys import Item
from server.app import HERE
from server.i18n import audience, install
from server.pages import highlight
from server.views import MoreItem, _live, describe, event_id, every, lead, published
from tests.factories import make_article

ATTACK = '<script>alert("x")</script><img src=x onerror="steal()">'


def render(name: str, **context: Any) -> str:
    engine = JinjaTemplateEngine(directory=HERE / "templates")
    install(engine.engine, audience("en", "Europe/Oslo"))  # as create_app does
    # what litestar adds to a page's context (the CSRF token, from its middleware)
    page = {"csrf_token": lambda: "csrf-token-value", "csrf_input": ""}
    return engine.get_template(name).render(**page, **context)


def test_the_front_page_escapes_article_text() -> None:
    item = BriefingItem(
        story_id="s1",
        article_id="loc-0003",
        title=f"Harbour news {ATTACK}",
        url="https://havnbypost.example/local/a?x=1&y=2",
        section="local",
        update=False,
        reason=f"because you read {ATTACK}",
        source="draft",
        summary_id="loc-0003--1",
        model="SmolLM2",
        sentences=(SummarySentence(f"The mayor said {ATTACK}.", 0.9, ("loc-0003@h#0",)),),
    )
    briefing = Briefing(
        "r01",
        datetime(2026, 11, 19, tzinfo=UTC),
        None,
        "control",
        BriefingPolicy(),
        ATTACK,
        (item,),
        ("SmolLM2",),
    )
    ids = {"loc-0003": event_id("r01", "t", "loc-0003")}
    page = render("briefing.html", b=briefing, reader="r01", now="t1", shown_at="t", impressions=ids)
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert 'href="https://havnbypost.example/local/a?x=1&amp;y=2"' in page
    assert "not yet reviewed by an editor" in page
    assert f'data-impression="{ids["loc-0003"]}"' in page
    assert '<meta name="csrf-token" content="csrf-token-value">' in page


def test_evidence_is_highlighted_word_by_word_without_markup_from_the_text() -> None:
    segments = highlight("Ferry <b>terminal</b> costs 186 million.", {"terminal", "186"})
    assert segments == [
        ("Ferry <b>", False),
        ("terminal", True),
        ("</b> costs ", False),
        ("186", True),
        (" million.", False),
    ]
    assert "".join(s for s, _ in segments) == "Ferry <b>terminal</b> costs 186 million."


def hostile_article(**changes: Any) -> Article:
    """An article whose text kept its markup: as stored before ingest reduced markup to text, or
    by a source that slips past it. The pages must escape it all the same."""
    return Article.model_construct(
        **{**make_article("bro-0900").model_dump(), "title": f"Lights {ATTACK}", **changes}
    )


def assert_escaped(page: str) -> None:
    assert "<script>alert" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page


def test_more_stories_escape_titles_reasons_and_leads() -> None:
    item = Item(
        "s1", "bro-0900", f"Lights {ATTACK}", "local", "https://news.example/a", 1.0, f"new {ATTACK}", False
    )
    ids = {"bro-0900": event_id("r01", "more", "first", "bro-0900")}
    page = render(
        "more.html",
        items=[MoreItem(item, ATTACK, f"new {ATTACK}")],
        reader="r01",
        now="t",
        shown_at="t",
        impressions=ids,
    )
    assert_escaped(page)
    assert page.count("&lt;script&gt;alert") == 3  # title, lead, reason


def test_staff_pages_escape_articles_audit_entries_and_job_errors() -> None:
    article = hostile_article()
    rows = [{"r": type("R", (), {"article": article})(), "counts": {"draft": 1}}]
    at = datetime(2026, 11, 19, tzinfo=UTC)
    entry = {
        "at": at,
        "actor": ATTACK,
        "role": "editor",
        "action": "rejected",
        "target": ATTACK,
        "detail": {"reason": ATTACK, "diff": ATTACK},
    }
    run = {
        "id": 1,
        "job": ATTACK,
        "attempt": 1,
        "trigger": "manual",
        "started_at": at,
        "ended_at": at,
        "outcome": "failed",
        "error": ATTACK,
        "said": describe({"feeds": {ATTACK: "1 new"}}),
    }
    pages = [
        render("admin_articles.html", rows=rows, days=7.0, retracted=[entry], shown=300),
        render("audit.html", entries=[entry], title="Audit log", scope="admin", action="", target=ATTACK),
        render("audit.html", entries=[entry], title="Decisions", scope="editor"),
        render("admin_runs.html", runs=[run], job=ATTACK),
    ]
    for page in pages:
        assert_escaped(page)


def test_job_schedules_and_results_in_words() -> None:
    assert every(0) == "not scheduled: nothing configured"
    assert (every(600), every(3600), every(6 * 3600), every(86400), every(90)) == (
        "every 10 minutes",
        "every hour",
        "every 6 hours",
        "every day",
        "every 90 s",
    )
    assert describe({"feeds": {}}) == [("feeds", "nothing configured")]
    assert describe({"summarized": 2, "failed": 0}) == [("summarized", "2"), ("failed", "0")]
    assert describe({"feeds": {"a.jsonl": "3 new"}}) == [("feeds", "a.jsonl: 3 new")]


def test_impression_ids_are_stable_valid_event_ids_and_never_collide_across_parts() -> None:
    one = event_id("r01", "2026-11-19T22:00:00.000+00:00", "pol-0011")
    assert one == event_id("r01", "2026-11-19T22:00:00.000+00:00", "pol-0011")
    assert re.fullmatch(r"[\w.:-]{1,100}", one)
    assert event_id("r0", "1x", "a") != event_id("r01", "x", "a")  # parts are kept apart
    assert event_id("r01", "t", "a") != event_id("r02", "t", "a")


def test_a_long_lead_is_cut_at_a_word() -> None:
    article = make_article("a-1", lead="word " * 100)
    cut = lead(article)
    assert cut.endswith(" …") and len(cut) <= 302 and "wor …" not in cut
    assert lead(make_article("a-2", lead="")).startswith("The body of the article")


def _summary(status: Status, content_hash: str = "h1", kind: str = "article") -> Summary:
    at = datetime(2026, 11, 19, tzinfo=UTC)
    s = Summary("s", kind, "a-1", content_hash, "article@1", "m", None, (), (), at, 0.1)
    return replace(s, status=status)


@pytest.mark.parametrize(
    ("status", "content_hash", "allow", "reviewed", "live", "why"),
    [
        (Status.DRAFT, "h1", True, False, True, "not yet reviewed"),
        (Status.DRAFT, "h1", False, False, False, "fails the show gate"),
        (Status.DRAFT, "h1", True, True, False, "reviewed text of this article shows instead"),
        (Status.DRAFT, "h0", True, False, False, "changed since"),
        (Status.APPROVED, "h1", False, False, True, "live"),
        (Status.EDITED, "h0", True, False, False, "changed since"),
        (Status.REJECTED, "h1", True, False, False, "rejected"),
        (Status.RETRACTED, "h1", True, False, False, "retired"),
    ],
)
def test_what_is_live_to_readers_follows_the_policy_and_the_current_version(
    status: Status, content_hash: str, allow: bool, reviewed: bool, live: bool, why: str
) -> None:
    s = _summary(status, content_hash)
    found = _live(s, "h1", allow, {"a-1": {("h1", "article")}} if reviewed else {})
    assert found.live is live and why in found.why
    assert _live(s, None, allow, {}).live is (False) and (
        "no longer published" in _live(s, None, allow, {}).why
        or status in (Status.REJECTED, Status.RETRACTED)
    )


READER_TEMPLATES = ("more.html", "about.html", "_reader_nav.html", "_feedback.html", "_account.html")


@pytest.mark.parametrize("name", READER_TEMPLATES)
def test_reader_templates_have_no_text_outside_the_catalogue(name: str) -> None:
    source = (HERE / "templates" / name).read_text()
    for pattern in (r"\{#.*?#\}", r"\{%.*?%\}", r"\{\{.*?\}\}", r"<[^>]*>", r"&\w+;"):
        source = re.sub(pattern, " ", source, flags=re.S)
    assert not re.findall(r"[^\W\d_]{2,}", source), f"{name} has text outside {{{{ _(...) }}}}"


def test_the_about_page_states_the_policy_it_runs_under() -> None:
    from server.settings import Settings

    settings = Settings()
    policy = BriefingPolicy()
    shown = render("about.html", settings=settings, policy=policy, drafts_show=True, role="reader")
    reviewed_only = render("about.html", settings=settings, policy=policy, drafts_show=False, role="reader")
    assert "not yet reviewed by an editor" in shown and "Only summaries an editor has reviewed" not in shown
    assert "Only summaries an editor has reviewed are shown" in reviewed_only
    assert "SmolLM2-135M-Instruct" in shown and "at least 0.6" in shown
    assert timedelta(days=settings.service.retention_days).days == 365 and "after 365 days" in shown


def _passage(article_id: str, text: str, day: int, hour: int, minute: int) -> Hit:
    at = datetime(2026, 11, day, hour, minute, tzinfo=UTC).timestamp()
    return Hit(f"{article_id}@h#0", article_id, 0.0, text, "Route 4", "https://x.example/", "local", "s", at)


def test_each_sentence_of_a_story_update_shows_when_it_was_published() -> None:
    """A quoted earlier development says when it was published, in the reader's zone and
    language: Monday's "route 4 is closed" must not read as current under Wednesday's reopening."""
    monday = _passage("loc-0002", "Route 4 is closed for repairs.", 16, 7, 30)
    wednesday = _passage("loc-0009", "Route 4 reopened this morning.", 18, 9, 5)
    cited = {p.chunk_id: p for p in (monday, wednesday)}
    quoted = tuple(SummarySentence(p.text, 1.0, (p.chunk_id,), extractive=True) for p in (wednesday, monday))
    update = BriefingItem(
        "s", "loc-0009", "Route 4", "https://x.example/", "local", True, "", "extractive", None, None, quoted
    )
    fresh = replace(update, story_id="s2", article_id="loc-0010", update=False, sentences=quoted[:1])
    b = Briefing(
        "r02", datetime(2026, 11, 19, tzinfo=UTC), None, "control", BriefingPolicy(), "Hi.", (update, fresh)
    )
    context = {"b": b, "reader": "r02", "now": "t", "shown_at": "t", "impressions": {}, "passages": cited}
    context["published"] = published(b.items, cited)

    page = render("briefing.html", **context)
    assert re.findall(r'data-testid="published">([^<]*)</time>: ([^<]*?)\s*<', page) == [
        ("Wednesday 18 November, 10:05 (CET)", "Route 4 reopened this morning."),
        ("Monday 16 November, 08:30 (CET)", "Route 4 is closed for repairs."),
    ]  # the item that is no update quotes its own article only: not dated
    bokmal = render("briefing.html", **context, audience=audience("nb", "Europe/Oslo"))
    assert ">mandag 16. november kl. 08:30 (CET)</time>: Route 4 is closed for repairs." in bokmal
