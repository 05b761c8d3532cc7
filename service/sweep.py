"""The sweep: re-send jobs whose broker message was lost.

A message can be lost while its job row stays: a Redis restart without
persistence, a broker failover, a worker that died while the broker was
down. Every API process runs :func:`sweep` every ``sweep_interval_s``:

* a ``queued`` job waiting longer than ``requeue_after_s`` whose message is
  neither waiting in the broker nor held by a worker is re-sent (on a
  transport we cannot read, every such job is: waits double with each
  re-send, so a long backlog is not flooded with copies);
* a ``running`` job whose worker has not written for twice the lease is
  re-sent, so that a delivery takes it over (or fails it ``worker_lost``).

A re-send is a compare-and-set on ``enqueued_at``: of several API processes
sweeping at once, one sends. A copy too many is harmless, since a delivery
only runs a job it can claim (infra/db/jobs.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from infra.db.models import Job, utcnow
from infra.db.session import transaction
from infra.queue import RUN_JOB, TaskQueue

log = logging.getLogger("layerlens.sweep")
#: Most jobs looked at per sweep.
BATCH = 200
#: Most job ids with a message that the query excludes by name.
MAX_LISTED = 10_000
#: The wait before a re-send doubles per re-send, up to this many times.
MAX_DOUBLINGS = 6


@dataclass(frozen=True)
class SweepPolicy:
    """requeue_after_s : a queued job's wait before its first re-send (s).
    lease_s : the job lease; a running job silent for twice this long is re-sent (s)."""

    requeue_after_s: float
    lease_s: float


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def stale_jobs(sessions: sessionmaker[Session], policy: SweepPolicy, *,
               in_broker: set[str] | None, now: datetime) -> list[tuple[str, datetime]]:
    """(job id, enqueued_at) of the jobs to re-send now, oldest first.

    in_broker : ids of the jobs with a message in the broker (None: unknown).
    """
    silent = now - timedelta(seconds=2 * policy.lease_s)
    first_wait = now - timedelta(seconds=policy.requeue_after_s)
    lost_worker = (Job.status == "running") & (Job.heartbeat_at < silent) & (
        Job.enqueued_at < silent)
    waited = (Job.status == "queued") & (Job.enqueued_at < first_wait)
    if in_broker:  # so that a backlog of jobs with messages does not fill the batch
        waited = waited & Job.id.not_in(sorted(in_broker)[:MAX_LISTED])
    with sessions() as session:
        rows = session.execute(select(Job.id, Job.status, Job.enqueued_at, Job.enqueues)
                               .where(or_(lost_worker, waited)).order_by(Job.enqueued_at)
                               .limit(BATCH)).all()
    due = []
    for job_id, status, enqueued_at, enqueues in rows:
        wait = policy.requeue_after_s * 2 ** min(enqueues - 1, MAX_DOUBLINGS)
        if status == "running" or (
                (in_broker is None or job_id not in in_broker)
                and now - _aware(enqueued_at) >= timedelta(seconds=wait)):
            due.append((job_id, enqueued_at))
    return due


def take_resend(sessions: sessionmaker[Session], job_id: str, seen: datetime,
                now: datetime) -> bool:
    """Record a re-send of ``job_id`` (compare-and-set on ``enqueued_at == seen``); True when
    this caller won it and must send the message."""
    with transaction(sessions) as session:
        result = session.execute(
            update(Job).where(Job.id == job_id, Job.enqueued_at == seen,
                              Job.status.in_(("queued", "running")))
            .values(enqueued_at=now, enqueues=Job.enqueues + 1)
            .execution_options(synchronize_session=False))
    return result.rowcount == 1  # type: ignore[attr-defined]


def sweep(sessions: sessionmaker[Session], queue: TaskQueue, policy: SweepPolicy) -> list[str]:
    """Re-send the stale jobs' messages; the ids re-sent by this call."""
    now = utcnow()
    in_broker = queue.job_ids_in_broker()  # raises while the broker is down: nothing to do
    resent = []
    for job_id, seen in stale_jobs(sessions, policy, in_broker=in_broker, now=now):
        if take_resend(sessions, job_id, seen, now):
            queue.send(RUN_JOB, job_id)
            log.warning("job %s: its message was presumably lost; sent again", job_id)
            resent.append(job_id)
    return resent
