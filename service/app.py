"""The FastAPI application: ``create_app()`` (uvicorn ``--factory``), or ``layerlens api``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from infra.config import Settings
from infra.db.session import make_engine, require_migrated, session_factory
from infra.queue import TaskQueue
from infra.storage import open_storage
from layerlens import __version__
from service import problems
from service.context import ServiceContext
from service.metrics import ServiceCollector
from service.routes import comparison, jobs, ops, uploads
from service.sweep import SweepPolicy, sweep

log = logging.getLogger("layerlens.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API on ``settings`` (default: the environment).

    Raises :class:`infra.db.session.SchemaNotMigrated` on an unmigrated database.
    """
    settings = settings or Settings.from_env()
    engine = make_engine(settings.database_url)
    require_migrated(engine)
    ctx = ServiceContext(settings=settings, engine=engine, sessions=session_factory(engine),
                         storage=open_storage(settings.storage_url,
                                              endpoint_url=settings.s3_endpoint_url),
                         queue=TaskQueue(settings))
    registry = CollectorRegistry()
    registry.register(ServiceCollector(ctx))
    ctx.metrics_registry = registry

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sweeper = (asyncio.create_task(_sweep_forever(ctx))
                   if settings.sweep_interval_s > 0 else None)
        yield
        if sweeper is not None:
            sweeper.cancel()

    app = FastAPI(title="layerlens", version=__version__, lifespan=lifespan,
                  description="Upload a model and a dataset reference, queue an analysis "
                              "job, collect the report JSON, images and HTML page.")
    app.state.context = ctx
    problems.install(app)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    str(exc).splitlines()[0][:200])
        return problems.problem_response(
            503, "the database is unavailable; try again shortly",
            instance=request.url.path, headers={"Retry-After": "5"})

    app.include_router(uploads.router, tags=["uploads"])
    app.include_router(jobs.router, tags=["jobs"])
    app.include_router(comparison.router, tags=["jobs"])
    app.include_router(ops.router, tags=["operations"])
    return app


async def _sweep_forever(ctx: ServiceContext) -> None:
    """Every ``sweep_interval_s``: re-send jobs whose message was lost (service/sweep.py)."""
    policy = SweepPolicy(requeue_after_s=ctx.settings.requeue_after_s,
                         lease_s=ctx.settings.job_lease_s)
    while True:
        await asyncio.sleep(ctx.settings.sweep_interval_s)
        try:
            await run_in_threadpool(sweep, ctx.sessions, ctx.queue, policy)
        except Exception as exc:  # the database or the broker is down: next time
            log.warning("sweep skipped: %s: %s", type(exc).__name__, str(exc)[:200])
