"""Server-rendered pages: the reader's front page and the editors' review pages.

Everything shown passes through Jinja's autoescaping; article text is untrusted. Evidence
highlighting is computed here as (text, highlighted) segments so the template never marks up
raw text itself.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from pydantic import BaseModel, ConfigDict, Field

from briefing import Status
from server.auth import COOKIE, HOME, ROLES, allow, read_token
from server.review import Review, ReviewItem
from server.schema import NoNul
from server.service import Actor, Service
from server.stores import ReaderSettings
from server.views import event_id, iso, live_to_readers, more_stories, paragraphs, passages, published

MORE_STORIES = 10  # "More stories": this many past the briefing's own
# The audit entries editors see: their decisions (server.review) and retractions with their reasons.
EDITOR_AUDIT = ("approved", "edit", "rejected", "retract")

_WORD = re.compile(r"(\w+)")


class Form(BaseModel):
    """A posted page form: only its own fields, plus the CSRF token that server.hardening checks."""

    model_config = ConfigDict(extra="forbid")
    csrf_token: str = Field("", alias="_csrf_token", max_length=200)


class LoginForm(Form):
    token: str = Field(min_length=1, max_length=4000)


class SettingsForm(Form):
    language: str = Field("", max_length=10)
    timezone: Annotated[str, NoNul] = Field("", max_length=64)


@get("/login", sync_to_thread=False, include_in_schema=False)
def login_page(token: FromQuery[str] = "") -> Template:
    """The sign-in form, with a link's token filled in. Only its button signs in: a GET that set
    the cookie would let any site sign a visitor in as someone else (login CSRF)."""
    return Template("login.html", context={"token": token}, headers={"Cache-Control": "no-store"})


@post("/login", sync_to_thread=False, include_in_schema=False)
def login(request: Request[Any, Any, Any], data: URLEncodedBody[LoginForm]) -> Redirect:
    """Exchange a token from `briefing token` (or `make run`'s links) for a session cookie."""
    try:
        actor = read_token(request.app.state.jwt_key, data.token)
    except NotAuthorizedException:
        raise NotAuthorizedException("this sign-in token is invalid or has expired") from None
    response = Redirect(HOME[actor.role], status_code=303)
    secure = request.app.state.secure_cookies
    response.set_cookie(
        COOKIE, f"Bearer {data.token}", httponly=True, samesite="strict", secure=secure, max_age=7 * 86400
    )
    return response


class ReaderPages(Controller):
    guards = [allow("reader")]
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def front_page(self, request: Request[Any, Any, Any], service: NamedDependency[Service]) -> Template:
        b = service.briefing(request.user.id).briefing
        shown_at = iso(b.generated_at)  # one moment for all of them: the ranker's training groups by it
        impressions = {i.article_id: event_id(b.reader_id, shown_at, i.article_id) for i in b.items}
        context = {"b": b, "reader": b.reader_id, "now": iso(service.clock()), "shown_at": shown_at}
        cited = passages(service, b.items)
        context |= {"impressions": impressions, "passages": cited, "published": published(b.items, cited)}
        return Template("briefing.html", context=context)

    @get("/more", sync_to_thread=True)
    def more(self, request: Request[Any, Any, Any], service: NamedDependency[Service]) -> Template:
        """Stories past the briefing's own, from the recommender and the articles' words (no LLM)."""
        reader = request.user.id
        now = service.clock()
        items = more_stories(service, reader, MORE_STORIES)
        # Impressions keyed by the visit: a reload of this page within the visit counts once.
        since = service.visits.current(reader, now).since
        visit = iso(since) if since else "first"
        impressions = {m.item.article_id: event_id(reader, "more", visit, m.item.article_id) for m in items}
        context = {"items": items, "reader": reader, "now": iso(now), "shown_at": iso(now)}
        return Template("more.html", context={**context, "impressions": impressions})

    @post("/settings", sync_to_thread=True)
    def settings(
        self,
        request: Request[Any, Any, Any],
        service: NamedDependency[Service],
        data: URLEncodedBody[SettingsForm],
    ) -> Redirect:
        """The reader's own language and time zone (empty: the publication's); the token says whose."""
        choice = ReaderSettings(language=data.language or None, timezone=data.timezone or None)
        service.configure_reader(request.user, request.user.id, choice)
        return Redirect("/", status_code=303)


@get("/about", guards=[allow(*ROLES)], sync_to_thread=False, include_in_schema=False)
def about(request: Request[Any, Any, Any], service: NamedDependency[Service]) -> Template:
    """How the briefing is made: the models, the policy, and what is recorded about a reader."""
    settings, policy = request.app.state.settings, service.composer.policy
    language = service.audience(request.user.id).language
    rule = None if policy.allow_drafts else policy.rule(language)
    context = {
        "settings": settings,
        "policy": policy,
        "drafts_show": policy.drafts_show(language),
        "show_threshold": rule.threshold if rule else None,  # measured on the labels (briefing.gate)
    }
    return Template("about.html", context=context)


@post("/logout", guards=[allow(*ROLES)], sync_to_thread=False, include_in_schema=False)
def logout(request: Request[Any, Any, Any], data: URLEncodedBody[Form]) -> Redirect:
    """Sign out of this browser: the session cookie goes (the token itself stays valid until it
    expires, as a signed token does; a lost one is stopped by rotating JWT_SECRET)."""
    response = Redirect("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


class ReviewForm(Form):
    action: str = Field(pattern="^(approve|edit|reject)$")
    version: int = Field(ge=0)  # the version shown: the decision is conditional on it
    text: Annotated[str, NoNul] = Field("", max_length=4000)
    reason: Annotated[str, NoNul] = Field("", max_length=1000)


class EditorPages(Controller):
    path = "/editor"
    guards = [allow("editor")]
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def queue(
        self,
        review: NamedDependency[Review],
        status: FromQuery[Status] = Status.DRAFT,
        done: FromQuery[bool] = False,
    ) -> Template:
        """The queue, riskiest first; `done` after "next draft" found none left."""
        queued = review.risk_queue(status)
        live = live_to_readers(review.service, [q.summary for q in queued])
        context = {"queued": queued, "status": status.value, "statuses": list(Status), "done": done}
        checker = getattr(review.service.summarizer.checker, "name", "")
        return Template("queue.html", context={**context, "live": live, "checker": checker})

    @get("/summaries/{summary_id:str}", sync_to_thread=True)
    def summary(self, review: NamedDependency[Review], summary_id: FromPath[str]) -> Template:
        item = review.item(summary_id)
        s = item.summary
        record = review.service.indexer.index.get([s.article_id]).get(s.article_id)
        context = {
            "item": item,
            "s": s,
            "marked": _marked(item),
            "article": record.article if record else None,
            "body": paragraphs(record.article.body) if record else [],
            "live": live_to_readers(review.service, [s])[s.id],
        }
        return Template("review.html", context=context)

    @get("/next", sync_to_thread=True)
    def next_item(self, review: NamedDependency[Review], after: FromQuery[str] = "") -> Redirect:
        """The next undecided draft after `after` (risk order), or the queue when none is left."""
        found = review.next_after(after)
        return Redirect(f"/editor/summaries/{found}" if found else "/editor?done=1", status_code=303)

    @get("/audit", sync_to_thread=True)
    def audit(self, review: NamedDependency[Review]) -> Template:
        """Decisions and retractions, newest first: who did what, when, and the reason or the edit."""
        entries = [e for e in review.service.audit.entries(limit=1000) if e["action"] in EDITOR_AUDIT]
        context = {"entries": entries[:200], "title": "Decisions", "scope": "editor"}
        return Template("audit.html", context=context)

    @post("/summaries/{summary_id:str}", sync_to_thread=True)
    def decide(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[Review],
        summary_id: FromPath[str],
        data: URLEncodedBody[ReviewForm],
    ) -> Redirect:
        actor: Actor = request.user
        if data.action == "approve":
            review.approve(actor, summary_id, data.version)
        elif data.action == "edit":
            review.edit(actor, summary_id, data.text, data.version)
        else:
            review.reject(actor, summary_id, data.reason, data.version)
        return Redirect(f"/editor/summaries/{summary_id}", status_code=303)


def _marked(item: ReviewItem) -> list[list[list[tuple[str, bool]]]]:
    """Per sentence, per cited chunk: the chunk as segments, words of the sentence highlighted."""
    return [
        [highlight(chunk.text, set(e.words)) for chunk in e.chunks] for e in (*item.sentences, *item.dropped)
    ]


def highlight(text: str, words: set[str]) -> list[tuple[str, bool]]:
    """`text` cut into segments, True where a segment is one of `words` (case-insensitive)."""
    segments: list[tuple[str, bool]] = []
    for part in _WORD.split(text):
        hit = part.lower() in words
        if segments and segments[-1][1] == hit:
            segments[-1] = (segments[-1][0] + part, hit)
        elif part:
            segments.append((part, hit))
    return segments
