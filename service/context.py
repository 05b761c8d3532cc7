"""What every route needs: settings, database sessions, storage and the task queue."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from infra.config import Settings
from infra.queue import TaskQueue
from infra.storage import Storage

_T = TypeVar("_T")


class StatusCache:
    """Job status documents, kept by this API process.

    A finished job never changes, so its document is kept until evicted. An
    unfinished one is kept for :attr:`fresh_s` seconds: polls within that
    window share one database read (workers write progress every 0.5 s, so a
    client sees it at most ``fresh_s`` late).
    """

    def __init__(self, capacity: int = 10_000, fresh_s: float = 0.25) -> None:
        self.capacity, self.fresh_s = capacity, fresh_s
        self._documents: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._reads: dict[str, asyncio.Future[Any]] = {}

    def get(self, job_id: str) -> tuple[bytes, bool] | None:
        """The document and whether the job is finished; None when absent or stale."""
        entry = self._documents.get(job_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1], entry[0] == math.inf

    def put(self, job_id: str, document: bytes, *, final: bool) -> None:
        expires = math.inf if final else time.monotonic() + self.fresh_s
        self._documents[job_id] = (expires, document)
        self._documents.move_to_end(job_id)
        while len(self._documents) > self.capacity:
            self._documents.popitem(last=False)

    def forget(self, job_id: str) -> None:
        self._documents.pop(job_id, None)

    async def read_once(self, job_id: str,
                        read: Callable[[], Awaitable[_T]]) -> _T:
        """``await read()``, shared by every request for ``job_id`` that arrives meanwhile
        (when the cached document expires, 50 pollers make one database read, not 50)."""
        pending = self._reads.get(job_id)
        if pending is None:
            pending = asyncio.ensure_future(read())
            self._reads[job_id] = pending
            pending.add_done_callback(lambda _: self._reads.pop(job_id, None))
        return await asyncio.shield(pending)


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage
    queue: TaskQueue
    metrics_registry: CollectorRegistry | None = None
    job_status: StatusCache = field(default_factory=StatusCache)


def context(request: Request) -> ServiceContext:
    return request.app.state.context
