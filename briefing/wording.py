"""The words a briefing says to its reader, in the reader's language and time zone.

An `Audience` is whom a briefing is written for: a language, a time zone and that language's
message catalogue. The English text in this package is the message id (gettext's convention);
the catalogue of another language comes from the application (`server.i18n` loads
server/locale), so this package names no files and an `Audience()` is plain English in UTC.

Times always carry their zone ("Monday 16 November, 20:00 (CET)"): a time without one was read
as local by readers in other zones. Date patterns are CLDR patterns (Babel), translated like any
other message so each language orders day and month its own way.
"""

from __future__ import annotations

import gettext
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from babel.dates import format_datetime

from recsys import Reason


def _(message: str) -> str:
    """Marks a message for extraction (pybabel); it is translated where it is used."""
    return message


# Translators: CLDR date patterns (https://unicode.org/reports/tr35/tr35-dates.html); keep the
# letters, reorder them and translate the quoted words.
DAY_AND_TIME = _("EEEE d MMMM, HH:mm")
DAY = _("EEEE d MMMM")

# The demo newsroom's sections; a newsroom's other sections show as they are named.
SECTIONS = (_("business"), _("culture"), _("local"), _("politics"), _("sport"), _("world"))


@dataclass(frozen=True, eq=False)
class Audience:
    """A reader's language (`en`, `nb`), IANA time zone, and the catalogue for that language."""

    language: str = "en"
    timezone: str = "UTC"
    catalogue: gettext.NullTranslations = field(default_factory=gettext.NullTranslations)

    def gettext(self, message: str, **values: object) -> str:
        """`message` in the reader's language, with %(name)s fields filled from `values`."""
        text = self.catalogue.gettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: object) -> str:
        """The form for `n` (Bokmål, like English, has one and many); `n` fills %(n)d."""
        return self.catalogue.ngettext(singular, plural, n) % {"n": n, **values}

    def when(self, moment: datetime, pattern: str = DAY_AND_TIME) -> str:
        """`moment` in the reader's zone and language, followed by the zone: "…, 20:00 (CET)"."""
        local = moment.astimezone(zone(self.timezone))
        shown = format_datetime(local, self.gettext(pattern), locale=self.language)
        return f"{shown} ({local:%Z})"

    def day(self, moment: datetime) -> str:
        """The reader's calendar day of `moment`: "Monday 16 November" (no time, so no zone)."""
        local = moment.astimezone(zone(self.timezone))
        return format_datetime(local, self.gettext(DAY), locale=self.language)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """A time zone by IANA name (ZoneInfo reads a file per new name: cached)."""
    return ZoneInfo(name)


def plain_greeting(n: int, since: datetime | None, audience: Audience) -> str:
    """The template greeting (no LLM): how many stories, and since which day."""
    stories = audience.ngettext("%(n)d story", "%(n)d stories", n)
    if since is None:
        return audience.gettext("Welcome: %(stories)s to start with.", stories=stories)
    return audience.gettext(
        "Since you were last here on %(day)s: %(stories)s for you.", day=audience.day(since), stories=stories
    )


def last_seen(since: datetime | None, audience: Audience) -> str:
    """When the reader was last here, for the greeting prompt ("on Monday 16 November, 20:00 (CET)")."""
    if since is None:
        return audience.gettext("never before")
    return audience.gettext("on %(when)s", when=audience.when(since))


def section_name(section: str, audience: Audience) -> str:
    """A section's name in the reader's language where the catalogue has it."""
    return audience.catalogue.gettext(section) if section else section


def reason_text(why: Reason, audience: Audience) -> str:
    """The "Why you see this" line. For a story update it says when the reader last read the
    story, not that article's headline: a later article may have superseded what it stated."""
    section = section_name(why.section, audience)
    match why.kind:
        case "story" if why.read_at is not None:
            return audience.gettext(
                "an update to a story you follow (you last read about it on %(day)s)",
                day=audience.day(why.read_at),
            )
        case "story":
            return audience.gettext("an update to a story you follow")
        case "similar":
            return audience.gettext("because you read “%(title)s”", title=why.title)
        case "section":
            return audience.gettext("you often read %(section)s", section=section)
        case "popular":
            return audience.gettext("popular and new")
        case _:
            return audience.gettext("new in %(section)s", section=section)


# Short, common words that tell English from Bokmål in a one-line greeting (words both
# languages use, such as "i" or "for", are in neither set).
_FUNCTION_WORDS = {
    "en": frozenset(
        "the and you your to of is with welcome hello since here new we have on a an it good back".split()
    ),
    "nb": frozenset(
        "og på til du deg din ditt dine er som med et av det har vi velkommen hei god siden sist nytt her å"
        " om".split()
    ),
}


def in_language(line: str, language: str) -> bool:
    """Whether `line` reads as `language` rather than the other: more of its own function words.
    A language without a word list (none yet) always passes."""
    words = [w.strip(".,!?:;\"'«»“”()").lower() for w in line.split()]
    own = _FUNCTION_WORDS.get(language)
    if own is None:
        return True
    other = frozenset().union(*(v for k, v in _FUNCTION_WORDS.items() if k != language))
    return sum(w in own for w in words) > sum(w in other for w in words)
