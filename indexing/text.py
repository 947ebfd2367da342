"""Text helpers shared across indexing: word lists for story clustering and the grounding check
(English and Bokmål), and HTML reduced to text (every source's titles and bodies pass through it).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

STOPWORDS = frozenset(
    """a about after all also an and any are as at be been before being but by can could did do
    does for from had has have he her his how i if in into is it its more most mr mrs ms dr new no
    not of on or our out over said says she so some than that the their them then there these
    they this those to under up was we were what when where which while who why will with would
    you your de den det en er et etter for fra før han har hun i ikke kan med nå og om på som
    til var vi vil at av""".split()
)

CALENDAR_WORDS = frozenset(
    """monday tuesday wednesday thursday friday saturday sunday january february march april may
    june july august september october november december mandag tirsdag onsdag torsdag fredag
    lørdag søndag""".split()
)


class _TextExtractor(HTMLParser):
    """Visible text of an HTML fragment; scripts and styles dropped, blocks become paragraphs."""

    _BLOCKS = frozenset({"p", "div", "br", "li", "h1", "h2", "h3", "h4", "blockquote", "tr"})
    _HIDDEN = frozenset({"script", "style", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._hidden += tag in self._HIDDEN
        if tag in self._BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def html_to_text(fragment: str) -> str:
    parser = _TextExtractor()
    parser.feed(fragment)
    parser.close()
    paragraphs = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p)


# A tag (<b>, </p>, <img ...>, <!-- -->) or a character reference (&amp; &#8217;). Plain text
# that merely holds "<" ("5 < 6") or "&" ("Q&A") is left alone.
_MARKUP = re.compile(r"<[a-zA-Z/!][^<>]*>|&(?:[a-zA-Z]{2,8}|#\d{1,7}|#x[0-9a-fA-F]{1,6});")


def has_markup(text: str) -> bool:
    return bool(_MARKUP.search(text))
