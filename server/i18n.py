"""The reader's language on pages: message catalogues (server/locale) and Jinja's i18n extension.

Catalogues are gettext `.mo` files compiled by Babel from `server/locale/<lang>/LC_MESSAGES/
messages.po` (`make messages` extracts, updates and compiles; the compiled file is committed so a
fresh clone and a pip install need no build step; a unit test fails when it is stale). English
is the source language: its messages are their own translation.

Templates write reader-facing text as `{{ _("Text") }}` or `{{ _("New since %(when)s", when=...) }}`
(Jinja's "newstyle" gettext: fields are escaped, then filled). The language is the template
context's `audience` (a `briefing.Audience`, the signed-in reader's) or else the publication's;
`when(moment)` writes a time in the audience's zone with the zone shown, `number(x)` a score in
its language's digits (0.91, 0,91). Nothing here is global per request, so concurrent requests
in different languages cannot mix.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel.numbers import format_decimal
from babel.support import Translations
from jinja2 import Environment, pass_context
from jinja2.runtime import Context

from briefing import Audience
from briefing.wording import section_name, zone

if TYPE_CHECKING:  # settings imports this module for its checks
    from server.settings import Settings

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
LANGUAGES = ("en", "nb")  # English (the source text) and Norwegian Bokmål
LANGUAGE_NAMES = {"en": "English", "nb": "Norsk (bokmål)"}


class UnknownSetting(ValueError):
    """A language or time zone this service does not know."""


@lru_cache(maxsize=len(LANGUAGES))
def catalogue(language: str) -> Translations:
    """The compiled catalogue of `language`; English has none and passes messages through."""
    check_language(language)
    found = Translations.load(str(LOCALE_DIR), [language], DOMAIN)
    return found if isinstance(found, Translations) else Translations()


def check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise UnknownSetting(f"unknown language {language!r}; choose one of {', '.join(LANGUAGES)}")
    return language


def check_timezone(name: str) -> str:
    """`name` if it is an IANA time zone this machine knows (Europe/Oslo, UTC, ...)."""
    try:
        zone(name)
    except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        raise UnknownSetting(f"unknown time zone {name!r}; use an IANA name such as Europe/Oslo") from None
    return name


def audience(language: str, timezone: str) -> Audience:
    """Whom a page or briefing is for: a checked language and zone with that language's catalogue."""
    return Audience(check_language(language), check_timezone(timezone), catalogue(language))


def install(env: Environment, default: Audience, readers: Callable[[str], Audience] | None = None) -> None:
    """Jinja's i18n extension with `_`, `gettext` and `ngettext` in the language of the context's
    `audience`, else the signed-in reader's (`readers(reader_id)`, looked up once per request),
    else `default`; plus `when(moment)`, `number(x)`, `translated(name)` and `page_language()`."""

    def of(ctx: Context) -> Audience:
        found = ctx.get("audience")
        if isinstance(found, Audience):
            return found
        request = ctx.get("request")
        return default if request is None or readers is None else _reader_audience(request, readers, default)

    @pass_context
    def gettext(ctx: Context, message: str) -> str:
        return of(ctx).catalogue.gettext(message)

    @pass_context
    def ngettext(ctx: Context, singular: str, plural: str, n: int) -> str:
        return of(ctx).catalogue.ngettext(singular, plural, n)

    @pass_context
    def when(ctx: Context, moment: Any) -> str:
        return of(ctx).when(moment)

    @pass_context
    def number(ctx: Context, value: float, pattern: str = "0.00") -> str:
        return str(format_decimal(value, pattern, locale=of(ctx).language))

    @pass_context
    def page_language(ctx: Context) -> str:
        return of(ctx).language

    @pass_context
    def page_timezone(ctx: Context) -> str:
        return of(ctx).timezone

    @pass_context
    def translated(ctx: Context, name: str) -> str:
        """A name from the data (a section) as the catalogue has it: no `%` formatting, so any
        text is safe here, unlike in `_()`."""
        return section_name(name, of(ctx))

    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.globals.update(
        when=when,
        number=number,
        page_language=page_language,
        page_timezone=page_timezone,
        languages=LANGUAGE_NAMES.items(),
    )
    env.filters["translated"] = translated


def _reader_audience(request: Any, readers: Callable[[str], Audience], default: Audience) -> Audience:
    """A signed-in reader's audience, kept on the request: one lookup however many messages."""
    found = getattr(request.state, "audience", None)
    if isinstance(found, Audience):
        return found
    actor = request.scope.get("user")
    found = readers(actor.id) if getattr(actor, "role", None) == "reader" else default
    request.state.audience = found
    return found


def publication(settings: Settings) -> Audience:
    """The publication's language and zone: every reader's until they choose their own."""
    return audience(settings.publication_language, settings.publication_timezone)
