"""The JSON API (OpenAPI at /schema): readers, editors, admins, and the probes.

Handlers are thin: they check the payload's shape (pydantic, unknown fields rejected), call
`Service`, `Review` or `Jobs`, and shape the answer. Errors become problem details in `server.app`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from anyio import to_thread
from litestar import Controller, Request, Response, delete, get, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text

from briefing import Status, Summary
from indexing import Article
from server.auth import allow
from server.jobs import Jobs
from server.review import Review, ReviewItem, Verdict
from server.schema import DocumentedAs, EventIn, NoNul, as_record, problems
from server.service import Actor, Service
from server.stores import ReaderSettings

MAX_BATCH = 1000
# What every route may answer besides its own: a NUL in the path or query (400, server.hardening),
# no or a bad token (401), the wrong role or a forged browser write (403), the rate limit (429).
ANY = problems(400, 401, 403, 429)
BODY = problems(413, 415)  # routes taking a JSON body
NOT_READY = ResponseSpec(dict[str, Any], description="Some check failed: each names its state.")
# The summary version the editor saw (from the queue or the summary): a decision applies only if
# the summary is still at it. Without it, the decision applies to the summary as it is now.
# (the bound inside the Optional: litestar's schema drops it from `Annotated[int | None, ...]`)
SeenVersion = Annotated[int, QueryParameter(ge=0, description="the summary version you decided on")] | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventBatch(Strict):
    """Events are validated one by one (recsys.Event); a bad one rejects the whole batch."""

    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_BATCH)]


class EventsStored(BaseModel):
    stored: int
    duplicates: int


class ReaderSettingsIn(Strict):
    language: Annotated[str, Field(max_length=10)] | None = None
    timezone: Annotated[str, Field(max_length=64), NoNul] | None = None


class ReaderSettingsOut(BaseModel):
    language: str | None  # the reader's choice; None: the publication's
    timezone: str | None
    shown_language: str  # what pages and briefings use
    shown_timezone: str


def _settings_out(service: Service, reader_id: str) -> ReaderSettingsOut:
    own, applied = service.readers.settings(reader_id), service.audience(reader_id)
    return ReaderSettingsOut(
        language=own.language,
        timezone=own.timezone,
        shown_language=applied.language,
        shown_timezone=applied.timezone,
    )


class EditRequest(Strict):
    text: Annotated[str, Field(min_length=1, max_length=4000), NoNul]


class RejectRequest(Strict):
    reason: Annotated[str, Field(min_length=1, max_length=1000), NoNul]


class ArticlePush(Strict):
    """Articles as ingest reads them (indexing.Article); a bad one rejects the push."""

    articles: Annotated[
        list[dict[str, Any]], Field(min_length=1, max_length=MAX_BATCH), DocumentedAs(list[Article])
    ]


def _actor(request: Request[Any, Any, Any]) -> Actor:
    actor = request.user
    assert isinstance(actor, Actor)  # the auth middleware guarantees it on guarded routes
    return actor


class ReaderApi(Controller):
    path = "/v1"
    guards = [allow("reader")]
    tags = ["reader"]

    @get("/briefing", responses={**ANY, **problems(503)})
    async def briefing(
        self, request: Request[Any, Any, Any], service: NamedDependency[Service]
    ) -> Response[dict[str, Any]]:
        """Your briefing since your last visit; the visit and what was shown are recorded."""
        reader = _actor(request).id
        # A cached briefing is answered on the event loop; composing one goes to a worker thread.
        served = service.cached_briefing(reader)
        if served is None:
            served = await to_thread.run_sync(service.briefing, reader)
        return Response(served.body, headers={"X-Briefing-Cache": "hit" if served.cached else "miss"})

    @post("/events", sync_to_thread=True, status_code=HTTP_200_OK, responses={**ANY, **BODY})
    def events(
        self, request: Request[Any, Any, Any], data: JSONBody[EventBatch], service: NamedDependency[Service]
    ) -> EventsStored:
        """Store a batch of your events; a retried batch (same event ids) is not counted twice."""
        stored, duplicates = service.record_events(_actor(request), [as_record(e) for e in data.events])
        return EventsStored(stored=stored, duplicates=duplicates)

    @get("/settings", sync_to_thread=True, responses=ANY)
    def settings(
        self, request: Request[Any, Any, Any], service: NamedDependency[Service]
    ) -> ReaderSettingsOut:
        """Your language and time zone: what you chose (null: the publication's) and what applies."""
        return _settings_out(service, _actor(request).id)

    @put("/settings", sync_to_thread=True, responses={**ANY, **BODY})
    def change_settings(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ReaderSettingsIn],
        service: NamedDependency[Service],
    ) -> ReaderSettingsOut:
        """Choose your language (en, nb) and IANA time zone; null or absent: the publication's.
        Only your own: the token says whose they are."""
        actor = _actor(request)
        choice = ReaderSettings(language=data.language, timezone=data.timezone)
        service.configure_reader(actor, actor.id, choice)
        return _settings_out(service, actor.id)


class ReviewApi(Controller):
    path = "/v1/review"
    guards = [allow("editor")]
    tags = ["editor"]

    @get("/queue", sync_to_thread=True, responses=ANY)
    def queue(
        self, review: NamedDependency[Review], status: FromQuery[Status] = Status.DRAFT
    ) -> list[dict[str, Any]]:
        """Summaries waiting for a decision (or in another review state), riskiest first (lowest
        support, then the most numbers, names and quotes stated), each sentence with the check's
        reasons: `risk` and `verdicts`, as on the queue page."""
        return [
            {**_brief(q.summary), "risk": asdict(q.risk), "verdicts": [_verdict(v) for v in q.verdicts]}
            for q in review.risk_queue(status)
        ]

    @get("/summaries/{summary_id:str}", sync_to_thread=True, responses={**ANY, **problems(404)})
    def summary(self, review: NamedDependency[Review], summary_id: FromPath[str]) -> dict[str, Any]:
        """One summary with each sentence's support score and the evidence it cites."""
        return _review_item(review.item(summary_id))

    @post(
        "/summaries/{summary_id:str}/approve",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses={**ANY, **problems(404, 409)},
    )
    def approve(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[Review],
        summary_id: FromPath[str],
        version: SeenVersion = None,
    ) -> dict[str, Any]:
        """Approve the summary as shown (`version`); 409 if it changed since or was rejected."""
        return _brief(review.approve(_actor(request), summary_id, _seen(version)))

    @post(
        "/summaries/{summary_id:str}/edit",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses={**ANY, **BODY, **problems(404, 409, 503)},
    )
    def edit(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[Review],
        summary_id: FromPath[str],
        data: JSONBody[EditRequest],
        version: SeenVersion = None,
    ) -> dict[str, Any]:
        """Replace the text (each sentence is checked again); 409 if it changed since `version`."""
        edited = review.edit(_actor(request), summary_id, data.text, _seen(version))
        return _review_item(review.item(edited.id))

    @post(
        "/summaries/{summary_id:str}/reject",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses={**ANY, **BODY, **problems(404, 409)},
    )
    def reject(
        self,
        request: Request[Any, Any, Any],
        review: NamedDependency[Review],
        summary_id: FromPath[str],
        data: JSONBody[RejectRequest],
        version: SeenVersion = None,
    ) -> dict[str, Any]:
        """Reject for good, with the reason; 409 if it changed since `version`."""
        return _brief(review.reject(_actor(request), summary_id, data.reason, _seen(version)))


class AdminApi(Controller):
    path = "/v1/admin"
    guards = [allow("admin")]
    tags = ["admin"]

    @post("/articles", sync_to_thread=True, status_code=HTTP_200_OK, responses={**ANY, **BODY})
    def push(
        self, request: Request[Any, Any, Any], service: NamedDependency[Service], data: JSONBody[ArticlePush]
    ) -> dict[str, Any]:
        """Add or update articles (validated like ingest); a bad one rejects the whole push."""
        report = service.push_articles(_actor(request), data.articles)
        return {"new": report.new, "updated": report.updated, "unchanged": report.unchanged}

    @delete(
        "/articles/{article_id:str}",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses={**ANY, **problems(404)},
    )
    def retract(
        self, request: Request[Any, Any, Any], service: NamedDependency[Service], article_id: FromPath[str]
    ) -> dict[str, int]:
        """Retract an article: out of the index, its summaries retired, cached briefings dropped."""
        return service.retract(_actor(request), article_id)

    @delete(
        "/readers/{reader_id:str}",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses={**ANY, **problems(404)},
    )
    def erase(
        self, request: Request[Any, Any, Any], service: NamedDependency[Service], reader_id: FromPath[str]
    ) -> dict[str, int]:
        """Erase a reader: events, profile and visits, served and cached briefings."""
        return service.erase(_actor(request), reader_id)

    @get("/jobs", sync_to_thread=True, responses={**ANY, **problems(503)})
    def jobs(
        self, jobs: NamedDependency[Jobs], limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        """The scheduled jobs and their recent runs (failures with their errors)."""
        return {"jobs": jobs.describe(), "runs": jobs.runs(limit=limit)}

    @post(
        "/jobs/{name:str}/run",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses={**ANY, **problems(404, 503)},
    )
    def run_job(
        self, request: Request[Any, Any, Any], jobs: NamedDependency[Jobs], name: FromPath[str]
    ) -> dict[str, Any]:
        """Run a job now and wait for it; a failure is recorded and retried with backoff."""
        actor = _actor(request)
        run = jobs.run_now(name)
        jobs.service.audit.write(actor.id, actor.role, "run-job", name, {"run": run["id"]})
        return run


class Probes(Controller):
    """Public: no token (an empty security requirement overrides the app's bearer one)."""

    tags = ["operations"]
    security = [{}]

    @get("/health")
    async def health(self) -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @get("/ready", sync_to_thread=True, responses={503: NOT_READY})
    def ready(self, service: NamedDependency[Service], state: State) -> Response[dict[str, Any]]:
        """Index, database, model and shared state (Redis, if set) all answer (HTTP 503 otherwise)."""
        checks = {
            "index": _check(lambda: service.indexer.index.count()[0] >= 0),
            "database": _check(lambda: _ping(service)),
            "model": _check(service.summarizer.generator.ready),
            "shared_state": _check(service.shared.ping),  # Redis, when workers share state there
            "scheduler": _scheduler(state.get("jobs")),
        }
        ok = all(v == "ok" for k, v in checks.items() if k != "scheduler")
        # progress and the model versions loaded here (server.versions), not conditions of ready
        models = service.versions.served() if service.versions is not None else None
        body = {**checks, "drafts": _drafts(state.get("jobs")), "models": models}
        return Response(body, status_code=HTTP_200_OK if ok else HTTP_503_SERVICE_UNAVAILABLE)


@get("/metrics", guards=[allow("admin")], tags=["operations"], responses=ANY, media_type=CONTENT_TYPE_LATEST)
async def metrics() -> bytes:
    """Prometheus metrics, for the admin role only: per-route counts and timings show who uses
    what and when. A scraper sends an admin token (`briefing token prometheus --role admin`)."""
    return generate_latest()


def _seen(version: int | None) -> int | None:
    """The bound the schema states; litestar does not check it inside an Optional."""
    if version is not None and version < 0:
        raise ValidationException("version: a summary version is 0 or more")
    return version


def _scheduler(jobs: Jobs | None) -> str:
    """Live: a standby that took over after the leader died says "ok" from then on."""
    if jobs is None:
        return "not running"
    return "ok" if jobs.running else "standby (another process schedules)"


def _drafts(jobs: Jobs | None) -> dict[str, Any] | None:
    """The summarize-new job's progress in this process (done, failed, waiting, the article in
    hand), or None where it has not run here."""
    return None if jobs is None else jobs.control.progress("summarize-new")


def _ping(service: NamedDependency[Service]) -> bool:
    with service.engine.connect() as connection:
        return connection.execute(text("select 1")).scalar() == 1


def _check(probe: Any) -> str:
    try:
        return "ok" if probe() else "failed"
    except Exception as exc:  # a probe reports, it never raises
        return f"failed: {exc}"


def _brief(summary: Summary) -> dict[str, Any]:
    data = summary.to_json()
    data["text"] = summary.text
    return data


def _verdict(verdict: Verdict) -> dict[str, Any]:
    return {
        "text": verdict.sentence.text,
        "score": verdict.sentence.score,
        "threshold": verdict.threshold,
        "rules": list(verdict.rules),
        "missing": list(verdict.missing),
        "facts": list(verdict.facts),
    }


def _review_item(item: ReviewItem) -> dict[str, Any]:
    def sentences(group: Any) -> list[dict[str, Any]]:
        return [
            {**asdict(e.sentence), "evidence": [{"chunk_id": c.chunk_id, "text": c.text} for c in e.chunks]}
            for e in group
        ]

    return {
        **_brief(item.summary),
        "title": item.title,
        "url": item.url,
        "sentences": sentences(item.sentences),
        "dropped": sentences(item.dropped),
        "diff": item.diff,
    }
