"""Server-rendered pages: the reader's front page and the editors' review pages.

Everything shown passes through Jinja's autoescaping; article text is untrusted. Evidence
highlighting is computed here as (text, highlighted) segments so the template never marks up
raw text itself.
"""

from __future__ import annotations

import re
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from pydantic import BaseModel, ConfigDict, Field

from briefing import Status
from server.auth import COOKIE, HOME, allow, read_token
from server.review import Review, ReviewItem
from server.service import Actor, Service

_WORD = re.compile(r"(\w+)")


@get("/login", sync_to_thread=False, include_in_schema=False)
def login(request: Request[Any, Any, Any], token: FromQuery[str]) -> Response[Any]:
    """Exchange a token from `briefing token` (or `make run`'s links) for a session cookie."""
    try:
        actor = read_token(request.app.state.jwt_key, token)
    except NotAuthorizedException:
        raise NotAuthorizedException("this sign-in link is invalid or has expired") from None
    response = Redirect(HOME[actor.role])
    response.set_cookie(COOKIE, f"Bearer {token}", httponly=True, samesite="strict", max_age=7 * 86400)
    return response


class ReaderPages(Controller):
    guards = [allow("reader")]
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def front_page(self, request: Request[Any, Any, Any], service: NamedDependency[Service]) -> Template:
        served = service.briefing(request.user.id)
        return Template("briefing.html", context={"b": served.briefing, "reader": request.user.id})


class ReviewForm(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(pattern="^(approve|edit|reject)$")
    text: str = Field("", max_length=4000)
    reason: str = Field("", max_length=1000)


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
            review.approve(actor, summary_id)
        elif data.action == "edit":
            review.edit(actor, summary_id, data.text)
        else:
            review.reject(actor, summary_id, data.reason or "rejected on the review page")
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
