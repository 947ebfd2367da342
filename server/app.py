"""The composition root of the web service: `create_app(settings, service)`.

Litestar's own parts do the cross-cutting work: JWT cookie/bearer auth (server.auth), problem
details for every error, rate limiting, the request body limit, OpenAPI at /schema, Prometheus
metrics at /metrics and Jinja templates with autoescaping. The scheduler starts in the lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from briefing import GenerationError
from recsys import EventsRejected
from server.api import AdminApi, Probes, ReaderApi, ReviewApi
from server.auth import COOKIE, jwt_auth, secret
from server.jobs import Jobs
from server.pages import EditorPages, ReaderPages, login
from server.review import Review, ReviewConflict
from server.service import ArticlesRejected, Forbidden, NotFound, Service
from server.settings import Settings

HERE = Path(__file__).resolve().parent


def create_app(settings: Settings, service: Service, jobs: Jobs | None = None) -> Litestar:
    """The ASGI app over a built `Service`; `jobs` run in its lifespan when given."""
    review = Review(service)
    key = secret(settings.service.jwt_secret, settings.data_dir)
    auth = jwt_auth(key)
    metrics = PrometheusConfig(app_name="briefing", group_path=True, exclude=["/metrics"])
    return Litestar(
        route_handlers=[
            ReaderApi,
            ReviewApi,
            AdminApi,
            Probes,
            ReaderPages,
            EditorPages,
            login,
            PrometheusController,
            create_static_files_router(path="/static", directories=[HERE / "static"]),
        ],
        dependencies={
            "service": Provide(lambda: service, use_cache=True, sync_to_thread=False),
            "review": Provide(lambda: review, use_cache=True, sync_to_thread=False),
            "jobs": Provide(lambda: _need(jobs), sync_to_thread=False),
        },
        state=State({"jwt_key": key, "scheduler_running": False}),
        on_app_init=[auth.on_app_init],
        middleware=[*_rate_limit(settings), metrics.middleware],
        plugins=[ProblemDetailsPlugin(_problems())],
        template_config=TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine),
        openapi_config=OpenAPIConfig(
            title="Briefing service",
            version="0.2.0",
            path="/schema",
            description="Personalized, grounded news briefings; editors review every generated text.",
        ),
        request_max_body_size=settings.service.max_body_bytes,
        lifespan=[_scheduler(jobs)] if jobs is not None else [],
        on_shutdown=[lambda: service.visits.flush()],
    )


def _need(jobs: Jobs | None) -> Jobs:
    if jobs is None:
        raise ProblemDetailsException(detail="this process runs no scheduler", status_code=503)
    return jobs


def _rate_limit(settings: Settings) -> list[Any]:
    """Per caller and minute on everything but the probes; none at all when set to 0."""
    per_minute = settings.service.rate_limit_per_minute
    if per_minute <= 0:
        return []
    config = RateLimitConfig(
        rate_limit=("minute", per_minute),
        exclude=["/health", "/ready", "/metrics"],
        identifier_for_request=_client,
    )
    return [config.middleware]


def _client(request: Request[Any, Any, Any]) -> str:
    """A signed-in caller is limited by their token, anyone else by address."""
    credential = request.headers.get("authorization") or request.cookies.get(COOKIE)
    return credential or (request.client.host if request.client else "unknown")


def _scheduler(jobs: Jobs) -> Callable[[Litestar], Any]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.scheduler_running = jobs.start()
        try:
            yield
        finally:
            jobs.stop()
            app.state.scheduler_running = False

    return lifespan


def _problems() -> ProblemDetailsConfig:
    def status(code: int) -> Callable[[Exception], ProblemDetailsException]:
        return lambda exc: ProblemDetailsException(detail=str(exc), status_code=code)

    def rejected(exc: EventsRejected | ArticlesRejected) -> ProblemDetailsException:
        errors = [{"record": e.line, "field": e.field, "reason": e.reason} for e in exc.errors]
        return ProblemDetailsException(
            detail=f"{len(errors)} problem(s); nothing was stored", status_code=400, extra={"errors": errors}
        )

    return ProblemDetailsConfig(
        enable_for_all_http_exceptions=True,
        exception_to_problem_detail_map={
            NotFound: status(404),
            Forbidden: status(403),
            ReviewConflict: status(409),
            GenerationError: status(503),
            EventsRejected: rejected,
            ArticlesRejected: rejected,
        },
    )
