"""Generate the demo readers (data/demo/readers.jsonl) from the demo newsroom.

What it plants: 30 fictional readers of Havnby Post (en) and Havnby Avis (nb), each with a
known interest written into a rule below (a section, a set of tags, a language, or one developing
story thread) and a click history drawn from that rule. Every visit shows the reader a front page
(the newest unread articles in their languages); the reader clicks and reads only what the rule
likes, so the impressions that were not clicked are the negative signal. Some readers also give
thumbs up, thumbs down on a section they dislike, or only skim (short dwell) what they click.

Why: the recommender and the briefing need readers whose right answer is known in advance: a
sport-and-local reader must not get politics, a reader who stopped after day 1 of a story must
get the later developments, a reader who read a story to the end must not get it again, a reader
who read the first version of a corrected or live-updated article should get the correction or
the update, and a new reader (no events) must still get a sensible briefing. Each reader's
`description` says what was planted and what a good recommender should show them.

The output is deterministic (each reader draws from `random.Random` with a fixed seed derived from
`SEED`) and is checked before it is written. Run: `python data/demo/make_readers.py`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

SEED = 20261116
HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "readers.jsonl"
TZ = timezone(timedelta(hours=1))
DAY_ZERO = date(2026, 11, 15)  # day 1 of the demo week is 16 November 2026
WINDOW = timedelta(hours=30)  # how old an article may be and still be on the front page
WORDS_PER_SECOND = 3.4  # a careful reader, about 200 words a minute

Event = dict[str, Any]


@dataclass(frozen=True)
class Article:
    id: str
    section: str
    language: str
    tags: frozenset[str]
    published: datetime
    updated: datetime
    words: int

    @property
    def day(self) -> int:
        return (self.published.date() - DAY_ZERO).days


Interest = Callable[[Article], float]  # probability that the reader clicks it when it is shown
Rule = Callable[[Article], bool]


def never(_: Article) -> bool:
    return False


@dataclass(frozen=True)
class Persona:
    reader_id: str
    name: str
    persona: str
    description: str
    languages: tuple[str, ...]
    last_visit: datetime | None
    sessions: tuple[datetime, ...]
    interest: Interest
    reads: tuple[int, int]  # planted range for the number of reads, checked after generation
    pinned: frozenset[str] = frozenset()  # shown as top story while unread; always read
    dislike: Rule = never  # thumbs down from the front page, never clicked
    skim: Rule = never  # clicked but left after a few seconds
    max_reads: int = 1_000
    page_size: int = 15
    thumbs_up_p: float = 0.15
    dislike_p: float = 0.6
    read_before_update: frozenset[str] = frozenset()  # read while the first version was live


# ---------------------------------------------------------------- input


def load_articles(folder: Path) -> dict[str, Article]:
    """All articles; when an id appears twice (an update), the later line wins."""
    articles: dict[str, Article] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                article = to_article(json.loads(line))
                articles[article.id] = article
    return articles


def to_article(raw: dict[str, Any]) -> Article:
    published = datetime.fromisoformat(raw["published_at"])
    return Article(
        id=raw["id"],
        section=raw["section"],
        language=raw["language"],
        tags=frozenset(raw["tags"]),
        published=published,
        updated=datetime.fromisoformat(raw.get("updated_at") or raw["published_at"]),
        words=len(raw["body"].split()),
    )


def load_threads(folder: Path) -> dict[str, list[str]]:
    threads: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                raw = json.loads(line)
                threads[raw["thread_id"]] = list(raw["article_ids"])
    return threads


# ---------------------------------------------------------------- rules


def sections(*names: str, p: float = 0.85) -> Interest:
    return lambda a: p if a.section in names else 0.0


def tagged(tags: Iterable[str], p: float = 0.95) -> Interest:
    wanted = frozenset(tags)
    return lambda a: p if a.tags & wanted else 0.0


def anything(p: float) -> Interest:
    return lambda _: p


def either(*interests: Interest) -> Interest:
    return lambda a: max(rule(a) for rule in interests)


def in_section(*names: str) -> Rule:
    return lambda a: a.section in names


def at(day: int, clock: str) -> datetime:
    """A time in the demo week: at(16, "08:05") is 2026-11-16T08:05:00+01:00."""
    hour, minute = (int(part) for part in clock.split(":"))
    return datetime(2026, 11, day, hour, minute, tzinfo=TZ)


def daily(rng: random.Random, days: Iterable[int], clocks: Iterable[str]) -> tuple[datetime, ...]:
    """One visit per day and clock time, moved by up to 20 minutes either way."""
    slots = [at(day, clock) for day in days for clock in clocks]
    return tuple(slot + timedelta(minutes=rng.randint(-20, 20)) for slot in slots)


def thread_days(
    threads: dict[str, list[str]], articles: dict[str, Article], thread_id: str, days: Iterable[int]
) -> list[str]:
    """The articles of a story thread published on the given days of the demo week."""
    wanted = set(days)
    return [i for i in threads[thread_id] if articles[i].day in wanted]


# ---------------------------------------------------------------- simulation


def front_page(p: Persona, articles: dict[str, Article], start: datetime, seen: set[str]) -> list[Article]:
    """Newest unread articles in the reader's languages; pinned stories go on top."""
    fresh = [
        a
        for a in articles.values()
        if a.language in p.languages and start - WINDOW <= a.published < start and a.id not in seen
    ]
    fresh.sort(key=lambda a: (a.published, a.id), reverse=True)
    top = [a for a in fresh if a.id in p.pinned]
    rest = [a for a in fresh if a.id not in p.pinned]
    return (top + rest)[: max(p.page_size, len(top))]


def dwell(rng: random.Random, article: Article, skim: bool) -> int:
    if skim:
        return rng.randint(4, 15)
    return max(20, round(article.words / WORDS_PER_SECOND * rng.uniform(0.7, 1.3)))


class Session:
    """One visit: impressions first, then the reader works down the page until `until`."""

    def __init__(self, p: Persona, rng: random.Random, start: datetime, until: datetime) -> None:
        self.p, self.rng, self.until = p, rng, until
        self.now = start
        self.events: list[tuple[str, str, datetime, int | None]] = []

    def tick(self, low: int, high: int) -> datetime:
        self.now += timedelta(seconds=self.rng.randint(low, high))
        return self.now

    def show(self, page: list[Article]) -> None:
        for article in page:
            self.events.append(("impression", article.id, self.tick(1, 3), None))

    def visit(self, article: Article, reads_so_far: int) -> str:
        """Thumbs down, read, or pass over one card: "down", "read" or ""."""
        p, rng = self.p, self.rng
        if p.dislike(article):
            if rng.random() >= p.dislike_p:
                return ""
            self.events.append(("thumbs_down", article.id, self.tick(2, 8), None))
            return "down"
        wants = article.id in p.pinned or rng.random() < p.interest(article)
        return "read" if wants and reads_so_far < p.max_reads and self.read(article) else ""

    def read(self, article: Article) -> bool:
        rng, skim = self.rng, self.p.skim(article)
        click = self.now + timedelta(seconds=rng.randint(4, 30))
        opened = click + timedelta(seconds=rng.randint(2, 6))
        seconds = dwell(rng, article, skim)
        done = opened + timedelta(seconds=seconds)
        if done + timedelta(seconds=5) >= self.until:
            return False
        self.events += [("click", article.id, click, None), ("read", article.id, opened, seconds)]
        self.now = done
        if not skim and rng.random() < self.p.thumbs_up_p:
            self.events.append(("thumbs_up", article.id, self.tick(1, 4), None))
        return True


def simulate(p: Persona, articles: dict[str, Article], rng: random.Random) -> list[Event]:
    if p.last_visit is None:
        return []  # a new reader
    assert list(p.sessions) == sorted(p.sessions), p.reader_id
    seen: set[str] = set()  # read or dismissed: not shown again
    reads = 0
    raw: list[tuple[str, str, datetime, int | None]] = []
    for start, end in zip(p.sessions, [*p.sessions[1:], p.last_visit], strict=True):
        session = Session(p, rng, start, end - timedelta(minutes=1))
        page = front_page(p, articles, start, seen)
        session.show(page)
        for article in page:
            outcome = session.visit(article, reads)
            if outcome:
                seen.add(article.id)
                reads += outcome == "read"
        raw += session.events
    return [to_event(p.reader_id, n, e) for n, e in enumerate(raw, start=1)]


def to_event(reader_id: str, n: int, event: tuple[str, str, datetime, int | None]) -> Event:
    kind, article_id, when, seconds = event
    out: Event = {"event_id": f"{reader_id}-e{n:03d}", "type": kind, "article_id": article_id}
    out["at"] = when.isoformat()
    if seconds is not None:
        out["dwell_s"] = seconds
    return out


# ---------------------------------------------------------------- the readers


def build_personas(
    articles: dict[str, Article], threads: dict[str, list[str]], rngs: list[random.Random]
) -> list[Persona]:
    """Thirty readers; rngs[n] jitters the visit times of reader n + 1."""
    personas = [
        new_reader(),
        *section_readers(rngs),
        *story_readers(articles, threads),
        *other_readers(articles, threads, rngs),
    ]
    return sorted(personas, key=lambda p: p.reader_id)


def new_reader() -> Persona:
    return Persona(
        "r03", "Mei", "new-reader",
        "New reader with no history at all (last_visit null): a good recommender falls back to the "
        "day's most important and most followed stories across sections in English.",
        ("en",), None, (), anything(0.0), (0, 0),
    )  # fmt: skip


def section_readers(rngs: list[random.Random]) -> list[Persona]:
    """r01 and r04-r08: readers of one language or of fixed sections only."""
    week = (16, 17, 18)
    return [
        Persona(
            "r01", "Ylva", "sport-local",
            "Reads only English sport and local news and skips everything else on the page, last "
            "seen 18 Nov 08:00: a good recommender shows the newer sport and local stories (e.g. the "
            "Solvik surgery news and the Nordkaia fire cause) and no politics, business or culture.",
            ("en",), at(18, "08:00"),
            (*daily(rngs[0], (16, 17), ("08:00", "12:40", "19:20")), at(17, "22:00")),
            sections("sport", "local"), (10, 30),
        ),
        Persona(
            "r04", "Vebjørn", "norwegian-reader",
            "Reads only Havnby Avis in Norwegian Bokmål (language nb) across all sections, last seen "
            "18 Nov 20:00: a good recommender shows only nb articles, such as the 19 Nov Vestkyst "
            "Sjømat council follow-up, and never English ones.",
            ("nb",), at(18, "20:00"), daily(rngs[3], week, ("07:50", "12:30", "18:00")),
            either(anything(0.6), sections("business", "local", p=0.8)), (8, 24),
        ),
        Persona(
            "r05", "Priya", "business",
            "Reads English business news only, last seen 18 Nov 13:00: a good recommender shows the "
            "later business stories (Nordvik Laks shareholders, Kvalsund ferry order, Tidevann "
            "funding) and nothing from other sections.",
            ("en",), at(18, "13:00"), daily(rngs[4], week, ("07:55", "12:15", "18:45"))[:-1],
            sections("business"), (6, 20),
        ),
        Persona(
            "r06", "Hedda", "culture",
            "Reads English culture news only, last seen 18 Nov 20:00: a good recommender shows the "
            "19 Nov culture stories (the Glass Harbour headliner, the Vestkyst Literature Prize "
            "winner) and nothing from other sections.",
            ("en",), at(18, "20:00"), daily(rngs[5], week, ("08:20", "13:10", "19:00")),
            sections("culture"), (6, 20),
        ),
        Persona(
            "r07", "Omar", "politics",
            "Reads English politics only, last seen 18 Nov 10:00: a good recommender shows the later "
            "politics stories (the Nordkai terminal approval, the quota-act reactions, the budget "
            "deal) and nothing from other sections.",
            ("en",), at(18, "10:00"), daily(rngs[6], week, ("07:40", "12:30", "20:30"))[:-2],
            sections("politics"), (6, 20),
        ),
        Persona(
            "r08", "Callum", "world",
            "Reads English world news only, last seen 18 Nov 18:00: a good recommender shows the "
            "later world stories (the Lirren valley framework, the Tessaro Accord) and nothing "
            "from other sections.",
            ("en",), at(18, "18:00"), daily(rngs[7], week, ("08:10", "13:00", "20:40"))[:-1],
            sections("world"), (6, 20),
        ),
    ]  # fmt: skip


def story_readers(articles: dict[str, Article], threads: dict[str, list[str]]) -> list[Persona]:
    """r02, r09 and r10: one story's first day, or the whole first day."""
    ferry = thread_days(threads, articles, "t-pol-nordkai-ferry", (1,))
    ferry_later = thread_days(threads, articles, "t-pol-nordkai-ferry", (2, 3))
    takeover = thread_days(threads, articles, "t-bus-nordvik-laks-takeover", (1,))
    price = thread_days(threads, articles, "t-bus-nordvik-laks-takeover", (3,))
    return [
        Persona(
            "r02", "Frida", "story-follower",
            f"Follows one developing story, the Nordkai ferry terminal budget fight: read only its "
            f"day-1 article {', '.join(ferry)} and nothing else, last seen 16 Nov 20:00, so a good "
            f"recommender leads with the follow-ups {' and '.join(ferry_later)} (day-3 council "
            f"approval).",
            ("en",), at(16, "20:00"), (at(16, "08:10"), at(16, "19:15")),
            anything(0.0), (1, 1), pinned=frozenset(ferry), thumbs_up_p=1.0,
        ),
        Persona(
            "r09", "Mathias", "takeover-follower",
            f"Follows the Fjordhav bid for Nordvik Laks: read the day-1 article {takeover[0]} plus "
            f"some other business, last seen 17 Nov 07:05 before the day-3 price reveal {price[0]}, "
            f"so a good recommender puts the takeover follow-ups first.",
            ("en",), at(17, "07:05"),
            (at(16, "08:20"), at(16, "12:35"), at(16, "17:10"), at(17, "06:50")),
            sections("business", p=0.75), (3, 8), pinned=frozenset(takeover), thumbs_up_p=0.5,
        ),
        Persona(
            "r10", "Aisha", "read-everything-day1",
            "Read most of the English day-1 (16 Nov) news in every section and was last seen at the "
            "end of day 1: a good recommender shows the day-2 to day-4 follow-ups of the stories "
            "begun that day and leaves the day-1 articles out.",
            ("en",), at(16, "23:30"),
            (at(16, "08:00"), at(16, "10:40"), at(16, "13:10"), at(16, "15:30"), at(16, "18:45"),
             at(16, "22:00")),
            anything(0.6), (22, 32),
        ),
    ]  # fmt: skip


def other_readers(
    articles: dict[str, Article], threads: dict[str, list[str]], rngs: list[random.Random]
) -> list[Persona]:
    return [
        *light_readers(),
        *dislike_readers(rngs),
        *mixed_readers(rngs),
        *thread_readers(articles, threads),
        *topic_readers(rngs),
    ]


def light_readers() -> list[Persona]:
    """r11-r13: cold start, one to three reads."""
    return [
        Persona(
            "r11", "Felix", "light-sport",
            "Cold start: a single visit on 16 Nov with one sport read: a good recommender leans "
            "towards sport but still mixes in the top stories of the other sections.",
            ("en",), at(16, "09:40"), (at(16, "09:20"),), sections("sport", p=1.0), (1, 1),
            max_reads=1,
        ),
        Persona(
            "r12", "Tuva", "light-norwegian",
            "Cold start in Norwegian: two visits and only two reads (nb sport and local news): a "
            "good recommender shows nb articles, with some weight on local and sport.",
            ("nb",), at(18, "08:30"), (at(17, "12:45"), at(18, "08:10")),
            sections("local", "sport", p=0.9), (2, 2), max_reads=2,
        ),
        Persona(
            "r13", "Linnea", "light-culture",
            "Light reader with three English culture reads over two evenings: a good recommender "
            "offers the 19 Nov culture stories plus popular stories from other sections.",
            ("en",), at(18, "20:00"), (at(17, "21:00"), at(18, "19:30")),
            sections("culture", p=0.9), (3, 3), max_reads=3,
        ),
    ]  # fmt: skip


def dislike_readers(rngs: list[random.Random]) -> list[Persona]:
    """r14 and r15: broad readers who give thumbs down to one section."""
    return [
        Persona(
            "r14", "Signe", "no-sport",
            "Reads English news broadly but gives thumbs down to sport articles on the page and "
            "never clicks them, last seen 19 Nov 12:00: a good recommender shows no sport at all.",
            ("en",), at(19, "12:00"),
            (*daily(rngs[13], (16, 17, 18), ("08:30", "19:30")), at(19, "09:15")),
            sections("politics", "business", "local", "world", "culture", p=0.35), (8, 25),
            dislike=in_section("sport"),
        ),
        Persona(
            "r15", "Oskar", "no-politics",
            "Reads English sport, culture and local news, a little business and world, and gives "
            "thumbs down to politics, last seen 18 Nov 21:00: a good recommender shows no politics.",
            ("en",), at(18, "21:00"), daily(rngs[14], (16, 17, 18), ("07:45", "18:30")),
            either(sections("sport", "culture", "local", p=0.45), sections("business", "world", p=0.15)),
            (8, 30), dislike=in_section("politics"),
        ),
    ]  # fmt: skip


def mixed_readers(rngs: list[random.Random]) -> list[Persona]:
    """r16-r18: two sections each."""
    return [
        Persona(
            "r16", "Viktor", "sport-business",
            "Reads English sport and business news only, last seen 18 Nov 12:30: a good recommender "
            "mixes the newer sport and business stories and leaves out the other sections.",
            ("en",), at(18, "12:30"), daily(rngs[15], (16, 17, 18), ("07:30", "17:30"))[:-1],
            sections("sport", "business", p=0.75), (8, 30),
        ),
        Persona(
            "r17", "Ronja", "culture-world",
            "Reads English culture and world news only, last seen 18 Nov 22:00: a good recommender "
            "shows the 19 Nov culture and world stories (Tessaro Accord, Literature Prize winner).",
            ("en",), at(18, "22:00"), daily(rngs[16], (16, 17, 18), ("12:20", "20:30")),
            sections("culture", "world", p=0.75), (8, 30),
        ),
        Persona(
            "r18", "Noah", "politics-local",
            "Reads English politics and local news only, last seen 19 Nov 08:00: a good recommender "
            "shows the 19 Nov politics and local stories and nothing from other sections.",
            ("en",), at(19, "08:00"), daily(rngs[17], (16, 17, 18), ("07:35", "21:00")),
            sections("politics", "local", p=0.75), (8, 30),
        ),
    ]  # fmt: skip


def thread_readers(articles: dict[str, Article], threads: dict[str, list[str]]) -> list[Persona]:
    """r19-r23 and r25: readers defined by where they stopped in a story thread."""
    return [
        injury_reader(articles, threads),
        complete_reader(threads),
        live_update_reader(),
        handball_reader(articles, threads),
        correction_reader(articles, threads),
        nb_story_reader(articles, threads),
    ]


def injury_reader(articles: dict[str, Article], threads: dict[str, list[str]]) -> Persona:
    early = thread_days(threads, articles, "t-spo-solvik-injury", (1, 2))
    later = thread_days(threads, articles, "t-spo-solvik-injury", (3, 4))
    return Persona(
        "r19", "Leah", "injury-follower",
        f"Follows Ingrid Solvik's knee injury: read days 1-2 ({', '.join(early)}) and some other "
        f"sport, last seen 17 Nov 21:00 before the diagnosis, so a good recommender leads with "
        f"{' and '.join(later)}.",
        ("en",), at(17, "21:00"),
        (at(16, "08:00"), at(16, "19:00"), at(17, "12:40"), at(17, "20:10")),
        either(tagged(["football"], p=0.9), sections("sport", p=0.3)), (3, 9),
        pinned=frozenset(early),
    )  # fmt: skip


def complete_reader(threads: dict[str, list[str]]) -> Persona:
    story = threads["t-bus-nordvik-laks-takeover"]
    return Persona(
        "r20", "Dagny", "thread-complete",
        f"Has read every article of the Fjordhav bid for Nordvik Laks up to day 4 ({', '.join(story)}) "
        f"and other business, last seen 19 Nov 20:00: nothing in that story is new, so a good "
        f"recommender does not push it again and offers other unread stories.",
        ("en",), at(19, "20:00"),
        (at(16, "08:30"), at(16, "18:30"), at(17, "08:00"), at(17, "17:00"), at(18, "07:40"),
         at(18, "19:00"), at(19, "08:30"), at(19, "17:30")),
        sections("business", p=0.7), (8, 20), pinned=frozenset(story),
    )  # fmt: skip


def live_update_reader() -> Persona:
    return Persona(
        "r21", "Brage", "live-update-politics",
        "Politics reader who read the live article pol-0007 at 13:20 on 17 Nov while it still "
        "showed the opening debate and left at 15:00, before it was updated under the same id with "
        "the 88-81 vote: a good recommender re-offers the updated pol-0007 and then pol-0013.",
        ("en",), at(17, "15:00"),
        (at(16, "12:10"), at(16, "20:30"), at(17, "08:30"), at(17, "13:20")),
        sections("politics", p=0.8), (5, 15), pinned=frozenset({"pol-0007"}),
        read_before_update=frozenset({"pol-0007"}),
    )  # fmt: skip


def handball_reader(articles: dict[str, Article], threads: dict[str, list[str]]) -> Persona:
    cup = thread_days(threads, articles, "t-spo-handball-cup-semi", (2, 3))
    return Persona(
        "r22", "Iver", "handball-live",
        f"Handball fan who read the cup semi-final preview and the half-time version of the live "
        f"report ({', '.join(cup)}) and left at 19:50 on 18 Nov, before the 27-25 final score was "
        f"added under the same id: a good recommender re-offers the updated {cup[-1]}, then the "
        f"ticket story spo-0018.",
        ("en",), at(18, "19:50"),
        (at(17, "09:00"), at(17, "20:00"), at(18, "12:40"), at(18, "19:15")),
        either(tagged(["handball"], p=1.0), sections("sport", p=0.45)), (5, 15),
        pinned=frozenset(cup), read_before_update=frozenset(cup[-1:]),
    )  # fmt: skip


def correction_reader(articles: dict[str, Article], threads: dict[str, list[str]]) -> Persona:
    ids = ("t-cul-vestkyst-literature-prize", "t-wld-tessaro-summit", "t-spo-fjellbakken-hill-record",
           "t-loc-sundbrua-repair")  # fmt: skip
    first = sorted(thread_days(threads, articles, t, (1,))[0] for t in ids)
    fixes = sorted(thread_days(threads, articles, t, (2,))[0] for t in ids)
    return Persona(
        "r23", "Selma", "correction-reader",
        f"Read on 16 Nov the four English day-1 articles that later got a correction "
        f"({', '.join(first)}) and left that night: a good recommender shows the day-2 articles "
        f"that carry the corrections ({', '.join(fixes)}).",
        ("en",), at(16, "22:00"), (at(16, "10:20"), at(16, "13:00"), at(16, "20:00")),
        anything(0.25), (6, 16), pinned=frozenset(first),
    )  # fmt: skip


def nb_story_reader(articles: dict[str, Article], threads: dict[str, list[str]]) -> Persona:
    early = thread_days(threads, articles, "t-nob-001", (1, 2))
    later = thread_days(threads, articles, "t-nob-001", (3, 4))
    return Persona(
        "r25", "Magnhild", "nb-story-follower",
        f"Norwegian reader following the Vestkyst Sjømat closure: read days 1-2 ({', '.join(early)}) "
        f"and some other nb local and business news, last seen 17 Nov 21:00, so a good recommender "
        f"leads with {' and '.join(later)} (142 jobs lost, council asks for NOK 12 million).",
        ("nb",), at(17, "21:00"),
        (at(16, "07:30"), at(16, "18:00"), at(17, "07:20"), at(17, "19:30")),
        either(sections("business", p=0.9), sections("local", "politics", p=0.5)), (4, 10),
        pinned=frozenset(early),
    )  # fmt: skip


FISHERIES = {"fishing-quotas", "coastal-quota-act", "fish-processing", "salmon farming", "aquaculture"}
FISHERIES |= {"fisheries", "cod", "fiskeri", "kvoter", "makrell", "fiskeindustri", "vestkyst sjømat"}
ENERGY = {"tidevann power", "start-up", "start-ups", "tidal energy", "wind power", "offshore-wind"}
ENERGY |= {"technology", "electricity", "nordkapp ventures"}
OCEAN = {"climate", "oceans", "tessaro-summit", "blue-carbon-fund", "arctic", "sea-ice", "extreme-weather"}
OCEAN |= {"floods", "environment", "klima", "hav", "storm", "weather"}


def topic_readers(rngs: list[random.Random]) -> list[Persona]:
    """r24 and r26-r30: tag topics across sections and languages, dwell, lapsed readers."""
    return [
        Persona(
            "r24", "Njål", "fisheries-bilingual",
            "Reads fisheries and seafood-industry news in both English and Norwegian, whatever the "
            "section (quota act, salmon takeover, Vestkyst Sjømat), last seen 18 Nov 10:00: a good "
            "recommender shows the later fisheries stories in both languages (pol-0013, bus-0014, "
            "nob-0017, nob-0021).",
            ("en", "nb"), at(18, "10:00"), daily(rngs[23], (16, 17), ("07:50", "13:00", "20:00")),
            either(tagged(FISHERIES), sections("business", p=0.1)), (5, 16), page_size=20,
        ),
        Persona(
            "r26", "Kaja", "skimmer-politics",
            "Clicks almost anything in English but leaves within 15 seconds except on politics, "
            "which she reads in full, last seen 18 Nov 23:00: a good recommender weighs dwell time "
            "and ranks politics first despite the many clicks elsewhere.",
            ("en",), at(18, "23:00"), daily(rngs[25], (16, 17, 18), ("08:15", "21:30")),
            either(anything(0.35), sections("politics", p=0.9)), (15, 40),
            skim=lambda a: a.section != "politics",
        ),
        Persona(
            "r27", "Jorunn", "local-bilingual",
            "Reads local news only, in both English and Norwegian, last seen 18 Nov 18:00: a good "
            "recommender shows the newer local stories from both Havnby Post and Havnby Avis.",
            ("en", "nb"), at(18, "18:00"), daily(rngs[26], (16, 17, 18), ("07:20", "16:30")),
            sections("local", p=0.85), (8, 30), page_size=20,
        ),
        Persona(
            "r28", "Theo", "energy-startups",
            "Reads about energy and start-ups in any section (Tidevann Power, offshore wind, grid "
            "tariffs) and some other business, last seen 18 Nov 20:00: a good recommender shows the "
            "19 Nov stories bus-0018, bus-0019 and bus-0020.",
            ("en",), at(18, "20:00"),
            tuple(sorted((*daily(rngs[27], (16, 17, 18), ("08:00", "19:00")), at(17, "11:00")))),
            either(tagged(ENERGY), sections("business", p=0.45)), (4, 12),
        ),
        Persona(
            "r29", "Idun", "ocean-climate",
            "Reads ocean, climate and weather stories in English and Norwegian (Tessaro summit, "
            "Arctic sea ice, storm warnings), last seen 18 Nov 21:00: a good recommender shows the "
            "Tessaro Accord wld-0016 and the nb ocean report nob-0025.",
            ("en", "nb"), at(18, "21:00"), daily(rngs[28], (16, 17, 18), ("12:30", "20:15")),
            either(tagged(OCEAN), sections("world", p=0.2)), (5, 16), page_size=20,
        ),
        Persona(
            "r30", "Zara", "lapsed-sport-culture",
            "Read English sport and culture on the morning of 16 Nov and has not been back: a good "
            "recommender catches her up on three days of sport and culture, story follow-ups first.",
            ("en",), at(16, "13:30"), (at(16, "08:40"), at(16, "12:50")),
            sections("sport", "culture", p=0.8), (3, 8),
        ),
    ]  # fmt: skip


# ---------------------------------------------------------------- output and checks


def to_record(p: Persona, events: list[Event]) -> dict[str, Any]:
    return {
        "reader_id": p.reader_id,
        "name": p.name,
        "persona": p.persona,
        "description": p.description,
        "languages": list(p.languages),
        "last_visit": p.last_visit.isoformat() if p.last_visit else None,
        "events": events,
    }


def check(p: Persona, record: dict[str, Any], articles: dict[str, Article]) -> None:
    """The format and time rules, then the planted interest itself."""
    events = record["events"]
    check_times(record, articles)
    check_clicks(events)
    reads = [e["article_id"] for e in events if e["type"] == "read"]
    low, high = p.reads
    assert low <= len(reads) <= high, f"{p.reader_id}: {len(reads)} reads, planted {p.reads}"
    assert p.pinned <= set(reads), f"{p.reader_id}: pinned not read: {p.pinned - set(reads)}"
    for article_id in reads:
        article = articles[article_id]
        assert article.language in p.languages, f"{p.reader_id}: {article_id} language"
        assert article_id in p.pinned or p.interest(article) > 0, f"{p.reader_id}: {article_id}"
        assert not p.dislike(article), f"{p.reader_id}: read disliked {article_id}"
    for e in events:
        if e["type"] == "thumbs_down":
            assert p.dislike(articles[e["article_id"]]), f"{p.reader_id}: thumbs_down {e}"
        if e["type"] == "read" and e["article_id"] in p.read_before_update:
            assert datetime.fromisoformat(e["at"]) < articles[e["article_id"]].updated


def check_times(record: dict[str, Any], articles: dict[str, Article]) -> None:
    events = record["events"]
    if record["last_visit"] is None:
        assert not events, f"{record['reader_id']}: a new reader has no events"
        return
    last = datetime.fromisoformat(record["last_visit"])
    previous = datetime.min.replace(tzinfo=TZ)
    for e in events:
        when = datetime.fromisoformat(e["at"])
        assert when.utcoffset() == timedelta(hours=1), e
        assert previous < when, f"not chronological: {e}"
        assert articles[e["article_id"]].published < when, f"before publication: {e}"
        assert when + timedelta(seconds=e.get("dwell_s", 0)) < last, f"after last_visit: {e}"
        previous = when


def check_clicks(events: list[Event]) -> None:
    """A read follows its click within seconds; a click follows an impression of the article."""
    shown: set[str] = set()
    for n, e in enumerate(events):
        if e["type"] == "impression":
            shown.add(e["article_id"])
        elif e["type"] in ("click", "thumbs_down"):
            assert e["article_id"] in shown, f"{e['type']} without impression: {e}"
        elif e["type"] == "read":
            click = events[n - 1]
            gap = datetime.fromisoformat(e["at"]) - datetime.fromisoformat(click["at"])
            assert click["type"] == "click" and click["article_id"] == e["article_id"], e
            assert timedelta(0) < gap <= timedelta(seconds=10), e
            assert isinstance(e["dwell_s"], int) and e["dwell_s"] > 0, e


def check_all(records: list[dict[str, Any]]) -> None:
    assert [r["reader_id"] for r in records] == [f"r{n:02d}" for n in range(1, 31)]
    ids = [e["event_id"] for r in records for e in r["events"]]
    assert len(ids) == len(set(ids)), "duplicate event_id"
    for r in records:
        for n, e in enumerate(r["events"], start=1):
            assert e["event_id"] == f"{r['reader_id']}-e{n:03d}", e


def main() -> None:
    articles = load_articles(HERE / "articles")
    threads = load_threads(HERE / "threads")
    rngs = [random.Random(SEED + n) for n in range(1, 31)]
    personas = build_personas(articles, threads, rngs)
    records = []
    for n, p in enumerate(personas):
        record = to_record(p, simulate(p, articles, random.Random(SEED * 100 + n)))
        check(p, record, articles)
        records.append(record)
    check_all(records)
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    OUTPUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    events = sum(len(r["events"]) for r in records)
    print(f"wrote {len(records)} readers, {events} events to {OUTPUT}")


if __name__ == "__main__":
    main()
