"""The retry policy: which failures are retried, and how long to wait before the next try."""

from __future__ import annotations

import random
import time
from email.utils import parsedate_to_datetime

import httpx

#: 408 Request Timeout, 429 Too Many Requests, and every 5xx are worth another try;
#: no other 4xx is (the same request would fail the same way).
RETRY_STATUSES = frozenset({408, 429})


def should_retry_status(status_code: int) -> bool:
    return status_code in RETRY_STATUSES or status_code >= 500


def should_retry_error(error: httpx.RequestError) -> bool:
    """Connection failures and timeouts are retried; a URL httpx cannot speak, a body it
    cannot decode, or a redirect loop is not."""
    return (isinstance(error, httpx.TransportError)
            and not isinstance(error, httpx.UnsupportedProtocol))


def retry_after(headers: httpx.Headers, *, now: float | None = None) -> float | None:
    """Seconds the server asks to wait (``Retry-After``: delta-seconds or an HTTP date).

    None when the header is absent or unreadable; never negative.
    """
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def backoff(retries_taken: int, *, initial: float, maximum: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(initial * 2**n, maximum)].

    Full jitter spreads the retries of many clients that failed together (AWS
    Architecture Blog, "Exponential Backoff And Jitter", 2015).
    """
    ceiling = min(initial * 2.0 ** retries_taken, maximum)
    return random.uniform(0.0, ceiling)
