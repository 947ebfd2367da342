"""Pages escape everything they show (article text is untrusted) and highlight evidence safely."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar.plugins.jinja import JinjaTemplateEngine

from briefing import Briefing, BriefingItem, BriefingPolicy, SummarySentence
from server.app import HERE
from server.i18n import audience, install
from server.pages import highlight

ATTACK = '<script>alert("x")</script><img src=x onerror="steal()">'


def render(name: str, **context: Any) -> str:
    engine = JinjaTemplateEngine(directory=HERE / "templates")
    install(engine.engine, audience("en", "Europe/Oslo"))  # as create_app does
    return engine.get_template(name).render(**context)


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
    page = render("briefing.html", b=briefing, reader="r01")
    assert "<script>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert 'href="https://havnbypost.example/local/a?x=1&amp;y=2"' in page
    assert "not yet reviewed by an editor" in page


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
