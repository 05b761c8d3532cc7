"""One exception class per failure kind; every one is a :class:`LayerlensError`.

HTTP failures (:class:`APIStatusError` and its subclasses) carry the status code, the
server's one-line ``detail``, the whole RFC 9457 problem document and the response.
Failures to get any answer are :class:`APIConnectionError` (and its subclass
:class:`APITimeoutError`). ``Client.wait`` running out of time is :class:`WaitTimeoutError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from layerlens_client.models import Job

__all__ = [
    "APIConnectionError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "LayerlensError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "WaitTimeoutError",
]


class LayerlensError(Exception):
    """Base class of every error the client raises."""


class APIStatusError(LayerlensError):
    """The server answered with an error status (4xx or 5xx).

    Attributes
    ----------
    status_code : int
    detail : str
        The problem document's ``detail`` (or the body's text when it is not one).
    problem : dict
        The parsed ``application/problem+json`` body; empty when the body was not JSON.
    response : httpx.Response
    """

    def __init__(self, message: str, *, response: httpx.Response, detail: str,
                 problem: dict[str, Any]) -> None:
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code
        self.detail = detail
        self.problem = problem


class BadRequestError(APIStatusError):
    """400, 413, 415 or 422: the request itself is wrong (bad spec, file, or parameter)."""


class AuthenticationError(APIStatusError):
    """401 or 403: no or a wrong API key."""


class NotFoundError(APIStatusError):
    """404: no such model, dataset, job or artifact."""


class ConflictError(APIStatusError):
    """409: the resource is not in a state that allows this (e.g. the job already finished)."""


class RateLimitError(APIStatusError):
    """429, still after every retry."""


class ServerError(APIStatusError):
    """5xx, still after every retry."""


class APIConnectionError(LayerlensError):
    """No answer: the server is unreachable, or the connection broke (after every retry)."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    """The request timed out (after every retry)."""


class APIResponseValidationError(LayerlensError):
    """A success answer whose body is not what the API documents."""

    def __init__(self, message: str, *, response: httpx.Response) -> None:
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code


class WaitTimeoutError(LayerlensError, TimeoutError):
    """``wait`` ran out of time before the job finished; ``job`` is its last known state."""

    def __init__(self, message: str, *, job: Job, timeout: float) -> None:
        super().__init__(message)
        self.job = job
        self.timeout = timeout
