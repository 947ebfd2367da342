"""Admin pages: the scheduler's jobs and their runs, the articles with a retraction form, and the
audit log, as pages a person reads rather than the JSON of /v1/admin. Admin role only (403 for
every other role); forms carry the CSRF token that server.hardening checks.

A job run started here runs in a thread of its own and the page moves on to the runs list: jobs
that call the LLM take minutes, longer than a browser should wait on a form.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Annotated, Any

from litestar import Request, Router, get, post
from litestar.di import NamedDependency
from litestar.exceptions import ValidationException
from litestar.params import FromPath, FromQuery, QueryParameter, URLEncodedBody
from litestar.response import Redirect, Template
from pydantic import Field

from indexing import SearchFilter
from server.auth import allow
from server.jobs import Jobs
from server.pages import Form
from server.schema import NoNul
from server.service import Actor, NotFound, Service
from server.views import count_by_status, describe, every

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]
Days = Annotated[float, QueryParameter(gt=0, le=3650)]
ARTICLES_SHOWN = 300


class RetractForm(Form):
    reason: Annotated[str, NoNul] = Field(min_length=1, max_length=1000)


def _jobs(request: Request[Any, Any, Any]) -> Jobs | None:
    """This process's scheduler (leading or standby), or None where JOBS is off."""
    jobs = request.app.state.get("jobs")
    return jobs if isinstance(jobs, Jobs) else None


@get("/", sync_to_thread=True)
def jobs_page(request: Request[Any, Any, Any], service: NamedDependency[Service]) -> Template:
    """Each job: what it does, its schedule ("nothing configured" when it has no work), the next
    run, and how its last run went."""
    jobs = _jobs(request)
    rows = [
        {
            **job,
            "schedule": every(job["every_s"]),
            "last": next(iter(service.runs.runs(job["name"], 1)), None),
        }
        for job in (jobs.describe() if jobs else [])
    ]
    context = {
        "jobs": rows,
        "scheduler": jobs is not None,
        "leading": bool(jobs and jobs.running),
        "adapters": _adapters(service),
    }
    return Template("admin_jobs.html", context=context)


def _adapters(service: Service) -> list[dict[str, Any]]:
    """The registry's adapters, newest first, with what drafts use now and each gate's verdict."""
    if service.adapters is None:
        return []
    drafting = service.summarizer.adapter
    return [
        {
            "id": r.id,
            "state": str(r.state),
            "snapshot": r.snapshot_id,
            "created": r.created_at.strftime("%d %b %H:%M"),
            "drafting": r.id == drafting,
            "verdict": None if r.report is None else ("promote" if r.report.get("promote") else "keep"),
            "reasons": list((r.report or {}).get("reasons", [])),
        }
        for r in service.adapters.registry.all()[:20]
    ]


@post("/adapters/rollback", sync_to_thread=True)
def rollback_adapter(
    request: Request[Any, Any, Any], service: NamedDependency[Service], data: URLEncodedBody[Form]
) -> Redirect:
    """Put the previously promoted adapter (or the base model) back; drafts use it from now on."""
    if service.adapters is None:
        raise NotFound("this service has no adapter registry")
    actor: Actor = request.user
    service.adapters.registry.rollback(actor.id)
    service.adapters.sync()
    return Redirect("/admin", status_code=303)


@post("/jobs/{name:str}/run", sync_to_thread=False)
def run_job(request: Request[Any, Any, Any], name: FromPath[str], data: URLEncodedBody[Form]) -> Redirect:
    jobs = _jobs(request)
    if jobs is None or name not in jobs.specs:
        raise NotFound(f"no job {name!r} runs in this process")
    actor: Actor = request.user
    threading.Thread(target=_run, args=(jobs, name, actor), name=f"page-run-{name}", daemon=True).start()
    return Redirect(f"/admin/runs?job={name}", status_code=303)


def _run(jobs: Jobs, name: str, actor: Actor) -> None:
    run = jobs.run_now(name)  # a failure is recorded in its run row (and retried), never raised
    jobs.service.audit.write(actor.id, actor.role, "run-job", name, {"run": run["id"], "from": "page"})


@get("/runs", sync_to_thread=True)
def runs_page(service: NamedDependency[Service], job: FromQuery[str] = "", limit: Limit = 100) -> Template:
    runs = [{**r, "said": describe(r["detail"])} for r in service.runs.runs(job or None, limit)]
    return Template("admin_runs.html", context={"runs": runs, "job": job})


@get("/articles", sync_to_thread=True)
def articles_page(service: NamedDependency[Service], days: Days = 7.0) -> Template:
    """Articles published in the last `days`, newest first, with their summaries by status, and
    the recent retractions (which left the index, so only the audit log still names them)."""
    since = service.clock() - timedelta(days=days)
    records = sorted(
        service.indexer.index.scroll(SearchFilter(since=since)),
        key=lambda r: r.article.published_at,
        reverse=True,
    )[:ARTICLES_SHOWN]
    rows = [{"r": r, "counts": count_by_status(service.summaries.find(r.article.id))} for r in records]
    retracted = [e for e in service.audit.entries(limit=1000) if e["action"] == "retract"][:50]
    context = {"rows": rows, "days": days, "retracted": retracted, "shown": ARTICLES_SHOWN}
    return Template("admin_articles.html", context=context)


@post("/articles/{article_id:str}/retract", sync_to_thread=True)
def retract(
    request: Request[Any, Any, Any],
    service: NamedDependency[Service],
    article_id: FromPath[str],
    data: URLEncodedBody[RetractForm],
) -> Redirect:
    """Retract as the API does (index, summaries, cached briefings), with the reason on record."""
    actor: Actor = request.user
    reason = " ".join(data.reason.split())
    if not reason:
        raise ValidationException("reason: say why the article is retracted")
    service.retract(actor, article_id, reason=reason)  # the audit entry keeps the reason
    return Redirect("/admin/articles", status_code=303)


@get("/audit", sync_to_thread=True)
def audit_page(
    service: NamedDependency[Service],
    action: FromQuery[str] = "",
    target: FromQuery[str] = "",
    limit: Limit = 200,
) -> Template:
    entries = service.audit.entries(target=target or None, limit=limit if not action else 1000)
    if action:
        entries = [e for e in entries if e["action"] == action][:limit]
    context = {"entries": entries, "title": "Audit log", "scope": "admin", "action": action, "target": target}
    return Template("audit.html", context=context)


admin_pages = Router(
    path="/admin",
    guards=[allow("admin")],
    include_in_schema=False,
    route_handlers=[jobs_page, run_job, runs_page, articles_page, retract, audit_page, rollback_adapter],
)
