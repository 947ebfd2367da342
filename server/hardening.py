"""What every request and response passes through besides auth (server.auth): the checks on
writes a browser could be tricked into sending, the JSON-only rule, bounded JSON depth, NUL-free
paths, the security headers, and a request id on every response and in the log line of every
server error.

Writes with an `Authorization` header are API calls: a page cannot add that header to a
cross-origin request (CORS is off), so they are not forgeable and skip the browser checks. Every
other write must come from this origin (SameSite=Strict cookies still travel from a sibling origin
of the same site, e.g. another subdomain) and carry the CSRF token of litestar's double-submit
check. The origin is compared with the Host header, so a proxy in front must pass the Host the
browser used, port included (nginx: `proxy_set_header Host $http_host`; `$host` drops the port,
as docker/nginx.conf notes).
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import Headers
from litestar.enums import RequestEncodingType, ScopeType
from litestar.exceptions import ClientException, HTTPException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.csrf import CSRFMiddleware
from litestar.params import BodyKwarg, DependencyKwarg, ParameterKwarg
from litestar.status_codes import HTTP_415_UNSUPPORTED_MEDIA_TYPE
from litestar.types import Message, Receive, Scope, Send

from server.outages import outage

log = logging.getLogger("server")

REQUEST_ID = "x-request-id"
# A proxy's id is kept when it is plain: nothing that could forge a log line.
_PASSED_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
SECURITY_HEADERS = {
    "referrer-policy": "same-origin",  # sign-in links carry tokens: never leak a URL to other sites
    "x-frame-options": "DENY",  # no page of ours inside someone's frame (clickjacking a decision)
    "content-security-policy": "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
}


class BrowserWrites(CSRFMiddleware):
    """Writes without an Authorization header must come from this origin and carry the CSRF token."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # a scan of the raw headers, not a Headers object: this runs on every request
        if scope["type"] != ScopeType.HTTP or _raw_header(scope, b"authorization") is not None:
            await self.app(scope, receive, send)
            return
        if scope["method"] not in self.config.safe_methods and not same_origin(Headers.from_scope(scope)):
            raise PermissionDeniedException("a write from another origin (or with no Origin) is refused")
        await super().__call__(scope, receive, send)


class BoundedRequest(Request[Any, Any, Any]):
    """litestar's request, with JSON nested past the decoder's depth limit a 400 rather than an
    unhandled RecursionError (a 500)."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except RecursionError:
            raise ClientException("the JSON is nested too deeply") from None


def same_origin(headers: Headers) -> bool:
    """Origin (else Referer, which is stricter but is what old browsers send) names this host."""
    source = headers.get("origin") or headers.get("referer") or ""
    parts = urlsplit(source)
    host = headers.get("host", "")
    return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host.lower()


async def no_nul(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """A NUL byte is in no id or file name of ours, and PostgreSQL refuses it in text (a 500)."""
    if "\x00" in connection.scope["path"] or b"%00" in connection.scope["query_string"]:
        raise ClientException("a NUL byte is not allowed in the path or query")


def checked_request(request: Request[Any, Any, Any]) -> None:
    """The rules a handler's own signature cannot state: JSON only, and no unknown query names."""
    json_only(request)
    known_query(request)


def json_only(request: Request[Any, Any, Any]) -> None:
    """415 for a JSON endpoint sent anything but application/json: a text/plain body is what a
    no-cors fetch from another site can send without asking first."""
    if _takes_json(request.route_handler) and request.content_type[0] != "application/json":
        raise HTTPException(
            status_code=HTTP_415_UNSUPPORTED_MEDIA_TYPE, detail="the body must be sent as application/json"
        )


def known_query(request: Request[Any, Any, Any]) -> None:
    """400 for a query parameter the API route does not take: `?limt=5` silently meaning "no
    limit" hides the caller's mistake, and the schema says what each route accepts. Pages stay
    lenient: links people share pick up tracking parameters."""
    handler = request.route_handler
    if not request.scope["path"].startswith("/v1/") or not request.query_params:
        return
    unknown = sorted(set(request.query_params) - _query_names(handler))
    if unknown:
        accepted = ", ".join(sorted(_query_names(handler))) or "none"
        named = ", ".join(map(repr, unknown))
        raise ClientException(detail=f"unknown query parameter {named}; this route takes: {accepted}")


_NOT_QUERY = frozenset({"request", "data", "state", "headers", "cookies", "query", "scope", "socket", "body"})


def _query_names(handler: BaseRouteHandler) -> frozenset[str]:
    """The query names a handler's signature declares; kept in the handler's `opt` (once each)."""
    names: frozenset[str] | None = handler.opt.get("query_names")
    if names is None:
        skip = _NOT_QUERY | set(handler.resolve_dependencies())
        skip |= {p for path in handler.paths for p in re.findall(r"{(\w+)(?::\w+)?}", path)}
        fields = handler.parsed_fn_signature.parameters.items()
        names = frozenset(q for n, f in fields if n not in skip and (q := _query_name(n, f.kwarg_definition)))
        handler.opt["query_names"] = names
    return names


def _query_name(name: str, kwarg: Any) -> str | None:
    """The query name of a parameter, or None for a body, dependency, header or cookie."""
    if isinstance(kwarg, BodyKwarg | DependencyKwarg):
        return None
    if isinstance(kwarg, ParameterKwarg):
        return None if kwarg.header or kwarg.cookie else kwarg.query or name
    return name


def _takes_json(handler: BaseRouteHandler) -> bool:
    data = handler.parsed_fn_signature.parameters.get("data")
    kwarg = data.kwarg_definition if data is not None else None
    return isinstance(kwarg, BodyKwarg) and kwarg.media_type == RequestEncodingType.JSON


def request_id(scope: Scope) -> str:
    """This request's id: the one a proxy passed in X-Request-ID if well-formed, else a new one
    (a random prefix per process and a counter: unique, and no uuid4 per request, which py-spy
    showed as a tenth of the event loop's busy time under bench/serve.py's cached load)."""
    state: dict[str, Any] = scope.setdefault("state", {})
    if "request_id" not in state:
        passed = (_raw_header(scope, REQUEST_ID.encode()) or b"").decode("latin-1")
        state["request_id"] = passed if _PASSED_ID.match(passed) else f"{_PROCESS}-{next(_COUNTER):x}"
    return str(state["request_id"])


_PROCESS = uuid4().hex[:12]
_COUNTER = itertools.count(1)
_STAMPS = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]


def _raw_header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope.get("headers", ()) if key.lower() == name), None)


async def stamp_response(message: Message, scope: Scope) -> None:
    """The request id and the security headers on every response, errors and files included."""
    if message["type"] != "http.response.start":
        return
    headers = list(message.get("headers", ()))
    present = {bytes(key).lower() for key, _ in headers}
    headers.append((REQUEST_ID.encode(), request_id(scope).encode()))
    headers.extend(stamp for stamp in _STAMPS if stamp[0] not in present)
    message["headers"] = headers


def failure_logger(statuses: Mapping[type[Exception], int]) -> Callable[[Exception, Scope], Awaitable[None]]:
    """A hook logging every exception that becomes a 5xx, with its request id and traceback.

    `statuses` are the exception types the app maps to a status (anything else is a 500)."""

    async def log_failure(exc: Exception, scope: Scope) -> None:
        status = status_of(exc, statuses)
        if status >= 500:
            where = f"{scope.get('method', '')} {scope.get('path', '')!r}"
            log.error("HTTP %d on %s, request %s", status, where, request_id(scope), exc_info=exc)

    return log_failure


def status_of(exc: Exception, statuses: Mapping[type[Exception], int]) -> int:
    if isinstance(exc, HTTPException):
        return exc.status_code
    if (down := outage(exc)) is not None:  # what server.app answers for it: 503 or 507
        return down.status
    return next((code for kind, code in statuses.items() if isinstance(exc, kind)), 500)
