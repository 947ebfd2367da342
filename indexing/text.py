"""Word lists shared by story clustering and the grounding check (English and Bokmål)."""

from __future__ import annotations

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
