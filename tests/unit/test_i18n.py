"""The message catalogue is complete and current, reader pages have no untranslated text, and
times are shown in the reader's zone with the zone named."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from litestar.plugins.jinja import JinjaTemplateEngine

from briefing import PROMPTS, Audience, Briefing, BriefingItem, BriefingPolicy, SummarySentence
from briefing.compose import _greeting_ok
from briefing.wording import in_language, last_seen, plain_greeting, reason_text
from recsys import Reason
from server.i18n import (
    LANGUAGES,
    LOCALE_DIR,
    UnknownSetting,
    audience,
    check_language,
    check_timezone,
    install,
)

ROOT = Path(__file__).resolve().parents[2]
READER_TEMPLATES = (  # every page and part a reader sees
    *("base.html", "briefing.html", "login.html", "more.html", "about.html", "_settings.html"),
    *("_reader_nav.html", "_account.html", "_feedback.html", "_events_head.html"),
)
VISIT = datetime(2026, 11, 16, 19, 0, tzinfo=UTC)  # 20:00 in Oslo (CET, +01:00)


def _po(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"


def _ids(path: Path) -> set[str]:
    with path.open("rb") as f:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(f) if m.id}


def test_every_message_has_a_bokmal_translation() -> None:
    with _po("nb").open("rb") as f:
        catalogue = read_po(f)
    untranslated = [m.id for m in catalogue if m.id and (m.fuzzy or not all(_strings(m.string)))]
    assert not untranslated
    assert _ids(_po("nb")) == _ids(LOCALE_DIR / "messages.pot")


def _strings(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


def test_the_committed_catalogue_is_compiled_from_the_current_po() -> None:
    for language in (lang for lang in LANGUAGES if lang != "en"):
        with _po(language).open("rb") as f:
            compiled = io.BytesIO()
            write_mo(compiled, read_po(f))
        committed = _po(language).with_suffix(".mo").read_bytes()
        assert committed == compiled.getvalue(), f"run `make messages`: {language} .mo is stale"


def test_the_template_holds_every_message_the_code_and_pages_use(tmp_path: Path) -> None:
    """A new `_("...")` in a template or in the code fails here until `make messages` ran."""
    out = tmp_path / "messages.pot"
    args = ["pybabel", "-q", "extract", "-F", str(LOCALE_DIR / "babel.cfg"), "-k", "_", "-o", str(out)]
    CommandLineInterface().run([*args, str(ROOT)])
    assert _ids(out) == _ids(LOCALE_DIR / "messages.pot")


@pytest.mark.parametrize("name", READER_TEMPLATES)
def test_reader_pages_have_no_text_outside_the_catalogue(name: str) -> None:
    source = (ROOT / "server" / "templates" / name).read_text()
    for pattern in (r"\{#.*?#\}", r"\{%.*?%\}", r"\{\{.*?\}\}", r"<[^>]*>", r"&\w+;"):
        source = re.sub(pattern, " ", source, flags=re.S)
    assert not re.findall(r"[^\W\d_]{2,}", source), f"{name} has text outside {{{{ _(...) }}}}"


def test_times_are_in_the_readers_zone_with_the_zone_named() -> None:
    assert audience("en", "Europe/Oslo").when(VISIT) == "Monday 16 November, 20:00 (CET)"
    assert audience("en", "UTC").when(VISIT) == "Monday 16 November, 19:00 (UTC)"
    assert audience("nb", "Europe/Oslo").when(VISIT) == "mandag 16. november kl. 20:00 (CET)"
    summer = datetime(2026, 6, 1, 5, 30, tzinfo=UTC)
    assert audience("en", "Europe/Oslo").when(summer) == "Monday 1 June, 07:30 (CEST)"
    # the calendar day is the reader's: 23:30 UTC on Monday is already Tuesday in Oslo
    assert (
        audience("en", "Europe/Oslo").day(datetime(2026, 11, 16, 23, 30, tzinfo=UTC)) == "Tuesday 17 November"
    )


def test_the_plain_greeting_speaks_the_readers_language() -> None:
    nb = audience("nb", "Europe/Oslo")
    assert plain_greeting(3, VISIT, nb) == "Siden sist du var her, mandag 16. november: 3 saker til deg."
    assert plain_greeting(1, None, nb) == "Velkommen: 1 sak å begynne med."
    assert (
        plain_greeting(1, VISIT, Audience())
        == "Since you were last here on Monday 16 November: 1 story for you."
    )
    assert last_seen(VISIT, nb) == "mandag 16. november kl. 20:00 (CET)"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "", "Europe/Oslo/../UTC", "CET\x00"])
def test_unknown_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(UnknownSetting, match="unknown time zone"):
        check_timezone(zone)


@pytest.mark.parametrize("language", ["de", "NB", "", "no", "en-US"])
def test_unknown_languages_are_refused(language: str) -> None:
    with pytest.raises(UnknownSetting, match="unknown language"):
        check_language(language)


def test_reasons_are_worded_in_the_readers_language_and_zone() -> None:
    nb, en = audience("nb", "Europe/Oslo"), audience("en", "UTC")
    late = datetime(2026, 11, 16, 23, 30, tzinfo=UTC)  # Tuesday already in Oslo
    story = Reason("story", "politics", read_article_id="pol-0001", read_at=late)
    assert (
        reason_text(story, en)
        == "an update to a story you follow (you last read about it on Monday 16 November)"
    )
    assert (
        reason_text(story, nb)
        == "en oppdatering i en sak du følger (du leste sist om den tirsdag 17. november)"
    )
    assert reason_text(Reason("similar", "sport", title="Havnby wins"), nb) == "fordi du leste «Havnby wins»"
    assert reason_text(Reason("section", "politics"), nb) == "du leser ofte politikk"
    assert reason_text(Reason("new", "Debatt 100%"), nb) == "nytt i Debatt 100%"  # unknown names pass through
    assert reason_text(Reason("popular"), en) == str(Reason("popular")) == "popular and new"


def test_a_greeting_in_the_wrong_language_is_caught() -> None:
    assert in_language("Velkommen tilbake, her er det nytt siden sist!", "nb")
    assert not in_language("Welcome back, here is what is new since your last visit!", "nb")
    assert in_language("Welcome back, here is what is new since your last visit!", "en")
    assert not in_language("Hei og velkommen!", "en")


def test_a_bokmal_prompt_is_found_for_the_greeting_and_english_elsewhere() -> None:
    assert PROMPTS.localized("greeting", "nb").id == "greeting-nb@1"
    assert PROMPTS.localized("greeting@1", "nb").language == "nb"
    assert PROMPTS.localized("greeting", "en").id == "greeting@1"
    assert PROMPTS.localized("article", "nb").id == "article-nb@1"
    assert PROMPTS.localized("article", "sv").id == PROMPTS.get("article").id  # no Swedish one


def test_a_bokmal_page_has_bokmal_labels_and_translated_sections() -> None:
    engine = JinjaTemplateEngine(directory=ROOT / "server" / "templates")
    install(engine.engine, audience("en", "Europe/Oslo"))
    item = BriefingItem(
        "s1",
        "pol-0006",
        "Ferry",
        "https://x.example/a",
        "politics",
        True,
        "en oppdatering",
        "approved",
        "pol-0006--1",
        "SmolLM2",
        (SummarySentence("Text.", 0.9, ("pol-0006@h#0",)),),
    )
    briefing = Briefing("r04", VISIT, VISIT, "control", BriefingPolicy(), "Hei!", (item,), ("SmolLM2",))
    context = {
        "b": briefing,
        "reader": "r04",
        "impressions": {"pol-0006": "i1"},
        "csrf_input": "",
        "csrf_token": str,
    }
    page = engine.get_template("briefing.html").render(**context, audience=audience("nb", "Europe/Oslo"))
    assert "KI-generert sammendrag, gjennomgått av en redaktør." in page
    assert "politikk · oppdatering i en sak du følger" in page and "1 sak" in page
    english = engine.get_template("briefing.html").render(**context)  # no audience: the publication's
    assert (
        "AI-generated summary, reviewed by an editor." in english
        and "New since Monday 16 November, 20:00 (CET)" in english
    )


def test_a_greeting_that_repeats_its_prompt_is_refused() -> None:
    """Seen with the packaged 135M model and the Bokmål prompt: it answered with its instructions."""
    chat = PROMPTS.localized("greeting", "nb").render(since="aldri før", topics="Ferjeanlegget blir dyrere")
    prompt = " ".join(m["content"] for m in chat)
    echo = "Ikke oppgi fakta, navn eller tall; ikke oppsummer nyhetene. Skriv hilsenen på bokmål."
    assert in_language(echo, "nb") and not _greeting_ok(echo, [], "nb", prompt)
    ferry = BriefingItem(
        "s1", "nob-1", "Ferjeanlegget blir dyrere", "u", "", False, "", "draft", None, None, ()
    )
    greeting = "Velkommen tilbake, her er det nytt om ferjeanlegget siden sist!"  # it names an item
    assert _greeting_ok(greeting, [ferry], "nb", prompt)
    assert not _greeting_ok("Welcome back, here is what is new since your last visit!", [], "nb", prompt)
