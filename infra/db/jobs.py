"""The job state machine: every transition is one compare-and-set UPDATE.

queued -> running -> succeeded | failed | canceled, and queued -> canceled.
A worker claims a job with a fresh token; every later write names that token,
so a duplicate delivery (or a worker that lost its claim) changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from infra.db.models import AnalysisResult, Artifact, Job, utcnow
from infra.db.session import transaction

#: A running job whose worker has not written for this long may be claimed again.
LEASE_S = 120.0
#: A job whose worker was lost this many times fails with reason ``worker_lost``.
MAX_ATTEMPTS = 3


def claim(factory: sessionmaker[Session], job_id: str, worker: str,
          lease_s: float = LEASE_S) -> str | None:
    """Move ``job_id`` to running for this attempt; the claim token, or None if not ours.

    A running job whose heartbeat is older than ``lease_s`` lost its worker: it is taken
    over, unless that already happened :data:`MAX_ATTEMPTS` times, when it fails instead.
    """
    token, now = uuid.uuid4().hex, utcnow()
    stale = now - timedelta(seconds=lease_s)
    with transaction(factory) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running", Job.heartbeat_at < stale,
                   Job.attempts >= MAX_ATTEMPTS)
            .values(status="failed", reason="worker_lost", finished_at=now,
                    error=f"the worker running this job was lost {MAX_ATTEMPTS} times")
            .execution_options(synchronize_session=False))
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.cancel_requested.is_(False),
                   or_(Job.status == "queued",
                       and_(Job.status == "running", Job.heartbeat_at < stale)))
            .values(status="running", claim=token, attempts=Job.attempts + 1, worker=worker,
                    started_at=now, heartbeat_at=now, error=None, reason=None)
            .execution_options(synchronize_session=False))
    return token if result.rowcount == 1 else None  # type: ignore[attr-defined]


def lease_left(factory: sessionmaker[Session], job_id: str,
               lease_s: float = LEASE_S) -> float | None:
    """Seconds until a running job's lease lapses; None when the job is not running.

    A delivery that finds its job running waits this long and tries again: either the
    job's worker is alive (and the job ends meanwhile) or it was lost (and is taken over).
    """
    with factory() as session:
        row = session.execute(select(Job.status, Job.heartbeat_at)
                              .where(Job.id == job_id)).first()
    if row is None or row.status != "running" or row.heartbeat_at is None:
        return None
    beat = row.heartbeat_at if row.heartbeat_at.tzinfo else row.heartbeat_at.replace(tzinfo=UTC)
    return max(0.0, lease_s - (utcnow() - beat).total_seconds())


def heartbeat(factory: sessionmaker[Session], job_id: str, token: str, *,
              progress: float, stage: str | None, analyses: dict[str, Any]) -> bool:
    """Record progress; True while the job is still ours and no cancel was asked for."""
    with transaction(factory) as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.claim == token, Job.status == "running")
            .values(progress=progress, stage=stage, analyses=analyses, heartbeat_at=utcnow())
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        return not session.scalar(select(Job.cancel_requested).where(Job.id == job_id))


def finish(session: Session, job_id: str, token: str, status: str, **values: Any) -> bool:
    """CAS running -> ``status`` for the attempt holding ``token``; False if it lost the claim."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.claim == token, Job.status == "running")
        .values(status=status, finished_at=utcnow(), heartbeat_at=utcnow(), **values)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def store_report(factory: sessionmaker[Session], job_id: str, token: str, *,
                 header: dict[str, Any], sections: dict[str, dict[str, Any]],
                 durations: dict[str, float], analyses: dict[str, Any],
                 artifacts: list[tuple[str, str, str, int]],
                 failure: tuple[str, str] | None = None) -> bool:
    """Store the report and its artifact index and end the job, all or nothing: succeeded,
    or failed with ``failure`` = (reason, error) when an analysis failed (the report then
    holds what did finish).

    ``artifacts``: (name, sha256, content_type, size_bytes) of blobs already stored.
    """
    status, outcome = "succeeded", {}
    if failure is not None:
        status, outcome = "failed", {"reason": failure[0], "error": failure[1]}
    with transaction(factory) as session:
        if not finish(session, job_id, token, status, progress=1.0, stage=None,
                      analyses=analyses, report_header=header, **outcome):
            return False
        session.add_all(AnalysisResult(job_id=job_id, kind=kind, result=section,
                                       duration_s=durations.get(kind))
                        for kind, section in sections.items())
        session.add_all(Artifact(job_id=job_id, name=name, sha256=sha, content_type=ctype,
                                 size_bytes=size) for name, sha, ctype, size in artifacts)
    return True


def request_cancel(factory: sessionmaker[Session], job_id: str) -> None:
    """A queued job is canceled at once; a running one is flagged for its worker to stop."""
    with transaction(factory) as session:
        session.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                        .values(status="canceled", cancel_requested=True,
                                finished_at=utcnow())
                        .execution_options(synchronize_session=False))
        session.execute(update(Job).where(Job.id == job_id, Job.status == "running")
                        .values(cancel_requested=True)
                        .execution_options(synchronize_session=False))


