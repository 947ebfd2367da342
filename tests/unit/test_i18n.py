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

from briefing import Audience
from briefing.wording import last_seen, plain_greeting
from server.i18n import LANGUAGES, LOCALE_DIR, UnknownSetting, audience, check_language, check_timezone

ROOT = Path(__file__).resolve().parents[2]
READER_TEMPLATES = ("base.html", "briefing.html", "login.html")
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
    assert audience("en", "Europe/Oslo").day(datetime(2026, 11, 16, 23, 30, tzinfo=UTC)) == "Tuesday 17 November"


def test_the_plain_greeting_speaks_the_readers_language() -> None:
    nb = audience("nb", "Europe/Oslo")
    assert plain_greeting(3, VISIT, nb) == "Siden sist du var her, mandag 16. november: 3 saker til deg."
    assert plain_greeting(1, None, nb) == "Velkommen: 1 sak å begynne med."
    assert plain_greeting(1, VISIT, Audience()) == "Since you were last here on Monday 16 November: 1 story for you."
    assert last_seen(VISIT, nb) == "mandag 16. november kl. 20:00 (CET)"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "", "Europe/Oslo/../UTC", "CET\x00"])
def test_unknown_time_zones_are_refused(zone: str) -> None:
    with pytest.raises(UnknownSetting, match="unknown time zone"):
        check_timezone(zone)


@pytest.mark.parametrize("language", ["de", "NB", "", "no", "en-US"])
def test_unknown_languages_are_refused(language: str) -> None:
    with pytest.raises(UnknownSetting, match="unknown language"):
        check_language(language)
