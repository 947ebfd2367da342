"""The composition root of the web service: `create_app(settings, service)`.

Litestar's own parts do the cross-cutting work: JWT cookie/bearer auth (server.auth), problem
details for every error, rate limiting, the request body limit, OpenAPI at /schema, Prometheus
metrics at /metrics (admin role), Jinja templates with autoescaping, and CSRF tokens on forms.
server.hardening adds the origin check on browser writes, JSON-only bodies, security headers and
request ids. The scheduler starts in the lifespan.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.plugins.prometheus import PrometheusConfig
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from briefing import GenerationError
from recsys import EventsRejected
from server.admin_pages import admin_pages
from server.api import AdminApi, Probes, ReaderApi, ReviewApi, metrics
from server.auth import Failures, SharedFailures, jwt_auth, secret
from server.experiments.api import ExperimentsApi
from server.experiments.model import ExperimentInvalid
from server.experiments.pages import ExperimentPages
from server.hardening import (
    BoundedRequest,
    BrowserWrites,
    checked_request,
    failure_logger,
    no_nul,
    request_id,
    stamp_response,
)
from server.i18n import UnknownSetting, install, publication
from server.jobs import Jobs
from server.outages import outage
from server.pages import EditorPages, ReaderPages, about, login, login_page, logout
from server.rate_limit import shared_rate_limit
from server.review import Review, ReviewConflict
from server.schema import ClosedModels
from server.service import Actor, ArticlesRejected, Forbidden, NotFound, Service
from server.settings import Settings
from server.shared_state import Counter, FailureCount

HERE = Path(__file__).resolve().parent


def create_app(settings: Settings, service: Service, jobs: Jobs | None = None) -> Litestar:
    """The ASGI app over a built `Service`; `jobs` run in its lifespan when given."""
    review = Review(service)
    key = secret(settings.service.jwt_secret, settings.data_dir)
    secure = settings.service.secure_cookies
    auth = jwt_auth(key, secure)
    prometheus = PrometheusConfig(app_name="briefing", group_path=True, exclude=["/metrics"])
    return Litestar(
        route_handlers=[
            ReaderApi,
            ReviewApi,
            AdminApi,
            ExperimentsApi,
            Probes,
            ReaderPages,
            EditorPages,
            ExperimentPages,
            login_page,
            login,
            logout,
            about,
            admin_pages,
            metrics,
            create_static_files_router(path="/static", directories=[HERE / "static"]),
        ],
        dependencies={
            "service": Provide(lambda: service, use_cache=True, sync_to_thread=False),
            "review": Provide(lambda: review, use_cache=True, sync_to_thread=False),
            "jobs": Provide(lambda: _need(jobs), sync_to_thread=False),
        },
        state=State(
            {
                "settings": settings,
                "jwt_key": key,
                "secure_cookies": secure,
                "jobs": None,
                "auth_failures": _failures(settings, service.shared.counter),
            }
        ),
        on_app_init=[auth.on_app_init],
        middleware=[
            *_rate_limit(settings, service.shared.counter),
            prometheus.middleware,
            _browser_writes(key, secure),
        ],
        request_class=BoundedRequest,
        guards=[no_nul],
        before_request=checked_request,
        before_send=[stamp_response],
        after_exception=[failure_logger(STATUSES)],
        exception_handlers={Exception: _internal_error},
        plugins=[ProblemDetailsPlugin(_problems()), ClosedModels()],
        template_config=TemplateConfig(
            directory=HERE / "templates",
            engine=JinjaTemplateEngine,
            engine_callback=lambda e: install(e.engine, publication(settings), service.audience),  # `_()`
        ),
        openapi_config=_openapi(),
        request_max_body_size=settings.service.max_body_bytes,
        lifespan=[scheduler_lifespan(jobs)] if jobs is not None else [],
        on_shutdown=[lambda: service.visits.flush()],
    )


def _openapi() -> OpenAPIConfig:
    """OpenAPI at /schema/openapi.json, and Swagger UI at /schema from server/static/swagger-ui:
    a viewer loaded from a CDN leaves the page blank wherever the CDN is unreachable."""
    assets = "/static/swagger-ui"  # swagger-ui-dist 5.35.0, see VENDORED.md there
    swagger = SwaggerRenderPlugin(
        js_url=f"{assets}/swagger-ui-bundle.js",
        css_url=f"{assets}/swagger-ui.css",
        standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{assets}/favicon-32x32.png'>",
        path=["/", "/swagger"],
    )
    return OpenAPIConfig(
        title="Briefing service",
        version="0.2.0",
        path="/schema",
        description="Personalized, grounded news briefings; editors review every generated text.",
        render_plugins=[swagger],
    )


def _need(jobs: Jobs | None) -> Jobs:
    if jobs is None:
        raise ProblemDetailsException(detail="this process runs no scheduler", status_code=503)
    return jobs


def _rate_limit(settings: Settings, shared: Counter | None) -> list[Any]:
    """Per caller and minute on everything but the probes; none at all when set to 0. Counted in
    this process, or atomically in Redis when API workers share it (server.rate_limit)."""
    per_minute = settings.service.rate_limit_per_minute
    if per_minute <= 0:
        return []
    options: dict[str, Any] = {"exclude": ["/health", "/ready", "/metrics"]}
    options["identifier_for_request"] = _client
    if shared is not None:
        return [shared_rate_limit(per_minute, shared, **options).middleware]
    return [RateLimitConfig(rate_limit=("minute", per_minute), **options).middleware]


def _failures(settings: Settings, shared: Counter | None) -> FailureCount | None:
    per_minute = settings.service.rate_limit_per_minute
    if per_minute <= 0:
        return None
    return Failures(per_minute) if shared is None else SharedFailures(per_minute, shared)


def _client(request: Request[Any, Any, Any]) -> str:
    """A signed-in caller is limited as who they are (any token of theirs), anyone else by address.

    The auth middleware runs first and has verified the token; a credential the caller can vary
    (the header's text) would hand out a fresh limit per variant."""
    actor = request.scope.get("user")
    if isinstance(actor, Actor):
        return f"{actor.role}:{actor.id}"
    return f"address:{request.client.host if request.client else 'unknown'}"


def _browser_writes(key: str, secure: bool) -> DefineMiddleware:
    """Origin and CSRF-token checks on writes without an Authorization header (server.hardening).

    The token cookie is HttpOnly (pages put the token in their forms) and SameSite=Strict."""
    csrf_key = hmac.new(key.encode(), b"csrf-tokens", hashlib.sha256).hexdigest()  # not the JWT key itself
    config = CSRFConfig(secret=csrf_key, cookie_secure=secure, cookie_httponly=True, cookie_samesite="strict")
    return DefineMiddleware(BrowserWrites, config=config)


def scheduler_lifespan(jobs: Jobs) -> Callable[[Litestar], Any]:
    """The scheduler in an app's lifespan (the service's, or `briefing worker`'s probes)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        jobs.start()  # a standby keeps competing for the lock and takes over when the leader dies
        app.state.jobs = jobs
        try:
            yield
        finally:
            jobs.stop()
            app.state.jobs = None

    return lifespan


# The service's own exceptions and the status each becomes (rejected batches are 400s too).
STATUSES: dict[type[Exception], int] = {
    NotFound: 404,
    Forbidden: 403,
    ReviewConflict: 409,
    GenerationError: 503,
    EventsRejected: 400,
    ArticlesRejected: 400,
    UnknownSetting: 400,
    ExperimentInvalid: 400,
}


def _internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A bug: the problem names the request id its log line has (server.hardening), nothing else.
    An outage (the database away, a full disk: server.outages) is a 503 or 507 saying so instead."""
    rid = request_id(request.scope)
    if (down := outage(exc)) is not None:
        extra = {"request_id": rid}
        return ProblemDetailsException(
            detail=down.detail, status_code=down.status, headers=down.headers, extra=extra
        ).to_response(request)
    detail = f"internal error; the log has it under request id {rid}"
    problem = ProblemDetailsException(detail=detail, status_code=500, extra={"request_id": rid})
    return problem.to_response(request)


def _problems() -> ProblemDetailsConfig:
    def status(code: int) -> Callable[[Exception], ProblemDetailsException]:
        return lambda exc: ProblemDetailsException(detail=str(exc), status_code=code)

    def rejected(exc: EventsRejected | ArticlesRejected) -> ProblemDetailsException:
        errors = [{"record": e.line, "field": e.field, "reason": e.reason} for e in exc.errors]
        return ProblemDetailsException(
            detail=f"{len(errors)} problem(s); nothing was stored", status_code=400, extra={"errors": errors}
        )

    def refused(exc: ExperimentInvalid) -> ProblemDetailsException:
        detail = f"{len(exc.reasons)} problem(s); nothing was changed"
        return ProblemDetailsException(detail=detail, status_code=400, extra={"reasons": exc.reasons})

    return ProblemDetailsConfig(
        enable_for_all_http_exceptions=True,
        exception_to_problem_detail_map={
            **{kind: status(code) for kind, code in STATUSES.items()},
            EventsRejected: rejected,
            ArticlesRejected: rejected,
            ExperimentInvalid: refused,
        },
    )
