"""Helpers shared by the routers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker

from service.db.session import transaction
from service.problems import Problem


def utc(stamp: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored one is UTC."""
    if stamp is None or stamp.tzinfo is not None:
        return stamp
    return stamp.replace(tzinfo=UTC)


def not_found(kind: str, item_id: str) -> Problem:
    return Problem(404, f"no {kind} with id '{item_id}'")


async def in_transaction(sessions: sessionmaker[Session], work: Any) -> Any:
    """Run ``work(session)`` in a committed transaction on a worker thread."""
    def run() -> Any:
        with transaction(sessions) as session:
            return work(session)
    return await run_in_threadpool(run)
