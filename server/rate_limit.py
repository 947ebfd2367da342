"""The rate limit when several API workers share it: litestar's middleware, counting in Redis.

Litestar's `RateLimitMiddleware` reads a caller's history from its store, checks it and writes it
back under a lock held in this process only, so N workers sharing one store let up to N times the
limit through (and lose counts between the read and the write). Here the count is one atomic
script (INCR, EXPIRE on the first hit: `server.shared_state.Counter`), and everything else is
litestar's own: the same identifiers, excluded paths, 429 problem and RateLimit-* headers.
The window is fixed and opens with the caller's first request, as litestar's does; a refused
request counts too (litestar's does not), which only matters to a caller already over the limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from litestar.exceptions import TooManyRequestsException
from litestar.middleware.rate_limit import DURATION_VALUES, CacheObject, RateLimitConfig, RateLimitMiddleware
from litestar.types import Receive, Scope, Send

from server.shared_state import Counter


class SharedRateLimit(RateLimitMiddleware):
    config: SharedRateLimitConfig

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = scope["litestar_app"].request_class(scope)
        if await self.should_check_request(request=request):
            window = DURATION_VALUES[self.unit]
            # A sync call on the event loop: one loopback round trip, cheaper than a thread hop.
            count, left = self.config.counter.hit(self.cache_key_from_request(request), window)
            seen = CacheObject(history=[0] * min(count, self.max_requests), reset=int(time.time()) + left)
            if count > self.max_requests:
                headers = self.create_response_headers(seen) if self.config.set_rate_limit_headers else None
                raise TooManyRequestsException(headers=headers)
            if self.config.set_rate_limit_headers:
                send = self.create_send_wrapper(send=send, cache_object=seen)
        await self.app(scope, receive, send)


@dataclass
class SharedRateLimitConfig(RateLimitConfig):
    counter: Counter = field(default=None)  # type: ignore[assignment]  # required; dataclass order
    middleware_class: type[RateLimitMiddleware] = field(default=SharedRateLimit)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.counter is None:
            raise ValueError("a shared rate limit needs a counter (server.shared_state)")


def shared_rate_limit(per_minute: int, counter: Counter, **options: Any) -> SharedRateLimitConfig:
    return SharedRateLimitConfig(rate_limit=("minute", per_minute), counter=counter, **options)
