"""What every route needs: settings, database sessions, storage and the task queue."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.queue import TaskQueue
from service.storage import Storage


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage
    queue: TaskQueue
    metrics_registry: CollectorRegistry | None = None


def context(request: Request) -> ServiceContext:
    return request.app.state.context
