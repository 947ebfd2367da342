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
from server.auth import COOKIE, HOME, allow, read_token
from server.review import Review, ReviewItem
from server.schema import NoNul
from server.service import Actor, Service
from server.stores import ReaderSettings

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
        served = service.briefing(request.user.id)
        return Template("briefing.html", context={"b": served.briefing, "reader": request.user.id})

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
    def queue(self, review: NamedDependency[Review], status: FromQuery[Status] = Status.DRAFT) -> Template:
        context = {"summaries": review.queue(status), "status": status.value, "statuses": list(Status)}
        return Template("queue.html", context=context)

    @get("/summaries/{summary_id:str}", sync_to_thread=True)
    def summary(self, review: NamedDependency[Review], summary_id: FromPath[str]) -> Template:
        item = review.item(summary_id)
        return Template("review.html", context={"item": item, "s": item.summary, "marked": _marked(item)})

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
