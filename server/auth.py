"""Who may do what: JWTs signed by the service (litestar's JWT cookie auth) and role guards.

A token names a subject (a reader id, or a staff member) and one role. Roles are separate on
purpose: an editor cannot erase readers, an admin does not review text, a reader sees only their
own briefing. API clients send `Authorization: Bearer <token>` (no other scheme word). Browsers
post the token once to the form at `/login` and keep it in an HttpOnly, SameSite=Strict cookie
(Secure unless served on loopback); their writes are checked for origin and CSRF token by
`server.hardening`, since SameSite does not stop a sibling origin of the same site.

Several API workers (REDIS_URL set): a verified token stays in a per-process LRU (`VerifiedOnce`),
on purpose. Sharing it would save little (each worker checks a signature once per token with the
same key, then answers from its LRU; a shared entry would cost a Redis round trip on every
request) and would add a way in (whoever can write Redis could mark a forged token verified).
The LRU keeps a result only until the token's own expiry, so no worker honours an expired token.
What must be shared is the count of invalid tokens per address (`SharedFailures`, atomic in
Redis): counted per process, N workers would let N times as many guesses through.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException, TooManyRequestsException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTCookieAuth, JWTCookieAuthenticationMiddleware, Token

from server.service import Actor
from server.shared_state import Counter, FailureCount

ROLES = ("reader", "editor", "product", "admin")
HOME = {"reader": "/", "editor": "/editor", "product": "/product/experiments", "admin": "/admin"}
COOKIE = "briefing_token"
# /metrics is not public: it needs the admin role (what a scraper learns maps the traffic).
PUBLIC = ["/health", "/ready", "/schema", "/login", "/static"]
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def secret(configured: str | None, data_dir: Path) -> str:
    """JWT_SECRET if set, else a random key kept (mode 0600) under DATA_DIR across restarts."""
    if configured:
        return configured
    path = data_dir / "jwt-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def issue_token(key: str, subject: str, role: str, ttl: timedelta = timedelta(days=7)) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    token = Token(sub=subject, exp=datetime.now(UTC) + ttl, extras={"role": role})
    return token.encode(key, "HS256")


def read_token(key: str, encoded: str) -> Actor:
    """The actor a token names, or NotAuthorizedException (bad signature, expired, no role)."""
    token = Token.decode(encoded, key, "HS256")
    return _actor(token)


def _actor(token: Token) -> Actor:
    role = token.extras.get("role")
    if role not in ROLES:
        raise NotAuthorizedException("the token carries no known role")
    return Actor(token.sub, role)


async def _retrieve(token: Token, connection: ASGIConnection[Any, Any, Any, Any]) -> Actor:
    return _actor(token)


class Failures:
    """Invalid tokens per client address and minute. Authentication runs before the rate limit
    (which is per verified caller), so without this, guessing tokens was never limited."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._counts: dict[str, tuple[int, int]] = {}  # address -> (minute, failures in it)

    def exceeded(self, address: str) -> bool:
        minute, count = self._counts.get(address, (-1, 0))
        return minute == self._minute() and count >= self.per_minute

    def add(self, address: str) -> None:
        now = self._minute()
        if len(self._counts) > 100_000:  # bounded memory: forget every earlier minute
            self._counts = {a: c for a, c in self._counts.items() if c[0] == now}
        minute, count = self._counts.get(address, (now, 0))
        self._counts[address] = (now, count + 1 if minute == now else 1)

    def _minute(self) -> int:
        return int(self.clock() // 60)


class SharedFailures:
    """`Failures` counted in Redis, shared by every API worker: a fixed minute per address."""

    def __init__(self, per_minute: int, counter: Counter, clock: Callable[[], float] = time.time) -> None:
        self.per_minute, self.counter, self.clock = per_minute, counter, clock

    def exceeded(self, address: str) -> bool:
        return self.counter.peek(self._name(address)) >= self.per_minute

    def add(self, address: str) -> None:
        self.counter.hit(self._name(address), 120)  # outlives its minute, then goes

    def _name(self, address: str) -> str:
        return f"auth-failures:{address}:{int(self.clock() // 60)}"


class VerifiedOnce(JWTCookieAuthenticationMiddleware):
    """Checks a token's signature once, then reuses the result until the token expires: decoding
    an HS256 JWT was about a tenth of a cached briefing's server time (bench/serve.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.verified: OrderedDict[str, AuthenticationResult] = OrderedDict()

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        """The header if sent (never falling back to the cookie then), else the cookie."""
        credential = connection.headers.get(self.auth_header)
        if credential is None:
            credential = connection.cookies.get(self.auth_cookie_key, "")
        failures: FailureCount | None = connection.app.state.get("auth_failures")
        address = connection.client.host if connection.client else "unknown"
        # A token verified before still passes: one guesser behind a shared address must not
        # lock out the people signed in there.
        known = credential.strip().partition(" ")[2].strip() in self.verified
        if failures is not None and not known and failures.exceeded(address):
            raise TooManyRequestsException("too many requests with invalid tokens: wait a minute")
        try:
            return await self.authenticate_token(bearer(credential), connection)
        except NotAuthorizedException:
            if failures is not None:
                failures.add(address)
            raise

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        known = self.verified.get(encoded_token)
        if known is not None and known.auth.exp > datetime.now(UTC):
            return known
        result = await super().authenticate_token(encoded_token, connection)
        self.verified[encoded_token] = result
        if len(self.verified) > 100_000:
            self.verified.popitem(last=False)
        return result


def bearer(credential: str) -> str:
    """The token of `Bearer <token>` (scheme case-insensitive); any other scheme is refused, so
    that a changed scheme word cannot pass for a new caller (the rate limit is per subject)."""
    scheme, _, token = credential.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException("send the token as 'Authorization: Bearer <token>'")
    return token.strip()


def jwt_auth(key: str, secure: bool) -> JWTCookieAuth[Actor, Token]:
    return JWTCookieAuth[Actor, Token](
        token_secret=key,
        authentication_middleware_class=VerifiedOnce,
        retrieve_user_handler=_retrieve,
        key=COOKIE,
        samesite="strict",
        secure=secure,  # ServiceConfig.secure_cookies: off only on plain-HTTP loopback
        exclude=PUBLIC,
        default_token_expiration=timedelta(days=7),
    )


def allow(*roles: str) -> Guard:
    """A guard letting only these roles through (HTTP 403 for the others)."""

    # async on purpose: litestar runs a sync guard in a worker thread, a hop on every request
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        actor = connection.user
        if not isinstance(actor, Actor) or actor.role not in roles:
            raise PermissionDeniedException(f"this needs the {' or '.join(roles)} role")

    return guard
