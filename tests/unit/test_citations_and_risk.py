"""Issue 17's reader and editor views: each citation's passage on the reader page (escaped, from
one index request), the three labels in English and Bokmål, and the editors' queue by risk with
each sentence's verdict from the grounding check."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from litestar.plugins.jinja import JinjaTemplateEngine

from briefing import Briefing, BriefingItem, BriefingPolicy, Status, Summary, SummarySentence
from indexing import Hit, Indexer
from server.app import HERE
from server.i18n import audience, install
from server.review import Queued, Risk, by_risk, next_draft, risk, verdict
from server.views import Live
from tests.factories import make_article

ATTACK = '<script>alert("x")</script><img src=x onerror="steal()">'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"
T0 = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)
OSLO = "Europe/Oslo"


def render(name: str, language: str = "en", **context: Any) -> str:
    engine = JinjaTemplateEngine(directory=HERE / "templates")
    install(engine.engine, audience("en", OSLO))  # as create_app does
    page = {"csrf_token": lambda: "csrf-token-value", "csrf_input": ""}
    return engine.get_template(name).render(**page, **context, audience=audience(language, OSLO))


def item(article_id: str, source: str, *sentences: SummarySentence) -> BriefingItem:
    url = f"https://havnbypost.example/{article_id}"
    return BriefingItem(
        "s-" + article_id,
        article_id,
        f"Title {article_id}",
        url,
        "local",
        False,
        "new",
        source,
        None,
        None,
        sentences,
    )


def briefing(*items: BriefingItem) -> Briefing:
    return Briefing("r01", T0, None, "control", BriefingPolicy(), "Hello.", items)


def front_page(b: Briefing, language: str = "en", passages: dict[str, Hit] | None = None) -> str:
    impressions = {i.article_id: f"imp-{i.article_id}" for i in b.items}
    context = {"b": b, "reader": "r01", "now": "t", "shown_at": "t", "impressions": impressions}
    return render("briefing.html", language, **context, passages=passages or {})


def hit(chunk_id: str, text: str, title: str = "Ferry costs") -> Hit:
    article_id = chunk_id.split("@")[0]
    url = f"https://havnbypost.example/{article_id}?a=1&b=2"
    return Hit(chunk_id, article_id, 0.0, text, title, url, "local", "s1", 0.0)


# The reader page ---------------------------------------------------------------------------------


def test_a_citation_opens_its_passage_as_text_and_links_to_the_cited_article() -> None:
    cited = "loc-0003@abc#1"
    sentence = SummarySentence("The ferry terminal costs 186 million.", 0.91, (cited, "loc-0003@abc#7"))
    passages = {cited: hit(cited, f"The terminal will cost 186 million {ATTACK}", title=f"Ferry {ATTACK}")}
    page = front_page(briefing(item("loc-0003", "draft", sentence)), passages=passages)
    assert "<script>" not in page and "<img" not in page
    details = re.findall(r'<details class="cite" data-testid="citation">(.*?)</details>', page, re.S)
    assert len(details) == 1
    assert (
        f'<blockquote class="passage" data-testid="passage">The terminal will cost 186 million {ESCAPED}'
        in details[0]
    )
    assert 'href="https://havnbypost.example/loc-0003?a=1&amp;b=2"' in details[0]
    assert f"From “Ferry {ESCAPED}" in details[0]
    # a citation whose chunk is no longer stored still links to the article, with no passage
    assert (
        '<a class="cite" href="https://havnbypost.example/loc-0003" title="source: loc-0003@abc#7">[2]</a>'
        in page
    )


def test_the_cited_chunks_are_looked_up_by_id_in_one_request(memory_indexer: Indexer) -> None:
    article = make_article("loc-0003", body="The ferry terminal will cost 186 million kroner. " * 3)
    assert memory_indexer.ingest([article]).ok
    record = memory_indexer.index.get(["loc-0003"])["loc-0003"]
    first = record.chunk_ids[0]
    found = memory_indexer.index.chunks_by_id([first, "loc-0003@000000000000#0", "gone@abc#3"])
    assert list(found) == [first]  # another version's id and an unknown article are absent
    assert "186 million kroner" in found[first].text and found[first].url == str(article.url)
    assert memory_indexer.index.chunks_by_id([]) == {}


LABELS = {
    "en": (
        "AI-generated summary, reviewed by an editor.",
        "AI-generated and checked against the cited article; not yet reviewed by an editor.",
        "Quoted from the article.",
        "checked, support 0.91",
        "quoted from the article",
    ),
    "nb": (
        "KI-generert sammendrag, gjennomgått av en redaktør.",
        "KI-generert og kontrollert mot den siterte artikkelen; ennå ikke gjennomgått av en redaktør.",
        "Sitert fra artikkelen.",
        "kontrollert, støtte 0,91",
        "sitert fra artikkelen",
    ),
}


@pytest.mark.parametrize("language", ["en", "nb"])
def test_each_item_says_whether_its_text_is_reviewed_generated_and_checked_or_quoted(language: str) -> None:
    reviewed, generated, quoted, support, quoted_sentence = LABELS[language]
    cite = ("pol-0001@h#0",)
    b = briefing(
        item("pol-0001", "approved", SummarySentence("The council met.", 0.7, cite)),
        item(
            "pol-0002",
            "draft",
            SummarySentence("The budget grew.", 0.9066, cite),
            SummarySentence("It was the lead.", 1.0, cite, extractive=True),
        ),
        item("pol-0003", "extractive", SummarySentence("Copied lead.", 1.0, cite, extractive=True)),
    )
    page = front_page(b, language)
    labels = [" ".join(x.split()) for x in re.findall(r'data-testid="label">(.*?)<span', page, re.S)]
    assert labels == [reviewed, generated, quoted]
    marks = re.findall(r'data-testid="sentence-label">(.*?)</span>', page)
    assert marks == [support, quoted_sentence]  # only a draft marks its sentences, each by its kind


# The editors' queue --------------------------------------------------------------------------------


def summary(name: str, *sentences: SummarySentence, minute: int = 0) -> Summary:
    return Summary(
        id=name,
        kind="article",
        article_id=f"a-{name}",
        content_hash="h",
        prompt="article@1",
        model="m",
        adapter=None,
        sentences=sentences,
        dropped=(),
        created_at=T0 + timedelta(minutes=minute),
        seconds=0.1,
    )


def said(text: str, score: float, *, extractive: bool = False) -> SummarySentence:
    return SummarySentence(text, score, ("a@h#0",), extractive=extractive)


KNOWN = [
    summary("plain-high", said("The weather was mild all week.", 0.95), minute=0),
    summary("plain-low", said("The meeting ran long that evening.", 0.62), minute=1),
    # same band as plain-low (0.60-0.65) but states a number and a name: first
    summary("facts-low", said("Opposition leader Eirik Vangen wants 126 million cut.", 0.64), minute=2),
    summary("facts-mid", said("The ferry costs 186 million.", 0.80), minute=3),
    # the quoted lead risks nothing; the generated sentence decides
    summary(
        "mixed",
        said("Havnby Post reported it first.", 1.0, extractive=True),
        said("The mayor was pleased.", 0.71),
        minute=4,
    ),
    summary("quoted", said("Nordkaia reopens on Friday 12 December.", 1.0, extractive=True), minute=5),
    summary("plain-low-later", said("The meeting ran long again.", 0.62), minute=6),
]


def test_the_queue_puts_low_support_and_stated_facts_first() -> None:
    order = [s.id for s in by_risk(reversed(KNOWN))]
    assert order == [
        "facts-low",
        "plain-low",
        "plain-low-later",
        "mixed",
        "facts-mid",
        "plain-high",
        "quoted",
    ]
    facts_low = risk(KNOWN[2])
    assert facts_low.support == 0.64 and facts_low.facts >= 3  # Eirik, Vangen, 126 (and its scale)
    assert risk(KNOWN[1]) == Risk(0.62, 0)
    assert risk(KNOWN[4]) == Risk(0.71, 0) and risk(KNOWN[5]) == Risk(1.0, 0)


def test_next_draft_walks_the_risk_order_and_starts_over_after_a_decision() -> None:
    drafts = list(KNOWN)
    assert next_draft(drafts, "facts-low") == "plain-low"  # skipped: the next one
    assert next_draft(drafts, "quoted") == "facts-low"  # the last one wraps round
    decided = [d for d in drafts if d.id != "mixed"]
    assert next_draft(decided, "mixed") == "facts-low"  # decided: the riskiest one left
    assert next_draft([KNOWN[0]], "plain-high") is None and next_draft([], "x") is None


@pytest.mark.parametrize(
    ("sentence", "rules", "missing"),
    [
        (said("The mayor resigned.", 0.9), (), ()),
        (said("The mayor resigned.", 0.41), ("low support",), ()),
        (
            SummarySentence("Vangen cut 126 million on the 12th.", 0.7, (), missing=("12th", "Vangen")),
            ("missing number", "missing name"),
            ("12th", "Vangen"),
        ),
        (
            SummarySentence("It burned on December 12th.", 0.9, (), missing=("December 12th", "Friday")),
            ("missing date",),
            ("December 12th", "Friday"),
        ),
        (
            SummarySentence("The mayor has not resigned.", 0.5, (), missing=("negation",)),
            ("negation flip", "low support"),
            (),
        ),
        (
            SummarySentence(
                'She said "we will never close it".', 0.8, (), missing=("we will never close it",)
            ),
            ("missing quote",),
            ("we will never close it",),
        ),
        (said("Quoted from the article, low.", 0.3, extractive=True), (), ()),
    ],
)
def test_each_sentence_says_which_rule_fired(
    sentence: SummarySentence, rules: tuple[str, ...], missing: tuple[str, ...]
) -> None:
    v = verdict(sentence, 0.6)
    assert (v.rules, v.missing, v.passed) == (rules, missing, not rules)


def test_the_queue_page_lists_riskiest_first_with_each_sentences_verdict() -> None:
    hostile = summary("hostile", said(f"Harbour news {ATTACK}.", 0.75), minute=7)
    dropped = summary("x", SummarySentence("Vangen cut 126 million.", 0.4, (), missing=("Vangen",)))
    rows = [*by_risk([*KNOWN, hostile]), dropped]
    queued = [Queued(s, risk(s), tuple(verdict(x, 0.6) for x in s.sentences)) for s in rows]
    live = {s.id: Live(False, "drafts are not shown in this language") for s in rows}
    page = render("queue.html", queued=queued, status="draft", statuses=list(Status), done=False, live=live)
    assert "<script>" not in page and "<img" not in page and ESCAPED in page
    shown = re.findall(r'<tr data-testid="queue-row">\s*<td><a href="/editor/summaries/([^"]+)"', page)
    assert shown == [s.id for s in rows]
    verdicts = [" ".join(v.split()) for v in re.findall(r'data-testid="verdict">(.*?)</span>', page, re.S)]
    assert len(verdicts) == sum(len(s.sentences) for s in rows)
    first = verdicts[0]
    assert first.startswith("support 0.64 ≥ threshold 0.60: passed · states ")
    assert {"126", "Eirik", "Vangen"} <= set(first.split(" · states ")[1].split(", "))
    assert any(v.startswith("quoted from the article: no rule applies · states ") for v in verdicts)
    assert verdicts[-1].startswith(
        "support 0.40 &lt; threshold 0.60: <strong>missing name, low support</strong> · not in evidence: "
        "Vangen · states 126"
    )
