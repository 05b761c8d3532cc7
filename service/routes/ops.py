"""``/healthz`` (the process answers), ``/readyz`` (database, broker, storage), ``/metrics``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from service.context import ServiceContext, context
from service.problems import documented, problem_response
from service.schemas import ReadyOut

router = APIRouter()
Ctx = Annotated[ServiceContext, Depends(context)]


@router.get("/healthz", summary="Liveness: the process answers; touches nothing else")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the database, the broker and the storage answer",
            response_model=ReadyOut,
            responses=documented((503, "Not ready: `checks` says which dependency is "
                                       "unavailable")))
def readyz(ctx: Ctx) -> JSONResponse:
    checks: dict[str, str] = {}

    def database() -> None:
        with ctx.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    for name, probe in (("database", database), ("broker", ctx.queue.ping),
                        ("storage", ctx.storage.ping)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}: {str(exc)[:200]}"
    failed = [name for name, verdict in checks.items() if verdict != "ok"]
    if failed:
        return problem_response(503, f"not ready: {', '.join(failed)} unavailable",
                                instance="/readyz", checks=checks)
    return JSONResponse({"status": "ready", "checks": checks})


@router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
def metrics(ctx: Ctx) -> Response:
    return Response(generate_latest(ctx.metrics_registry),  # type: ignore[arg-type]
                    media_type=CONTENT_TYPE_LATEST)
