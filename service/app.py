"""The FastAPI application: ``create_app()`` (uvicorn ``--factory``), or ``layerlens api``."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from layerlens import __version__
from service import problems
from service.config import Settings
from service.context import ServiceContext
from service.db.session import make_engine, require_migrated, session_factory
from service.metrics import ServiceCollector
from service.queue import TaskQueue
from service.routes import jobs, ops, uploads
from service.storage import open_storage

log = logging.getLogger("layerlens.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API on ``settings`` (default: the environment).

    Raises :class:`service.db.session.SchemaNotMigrated` on an unmigrated database.
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

    app = FastAPI(title="layerlens", version=__version__,
                  description="Upload a model and a dataset reference, queue an analysis "
                              "job, collect the report JSON, images and HTML page.")
    app.state.context = ctx
    problems.install(app)
    app.include_router(uploads.router, tags=["uploads"])
    app.include_router(jobs.router, tags=["jobs"])
    app.include_router(ops.router, tags=["operations"])
    return app
