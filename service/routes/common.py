"""Helpers shared by the routers."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from infra.db.session import transaction
from infra.queue import TaskQueue
from service import pagination
from service.problems import Problem
from service.schemas import storable

log = logging.getLogger("layerlens.api")


def utc(stamp: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored one is UTC."""
    if stamp is None or stamp.tzinfo is not None:
        return stamp
    return stamp.replace(tzinfo=UTC)


def enqueue_or_undo(sessions: sessionmaker[Session], queue: TaskQueue, task: str,
                    table: Any, item_id: str) -> None:
    """Send ``task(item_id)``; if the broker refuses, delete the row just made and answer 503,
    so nothing waits forever for a message that was never sent (a retry starts afresh)."""
    try:
        queue.send(task, item_id)
    except Exception as exc:
        log.warning("could not enqueue %s %s: %s", task, item_id, exc)
        with transaction(sessions) as session:
            session.execute(delete(table).where(table.id == item_id))
        raise Problem(503, f"the task queue is unavailable ({type(exc).__name__}); nothing was "
                           "queued, try again shortly", headers={"Retry-After": "5"}) from exc


def checked_cursor(cursor: str | None) -> str | None:
    """``cursor``, once it is known to decode to a position the database can compare with."""
    if cursor and not storable(pagination.decode(cursor)[1]):
        raise Problem(400, "invalid cursor: pass the next_cursor of a previous page")
    return cursor


def not_found(kind: str, item_id: str) -> Problem:
    return Problem(404, f"no {kind} with id '{item_id}'")


async def in_transaction(sessions: sessionmaker[Session], work: Any) -> Any:
    """Run ``work(session)`` in a committed transaction on a worker thread."""
    def run() -> Any:
        with transaction(sessions) as session:
            return work(session)
    return await run_in_threadpool(run)
