"""django-ratelimit's counters, failing closed and saying so when their cache is down.

``is_ratelimited`` lets the cache's own error escape (a stopped Redis raises
``redis.ConnectionError``), which made every limited endpoint a 500. A request
that cannot be counted is not served either: ``over_limit`` raises
``RateLimiterUnavailable`` and each channel answers 503 after writing the
attempt's audit row (SPEC: Audit).
"""

import logging
import sys

from django_ratelimit import ALL
from django_ratelimit.core import is_ratelimited

logger = logging.getLogger("accounts.ratelimit")

UNAVAILABLE = "rate limiter unavailable"
UNAVAILABLE_MESSAGE = "requests cannot be counted against their rate limit now; try again shortly"


class RateLimiterUnavailable(Exception):
    """The rate limit's cache did not answer; the request must be refused (503)."""

    def __init__(self, cause: Exception):
        super().__init__(f"{UNAVAILABLE}: {type(cause).__name__}")


def over_limit(request, *, group: str, key, rate: str, method=ALL) -> bool:
    """Count this request against ``rate``; True once it is over the limit."""
    try:
        return is_ratelimited(
            request, group=group, key=key, rate=rate, method=method, increment=True
        )
    except Exception as exc:
        if not _cache_down(exc):
            raise
        # The cause names the cache's host, never its password: safe for the log.
        logger.error("%s (%s); refusing %s %s", UNAVAILABLE, exc, request.method, request.path)
        raise RateLimiterUnavailable(exc) from exc


def _cache_down(exc: Exception) -> bool:
    """The cache's own failure: a socket error, or redis-py's (loaded by the Redis
    cache backend when it is used; importing it here would cost every process that
    loads the URLconf ~30 ms of redis.asyncio)."""
    if isinstance(exc, OSError):
        return True
    redis_exceptions = sys.modules.get("redis.exceptions")
    return redis_exceptions is not None and isinstance(exc, redis_exceptions.RedisError)
