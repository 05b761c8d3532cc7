"""Errors as RFC 9457 ``application/problem+json``, for every failure the API can answer."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.schemas import ProblemOut

log = logging.getLogger("layerlens.api")
PROBLEM_JSON = "application/problem+json"
_REF = "#/components/schemas/"
#: What each error status means on this API, for the OpenAPI document.
MEANINGS = {
    400: "Malformed request: a body that cannot be parsed, or a pagination cursor that "
         "cannot be read",
    401: "No API key, or an unknown or revoked one",
    404: "No such item for this tenant",
    409: "The item is not in a state that allows this (yet)",
    413: "The upload exceeds the size limit",
    415: "Not a multipart/form-data upload",
    422: "The request is invalid; the detail (and `errors`, for malformed fields) says why",
    503: "A dependency is unavailable, or a worker has not answered in time; retry after "
         "Retry-After seconds",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying",
                                "schema": {"type": "integer"}}}
_WWW_AUTHENTICATE = {"WWW-Authenticate": {"description": "the scheme: Bearer",
                                          "schema": {"type": "string"}}}


class Problem(Exception):
    """An error the client can act on: status, one-line detail, optional extra members."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers, self.extra = status, detail, headers, extra


def problem_response(status: int, detail: str, *, instance: str | None = None,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    title = HTTPStatus(status).phrase
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            **({"instance": instance} if instance else {}), **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def documented(*statuses: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each error status, answered as problem+json; a
    ``(status, meaning)`` pair replaces the generic description of that status."""
    responses: dict[int | str, dict[str, Any]] = {}
    for entry in statuses:
        status, meaning = entry if isinstance(entry, tuple) else (entry, MEANINGS[entry])
        response: dict[str, Any] = {
            "description": meaning,
            "content": {PROBLEM_JSON: {"schema": {"$ref": _REF + "Problem"}}}}
        if status == 401:
            response["headers"] = _WWW_AUTHENTICATE
        if status == 503:
            response["headers"] = _RETRY_AFTER
        responses[status] = response
    return responses


def _with_problem_schema(app: FastAPI) -> None:
    """Add the Problem document (which ``documented`` responses refer to) to the OpenAPI
    components (FastAPI files a response model under the route's own media type only), and
    list each operation's responses in status order."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = generate()
            schema = ProblemOut.model_json_schema(ref_template=_REF + "{model}")
            components = document.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["Problem"] = schema
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    operation["responses"] = dict(sorted(operation["responses"].items()))
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _location(error: dict[str, Any]) -> str:
    parts = [str(p) for p in error.get("loc", ()) if p not in ("body",)]
    return ".".join(parts) or "body"


def install(app: FastAPI) -> None:
    _with_problem_schema(app)

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, instance=request.url.path,
                                headers=exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _location(e), "message": e.get("msg", "invalid")}
                  for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(422, detail, instance=request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return problem_response(exc.status_code, detail, instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal error; the server log has the details",
                                instance=request.url.path)
